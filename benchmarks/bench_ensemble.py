"""``kdcache ensemble`` throughput against a plain read of its members, and its peak memory against N.

A store of M float16 members (model-like logits, C classes, N samples, one
view) is made directly (the bytes precompute writes). Then, per repeat:

* **read**: every chunk of every member read through ``Store.read_logits_chunk``
  (checksum-verified), the least an ensemble must do: rows/s counts the
  derived rows such a pass could feed (N per pass, M members read);
* **ensemble --how H** for each rule: a fresh derived teacher written by
  :func:`kdcache.precompute.ensemble.ensemble` (read, combine in float64,
  encode float32, write, checksum, sync, accuracy), rows/s, and its ratio to
  the read (the issue's expectation: I/O-bound, so not far below 1).

Then peak memory: ``ensemble --how mean-prob`` in a fresh process on a store
of N and of 4N samples (same chunk size), its ``ru_maxrss``; the growth
should be near 0 (the ensemble holds M chunks, whatever N).

    nice -n 10 python benchmarks/bench_ensemble.py          # the documented size
    python benchmarks/bench_ensemble.py --smoke             # seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_encodings import model_like
from benchlib import Figures, add_common_args, peak_rss_mib, rss_child
from kdcache import encodings
from kdcache.precompute.ensemble import HOWS, ensemble
from kdcache.store import ChunkGrid, DatasetRecord, Store, TeacherCard, ViewsRecord
from kdcache.views import load_recipe


def make_store(path: Path, members: int, n: int, c: int, rows_per_chunk: int) -> Store:
    """A one-view store of ``members`` float16 teachers m0, m1, ... of model-like logits (different seeds)."""
    recipe = load_recipe("none")
    labels = np.random.default_rng(0).integers(0, c, n)
    store = Store.create(path, dataset=DatasetRecord(spec="synthetic", name="synthetic", split=None, num_samples=n,
                                                     num_classes=c, channels=1, fingerprint="sha256:bench"),
                         labels=labels,
                         views=ViewsRecord(seed=0, num_views=1, recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                                           param_names=recipe.param_names(), chunk_rows=rows_per_chunk))
    grid, enc = ChunkGrid(n, rows_per_chunk), encodings.parse("float16")
    for k in range(members):
        name = f"m{k}"
        store.add_teacher(name, TeacherCard(spec=f"bench:{k}", num_classes=c, in_channels=1, render={},
                                            encoding="float16", codec="none", micro_batch=64, input_size=[1, 1]))
        for j in range(grid.num_chunks):
            a, b = grid.bounds(j)
            z = model_like(b - a, c, seed=1000 * k + j)
            parts = enc.encode(z, encodings.Rows(seed=0, view=0, samples=np.arange(a, b), teacher=name))
            store.write_chunk(name, 0, j, parts, np.zeros((b - a, 0), np.int32) if k == 0 else None)
        store.set_card(name, store.card(name).replace(status="complete", accuracy_per_view=[0.0]))
    return Store.open(path)


def read_pass(path: Path, members: list[str]) -> float:
    """Seconds to read (verified) every chunk of every member once, in a freshly opened store."""
    store = Store.open(path)
    t0 = time.perf_counter()
    for v, j in store.iter_chunks():
        for m in members:
            store.read_logits_chunk(m, v, j)
    return time.perf_counter() - t0


def _rss_child(path: Path, members: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    code = (
        "from kdcache.precompute.ensemble import ensemble\n"
        f"ensemble({str(path)!r}, members={members!r}, how='mean-prob', new_name={name!r}, progress=False)\n"
    )
    return rss_child(code, env)



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--chunk-rows", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mem-samples", type=int, default=50_000, help="N of the smaller memory store (the larger: 4N)")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.classes, args.chunk_rows, args.repeats, args.mem_samples = 512, 10, 128, 1, 256
    figures = Figures(__file__, argv)
    figures.config(members=args.members, samples=args.samples, classes=args.classes, chunk_rows=args.chunk_rows,
                   mem_samples=[args.mem_samples, 4 * args.mem_samples])
    members = [f"m{k}" for k in range(args.members)]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = make_store(tmp / "base.zarr", args.members, args.samples, args.classes, args.chunk_rows)
        rows = base.num_views * base.num_samples
        read, rates = [], {how: [] for how in HOWS}
        for r in range(args.repeats):
            read.append(rows / read_pass(tmp / "base.zarr", members))
            for how in HOWS:
                copy = tmp / f"{how}{r}.zarr"
                shutil.copytree(tmp / "base.zarr", copy)
                t0 = time.perf_counter()
                ensemble(copy, members=members, how=how, new_name="e", progress=False)
                rates[how].append(rows / (time.perf_counter() - t0))
                shutil.rmtree(copy)
        fig = figures.add("rows_per_s/read members", read, "rows/s")
        print(f"plain verified read of {args.members} members: {fig['median']:,.0f} rows/s")
        for how in HOWS:
            f = figures.add(f"rows_per_s/{how}", rates[how], "rows/s")
            ratio = figures.add(f"ratio to read/{how}", [e / b for e, b in zip(rates[how], read)])
            print(f"ensemble --how {how}: {f['median']:,.0f} rows/s ({ratio['median']:.2f}x the read)")
        # Peak RSS is a property of each process alone; a smoke run keeps each child to one thread.
        env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if args.smoke else {}))
        sizes = (args.mem_samples, 4 * args.mem_samples)
        for n in sizes:
            make_store(tmp / f"mem{n}.zarr", args.members, n, args.classes, args.chunk_rows)
        rss = {n: peak_rss_mib(_rss_child(tmp / f"mem{n}.zarr", members, "e", env), "ensemble") for n in sizes}
        for n in sizes:
            figures.add(f"peak RSS MiB/N={n}", rss[n], "MiB")
            print(f"ensemble --how mean-prob, N={n:,}: peak RSS {rss[n]:,.0f} MiB")
        growth = figures.add("peak RSS growth %", 100 * (rss[sizes[1]] / rss[sizes[0]] - 1), "%")
        print(f"growth with 4x the samples: {growth['median']:+.1f}% (target: near 0)")
    figures.write(args.json)


if __name__ == "__main__":
    main()
