"""Whole-store integrity check (``kdcache verify``): every chunk written, readable, matching its record."""

from __future__ import annotations

import numpy as np

from kdcache.store import layout
from kdcache.store.chunks import checksum
from kdcache.store.store import Store


def check_chunks(store: Store, names: list[str]) -> tuple[int, list[str]]:
    """Every chunk of the view parameters and of ``names``' logits that is unwritten, unreadable,
    corrupted or not finite, as lines; and how many logit chunks were checked."""
    problems: list[str] = []
    checked = 0
    grid = store.grid
    view_sums = np.asarray(store.view_checksums()[:])
    for v, j in store.iter_chunks():
        where = f"{layout.VIEW_PARAMS} view {v} chunk {j} (rows {grid.bounds(j)[0]}-{grid.bounds(j)[1] - 1})"
        if view_sums[v, j] == 0:
            problems.append(f"{where} was never written")
        elif checksum(store.read_params_chunk(v, j, verify=False)) != int(view_sums[v, j]):
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
    return checked, problems
