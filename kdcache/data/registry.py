"""Data schemes by name: ``open_data(spec) -> DataSource``.

A spec is ``scheme[:root][,key=value...]``. Each scheme is one module of this
package that calls :func:`register_scheme` once with a :class:`Scheme`: its
opener, whether it takes a root folder and which options, a hint on where
the root points, and the recipe preset that fits its images. This module
parses specs and dispatches; it knows nothing about any particular scheme.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kdcache.data.source import DataSource
from kdcache.errors import SpecError
from kdcache.registry import Registry

__all__ = ["SCHEMES", "Scheme", "get_scheme", "int_option", "list_schemes", "open_data", "register_scheme", "split_option"]

SPLITS = ("train", "test")

Opener = Callable[[str, "str | None", dict[str, str]], DataSource]
"""``opener(spec, root, options)``: ``root`` absolute (or None), ``options`` checked against the allowed keys."""


@dataclass(frozen=True)
class Scheme:
    """How one data scheme is named, parsed and opened.

    ``root``: ``"required"``, ``"optional"`` or ``"none"``. ``options``: the
    ``key=value`` keys the scheme takes. ``root_hint``: one line saying what
    the root must hold (used in errors). ``default_recipe``: the preset a run
    uses when no ``--recipe`` is given (it must fit the scheme's images).
    """

    name: str
    opener: Opener
    root: Literal["required", "optional", "none"]
    options: tuple[str, ...]
    default_recipe: str
    root_hint: str = ""


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"data scheme name {name!r} must be letters, digits, '-' or '_'")


SCHEMES: Registry[Scheme] = Registry("data scheme", SpecError, check_name=_check_name)


def register_scheme(scheme: Scheme) -> Scheme:
    """Make ``scheme`` openable as ``scheme.name[...]``; a name can be registered once."""
    return SCHEMES.add(scheme.name, scheme)


def list_schemes() -> list[str]:
    """Registered scheme names, in registration order."""
    return SCHEMES.names()


def get_scheme(name: str) -> Scheme:
    """The :class:`Scheme` registered as ``name``; unknown names raise listing the known ones."""
    return SCHEMES.get(name)


_OPTION = re.compile(r"^([a-z_]+)=(.*)$")


def parse_spec(spec: str) -> tuple[Scheme, str | None, dict[str, str]]:
    """Split ``scheme[:root][,key=value...]`` into its parts, checking names."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty data spec; expected one of: {', '.join(SCHEMES)}")
    text = spec.strip()
    m = re.match(r"^([A-Za-z0-9_-]+)(.*)$", text, re.DOTALL)
    name, rest = (m[1], m[2]) if m else ("", text)
    scheme = SCHEMES.get(name, where=f"data spec {spec!r}")
    if rest and rest[0] not in ":,":
        raise SpecError(f"malformed data spec {spec!r}: expected ':' or ',' after {name!r}")
    tokens = rest[1:].split(",") if rest else []
    root_tokens: list[str] = []
    options: dict[str, str] = {}
    for token in tokens:
        opt = _OPTION.match(token)
        # A root comes first; a path may hold commas as long as no part of it
        # looks like key=value (write ./key=value for such a folder).
        if opt is None and not options and rest.startswith(":"):
            root_tokens.append(token)
            continue
        if opt is None:
            raise SpecError(f"malformed option {token!r} in {spec!r}; expected key=value")
        key, value = opt[1], opt[2]
        if key not in scheme.options:
            raise SpecError(
                f"unknown option {key!r} for {name} in {spec!r}; allowed: {', '.join(scheme.options)}"
            )
        if key in options:
            raise SpecError(f"option {key!r} given twice in {spec!r}")
        options[key] = value
    root = ",".join(root_tokens) if root_tokens else None
    if root is not None and not root.strip():
        root = None
    if scheme.root == "none" and root is not None:
        raise SpecError(f"{name} takes no root folder, got {root!r} in {spec!r}")
    if scheme.root == "required" and root is None:
        raise SpecError(f"{name} needs a root folder: {scheme.root_hint}")
    return scheme, root, options


def split_option(options: dict[str, str], spec: str) -> str:
    """The ``split=train|test`` option (default train)."""
    split = options.get("split", "train")
    if split not in SPLITS:
        raise SpecError(f"split={split!r} in {spec!r}; expected split=train or split=test")
    return split


def int_option(options: dict[str, str], key: str, default: int, lo: int, hi: int, spec: str) -> int:
    """An integer option in ``[lo, hi]``, written in base 10."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise SpecError(f"{key}={raw!r} in {spec!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SpecError(f"{key}={value} in {spec!r} is out of range; expected {lo}..{hi}")
    return value


def open_data(spec: str) -> DataSource:
    """Open the dataset named by ``spec`` (formats in :mod:`kdcache.data`).

    Raises :class:`SpecError` for a malformed spec and
    :class:`DataNotFoundError` when the files are missing or empty, each with
    one line saying what was expected where.
    """
    scheme, root, options = parse_spec(spec)
    if root is not None:
        root = os.path.abspath(os.path.expanduser(root))
    return scheme.opener(spec, root, options)
