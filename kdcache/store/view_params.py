"""How ``views/params`` is laid out on disk, by store format version.

Format 2 stores the recorded view parameters as int16 columns
(:mod:`kdcache.views.packing`): a wide param (erasing's ``noise`` seed,
``mix_partner`` and the partner's own wide params) takes two columns
``<name>.hi`` and ``<name>.lo``, and the array's ``names`` attribute lists
the columns. Format 1 stores one int32 column per param. Everything above the
store sees the (rows, P) int32 params of ``Recipe.param_names()``: the store
packs them on write and unpacks them on read; checksums are of the bytes on
disk (the packed columns in format 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdcache.views import Recipe
from kdcache.views.packing import pack_params, packed_names, unpack_params

__all__ = ["ParamLayout", "PACKED_SINCE"]

# The first store format version whose views/params is packed int16.
PACKED_SINCE = 2


@dataclass(frozen=True)
class ParamLayout:
    """The on-disk layout of ``views/params`` for a recipe in a store format version."""

    recipe: Recipe
    version: int

    @property
    def packed(self) -> bool:
        return self.version >= PACKED_SINCE

    @property
    def dtype(self) -> str:
        return "int16" if self.packed else "int32"

    @property
    def names(self) -> list[str]:
        """The column names on disk (the ``names`` attribute of ``views/params``)."""
        return packed_names(self.recipe) if self.packed else list(self.recipe.param_names())

    @property
    def columns(self) -> int:
        return len(self.names)

    def to_disk(self, params: np.ndarray) -> np.ndarray:
        """(rows, P) params as the (rows, columns) array written (and hashed for the checksum record)."""
        params = np.asarray(params)
        if not self.packed:
            return params.astype(np.int32, copy=False)
        return pack_params(self.recipe, params)

    def from_disk(self, stored: np.ndarray) -> np.ndarray:
        """The (rows, P) int32 params of a stored (rows, columns) array."""
        stored = np.asarray(stored)
        if not self.packed:
            return stored.astype(np.int32, copy=False)
        return unpack_params(self.recipe, stored)
