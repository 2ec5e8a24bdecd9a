"""A narrower layout for recorded view params: int16 columns, a wide value in two int16 halves.

Every integer the recipe ops record fits int16 except a few wide ones (an
erasing ``noise`` seed, 31 bits; a ``mix_partner`` sample index), which an op
names in ``wide_keys``. Packed, a wide param takes two columns ``<name>.hi``
and ``<name>.lo``: ``value = hi * 65536 + (lo & 0xFFFF)`` (``lo`` read as
uint16), so a mixing preset's record halves (docs/data-and-views.md,
"Recorded bytes per view"). A value that does not fit its column is refused,
never truncated. Stores of format version 2 are written in this layout
(kdcache.store.view_params packs on write and unpacks on read).
"""

from __future__ import annotations

import numpy as np

from kdcache.errors import RecipeError
from kdcache.views.recipe import Recipe

__all__ = ["pack_params", "packed_names", "unpack_params", "wide_params"]

_INT16 = np.iinfo(np.int16)


def wide_params(recipe: Recipe) -> list[bool]:
    """Per recorded param (``recipe.param_names()`` order): whether it takes two int16 columns."""
    return [key in op.wide_keys for op in recipe._compiled for key in op.param_keys]


def packed_names(recipe: Recipe) -> list[str]:
    """Column names of the packed layout: a wide param's ``.hi`` then ``.lo``."""
    out: list[str] = []
    for name, wide in zip(recipe.param_names(), wide_params(recipe)):
        out += [f"{name}.hi", f"{name}.lo"] if wide else [name]
    return out


def pack_params(recipe: Recipe, params: np.ndarray) -> np.ndarray:
    """(n, P) integer params as (n, Q) int16; RecipeError naming a value its column cannot hold."""
    params = np.asarray(params, dtype=np.int64)
    columns: list[np.ndarray] = []
    for j, (name, wide) in enumerate(zip(recipe.param_names(), wide_params(recipe))):
        col = params[:, j]
        if wide:
            if col.size and (col.min() < 0 or col.max() >= 2**31):
                raise RecipeError(f"recorded {name} values must be in 0..2**31-1 to pack, got {col.min()}..{col.max()}")
            columns += [(col >> 16).astype(np.int16), (col & 0xFFFF).astype(np.uint16).view(np.int16)]
        else:
            if col.size and (col.min() < _INT16.min or col.max() > _INT16.max):
                raise RecipeError(f"recorded {name} values {col.min()}..{col.max()} do not fit int16")
            columns.append(col.astype(np.int16))
    return np.stack(columns, axis=1) if columns else np.zeros((len(params), 0), dtype=np.int16)


def unpack_params(recipe: Recipe, packed: np.ndarray) -> np.ndarray:
    """The (n, P) int32 params of a packed (n, Q) int16 record (the inverse of :func:`pack_params`)."""
    packed = np.asarray(packed, dtype=np.int16)
    out: list[np.ndarray] = []
    q = 0
    for wide in wide_params(recipe):
        if wide:
            out.append((packed[:, q].astype(np.int64) << 16) | packed[:, q + 1].view(np.uint16).astype(np.int64))
            q += 2
        else:
            out.append(packed[:, q].astype(np.int64))
            q += 1
    if q != packed.shape[1]:
        raise RecipeError(f"a packed record of {packed.shape[1]} columns; recipe {recipe.name!r} packs {q}")
    return (np.stack(out, axis=1) if out else np.zeros((len(packed), 0))).astype(np.int32)
