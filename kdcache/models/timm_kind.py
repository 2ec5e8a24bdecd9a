"""``timm:NAME``: a timm model (``pip install 'kdcache[timm]'``), built untrained (weights from a checkpoint).

The network is ``timm.create_model(NAME, pretrained=False,
num_classes=..., in_chans=...)``: timm shapes the classifier and the stem
itself. ``pretrained`` is always False: kdcache never downloads weights at
run time, so a timm teacher's weights come from ``--weights`` (a checkpoint
``train-teacher`` wrote, or a state dict saved from a timm model), under the
same policy as ``torchvision:`` and ``kdcache:`` (refused without weights
unless ``random_init``). timm is imported only when a ``timm:`` spec is
built, so it stays an optional extra.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from types import ModuleType

from torch import nn

from kdcache.errors import ModelError, SpecError
from kdcache.models.kinds import SpecKind, register_kind

__all__ = ["list_timm_models"]

_INSTALL = "pip install 'kdcache[timm]'"


def _import_timm(spec: str) -> ModuleType:
    try:
        import timm
    except ImportError as e:
        if getattr(e, "name", None) == "timm":
            raise ModelError(f"{spec} needs the optional package timm, which is not installed: {_INSTALL}") from None
        raise ModelError(f"{spec}: timm failed to import ({e}); reinstall it with {_INSTALL}") from None
    return timm


def list_timm_models(pattern: str = "*") -> list[str]:
    """Names usable as ``timm:NAME`` matching ``pattern`` (``timm.list_models(pattern)``); needs timm."""
    return list(_import_timm("timm:").list_models(pattern))


def _find_names_hint(name: str) -> str:
    stem = re.match(r"[A-Za-z]+", name)
    pattern = f"{stem.group(0).lower()}*" if stem else "*"
    return f"find names with: python -c \"import timm; print(timm.list_models('{pattern}'))\""


def _build_timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    spec = f"timm:{name}"
    if ":" in name:
        # timm reads "hf-hub:..." and "local-dir:..." as places to load from.
        raise SpecError(
            f"{spec}: name a timm architecture, not a place to load from; kdcache builds timm models "
            "untrained (pretrained=False, nothing is downloaded) and loads weights from --weights; "
            + _find_names_hint(name.rpartition(":")[2].rpartition("/")[2])
        )
    timm = _import_timm(spec)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.lower(), timm.list_models(), n=5, cutoff=0.6)
        hint = f"close names: {', '.join(close)}; " if close else ""
        raise SpecError(f"unknown timm model {name!r}; {hint}{_find_names_hint(name)}")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except Exception as e:  # timm's own checks: one line naming the model and what it refused
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"{spec}: timm.create_model(pretrained=False, num_classes={num_classes}, "
            f"in_chans={in_channels}) failed: {type(e).__name__}{': ' + reason if reason else ''}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}: timm.create_model returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _build(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
    return _build_timm(name, num_classes, in_channels), None


def _suggest(name: str) -> str | None:
    # Reached only when no other kind knows a bare name; timm is imported only if installed.
    if ":" in name:
        return None
    try:
        if importlib.util.find_spec("timm") is None:
            return None
        import timm

        return f"timm:{name}" if timm.is_model(name) else None
    except Exception:  # a broken timm install must not hide the error being reported
        return None


register_kind(SpecKind("timm", _build, weights="checkpoint", suggest=_suggest))
