"""Statistic arrays of a teacher: verified reads, and a writer that replaces them atomically for readers.

A statistic is trusted only when the teacher's card lists it; the card entry
names its array (``node``) and the array's ``checksums`` attribute holds one
record per chunk. :class:`StatWriter` never touches an array a card listed
in this run or the one before:

1. the new arrays are written, with their checksums, and fsynced: under the
   statistic's plain name when the card does not list it yet, else under a
   fresh name (``<name>.<token>``), a new generation;
2. the card is switched to them in one atomic manifest write;
3. arrays neither the new card nor the card this run started from lists are
   removed (generations two runs old, leftovers of killed runs).

A reader follows the node names of the card it opened: the generation it
uses stays on disk until the next ``kdcache stats`` run after the one that
replaced it. However a run is interrupted, every statistic the card lists is
complete and unchanged, and a re-run starts again from step 1.

A per-row statistic is (V, N) in the logits' chunks, or (V, N, K) with one
column per parameter setting (ISATS τ* for K grids); a loss reads one column,
named by a row key (:func:`row_key`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import zarr

from kdcache.errors import StoreCorruptError, StoreError, StoreIncompleteError
from kdcache.store import layout
from kdcache.store.chunks import checksum, utc_now
from kdcache.store.store import Store
from kdcache.store.verified import UNDECODABLE, decode


# --------------------------------------------------------------------------- statistic nodes


def repair(store: Store, teacher: str) -> str:
    """What rewrites a damaged statistic of ``teacher``: re-running ``kdcache stats`` with the parameters
    of every statistic its card lists (a new generation, see the module docstring); never precompute,
    which does not touch statistics."""
    # kdcache.stats builds on this module, so it is imported when an error needs it, not at import time.
    from kdcache.stats.registry import repair_command

    return f"re-run `{repair_command(store, teacher)}` to rewrite it"


def stat_array(store: Store, teacher: str, node: str) -> zarr.Array:
    """The array of statistic node ``node``; when it is missing or its metadata is damaged, one line
    ending in the ``kdcache stats`` command that rewrites it."""
    key = layout.stat(teacher, node)
    try:
        if key in store.group:
            return store.group[key]  # type: ignore[return-value]
    except UNDECODABLE as exc:  # its zarr.json is damaged (the missing-array error below is raised outside)
        raise StoreCorruptError(
            f"{store.path}: the metadata of {key} cannot be read ({type(exc).__name__}); {repair(store, teacher)}"
        ) from None
    raise StoreError(f"{store.path} lacks {key}; the store is damaged: {repair(store, teacher)}")


def node_names(store: Store, teacher: str) -> list[str]:
    """Every statistic array present under the teacher (listed in its card or not)."""
    key = layout.stats_dir(teacher)
    if key not in store.group:
        return []
    return sorted(name for name, _ in store.group[key].arrays())  # type: ignore[union-attr]


def _writable(store: Store) -> None:
    if not store.writable:
        raise StoreError(f"{store.path} is open read-only; open it with mode='r+' under the writer lock")
    store._require_writable()  # and, on an object store, that this process still holds the lease


def remove_node(store: Store, teacher: str, node: str) -> None:
    _writable(store)
    store.backend.remove(layout.stat(teacher, node))


def create_node(store: Store, teacher: str, node: str, **kwargs: Any) -> zarr.Array:
    _writable(store)
    try:
        return store.group.create_array(layout.stat(teacher, node), overwrite=True, **kwargs)
    except store.backend.errors as exc:
        raise store.backend.map_error(exc, layout.stat(teacher, node)) from exc


# --------------------------------------------------------------------------- reading


def _hex(value: int) -> str:
    return f"{value:016x}"


def listed(store: Store, teacher: str) -> dict[str, dict[str, Any]]:
    """The statistics the card lists: name -> entry (parameters, ``node``, ``computed``)."""
    return {k: dict(v) for k, v in store.card(teacher).stats.items()}


def _node(entry: dict[str, Any], name: str) -> str:
    return str(entry.get("node") or name)


def node_of(store: Store, teacher: str, name: str) -> str:
    """The store node of listed statistic ``name``: the generation its card names."""
    return layout.stat(teacher, _node(listed(store, teacher)[name], name))


def is_per_row(store: Store, arr: zarr.Array) -> bool:
    """Whether ``arr`` is a per-row statistic: (V, N) in the logits' chunks, or (V, N, K) whose chunks hold
    all K columns of those rows; else it is stored whole."""
    rows = (store.num_views, store.num_samples), (1, store.grid.chunk_rows)
    if arr.ndim == 2:
        return (tuple(arr.shape), tuple(arr.chunks)) == rows
    return arr.ndim == 3 and (tuple(arr.shape[:2]), tuple(arr.chunks)) == (rows[0], (*rows[1], arr.shape[2]))


def row_key(name: str, column: int | None = None) -> str:
    """How a loader names what it reads of per-row statistic ``name``: the whole (V, N) array, or column
    ``column`` of a (V, N, K) one (``isats_tau:1``); :class:`RowStatReader` takes it."""
    return name if column is None else f"{name}:{column}"


def _parse_row_key(key: str) -> tuple[str, int | None]:
    name, sep, column = key.partition(":")
    return (name, int(column)) if sep else (name, None)


def open_stat(store: Store, teacher: str, name: str) -> zarr.Array:
    """The array of listed statistic ``name``; a clear error when the card does not list it."""
    entries = listed(store, teacher)
    if name not in entries:
        raise StoreIncompleteError(f"{store.path}: teacher {teacher!r} has no statistic {name!r}; run `kdcache stats`")
    return stat_array(store, teacher, _node(entries[name], name))


def records(store: Store, teacher: str, name: str, arr: zarr.Array) -> list[list[int]]:
    """The chunk records of statistic ``name`` (array ``arr``): ``[view][chunk]``, or ``[[record]]`` for one
    stored whole; a clear error when they are missing or not hex checksums."""
    raw = arr.attrs.get(layout.STAT_CHECKSUMS_ATTR)
    try:
        if isinstance(raw, list) and raw:
            return [[int(h, 16) for h in row] for row in raw]
    except (TypeError, ValueError):
        pass  # an edited attribute: reported below like a missing one
    # Written by a kdcache that kept no checksums for statistics (or edited since): recompute them.
    raise StoreIncompleteError(
        f"{store.path}: statistic {name!r} of teacher {teacher!r} has no readable checksum records; "
        f"{repair(store, teacher)}"
    )


class RowStatReader:
    """Verified chunk reads of a per-row statistic: the same grid as the logits.

    ``key`` is a :func:`row_key`: a statistic's name reads its chunks whole, ``name:k`` column k of a
    (V, N, K) one. A chunk is checked whole (all K columns, as its record covers them).
    """

    def __init__(self, store: Store, teacher: str, key: str) -> None:
        name, self.column = _parse_row_key(key)
        self.store = store
        self.array = open_stat(store, teacher, name)
        self.node = node_of(store, teacher, name)
        self.records = records(store, teacher, name, self.array)
        self.fix = repair(store, teacher)  # a damaged chunk is rewritten by `kdcache stats`, not precompute
        if not is_per_row(store, self.array) or (self.column is not None and (
                self.array.ndim != 3 or not 0 <= self.column < self.array.shape[2])):
            raise StoreCorruptError(
                f"{store.path}: {self.node} has shape {tuple(self.array.shape)}, chunks {tuple(self.array.chunks)}, "
                f"not a per-row statistic with the column its card names ({key}); {self.fix}")

    def read_chunk(self, view: int, chunk: int, verify: bool = True) -> np.ndarray:
        start, stop = self.store.grid.bounds(chunk)
        if not verify:
            data = np.asarray(self.array[view, start:stop])
        else:
            record = self.records[view][chunk] if view < len(self.records) and chunk < len(self.records[view]) else 0
            index = (view, chunk) if self.column is None else (view, chunk, 0)
            data = self.store.verify_chunk(self.node, lambda: np.asarray(self.array[view, start:stop]), record, view,
                                           chunk, index, fix=self.fix)
        return data if self.column is None else np.ascontiguousarray(data[:, self.column])


def read_static(store: Store, teacher: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A whole (one-chunk) statistic, checked against its record, and its attributes."""
    arr = open_stat(store, teacher, name)
    node = node_of(store, teacher, name)
    fix = repair(store, teacher)
    data = decode(f"{store.path}: {node} chunk 0 (stored whole)", lambda: np.asarray(arr[...]), store.backend, fix)
    sums = records(store, teacher, name, arr)
    store.verify_chunk(node, lambda: data, sums[0][0] if sums and sums[0] else 0, 0, 0, fix=fix,
                       label="chunk 0 (stored whole)")
    return data, dict(arr.attrs)


def describe(store: Store, teacher: str) -> dict[str, dict[str, Any]]:
    """Shape, dtype and attributes (checksums left out) of every listed statistic, for ``kdcache info``."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in listed(store, teacher).items():
        try:
            arr = stat_array(store, teacher, _node(entry, name))
        except Exception:  # noqa: BLE001 - info reports a missing array instead of failing
            out[name] = {"shape": [], "dtype": "missing", **entry}
            continue
        attrs = {k: v for k, v in arr.attrs.items() if k != layout.STAT_CHECKSUMS_ATTR}
        out[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), **attrs}
    return out


class StatWriter:
    """Writes one new generation of a teacher's statistics; :meth:`publish` makes it visible (see module)."""

    def __init__(self, store: Store, teacher: str) -> None:
        self.store = store
        self.teacher = teacher
        self.token = f"{time.time_ns():x}"
        self._arrays: dict[str, tuple[zarr.Array, list[list[str]]]] = {}
        # What the card lists when this run starts: readers may be using it, so it is kept.
        self._before = {_node(e, n) for n, e in listed(store, teacher).items()}
        self._nodes: dict[str, str] = {}

    def _fresh(self, name: str) -> str:
        """The node of this run's ``name``: its plain name the first time, a new generation after."""
        if name not in self._nodes:
            first = name not in listed(self.store, self.teacher) and name not in self._before
            self._nodes[name] = name if first else f"{name}.{self.token}"
        return self._nodes[name]

    def per_row(self, name: str, dtype: str, attrs: dict[str, Any], columns: int | None = None) -> None:
        """Start per-row statistic ``name``: a (V, N) array chunked like the logits, or (V, N, ``columns``)
        with every column of a row in its chunk, filled with NaN."""
        s = self.store
        shape, chunks = (s.num_views, s.num_samples), (1, s.grid.chunk_rows)
        if columns is not None:
            shape, chunks = (*shape, columns), (*chunks, columns)
        arr = create_node(s, self.teacher, self._fresh(name), shape=shape, chunks=chunks, dtype=dtype,
                          fill_value=np.nan, compressors=None, attributes=attrs)
        self._arrays[name] = (arr, [["0" * 16] * s.grid.num_chunks for _ in range(s.num_views)])

    def write_rows(self, name: str, view: int, chunk: int, values: np.ndarray) -> None:
        arr, records = self._arrays[name]
        start, stop = self.store.grid.bounds(chunk)
        values = np.asarray(values, dtype=arr.dtype)
        try:
            arr[view, start:stop] = values
        except self.store.backend.errors as exc:  # disk full names the file, as create_node does
            node = layout.stat(self.teacher, self._fresh(name))
            raise self.store.backend.map_error(exc, layout.chunk_key(node, view, chunk)) from exc
        records[view][chunk] = _hex(checksum(values))

    def static(self, name: str, data: np.ndarray, attrs: dict[str, Any]) -> None:
        """Write static statistic ``name`` whole (one chunk)."""
        arr = create_node(self.store, self.teacher, self._fresh(name), data=data, compressors=None,
                                          attributes=attrs)
        self._arrays[name] = (arr, [[_hex(checksum(np.asarray(data, dtype=arr.dtype)))]])

    def publish(self, entries: dict[str, dict[str, Any]]) -> None:
        """List ``entries`` (name -> parameters) in the card, replacing those names atomically."""
        s, t = self.store, self.teacher
        for name, (arr, records) in self._arrays.items():
            arr.attrs[layout.STAT_CHECKSUMS_ATTR] = records
            s.backend.sync(layout.stat(t, self._fresh(name)))  # step 1 ends with the new arrays durable
        now = utc_now()
        new = {name: {**params, "node": self._fresh(name), "computed": now} for name, params in entries.items()}
        self._set(new)  # step 2: new readers use the new arrays
        self._prune()  # step 3

    def _set(self, entries: dict[str, dict[str, Any]]) -> None:
        card = self.store.card(self.teacher)
        self.store.set_card(self.teacher, card.replace(stats={**card.stats, **entries}))

    def _prune(self) -> None:
        keep = self._before | {_node(e, n) for n, e in listed(self.store, self.teacher).items()}
        for node in node_names(self.store, self.teacher):
            if node not in keep:
                remove_node(self.store, self.teacher, node)
