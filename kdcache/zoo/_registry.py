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
from kdcache.registry import Registry


class ModelFactory(Protocol):
    """What ``@register_model`` accepts."""

    def __call__(self, *, num_classes: int, in_channels: int) -> nn.Module: ...


def _check_name(name: str) -> None:
    if not name or any(c in name for c in ":/, \t\n"):
        raise SpecError(
            f"model name {name!r} must be non-empty and contain no ':', '/', ',' or spaces"
        )


MODELS: Registry[ModelFactory] = Registry("zoo model", SpecError, check_name=_check_name)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory`` under ``name`` (``kdcache:NAME``).

    Raises :class:`SpecError` if ``name`` is not a plain identifier-like name
    (it becomes part of spec strings and cards), and
    :class:`~kdcache.registry.DuplicateNameError` if it is taken.
    """
    _check_name(name)
    return MODELS.decorator(name)


def list_models() -> list[str]:
    """The registered ``kdcache:`` model names, sorted."""
    return sorted(MODELS)


def get_factory(name: str) -> ModelFactory:
    """The factory registered under ``name``; unknown names list the valid ones."""
    return MODELS.get(name, where=f"kdcache:{name}")


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name`` (fresh, randomly initialised weights)."""
    return get_factory(name)(num_classes=num_classes, in_channels=in_channels)
