"""``import:module.path:factory``: any callable returning an nn.Module.

The factory is user code: it may build an untrained network or load its
own weights, which kdcache cannot tell apart; so it is not refused without a
checkpoint, and the state it returned is hashed into the card instead.

It gets only the arguments it accepts: ``num_classes`` and ``in_channels``
where its signature names them. A factory that takes ``**kwargs`` is offered
both, and one it forwards them to a callee that refuses (torchvision's
``resnet18`` passes ``**kwargs`` to ``ResNet``, which has no ``in_channels``)
is called again without the refused keyword. Whatever else the factory
raises is one :class:`ModelError` line naming the spec.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from kdcache.errors import KdcacheError, ModelError, SpecError
from kdcache.models.checkpoints import first_line
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
    model = _call(obj, kwargs, f"import:{target}")
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


_REFUSED = re.compile(r"unexpected keyword argument '(\w+)'")


def _call(factory: Callable[..., Any], kwargs: dict[str, Any], spec: str) -> Any:
    """``factory(**kwargs)``, dropping a keyword that only reached it through ``**kwargs`` and that a
    callee refused; any other error of the factory is one :class:`ModelError` naming ``spec``."""
    forwarded = set(kwargs) - set(_named_keywords(factory))
    while True:
        try:
            return factory(**kwargs)
        except TypeError as e:
            refused = _REFUSED.search(str(e))
            if refused is not None and refused.group(1) in forwarded:
                forwarded.discard(refused.group(1))
                kwargs = {k: v for k, v in kwargs.items() if k != refused.group(1)}
                continue
            raise _factory_error(spec, kwargs, e) from e
        except KdcacheError:
            raise  # already one line (a factory that builds through kdcache)
        except Exception as e:  # noqa: BLE001  (user code can raise anything; say whose error it is)
            raise _factory_error(spec, kwargs, e) from e


def _factory_error(spec: str, kwargs: dict[str, Any], e: BaseException) -> ModelError:
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return ModelError(f"{spec}: the factory failed when called with ({call}): {type(e).__name__}: {first_line(e)}")


def _named_keywords(factory: Callable[..., Any]) -> list[str]:
    """The parameters ``factory``'s signature names that can be passed by keyword."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in params.items() if p.kind in keyword_kinds]


def _build(target: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
    return _build_import(target, num_classes, in_channels), None


register_kind(SpecKind("import", _build, weights="factory"))
