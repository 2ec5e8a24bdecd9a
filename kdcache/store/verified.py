"""Checksum-verified chunk reads: the part of :class:`kdcache.store.Store` that reads what a run uses.

:class:`VerifiedReads` is a mixin of :class:`~kdcache.store.Store`. Every
logits, parameters or statistic chunk a reader uses is hashed and compared
with the completion record written after it, so a damaged or torn store
stops a run with one line naming the node, view and chunk; bytes zarr cannot
decode at all are reported the same way (:func:`decode`). A read-only store
remembers which chunk files it verified, so a chunk read again in the same
process is hashed again only if its file changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdcache import encodings
from kdcache.errors import StoreCorruptError, StoreIncompleteError
from kdcache.store import layout
from kdcache.store.chunks import checksum, chunk_missing

if TYPE_CHECKING:
    from pathlib import Path

    from kdcache.store.backend import Backend
    from kdcache.store.location import Location

    import zarr

    from kdcache.store.chunks import ChunkGrid
    from kdcache.store.manifest import TeacherCard
    from kdcache.store.view_params import ParamLayout

# What zarr raises for bytes it cannot decode: a zstd frame cut short (RuntimeError), an uncompressed
# chunk of the wrong size (ValueError from reshape), damaged JSON metadata (JSONDecodeError, a ValueError).
UNDECODABLE = (ValueError, RuntimeError, TypeError)


def precompute_fix(root: Path | Location | Backend) -> str:
    """What rewrites a damaged chunk of logits or of ``views/params``: the precompute that made it, whose
    re-run finds such chunks by their records (``Store.pending_chunks``, ``integrity.repair_params``)."""
    return f"run `kdcache verify {root}`, then re-run the same `kdcache precompute` to rewrite it"


def decode(where: str, read: Any, root: Backend, fix: str | None = None) -> Any:
    """``read()``, with bytes that cannot be decoded reported as :class:`StoreCorruptError` naming ``where``
    (and, on an object store, a failed request as one line naming the store and its endpoint:
    :meth:`Backend.map_error`; a local OSError propagates as raised, naming its file).

    ``fix`` is what rewrites the chunk (the error's last words); by default the precompute that made it.
    """
    try:
        return read()
    except UNDECODABLE as exc:
        raise StoreCorruptError(
            f"{where} cannot be decoded ({type(exc).__name__}: {str(exc)[:80]}); the store is damaged: "
            f"{fix or precompute_fix(root)}"
        ) from None
    except root.request_errors as exc:
        raise root.map_error(exc, "") from None


class VerifiedReads:
    """The verified-read half of :class:`~kdcache.store.Store` (it provides the attributes declared here)."""

    if TYPE_CHECKING:
        @property
        def path(self) -> Path | Location: ...
        location: Location
        backend: Backend
        writable: bool
        _seen: dict[Any, Any]

        @property
        def grid(self) -> ChunkGrid: ...
        def card(self, name: str | None = None) -> TeacherCard: ...
        def logits(self, teacher: str) -> zarr.Array: ...
        def params(self) -> zarr.Array: ...
        @property
        def param_layout(self) -> ParamLayout: ...
        def _record(self, sums_node: str, view: int, chunk: int) -> int: ...
        def _array(self, node: str) -> zarr.Array: ...
        def read_encoded_chunk(self, teacher: str, view: int, chunk: int, verify: bool = True) -> dict[str, np.ndarray]: ...

    def _signature(self, node: str, index: tuple[int, ...]) -> tuple[int, int, int] | None:
        # None on an object store: every read is hashed (a HEAD per chunk costs a round trip).
        return self.backend.signature(layout.chunk_key(node, *index))

    def _verified(self, node: str, read: Any, record: int, view: int, chunk: int,
                  index: tuple[int, ...] | None = None, fix: str | None = None,
                  label: str | None = None) -> np.ndarray:
        """``read()`` (one chunk), checked against ``record``; raise naming the chunk.

        ``fix`` is the command that rewrites the chunk, ending the error (by
        default the precompute that made it: right for logits and view
        parameters, not for a statistic). ``label`` names the chunk in the
        error instead of its view, chunk and rows (a statistic stored whole).
        A read-only store remembers the chunk files it verified: a chunk read
        again (a later epoch, a window sharing the chunk) is hashed again only
        if its file changed since (inode, size, modification time).
        """
        start, stop = self.grid.bounds(chunk)
        where = f"{self.path}: {node} {label or f'view {view} chunk {chunk} (rows {start}-{stop - 1})'}"
        if record == 0:
            raise StoreIncompleteError(
                f"{where} was never written; {fix or 're-run the `kdcache precompute` that made it'}")
        key = (node, view, chunk)
        before = self._signature(node, index) if index is not None and not self.writable else None
        data = decode(where, read, self.backend, fix)
        if before is not None and self._seen.get(key) == (before, record) and self._signature(node, index) == before:
            return data
        if (checksum(*data.values()) if isinstance(data, dict) else checksum(data)) != record:
            if index is not None and chunk_missing(self._array(node), index):  # lost, not changed
                raise StoreCorruptError(f"{where} is missing (its chunk was deleted or lost); "
                                        f"{fix or precompute_fix(self.path)}")
            raise StoreCorruptError(
                f"{where} does not match its checksum (corrupted); {fix or precompute_fix(self.path)}")
        if before is not None and self._signature(node, index) == before:
            self._seen[key] = (before, record)
        return data

    def read_logits_chunk(self, teacher: str, view: int, chunk: int, verify: bool = True,
                          temperature: float = 1.0, tail: str = "temperature") -> np.ndarray:
        """Chunk ``chunk`` of view ``view`` as dense (rows, C) logits, checked against its record.

        float16/float32 come back in the stored dtype; other encodings are
        decoded (float32) by their documented rule, at ``temperature`` for
        ``topk`` (``tail``: ``temperature``-aware or ``constant`` fill) and as
        pseudo-logits at the stored temperature for ``sample`` (docs/encodings.md).
        """
        card = self.card(teacher)
        enc = encodings.parse(card.encoding)
        if not enc.lossless_dense:
            parts = self.read_encoded_chunk(teacher, view, chunk, verify)
            return enc.decode(parts, card.num_classes, temperature=temperature, tail=tail)
        start, stop = self.grid.bounds(chunk)
        arr = self.logits(teacher)
        if not verify:
            return np.asarray(arr[view, start:stop])
        record = self._record(layout.logit_checksums(teacher), view, chunk)
        return self._verified(layout.logits(teacher), lambda: np.asarray(arr[view, start:stop]), record, view,
                              chunk, (view, chunk, 0))

    def read_params_chunk(self, view: int, chunk: int, verify: bool = True) -> np.ndarray:
        """Recorded view parameters (rows, P) int32 of one chunk, checked against its record (which hashes
        the stored columns: packed int16 from format 2 on), then unpacked."""
        start, stop = self.grid.bounds(chunk)
        arr = self.params()
        if not verify:
            return self.param_layout.from_disk(np.asarray(arr[view, start:stop]))
        stored = self._verified(layout.VIEW_PARAMS, lambda: np.asarray(arr[view, start:stop]),
                                self._record(layout.VIEW_CHECKSUMS, view, chunk), view, chunk, (view, chunk, 0))
        return self.param_layout.from_disk(stored)

    def verify_chunk(self, node: str, read: Any, record: int, view: int, chunk: int,
                     index: tuple[int, ...] | None = None, fix: str | None = None,
                     label: str | None = None) -> np.ndarray:
        """``read()`` (chunk ``chunk`` of view ``view`` of ``node``, zarr chunk ``index``) checked against
        its ``record``; raises naming it, ending with ``fix`` (the command that rewrites it) when given,
        naming it by ``label`` when given (see :meth:`_verified`)."""
        return self._verified(node, read, record, view, chunk, index, fix, label)
