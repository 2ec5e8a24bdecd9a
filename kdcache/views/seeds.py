"""Seed derivation: the one generator every random draw of a view comes from."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcache.errors import SpecError
from kdcache.validate import check, non_negative_int

__all__ = ["PARTNER_TAG", "partner_generator", "view_generator"]

PARTNER_TAG = 0x4D49_5850
"""The fourth entropy word of a mix partner's stream (``"MIXP"``): distinct from every view's 3-word stream."""


def non_negative(value: Any, what: str) -> int:
    """``value`` as a non-negative int, or :class:`SpecError` naming ``what``."""
    return check(non_negative_int, value, SpecError, what)


def view_generator(seed: int, sample: int, view: int) -> np.random.Generator:
    """The generator every random draw of view ``(sample, view)`` comes from.

    ``np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, sample, view])))``:
    this derivation is a stable contract (docs/data-and-views.md). It depends on
    nothing else, so batch size, workers, rank, order and epoch cannot change a view.
    """
    entropy = [non_negative(seed, "seed"), non_negative(sample, "sample"), non_negative(view, "view")]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def partner_generator(seed: int, sample: int, view: int) -> np.random.Generator:
    """The generator the partner's view of mixed view ``(sample, view)`` is drawn from.

    ``np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, sample, view, PARTNER_TAG])))``:
    a stream of its own, so the partner's params are a pure function of
    ``(seed, sample, view)`` too, and drawing them never shifts the view's own stream.
    """
    entropy = [non_negative(seed, "seed"), non_negative(sample, "sample"), non_negative(view, "view"), PARTNER_TAG]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
