"""The op spaces of RandAugment, TrivialAugment (wide) and AutoAugment, as torchvision defines them.

Which ops each augmentation draws from, their magnitude tables and signs, and AutoAugment's policies,
copied from torchvision (the tests check them against torchvision's own), plus :func:`op_value`, the value
a recorded magnitude stands for. :mod:`kdcache.views.autoaugment` draws, records and applies them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

MAGNITUDE_SCALE = 100
"""Recorded magnitudes are in 1/100 of a bin."""

@dataclass(frozen=True)
class OpKind:
    """One op of an op space: its torchvision name, its magnitude table and whether it is signed.

    ``table``: ``("linspace", lo, hi)`` is ``torch.linspace(lo, hi, bins)``;
    ``("linspace_width", f)`` / ``("linspace_height", f)`` is
    ``torch.linspace(0, f * width_or_height, bins)`` (translation in pixels);
    ``("posterize", d)`` is ``(8 - arange(bins) / ((bins - 1) / d)).round().int()``
    (bits kept); ``None``: the op takes no magnitude.
    """

    name: str
    table: tuple[Any, ...] | None
    signed: bool


def _kinds(*rows: tuple[str, tuple[Any, ...] | None, bool]) -> tuple[OpKind, ...]:
    return tuple(OpKind(*row) for row in rows)


_TRANSLATE = 150.0 / 331.0

# torchvision 0.29's op spaces (transforms/v2/_auto_augment.py), in its order.
# Copied, not read from torchvision's private tables, so a recorded op index
# keeps its meaning; tests/test_views_strong.py checks they still agree.
SPACES: dict[str, tuple[OpKind, ...]] = {
    "rand_augment": _kinds(
        ("Identity", None, False),
        ("ShearX", ("linspace", 0.0, 0.3), True),
        ("ShearY", ("linspace", 0.0, 0.3), True),
        ("TranslateX", ("linspace_width", _TRANSLATE), True),
        ("TranslateY", ("linspace_height", _TRANSLATE), True),
        ("Rotate", ("linspace", 0.0, 30.0), True),
        ("Brightness", ("linspace", 0.0, 0.9), True),
        ("Color", ("linspace", 0.0, 0.9), True),
        ("Contrast", ("linspace", 0.0, 0.9), True),
        ("Sharpness", ("linspace", 0.0, 0.9), True),
        ("Posterize", ("posterize", 4), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
    ),
    "trivial_augment": _kinds(
        ("Identity", None, False),
        ("ShearX", ("linspace", 0.0, 0.99), True),
        ("ShearY", ("linspace", 0.0, 0.99), True),
        ("TranslateX", ("linspace", 0.0, 32.0), True),
        ("TranslateY", ("linspace", 0.0, 32.0), True),
        ("Rotate", ("linspace", 0.0, 135.0), True),
        ("Brightness", ("linspace", 0.0, 0.99), True),
        ("Color", ("linspace", 0.0, 0.99), True),
        ("Contrast", ("linspace", 0.0, 0.99), True),
        ("Sharpness", ("linspace", 0.0, 0.99), True),
        ("Posterize", ("posterize", 6), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
    ),
    "auto_augment": _kinds(
        ("ShearX", ("linspace", 0.0, 0.3), True),
        ("ShearY", ("linspace", 0.0, 0.3), True),
        ("TranslateX", ("linspace_width", _TRANSLATE), True),
        ("TranslateY", ("linspace_height", _TRANSLATE), True),
        ("Rotate", ("linspace", 0.0, 30.0), True),
        ("Brightness", ("linspace", 0.0, 0.9), True),
        ("Color", ("linspace", 0.0, 0.9), True),
        ("Contrast", ("linspace", 0.0, 0.9), True),
        ("Sharpness", ("linspace", 0.0, 0.9), True),
        ("Posterize", ("posterize", 4), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
        ("Invert", None, False),
    ),
}

_AUTO_BINS = 10  # AutoAugment's magnitude ids index a 10-bin table

# torchvision 0.29's AutoAugment policies: 25 sub-policies of two (op, probability, magnitude id).
AUTO_AUGMENT_POLICIES: dict[str, tuple[tuple[tuple[str, float, int | None], ...], ...]] = {
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
}


# --------------------------------------------------------------------------- magnitudes and rendering


@functools.lru_cache(maxsize=1024)
def _table(kind: OpKind, bins: int, height: int, width: int) -> tuple[float, ...]:
    """The op's magnitude table, computed as torchvision computes it (float32 tensors), as floats."""
    assert kind.table is not None
    rule, *args = kind.table
    if rule == "linspace":
        values = torch.linspace(args[0], args[1], bins)
    elif rule == "linspace_width":
        values = torch.linspace(0.0, args[0] * width, bins)
    elif rule == "linspace_height":
        values = torch.linspace(0.0, args[0] * height, bins)
    else:  # posterize
        values = (8 - (torch.arange(bins) / ((bins - 1) / args[0]))).round().int()
    return tuple(float(v) for v in values)


def op_value(kind: OpKind, magnitude: int, bins: int, height: int, width: int) -> float:
    """The value the op applies for a recorded ``magnitude`` (signed hundredths of a bin).

    A whole bin is torchvision's table entry; a fraction interpolates the two
    neighbouring entries (posterize rounds the interpolated bit count, half
    to even, as its table does); the sign negates. 0.0 for ops without a table.
    """
    if kind.table is None:
        return 0.0
    bin_, rest = divmod(abs(magnitude), MAGNITUDE_SCALE)
    table = _table(kind, bins, height, width)
    if rest == 0:
        value = table[bin_]
    elif kind.table[0] == "posterize":
        value = float(round(8 - (abs(magnitude) / MAGNITUDE_SCALE) / ((bins - 1) / kind.table[1])))
    else:
        lo, hi = table[bin_], table[bin_ + 1]
        value = lo + (hi - lo) * (rest / MAGNITUDE_SCALE)
    return -value if magnitude < 0 else value
