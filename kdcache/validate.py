"""Checks of values a user writes (recipe JSON, loss hyper-parameters, options, model arguments): the one
place kdcache checks a value.

Each check is a *parser*: it takes a value and returns it normalised (numbers
as ``float`` or ``int``, pairs as lists) or raises :class:`Invalid` with the
"must be ..." half of a message. The caller knows its error class and what
the value is called, so it finishes the sentence with :func:`check`, or
catches :class:`Invalid` (a ``ValueError``) itself::

    check(fraction, 1.5, RecipeError, "recipe 'r', op 0 (horizontal_flip): p")
    # RecipeError: recipe 'r', op 0 (horizontal_flip): p=1.5 must be in [0, 1]

An option value is checked the same way with :func:`require` (a
:class:`~kdcache.errors.UsageError` unless told otherwise); ``require_int``,
``require_number`` and ``require_choice`` spell the common parsers::

    require_int("--epochs", 0, 1)
    # UsageError: --epochs=0 must be a positive integer

``bool`` is refused wherever a number is expected: ``True`` as a
temperature or a crop size is a mistake, not 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np

from kdcache.errors import UsageError

__all__ = [
    "Invalid",
    "Parser",
    "check",
    "choice",
    "number_in",
    "flag",
    "fraction",
    "int_in",
    "integer",
    "is_int",
    "is_number",
    "non_negative",
    "non_negative_int",
    "number",
    "optional",
    "pair",
    "positive",
    "positive_int",
    "require",
    "require_choice",
    "require_int",
    "require_number",
]


class Invalid(ValueError):
    """A value failed a check; the message is the "must be ..." half of a sentence."""


Parser = Callable[[Any], Any]
"""Normalises one value or raises :class:`Invalid`."""


def check(parse: Parser, value: Any, error: type[Exception], what: str) -> Any:
    """``parse(value)``, turning :class:`Invalid` into ``error("<what>=<value> must be ...")``."""
    try:
        return parse(value)
    except Invalid as exc:
        raise error(f"{what}={value!r} {exc}") from None


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A finite Python or numpy integer or float, not a bool."""
    return (is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(float(value))


def number(value: Any) -> float:
    """A finite number, as float."""
    if not (is_int(value) or isinstance(value, (float, np.floating))):
        raise Invalid("must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise Invalid("must be finite")
    return value


def positive(value: Any) -> float:
    """A finite number > 0 (temperatures, warm-up lengths, std)."""
    value = number(value)
    if value <= 0:
        raise Invalid("must be > 0")
    return value


def non_negative(value: Any) -> float:
    """A finite number >= 0 (loss weights, jitter strengths)."""
    value = number(value)
    if value < 0:
        raise Invalid("must be >= 0")
    return value


def fraction(value: Any) -> float:
    """A number in [0, 1] (probabilities, mixing weights)."""
    value = number(value)
    if not 0.0 <= value <= 1.0:
        raise Invalid("must be in [0, 1]")
    return value


def integer(value: Any) -> int:
    """An integer (Python or numpy, not bool), as int."""
    if not is_int(value):
        raise Invalid("must be an integer")
    return int(value)


def int_in(lo: int | None, hi: int | None) -> Parser:
    """An integer in ``[lo, hi]`` (``None``: unbounded on that side)."""
    if lo is not None and hi is not None:
        expect = f"must be an integer {lo}..{hi}"
    elif lo == 0:
        expect = "must be a non-negative integer"
    elif lo == 1:
        expect = "must be a positive integer"
    else:
        expect = f"must be an integer >= {lo}" if lo is not None else f"must be an integer <= {hi}"

    def parse(value: Any) -> int:
        if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Invalid(expect)
        return int(value)

    return parse


positive_int = int_in(1, None)
non_negative_int = int_in(0, None)


def flag(value: Any) -> bool:
    """A real bool (strings such as "false" are truthy, so refuse them)."""
    if not isinstance(value, bool):
        raise Invalid("must be True or False")
    return value


def number_in(lo: float, hi: float | None = None, *, open_low: bool = False, open_high: bool = True) -> Parser:
    """A finite number in the interval from ``lo`` to ``hi`` (``None``: unbounded), as float; the ends
    are closed unless ``open_low``/``open_high`` (the upper end is open by default: ``[0, 1)``)."""
    if hi is None:
        expect = f"must be {'>' if open_low else '>='} {lo:g}"
    else:
        expect = f"must be in {'(' if open_low else '['}{lo:g}, {hi:g}{')' if open_high else ']'}"

    def parse(value: Any) -> float:
        value = number(value)
        if value < lo or (open_low and value == lo) or (hi is not None and (value > hi or (open_high and value == hi))):
            raise Invalid(expect)
        return value

    return parse


def choice(*options: str) -> Parser:
    """One of a fixed set of strings (an Enum member counts as its value)."""

    def parse(value: Any) -> str:
        value = value.value if isinstance(value, Enum) else value
        if value not in options:
            raise Invalid(f"must be one of {', '.join(map(repr, options))}")
        return value

    return parse


def optional(parser: Parser) -> Parser:
    """``None`` (meaning: derived, or off) or a value for ``parser``."""

    def parse(value: Any) -> Any:
        return None if value is None else parser(value)

    return parse


def pair(item: Parser, expect: str) -> Parser:
    """A list or tuple of exactly two values, each passing ``item``; ``expect`` names the shape."""

    def parse(value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Invalid(f"must be {expect}")
        try:
            return [item(v) for v in value]
        except Invalid:
            raise Invalid(f"must be {expect}") from None

    return parse


# --------------------------------------------------------------------------- option values


def require(what: str, value: Any, parse: Parser, error: type[Exception] = UsageError) -> Any:
    """``parse(value)``, or one line ``error("<what>=<value> must be ...")`` (:func:`check` for options)."""
    return check(parse, value, error, what)


def require_int(what: str, value: Any, minimum: int, error: type[Exception] = UsageError) -> int:
    """An integer option >= ``minimum``."""
    return require(what, value, int_in(minimum, None), error)


def require_number(what: str, value: Any, *, minimum: float, inclusive: bool = True, below: float | None = None,
                   error: type[Exception] = UsageError) -> float:
    """A number option in ``[minimum, below)`` (``(minimum, below)`` when not ``inclusive``)."""
    return require(what, value, number_in(minimum, below, open_low=not inclusive), error)


def require_choice(what: str, value: Any, choices: tuple[str, ...], error: type[Exception] = UsageError) -> str:
    """The string value of a choice option (an Enum by its value)."""
    return str(require(what, value, choice(*choices), error))
