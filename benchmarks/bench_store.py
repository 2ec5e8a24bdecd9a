"""Store benchmarks: bytes per view per encoding/codec, and streaming read throughput.

Reads are measured in the distill access pattern (kdcache.distill.cached_rows: a window
shuffle over samples, one view per sample, float32 rows out), side by side
in the same repeats, on the same plan:

* ``memmap``: the same logits as one raw float16 file (V, N, C) on the same
  disk, rows gathered with a plain ``numpy.memmap`` and converted to float32:
  the physical bound of reading these rows from this disk (with the page cache
  warm, as the targets are);
* ``plain zarr``: the same rows read from the store's logits array with plain
  zarr (``array.oindex[view, samples]`` per view of each batch): what a user
  without kdcache's reader would write;
* ``unverified``: kdcache's reader (``CachedRows``) without checksums;
* ``verified, seen``: kdcache's reader, which checks every chunk against its
  checksum, on chunks it verified before (every epoch after a view's first);
* ``verified, first``: a freshly opened store, every chunk hashed (a run's
  first pass over a view).

Every reader's rate is also given as a ratio to ``memmap`` in the same repeat.
The first pass warms the page cache and is not counted.

    python benchmarks/bench_store.py            # C=100 and C=1000
    python benchmarks/bench_store.py --reads-only --repeats 9
    python benchmarks/bench_store.py --smoke    # seconds, for the tests
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr

from benchlib import Figures, add_common_args
from kdcache.distill.cached_rows import CachedRows, epoch_plan
from kdcache.store import ChunkGrid, DatasetRecord, Store, TeacherCard, ViewsRecord, default_chunk_rows
from kdcache.views import load_recipe

READERS = {  # figure key -> label in the printed table
    "memmap": "numpy.memmap of the same logits (bound)",
    "plain zarr": "plain zarr, oindex per batch and view",
    "unverified": "kdcache reader, unverified",
    "verified, seen": "kdcache reader, chunks verified before",
    "verified, first": "kdcache reader, first read (all hashed)",
}


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


def bench_bytes(tmp: Path, n: int, c: int, figures: Figures) -> None:
    print(f"\n## bytes per view, N={n:,}, C={c} (raw float32 = 4*C*N = {4 * c * n / 1e6:.2f} MB)")
    print(f"{'encoding':<9} {'codec':<11} {'MB/view':>8} {'bytes/row':>10} {'vs fp32':>8} {'write s':>8}")
    for encoding in ("float32", "float16"):
        for codec in ("none", "zstd", "blosc-zstd"):
            path = tmp / f"bytes-{encoding}-{codec}-{c}"
            t0 = time.perf_counter()
            store = make_store(path, n, c, 1, encoding, codec)
            dt = time.perf_counter() - t0
            size = store.logits_bytes("t")
            key = f"C={c}/{encoding}/{codec}"
            figures.add(f"bytes/{key}/bytes per row", size / n, "B")
            figures.add(f"bytes/{key}/write s", dt, "s")
            print(f"{encoding:<9} {codec:<11} {size / 1e6:>8.2f} {size / n:>10.1f} {size / (4 * c * n):>8.3f} {dt:>8.2f}")
            del store
    figures.config(**{f"bytes_N_C={c}": n})


def _timed(run: Callable[[], int]) -> tuple[float, float]:
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


def memmap_rows(array: np.memmap, views: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return array[views, idx]


def plain_zarr_rows(array: zarr.Array, views: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The rows (views[i], idx[i]) of a (V, N, C) zarr array, one orthogonal selection per view."""
    out = np.empty((len(idx), array.shape[2]), dtype=array.dtype)
    for v in np.unique(views):
        at = np.flatnonzero(views == v)
        out[at] = array.oindex[int(v), idx[at]]
    return out


def _gather_pass(rows_of, array, order: np.ndarray, views: np.ndarray, batch: int) -> int:  # type: ignore[no-untyped-def]
    """The plan's rows, batch by batch, as float32 tensors (what the distill reader yields)."""
    rows = 0
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        out = torch.from_numpy(np.ascontiguousarray(rows_of(array, views[idx], idx))).float()
        rows += out.shape[0]
    return rows


def bench_reads(tmp: Path, n: int, c: int, v: int, repeats: int, batch: int, figures: Figures) -> None:
    """Read throughput of every reader, interleaved in the same repeats (order rotated per repeat), so
    drifts of the machine hit all of them alike; medians and the spread (min-max) show what is noise."""
    store = make_store(tmp / f"read-{c}", n, c, v, "float16", "none")
    verified, unverified = CachedRows(store, "t"), CachedRows(store, "t", verify=False)
    raw = tmp / f"read-{c}.f16"
    np.asarray(store.logits("t")[:]).tofile(raw)  # the same logits, one raw (V, N, C) file on the same disk
    memmap = np.memmap(raw, dtype=np.float16, mode="r", shape=(v, n, c))
    plain = zarr.open_group(str(store.path), mode="r")["teachers/t/logits"]
    print(f"\n## streaming reads, N={n:,}, V={v}, C={c}, float16, batch {batch} (median of {repeats}, min-max)")
    for policy in ("cycle", "random"):
        rates: dict[str, list[float]] = {k: [] for k in READERS}
        cpu: dict[str, list[float]] = {k: [] for k in READERS}
        # Every pass uses the same plan, so "seen" has seen every chunk it reads.
        plan = epoch_plan(0, 1, n, v, policy)
        runs: list[tuple[str, Callable[[], int]]] = [
            ("memmap", lambda: _gather_pass(memmap_rows, memmap, plan.order, plan.views, batch)),
            ("plain zarr", lambda: _gather_pass(plain_zarr_rows, plain, plan.order, plan.views, batch)),
            ("unverified", lambda: _store_pass(unverified, plan, batch)),
            ("verified, seen", lambda: _store_pass(verified, plan, batch)),
            # a fresh open: every chunk is hashed (a run's first pass over it)
            ("verified, first", lambda: _store_pass(CachedRows(Store.open(store.path), "t"), plan, batch)),
        ]
        for r in range(repeats + 1):  # the first pass warms the page cache and is not counted
            k = r % len(runs)
            for name, run in runs[k:] + runs[:k]:
                rate, seconds = _timed(run)
                if r:
                    rates[name].append(rate)
                    cpu[name].append(seconds)
        key = f"reads/C={c}/{policy}"
        print(f"view policy {policy}: rows/s median (min-max) by the wall clock; ratio to memmap; CPU ms per pass")
        for name, label in READERS.items():
            fig = figures.add(f"{key}/{name}/rows per s", rates[name], "rows/s")
            ratio = figures.add(f"{key}/{name}/ratio to memmap", [a / b for a, b in zip(rates[name], rates["memmap"])])
            ms = figures.add(f"{key}/{name}/CPU ms per pass", [1e3 * t for t in cpu[name]], "ms")
            print(f"  {label:<42} {fig['median']:>11,.0f} ({fig['min']:,.0f}-{fig['max']:,.0f})"
                  f"  x{ratio['median']:.3f}   CPU {ms['median']:>7,.0f} ms ({ms['min']:,.0f}-{ms['max']:,.0f})")
        for name in ("verified, seen", "verified, first"):
            figures.add(f"{key}/{name}/ratio to unverified", [a / b for a, b in zip(rates[name], rates["unverified"])])
    figures.config(**{f"reads_N_C={c}": n, "views": v, "batch": batch, "repeats": repeats})
    del memmap


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reads-only", action="store_true", help="skip the bytes-per-view part")
    add_common_args(p)
    args = p.parse_args(argv)
    from kdcache.store import library_versions

    library_versions()  # import torch & co. once, outside every timed region
    figures = Figures(__file__, argv)
    # (N, C) of the bytes part, then (N, C, V) of the reads.
    sizes = (([(2048, 100), (512, 1000)], [(4096, 100, 2), (1024, 1000, 2)], 1) if args.smoke else
             ([(50_000, 100), (20_000, 1000)], [(200_000, 100, 4), (50_000, 1000, 4)], args.repeats))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.reads_only:
            for n, c in sizes[0]:
                bench_bytes(tmp, n, c, figures)
        for n, c, v in sizes[1]:
            bench_reads(tmp, n, c, v, sizes[2], 256, figures)
    figures.write(args.json)


if __name__ == "__main__":
    main()
