"""Reading a teacher's logits in any encoding (kdcache.encodings): its parts, verified as one chunk.

:class:`EncodedReads` is a part of :class:`kdcache.store.Store` (a mixin):
an encoding stores a chunk as several zarr arrays ("parts", see
``docs/store-format.md``, "Encodings") under one checksum record, and these
methods find, read, verify and pack them. Decoding into dense logits is the
encoding's own (:meth:`kdcache.encodings.Encoding.decode`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from kdcache import encodings
from kdcache.store import layout

if TYPE_CHECKING:
    from pathlib import Path

    from kdcache.store.backend import Backend
    from kdcache.store.chunks import ChunkGrid
    from kdcache.store.location import Location
    from kdcache.store.manifest import TeacherCard


class EncodedReads:
    """The encoded-parts half of :class:`~kdcache.store.Store` (it provides the attributes declared here)."""

    if TYPE_CHECKING:
        backend: Backend

        @property
        def path(self) -> Path | Location: ...
        writable: bool
        _seen: dict[Any, Any]

        @property
        def grid(self) -> ChunkGrid: ...
        def card(self, name: str | None = None) -> TeacherCard: ...
        def _array(self, node: str) -> zarr.Array: ...
        def _record(self, sums_node: str, view: int, chunk: int) -> int: ...
        def _signature(self, node: str, index: tuple[int, ...]) -> tuple[int, int, int] | None: ...
        def _verified(self, node: str, read: Any, record: int, view: int, chunk: int,
                      index: tuple[int, ...] | None = None) -> Any: ...

    def encoding(self, teacher: str) -> encodings.Encoding:
        """The encoding teacher ``teacher``'s logits are stored in (its card's ``encoding``)."""
        return encodings.parse(self.card(teacher).encoding)

    def part_nodes(self, teacher: str) -> list[tuple[encodings.Part, str]]:
        """Each stored part of ``teacher``'s encoding with its node, in checksum order."""
        card = self.card(teacher)
        return [(p, layout.part(teacher, p.name)) for p in encodings.parse(card.encoding).parts(card.num_classes)]

    def part_array(self, teacher: str, part: str) -> zarr.Array:
        """One stored part of ``teacher``'s encoding (``logits`` for float16/float32)."""
        return self._array(layout.part(teacher, part))

    def read_encoded_chunk(self, teacher: str, view: int, chunk: int, verify: bool = True) -> dict[str, np.ndarray]:
        """The stored parts of one chunk of ``teacher`` ({part: (rows, ...) array}), checked against its record.

        A read-only store remembers a verified chunk as it does a float16 one,
        by the signatures (inode, size, modification time) of ALL its part
        files: a change to any of them hashes the chunk again.
        """
        start, stop = self.grid.bounds(chunk)
        nodes = self.part_nodes(teacher)
        arrays = [(p.name, self._array(node)) for p, node in nodes]

        def read() -> dict[str, np.ndarray]:
            return {name: np.asarray(arr[view, start:stop]) for name, arr in arrays}

        if not verify:
            return read()
        record = self._record(layout.logit_checksums(teacher), view, chunk)
        if len(nodes) == 1:
            return self._verified(nodes[0][1], read, record, view, chunk, (view, chunk, 0))
        # Several files make one chunk: remembered as verified only while none of them changed.
        key = (layout.logit_checksums(teacher), view, chunk)
        files = [(node, (view, chunk, *([0] * len(p.trailing)))) for p, node in nodes]
        before = None if self.writable else tuple(self._signature(node, index) for node, index in files)
        if before is not None and None not in before and self._seen.get(key) == (before, record):  # type: ignore[comparison-overlap]
            from kdcache.store.verified import decode  # (store.py imports this module)

            data = decode(f"{self.path}: {nodes[0][1]} view {view} chunk {chunk}", read, self.backend)
            if tuple(self._signature(node, index) for node, index in files) == before:
                return data
        data = self._verified(nodes[0][1], read, record, view, chunk)
        if before is not None and None not in before and \
                tuple(self._signature(node, index) for node, index in files) == before:
            self._seen[key] = (before, record)  # type: ignore[assignment]
        return data

    def read_packed_chunk(self, teacher: str, view: int, chunk: int, verify: bool = True) -> np.ndarray:
        """One verified chunk of a compact encoding, its parts side by side per row (``Encoding.pack``)."""
        return self.encoding(teacher).pack(self.read_encoded_chunk(teacher, view, chunk, verify))
