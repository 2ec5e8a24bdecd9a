"""``kdcache:NAME``: a model of kdcache's zoo (``kdcache.zoo``), built untrained (weights from a checkpoint)."""

from __future__ import annotations

from torch import nn

from kdcache import zoo
from kdcache.models.kinds import SpecKind, register_kind

__all__ = ["list_models"]


def list_models() -> list[str]:
    """Names usable as ``kdcache:NAME`` (the registered zoo models), sorted."""
    return zoo.list_models()


def _build(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
    return zoo.create_model(name, num_classes, in_channels), None


def _suggest(name: str) -> str | None:
    return f"kdcache:{name}" if name in list_models() else None


register_kind(SpecKind("kdcache", _build, weights="checkpoint", suggest=_suggest))
