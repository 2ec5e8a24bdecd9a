"""The encoding registry: one :class:`EncodingType` per spec name (``float16``, ``int8``, ``topk``, ...).

An encoding's name is spelled once, in its :func:`register_encoding` call
(in the module that implements it). Everything else asks this registry:
:func:`parse` turns an ``--encoding`` value into an :class:`Encoding`,
:func:`forms` and :func:`encoding_help` are what users are told, and
:func:`accepted_forms` is what a loss says it consumes. How to add an
encoding: docs/internals.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kdcache.encodings.base import Encoding
from kdcache.errors import UsageError
from kdcache.registry import Registry
from kdcache.validate import Invalid

__all__ = ["ENCODINGS", "EncodingType", "accepted_forms", "encoding_help", "forms", "parse", "register_encoding"]


@dataclass(frozen=True)
class EncodingType:
    """One kind of encoding spec, ``name`` or ``name:ARGS``.

    ``parse`` gets the text after ``name:`` (None when there is no colon)
    and returns the :class:`Encoding`, or raises :class:`~kdcache.validate.Invalid`.
    ``form`` is how a user writes it (``topk:K``); ``summary`` says what it
    keeps, in a few words. ``kind`` is what it decodes to (``"dense"``
    logits, or ``"probabilities"`` at the temperature it was drawn at), and
    for a probabilities kind ``exact_form`` is what a loss that reads the
    teacher at T consumes exactly (``"sample:N@{T}"``).
    """

    name: str
    form: str
    summary: str
    parse: Callable[[str | None], Encoding]
    kind: Literal["dense", "probabilities"] = "dense"
    exact_form: str | None = None

    def accepted_form(self, temperature: float) -> str:
        """The form of this type a loss reading the teacher at ``temperature`` consumes exactly."""
        if self.kind == "dense" or self.exact_form is None:
            return self.form
        return self.exact_form.format(T=f"{temperature:g}")


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"encoding name {name!r} must be letters, digits or '_' (it starts a spec, before ':')")


ENCODINGS: Registry[EncodingType] = Registry("encoding", UsageError, check_name=_check_name)


def register_encoding(entry: EncodingType) -> EncodingType:
    """Make ``entry.name[:ARGS]`` a valid ``--encoding`` (a name is registered once)."""
    return ENCODINGS.add(entry.name, entry)


def forms() -> list[str]:
    """How each registered encoding is written (``["float16", ..., "topk:K", "sample:N[@T]"]``)."""
    return [e.form for e in ENCODINGS.values()]


def encoding_help() -> str:
    """Every encoding with what it keeps, for ``--help`` and error messages."""
    return ", ".join(f"{e.form} ({e.summary})" for e in ENCODINGS.values())


def accepted_forms(linear_at: float | None) -> str:
    """The encodings a loss consumes exactly: every dense one, and the probabilities ones drawn at
    ``linear_at`` when the loss reads the teacher linearly at that temperature (None: dense only)."""
    return ", ".join(e.accepted_form(linear_at) for e in ENCODINGS.values()
                     if e.kind == "dense" or linear_at is not None)


def parse(spec: str) -> Encoding:
    """The encoding named by ``spec``; a bad value is a one-line :class:`UsageError` listing every form."""
    text = str(spec).strip()
    name, sep, args = text.partition(":")
    if name in ENCODINGS:
        try:
            return ENCODINGS.get(name).parse(args if sep else None)
        except Invalid:
            pass
    raise UsageError(f"--encoding {spec!r} is not an encoding; use {encoding_help()}")
