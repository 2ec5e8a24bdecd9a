"""Whole-store integrity: the check of ``kdcache verify``, and the repair of view parameters by precompute.

:func:`check_chunks` hashes every chunk a reader could use (view parameters,
each teacher's logits, each statistic its card lists) and compares it with
its record. What rewrites a damaged chunk differs by node: logits are scored
again by re-running the same ``kdcache precompute``
(:meth:`~kdcache.store.Store.pending_chunks`), view parameters are drawn again
from the seed by the same run (:func:`repair_params`), and statistics are
rewritten by ``kdcache stats`` (:func:`kdcache.store.stat_io.repair`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from kdcache.errors import StoreCorruptError, StoreError
from kdcache.store import layout, stat_io
from kdcache.store.chunks import checksum, chunk_missing
from kdcache.store.store import Store
from kdcache.store.verified import UNDECODABLE, precompute_fix
from kdcache.views import sample_params

if TYPE_CHECKING:
    from kdcache.data import DataSource


def check_chunks(store: Store, names: list[str]) -> tuple[int, list[str]]:
    """Every chunk of the view parameters, of ``names``' logits and of the statistics their cards list
    that is unwritten, unreadable, corrupted or (logits) not finite, as lines; and how many logit chunks
    were checked."""
    problems: list[str] = []
    checked = 0
    grid = store.grid
    labels_problem = store.labels_problem(store.labels(verify=False))
    if labels_problem:
        problems.append(f"{labels_problem}; {precompute_fix(store.path)} (it rewrites them from the dataset)")
    for v, j, problem in _params_problems(store):
        if problem is not None:
            start, stop = grid.bounds(j)
            problems.append(f"{layout.VIEW_PARAMS} view {v} chunk {j} (rows {start}-{stop - 1}){problem}")
    for name in names:
        sums = np.asarray(store.logit_checksums(name)[:])
        for v, j in store.iter_chunks():
            checked += 1
            where = f"{layout.logits(name)} view {v} chunk {j} (rows {grid.bounds(j)[0]}-{grid.bounds(j)[1] - 1})"
            if sums[v, j] == 0:
                problems.append(f"{where} was never written (interrupted run?)")
                continue
            try:
                parts = store.read_encoded_chunk(name, v, j, verify=False)  # every part of its encoding
            except (ValueError, OSError, RuntimeError) as exc:  # undecodable bytes
                problems.append(f"{where} cannot be read: {exc}")
                continue
            if checksum(*parts.values()) != int(sums[v, j]):
                lost = any(chunk_missing(store._array(node), (v, j, *([0] * len(p.trailing))))
                           for p, node in store.part_nodes(name))
                problems.append(f"{where} is missing (its chunk was deleted or lost)" if lost
                                else f"{where}: checksum mismatch (corrupted)")
            elif not all(np.isfinite(p).all() for p in parts.values() if p.dtype.kind == "f"):
                problems.append(f"{where}: holds NaN/Inf")
        if store.card(name).status != "complete":
            problems.append(f"teacher {name} is not complete (status {store.card(name).status})")
        problems += check_stats(store, name)
    return checked, problems


def check_stats(store: Store, teacher: str) -> list[str]:
    """Every chunk of every statistic ``teacher``'s card lists that is missing, unreadable or no longer
    matches its record, as lines ending in the ``kdcache stats`` command that rewrites it."""
    problems: list[str] = []
    grid = store.grid
    fix = stat_io.repair(store, teacher)
    for name in stat_io.listed(store, teacher):
        node = stat_io.node_of(store, teacher, name)
        try:
            arr = stat_io.open_stat(store, teacher, name)
            sums = stat_io.records(store, teacher, name, arr)
        except StoreError as exc:  # a missing array, damaged metadata, no records: already one line each
            problems.append(str(exc))
            continue
        # (how the chunk is named, its (view, start, stop) or None for the whole array, its record)
        chunks: list[tuple[str, tuple[int, int, int] | None, int]]
        if stat_io.is_per_row(store, arr):
            chunks = [(f"view {v} chunk {j} (rows {grid.bounds(j)[0]}-{grid.bounds(j)[1] - 1})",
                       (v, *grid.bounds(j)), sums[v][j] if v < len(sums) and j < len(sums[v]) else 0)
                      for v, j in store.iter_chunks()]
        else:  # stored whole: one chunk, one record
            chunks = [("chunk 0 (stored whole)", None, sums[0][0] if sums[0] else 0)]
        for where, rows, record in chunks:
            if record == 0:
                problems.append(f"{node} {where} has no checksum record; {fix}")
                continue
            try:
                data = np.asarray(arr[...] if rows is None else arr[rows[0], rows[1]:rows[2]])
            except UNDECODABLE as exc:  # cut short
                problems.append(f"{node} {where} cannot be read ({type(exc).__name__}); {fix}")
                continue
            if checksum(data) != record:
                index = (0,) * arr.ndim if rows is None else (rows[0], rows[1] // grid.chunk_rows) + (0,) * (arr.ndim - 2)
                problems.append(f"{node} {where} is missing; {fix}" if chunk_missing(arr, index)
                                else f"{node} {where}: checksum mismatch (corrupted); {fix}")
    return problems


def _params_problems(store: Store) -> Iterator[tuple[int, int, str | None]]:
    """Each chunk of ``views/params`` with what is wrong with it, as the tail of a report line (None:
    intact): never written, cut short (zarr cannot decode it), or no longer hashing to its record."""
    sums = np.asarray(store.view_checksums()[:])
    arr = store.params()  # outside the loop: damaged metadata is its own one-line error, not a damaged chunk
    for v, j in store.iter_chunks():
        if sums[v, j] == 0:
            yield v, j, " was never written"
            continue
        start, stop = store.grid.bounds(j)
        try:
            params = np.asarray(arr[v, start:stop])
        except UNDECODABLE as exc:  # cut short
            yield v, j, f" cannot be read ({type(exc).__name__})"
            continue
        if checksum(params) == int(sums[v, j]):
            yield v, j, None
        else:
            yield v, j, " is missing" if chunk_missing(arr, (v, j, 0)) else ": checksum mismatch (corrupted)"


def damaged_params(store: Store) -> list[tuple[int, int]]:
    """The recorded chunks of ``views/params`` whose bytes no longer hash to their record (a flipped bit,
    a file cut short or lost), in (view, chunk) order. Chunks never recorded are not listed: the run
    that scores their logits draws and writes them."""
    return [(v, j) for v, j, problem in _params_problems(store)
            if problem is not None and problem != " was never written"]


def repair_params(store: Store, source: DataSource) -> int:
    """Rewrite every damaged chunk of ``views/params`` (:func:`damaged_params`); returns how many.

    A view's parameters are a pure function of (seed, sample, view) and the
    recipe, so they are drawn again; the record was computed from the
    parameters the logits were scored on, so a draw is written only when it
    hashes to that record. One that does not (a store whose parameters were
    drawn by another NumPy or tool) cannot be re-derived and is refused.
    Call it under the writer lock, on a store opened for writing.
    """
    chunks = damaged_params(store)
    if not chunks:
        return 0
    store._require_writable()  # and, on an object store, that this process still holds the lease
    recipe, seed, grid = store.recipe(), store.views.seed, store.grid
    arr = store.params()
    sums = np.asarray(store.view_checksums()[:])
    for v, j in chunks:
        start, stop = grid.bounds(j)
        drawn = np.stack([sample_params(recipe, seed, i, v, source.image_size(i), source) for i in range(start, stop)])
        # as stored (packed int16 from format 2 on): the record hashes the bytes on disk
        drawn = store.param_layout.to_disk(drawn.reshape(stop - start, len(store.views.param_names)))
        if checksum(drawn) != int(sums[v, j]):
            raise StoreCorruptError(
                f"{store.path}: {layout.VIEW_PARAMS} view {v} chunk {j} is damaged and the seed no longer draws "
                "the parameters it recorded (made by another NumPy or tool), so it cannot be rewritten; "
                "precompute the store again into a new --out"
            )
        target = layout.chunk_key(layout.VIEW_PARAMS, v, j, 0)
        with store.backend.guard(target):
            arr[v, start:stop] = drawn
            store.backend.sync(target)  # durable before the run that trusts it goes on
    return len(chunks)

