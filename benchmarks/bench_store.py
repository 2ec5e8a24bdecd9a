"""Store benchmarks: bytes per view per encoding/codec, and streaming read throughput.

Reads are measured in the distill access pattern (kdcache.loader: a window
shuffle over samples, one view per sample), through the real reader
(`CachedRows`, which checks every chunk against its checksum), side by side in
the same repeats with the same reader not verifying (what verification costs)
and an in-memory gather of the same rows in the same order from a preloaded
array (the ceiling).
The page cache is warmed first (the targets are for a warm cache).

    python benchmarks/bench_store.py            # C=100 and C=1000
    python benchmarks/bench_store.py --quick    # smaller, for a smoke run
    python benchmarks/bench_store.py --reads-only --repeats 7   # the read benchmark alone
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kdcache.loader import CachedRows, epoch_plan
from kdcache.store import ChunkGrid, DatasetRecord, Store, TeacherCard, ViewsRecord, default_chunk_rows
from kdcache.views import load_recipe


def model_like_logits(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    """Normal noise plus one large target logit: what a trained teacher emits."""
    x = rng.normal(0, 2, size=(rows, classes)).astype(np.float32)
    x[np.arange(rows), rng.integers(0, classes, rows)] += 12
    return x


def make_store(path: Path, n: int, c: int, v: int, encoding: str, codec: str, seed: int = 0) -> Store:
    rows = default_chunk_rows(c, n, np.dtype(encoding).itemsize, 64)
    recipe = load_recipe("none")
    store = Store.create(
        path,
        dataset=DatasetRecord(spec="synthetic", name="synthetic", split=None, num_samples=n, num_classes=c,
                              channels=1, fingerprint="sha256:bench"),
        labels=np.zeros(n, np.int64),
        views=ViewsRecord(seed=0, num_views=v, recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                          param_names=recipe.param_names(), chunk_rows=rows),
    )
    store.add_teacher("t", TeacherCard(spec="bench", num_classes=c, in_channels=1, render={}, encoding=encoding,
                                       codec=codec, micro_batch=64, input_size=[1, 1]))
    rng = np.random.default_rng(seed)
    grid = ChunkGrid(n, rows)
    for view in range(v):
        for j in range(grid.num_chunks):
            a, b = grid.bounds(j)
            data = model_like_logits(rng, b - a, c).astype(encoding)
            store.write_chunk("t", view, j, data, np.zeros((b - a, 0), np.int32))
    store.set_card("t", store.card("t").replace(status="complete"))
    return Store.open(path)


def bench_bytes(tmp: Path, n: int, c: int) -> None:
    print(f"\n## bytes per view, N={n:,}, C={c} (raw float32 = 4*C*N = {4 * c * n / 1e6:.2f} MB)")
    print(f"{'encoding':<9} {'codec':<11} {'MB/view':>8} {'bytes/row':>10} {'vs fp32':>8} {'write s':>8}")
    for encoding in ("float32", "float16"):
        for codec in ("none", "zstd", "blosc-zstd"):
            path = tmp / f"bytes-{encoding}-{codec}-{c}"
            t0 = time.perf_counter()
            store = make_store(path, n, c, 1, encoding, codec)
            dt = time.perf_counter() - t0
            size = store.logits_bytes("t")
            print(f"{encoding:<9} {codec:<11} {size / 1e6:>8.2f} {size / n:>10.1f} {size / (4 * c * n):>8.3f} {dt:>8.2f}")
            del store


def _timed(run) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(rows/s by the wall clock, CPU seconds of the whole process) of one pass ``run() -> rows``.

    CPU time counts the reader thread too and is far less sensitive than the wall
    clock to other programs competing for the cores.
    """
    c0, t0 = time.process_time(), time.perf_counter()
    rows = run()
    return rows / (time.perf_counter() - t0), time.process_time() - c0


def _store_pass(reader: CachedRows, plan, batch: int) -> int:  # type: ignore[no-untyped-def]
    rows = 0
    for out in reader.iterate(plan, batch):
        rows += out["teacher_logits"].shape[0]
    return rows


def bench_reads(tmp: Path, n: int, c: int, v: int, repeats: int, batch: int) -> None:
    """Read throughput with and without checksum verification, interleaved in the same repeats.

    Each repeat runs the readers back to back on the same plan (order rotated per
    repeat), so drift of the machine hits all of them alike; medians and the spread
    (min-max) show whether verification costs more than the noise. "Chunks seen
    before" is a reader that verified them on an earlier pass (it re-hashes only a
    chunk whose file changed); "first read" opens the store afresh, so every chunk is hashed.
    """
    store = make_store(tmp / f"read-{c}", n, c, v, "float16", "none")
    verified, unverified = CachedRows(store, "t"), CachedRows(store, "t", verify=False)
    import torch

    in_ram = torch.from_numpy(np.asarray(store.logits("t")[:]))  # (V, N, C) preloaded: the ceiling
    print(f"\n## streaming reads, N={n:,}, V={v}, C={c}, float16, batch {batch} (median of {repeats}, min-max)")
    for policy in ("cycle", "random"):
        rates: dict[str, list[float]] = {"verified": [], "first": [], "unverified": [], "ram": []}
        cpu: dict[str, list[float]] = {k: [] for k in rates}
        # Every pass uses the same plan, so "seen before" has seen every chunk it reads.
        plan = epoch_plan(0, 1, n, v, policy)
        order, views = torch.from_numpy(plan.order), torch.from_numpy(plan.views)

        def ram() -> int:
            for b in range(0, n, batch):
                idx = order[b : b + batch]
                _ = in_ram[views[idx], idx].float()  # the same float32 rows the reader yields
            return n

        runs = [("verified", lambda: _store_pass(verified, plan, batch)),
                # a fresh open: every chunk is hashed (a run's first pass over it)
                ("first", lambda: _store_pass(CachedRows(Store.open(store.path), "t"), plan, batch)),
                ("unverified", lambda: _store_pass(unverified, plan, batch)), ("ram", ram)]
        for r in range(repeats + 1):  # the first pass warms the page cache and is not counted
            for name, run in runs[r % 4:] + runs[: r % 4]:
                rate, seconds = _timed(run)
                if r:
                    rates[name].append(rate)
                    cpu[name].append(seconds)
        med = {k: statistics.median(x) for k, x in rates.items()}
        print(f"view policy {policy}: rows/s median (min-max) by the wall clock; CPU ms per pass median (min-max)")
        for name, label in (("unverified", "unverified"), ("verified", "verified, chunks seen before"),
                            ("first", "verified, first read (all hashed)"), ("ram", "in-memory gather")):
            x, c_ms = rates[name], [1e3 * t for t in cpu[name]]
            print(f"  {label:<34} {med[name]:>11,.0f} ({min(x):,.0f}-{max(x):,.0f})  x{med[name] / med['unverified']:.3f}"
                  f"   CPU {statistics.median(c_ms):>7,.0f} ms ({min(c_ms):,.0f}-{max(c_ms):,.0f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reads-only", action="store_true", help="skip the bytes-per-view part")
    args = p.parse_args()
    from kdcache.store import library_versions

    library_versions()  # import torch & co. once, outside every timed region
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.quick:
            bench_bytes(tmp, 8192, 100)
            bench_reads(tmp, 20000, 100, 2, 3, 256)
            return
        if not args.reads_only:
            bench_bytes(tmp, 50000, 100)
            bench_bytes(tmp, 20000, 1000)
        bench_reads(tmp, 200_000, 100, 4, args.repeats, 256)
        bench_reads(tmp, 50_000, 1000, 4, args.repeats, 256)


if __name__ == "__main__":
    main()
