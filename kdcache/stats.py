"""``kdcache stats``: statistics computed once from the cached logits and written into the store.

* ``teachers/<name>/stats/isats_tau`` float32 (V, N): ISATS τ* of every cached
  (view, sample) row (METHODS.md §8), attribute ``grid``;
* ``teachers/<name>/stats/class_table`` float32 (K, C, C): FGCR class tables
  m_c = mean of σ(t; τ0) over all cached rows of class c (METHODS.md §9), one
  per requested τ0, attribute ``tau0`` (the list) and ``rows``;
* ``teachers/<name>/stats/accuracy`` float32 (V,): teacher top-1 per view.

One pass over the store, chunk by chunk (memory: one chunk plus K·C² sums).
The arrays are written first and recorded in the teacher's card last, so an
interrupted run leaves no statistic that distill would trust; re-running is
idempotent (the same arrays, recomputed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcache import losses
from kdcache.errors import KdcacheError
from kdcache.progress import make_progress, rate_text
from kdcache.store import Store, WriterLock, utc_now

DEFAULT_GRID: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 8)


@dataclass
class StatsResult:
    teacher: str
    tau0: list[float]
    grid: list[float]
    accuracy_per_view: list[float]
    tau_star_histogram: dict[float, int]
    seconds: float


def compute_stats(
    path: str | Path,
    *,
    teacher: str | None = None,
    tau0: Sequence[float] = (3.0,),
    grid: Sequence[float] = DEFAULT_GRID,
    progress: bool = True,
) -> StatsResult:
    """Compute τ*, class tables and per-view accuracy for one teacher and store them."""
    import time

    tau0s = sorted({float(t) for t in tau0})
    if any(t <= 0 for t in tau0s) or not tau0s:
        raise KdcacheError(f"--tau0 values must be positive (got {list(tau0)})")
    grid_f = [float(g) for g in grid]
    if not grid_f or any(g <= 0 for g in grid_f):
        raise KdcacheError(f"--grid values must be positive (got {list(grid)})")
    t_start = time.perf_counter()
    store_path = Path(path)
    Store.open(store_path)  # clear errors for a missing or foreign store before locking
    with WriterLock(store_path):
        store = Store.open(store_path, mode="r+")
        name = store.require_complete(teacher)
        # Keep the tables asked for earlier: a second run adds τ0 values, never drops one.
        previous = store.teacher_card(name).get("stats", {}).get("class_table", {}).get("tau0", [])
        tau0s = sorted(set(tau0s) | {float(t) for t in previous})
        labels_all = store.labels()
        num_classes = int(store.logits(name).shape[2])
        grid_obj = store.grid
        V, N = store.num_views, store.num_samples
        tau_arr = store.group.create_array(
            f"{store.stats_group_path(name)}/isats_tau",
            shape=(V, N),
            chunks=(1, grid_obj.chunk_rows),
            dtype="float32",
            fill_value=np.nan,
            compressors=None,
            overwrite=True,
        )
        sums = np.zeros((len(tau0s), num_classes, num_classes), dtype=np.float64)
        counts = np.zeros(num_classes, dtype=np.int64)
        correct = np.zeros(V, dtype=np.int64)
        hist: dict[float, int] = {g: 0 for g in grid_f}
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"stats {name}", total=V * N, rate="")
            done = 0
            for v, j in store.iter_chunks():
                start, stop = grid_obj.bounds(j)
                t = torch.from_numpy(store.read_logits_chunk(name, v, j).astype(np.float32))
                y = torch.from_numpy(labels_all[start:stop])
                tau = losses.isats_tau_star(t, y, grid_f).to(torch.float32).numpy()
                tau_arr[v, start:stop] = tau
                values, n = np.unique(tau, return_counts=True)
                for value, k in zip(values, n):
                    hist[float(value)] = hist.get(float(value), 0) + int(k)
                for k, t0 in enumerate(tau0s):
                    s, c = losses.class_table_sums(t, y, num_classes, t0)
                    sums[k] += np.asarray(s, dtype=np.float64)
                    if k == 0:
                        counts += np.asarray(c, dtype=np.int64)
                correct[v] += int((t.argmax(dim=1) == y).sum())
                done += stop - start
                bar.update(task, advance=stop - start, rate=rate_text(done, time.perf_counter() - t_start, "rows"))
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise KdcacheError(
                f"class(es) {empty.tolist()[:10]} have no cached rows, so their FGCR class-table row is undefined; "
                "precompute over data that holds every class"
            )
        table = (sums / counts[None, :, None]).astype(np.float32)
        tau_arr.attrs.update({"grid": grid_f, "method": "ISATS tau* (METHODS.md section 8)"})
        stats_path = store.stats_group_path(name)
        store.group.create_array(
            f"{stats_path}/class_table", data=table, compressors=None, overwrite=True,
            attributes={"tau0": tau0s, "rows": "all cached (view, sample) rows, hard labels",
                        "method": "FGCR class table m_c (METHODS.md section 9)"},
        )
        accuracy = (correct / max(1, N)).astype(np.float32)
        store.group.create_array(f"{stats_path}/accuracy", data=accuracy, compressors=None, overwrite=True,
                                 attributes={"method": "teacher top-1 per view"})
        # Recorded last: distill trusts only statistics listed in the card.
        store.manifest["teachers"][name]["stats"] = {
            "isats_tau": {"grid": grid_f},
            "class_table": {"tau0": tau0s, "rows": "all cached rows"},
            "accuracy": accuracy.tolist(),
            "computed": utc_now(),
        }
        store.save_manifest()
    return StatsResult(
        teacher=name, tau0=tau0s, grid=grid_f, accuracy_per_view=accuracy.tolist(),
        tau_star_histogram=hist, seconds=time.perf_counter() - t_start,
    )


def format_stats(result: StatsResult) -> str:
    """Human summary of a stats run."""
    total = sum(result.tau_star_histogram.values()) or 1
    hist = ", ".join(f"τ*={g:g}: {n / total:.1%}" for g, n in sorted(result.tau_star_histogram.items()))
    acc = ", ".join(f"{a:.2%}" for a in result.accuracy_per_view[:8])
    return (
        f"teacher {result.teacher}: statistics written in {result.seconds:.1f}s\n"
        f"  ISATS τ* over grid {result.grid}: {hist}\n"
        f"  FGCR class tables for τ0 = {result.tau0}\n"
        f"  accuracy per view: {acc}{' ...' if len(result.accuracy_per_view) > 8 else ''}"
    )
