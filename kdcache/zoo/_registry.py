"""The name -> factory registry behind ``kdcache:NAME`` model specs.

A factory takes ``(num_classes, in_channels)`` by keyword and returns an
``nn.Module`` whose forward maps ``(B, in_channels, H, W)`` float images to
``(B, num_classes)`` logits. Registering a name twice raises instead of
silently replacing the first model (a store's card names the model, so two
meanings for one name would make cards ambiguous).
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import nn

from kdcache.errors import SpecError


class ModelFactory(Protocol):
    """What ``@register_model`` accepts."""

    def __call__(self, *, num_classes: int, in_channels: int) -> nn.Module: ...


_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory`` under ``name`` (``kdcache:NAME``).

    Raises :class:`SpecError` if ``name`` is already taken or is not a plain
    identifier-like name (it becomes part of spec strings and cards).
    """
    if not name or any(c in name for c in ":/, \t\n"):
        raise SpecError(
            f"model name {name!r} must be non-empty and contain no ':', '/', ',' or spaces"
        )

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            old = _MODELS[name]
            raise SpecError(
                f"model name {name!r} is already registered "
                f"(by {getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', '?')}); "
                "pick another name"
            )
        _MODELS[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """The registered ``kdcache:`` model names, sorted."""
    return sorted(_MODELS)


def get_factory(name: str) -> ModelFactory:
    """The factory registered under ``name``; unknown names list the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise SpecError(
            f"unknown model 'kdcache:{name}'; valid names: {', '.join(list_models())}"
        ) from None


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name`` (fresh, randomly initialised weights)."""
    return get_factory(name)(num_classes=num_classes, in_channels=in_channels)
