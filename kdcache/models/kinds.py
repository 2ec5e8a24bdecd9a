"""The registry of model spec kinds: ``kind:rest`` -> how to build it and where its weights come from.

Each kind is one module of this package that calls :func:`register_kind`
once. ``weights`` says where a kind's weights come from, which decides what
:func:`~kdcache.models.build_model` asks of the caller:

``"checkpoint"``
    an architecture (``kdcache:``, ``torchvision:``, ``timm:``): the weights must come
    from a checkpoint, or the caller asks for an untrained network.
``"factory"``
    user code (``import:``) that may load its own weights; the state it
    returns is hashed so other weights are noticed.
``"program"``
    a saved program (``torchscript:``, ``export:``) that carries its weights;
    the file is hashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from kdcache.errors import SpecError
from kdcache.registry import Registry

__all__ = ["KINDS", "SpecKind", "get_kind", "list_kinds", "parse_spec", "register_kind"]

Builder = Callable[[str, int, int], "tuple[nn.Module, str | None]"]
"""``build(rest, num_classes, in_channels) -> (model, program_sha256 or None)``."""


@dataclass(frozen=True)
class SpecKind:
    """One kind of model spec.

    ``canonical`` rewrites the part after ``kind:`` into the form a card
    records (a program's path made absolute); ``suggest`` maps a bare name
    to the spec the user probably meant (or None), for error messages.
    """

    name: str
    build: Builder
    weights: Literal["checkpoint", "factory", "program"]
    canonical: Callable[[str], str] = str
    suggest: Callable[[str], "str | None"] | None = None


KINDS: Registry[SpecKind] = Registry("model spec kind", SpecError)


def register_kind(kind: SpecKind) -> SpecKind:
    """Make ``kind.name:...`` specs buildable; a name can be registered once."""
    return KINDS.add(kind.name, kind)


def list_kinds() -> list[str]:
    """Registered kind names, in registration order."""
    return KINDS.names()


def get_kind(name: str) -> SpecKind:
    """The registered kind ``name`` (the caller parsed it with :func:`parse_spec`)."""
    return KINDS.get(name)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:rest"`` into ``(kind, rest)``, raising :class:`SpecError` on bad specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"model spec must be a non-empty string, got {spec!r}")
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind not in KINDS:
        name = spec.strip()
        hint = ""
        for known in KINDS.values():
            meant = known.suggest(name) if known.suggest else None
            if meant:
                hint = f"; did you mean {meant!r}?"
                break
        # A spec is KIND:REST; without a colon the whole spec is the unknown kind.
        raise KINDS.unknown(kind if sep else name, where=f"model spec {spec!r}", hint=hint)
    if not rest:
        raise SpecError(f"model spec {spec!r} names no model after '{kind}:'")
    return kind, rest
