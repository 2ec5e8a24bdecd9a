"""``torchvision:NAME``: a torchvision classification model, built untrained (weights from a checkpoint)."""

from __future__ import annotations

import difflib

from torch import nn

from kdcache.errors import ModelError, SpecError
from kdcache.models.kinds import SpecKind, register_kind

__all__ = ["list_torchvision_models"]


def list_torchvision_models() -> list[str]:
    """Names usable as ``torchvision:NAME`` (torchvision's classification models)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    valid = list_torchvision_models()
    if name.lower() not in valid:
        close = difflib.get_close_matches(name.lower(), valid, n=5, cutoff=0.5)
        some = close or valid[:8]
        raise SpecError(
            f"unknown torchvision classification model {name!r}; "
            f"{'close names' if close else 'some valid names'}: {', '.join(some)} "
            "(all: python -c 'import kdcache.models as m; print(m.list_torchvision_models())')"
        )
    model = torchvision.models.get_model(name.lower(), weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels, f"torchvision:{name}")
    return model


def _replace_first_conv(model: nn.Module, in_channels: int, spec: str) -> None:
    """Swap the first registered Conv2d for one taking ``in_channels``.

    In every torchvision classifier the first registered Conv2d is the stem
    (registration order follows ``__init__``), so this is where the image
    channels enter. The new layer copies every other argument and gets a
    fresh initialisation; with ``weights=None`` nothing is lost.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ModelError(
                    f"{spec}: its first convolution {name!r} is grouped "
                    f"(groups={module.groups}); kdcache cannot adapt it to {in_channels} channels"
                )
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                kernel_size=module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                groups=1,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return
    raise ModelError(f"{spec} has no Conv2d to adapt to {in_channels} input channels")


def _build(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
    return _build_torchvision(name, num_classes, in_channels), None


def _suggest(name: str) -> str | None:
    return f"torchvision:{name.lower()}" if name.lower() in list_torchvision_models() else None


register_kind(SpecKind("torchvision", _build, weights="checkpoint", suggest=_suggest))
