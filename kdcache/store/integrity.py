"""Whole-store integrity check (``kdcache verify``): every chunk written, readable, matching its record.

:func:`check_chunks` hashes every chunk a reader could use (view parameters,
each teacher's logits, each statistic its card lists) and compares it with
its record. A damaged statistic is named with the ``kdcache stats`` command
that rewrites it (:func:`kdcache.store.stat_io.repair`): precompute never
touches statistics.
"""

from __future__ import annotations

import numpy as np

from kdcache.errors import StoreError
from kdcache.store import layout, stat_io
from kdcache.store.chunks import checksum
from kdcache.store.store import Store
from kdcache.store.verified import UNDECODABLE


def check_chunks(store: Store, names: list[str]) -> tuple[int, list[str]]:
    """Every chunk of the view parameters, of ``names``' logits and of the statistics their cards list
    that is unwritten, unreadable, corrupted or (logits) not finite, as lines; and how many logit chunks
    were checked."""
    problems: list[str] = []
    checked = 0
    grid = store.grid
    view_sums = np.asarray(store.view_checksums()[:])
    arr = store.params()  # outside the loop: damaged metadata is its own one-line error, not a damaged chunk
    for v, j in store.iter_chunks():
        start, stop = grid.bounds(j)
        where = f"{layout.VIEW_PARAMS} view {v} chunk {j} (rows {start}-{stop - 1})"
        if view_sums[v, j] == 0:
            problems.append(f"{where} was never written")
            continue
        try:
            params = np.asarray(arr[v, start:stop])
        except UNDECODABLE as exc:  # cut short
            problems.append(f"{where} cannot be read ({type(exc).__name__})")
            continue
        if checksum(params) != int(view_sums[v, j]):
            problems.append(f"{where}: checksum mismatch (corrupted)")
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
                problems.append(f"{where}: checksum mismatch (corrupted)")
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
                problems.append(f"{node} {where}: checksum mismatch (corrupted); {fix}")
    return problems
