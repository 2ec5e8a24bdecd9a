"""``import:module.path:factory``: any callable returning an nn.Module.

The factory is user code: it may build an untrained network or load its
own weights, which kdcache cannot tell apart; so it is not refused without a
checkpoint, and the state it returned is hashed into the card instead.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from kdcache.errors import ModelError, SpecError
from kdcache.models.kinds import SpecKind, register_kind


def _build_import(target: str, num_classes: int, in_channels: int) -> nn.Module:
    module_name, sep, attr_path = target.rpartition(":")
    if not sep or not module_name or not attr_path:
        raise SpecError(
            f"import spec 'import:{target}' must look like 'import:module.path:factory'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise SpecError(
            f"import:{target}: cannot import module {module_name!r} ({e}); "
            "is it installed or on PYTHONPATH?"
        ) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(
                f"import:{target}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise SpecError(f"import:{target}: {attr_path!r} is not callable")

    kwargs = _accepted_kwargs(obj, {"num_classes": num_classes, "in_channels": in_channels})
    model = obj(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"import:{target} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _accepted_kwargs(factory: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``offered`` that ``factory``'s signature takes by keyword."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        # Builtins and some C extensions have no signature: call them bare.
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in offered.items() if k in params and params[k].kind in keyword_kinds}


def _build(target: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
    return _build_import(target, num_classes, in_channels), None


register_kind(SpecKind("import", _build, weights="factory"))
