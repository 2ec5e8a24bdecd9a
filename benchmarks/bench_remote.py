"""Distill read throughput from an object store (a local S3 server) against the same store on local disk.

What is measured is what a cached ``kdcache distill`` epoch does to a store:
:class:`kdcache.distill.cached_rows.CachedRows` over an :func:`kdcache.distill.cached_rows.epoch_plan`
(window shuffle, one view per sample, ``--view-policy cycle`` and ``random``),
every chunk of logits and recorded view parameters read whole, checked against
its checksum record, gathered into batches and decoded to float32 tensors:
rows per second delivered to the training step. Each repeat opens the store
afresh and reads two epochs: the first pays for opening (array metadata and
checksum records fetched once per process), the second is the steady state a
multi-epoch distill sees (epoch 2: the other view under ``cycle``; a local
store then skips re-hashing chunk files it verified and whose inode, size
and mtime are unchanged, an object store hashes every chunk again). The
readers of one repeat run back to back, so the ratios are taken under the
same machine load.

Readers compared, on the same bytes:

* ``local``: the store directory on local disk (zarr ``LocalStore``);
  (moto runs as a separate process, as a real S3 endpoint would);
* ``s3 obstore``: the store on moto's S3 server through ``zarr.storage.ObjectStore``
  (obstore), with the window's chunks fetched 8 at a time (what kdcache uses);
* ``s3 obstore x1``: the same, one chunk at a time (what the concurrency buys);
* ``s3 fsspec``: the store through ``zarr.storage.FsspecStore`` (s3fs), 8 at a time;
* ``s3 plain zarr``: the same rows read from the S3 store's logits array with plain zarr
  (``zarr.open_group`` over ``ObjectStore``, ``array.oindex[view, samples]`` per view of each
  batch): what a user without kdcache's reader would write;
* ``s3 raw GET``: the server's ceiling: the same chunk objects an epoch reads (logits and
  parameters of the views it uses), fetched with ``obstore.get`` 8 at a time, with no zarr,
  no checksum, no gather and no decode; rows/s counts the epoch's rows;
* ``local memmap``: the same logits as one raw float16 file on local disk, the epoch's rows
  gathered with ``numpy.memmap``: the physical bound of reading them from this disk.

Every rate is also given as a ratio to ``local`` and to ``local memmap`` in the same repeat.

The student's step rate (samples/s of forward, backward and SGD step of
``kdcache:mlp``, the fastest student kdcache ships, at batch 128 on 28x28x1
inputs) is measured alongside: the store must deliver rows faster than that.

    python benchmarks/bench_remote.py              # N=50,000, C=100, 2 views, 5 repeats
    python benchmarks/bench_remote.py --smoke      # seconds (N=2,048, moto on a thread), for the tests
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_store import memmap_rows, plain_zarr_rows  # noqa: E402
from benchlib import Figures, add_common_args  # noqa: E402
from kdcache.distill.cached_rows import CachedRows, epoch_plan  # noqa: E402
from kdcache.store import ChunkGrid, DatasetRecord, Store, TeacherCard, ViewsRecord, default_chunk_rows  # noqa: E402
from kdcache.views import load_recipe  # noqa: E402
from tests.s3_server import s3_server  # noqa: E402


def make_store(path: Path, n: int, c: int, v: int, seed: int = 0) -> None:
    """A complete float16 store of model-like logits with recorded view parameters (a real recipe's)."""
    rows = default_chunk_rows(c, n, 2, 64)
    recipe = load_recipe("fashion-mnist")
    p = len(recipe.param_names())
    store = Store.create(
        path,
        dataset=DatasetRecord(spec="synthetic", name="synthetic", split=None, num_samples=n, num_classes=c,
                              channels=1, fingerprint="sha256:bench"),
        labels=np.zeros(n, np.int64),
        views=ViewsRecord(seed=0, num_views=v, recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                          param_names=recipe.param_names(), chunk_rows=rows),
    )
    store.add_teacher("t", TeacherCard(spec="bench", num_classes=c, in_channels=1, render={}, encoding="float16",
                                       codec="none", micro_batch=64, input_size=[28, 28]))
    rng = np.random.default_rng(seed)
    grid = ChunkGrid(n, rows)
    for view in range(v):
        for j in range(grid.num_chunks):
            a, b = grid.bounds(j)
            x = rng.normal(0, 2, size=(b - a, c)).astype(np.float32)
            x[np.arange(b - a), rng.integers(0, c, b - a)] += 12  # one large target logit, as a teacher emits
            store.write_chunk("t", view, j, x.astype(np.float16), rng.integers(0, 4, (b - a, p), dtype=np.int32))
    store.set_card("t", store.card("t").replace(status="complete"))


def upload(local: Path, url: str) -> None:
    """Copy every file of the local store to the object store, key = relative path."""
    import obstore
    from kdcache.store import locate

    objects = locate(url).objects()
    for root, _dirs, files in os.walk(local):
        for name in files:
            full = Path(root, name)
            obstore.put(objects, full.relative_to(local).as_posix(), full.read_bytes())


def rows_per_second(open_store, plan_args: dict, batch: int, concurrency: int | None) -> tuple[float, float]:
    """Epochs 1 and 2 of the distill read pattern through CachedRows on a freshly opened store: rows/s
    delivered as float32 batches, each."""
    store = open_store()
    rows = CachedRows(store, "t", concurrency=concurrency)
    rates = []
    for epoch in (1, 2):
        plan = epoch_plan(**{**plan_args, "epoch": epoch})
        t0 = time.perf_counter()
        seen = 0
        for b in rows.iterate(plan, batch):
            seen += int(b["teacher_logits"].shape[0])
        rates.append(seen / (time.perf_counter() - t0))
    return rates[0], rates[1]


def gather_rates(open_rows, plan_args: dict, batch: int) -> tuple[float, float]:
    """Epochs 1 and 2 of the same plans read without kdcache's reader: ``open_rows()`` opens the logits
    (a memmap or a plain zarr array) and returns ``(rows_of, array)``; rows/s as float32 batches, each."""
    t_open = time.perf_counter()
    rows_of, array = open_rows()
    opening = time.perf_counter() - t_open
    rates = []
    for epoch in (1, 2):
        plan = epoch_plan(**{**plan_args, "epoch": epoch})
        t0 = time.perf_counter()
        seen = 0
        for b in range(0, len(plan.order), batch):
            idx = plan.order[b : b + batch]
            seen += torch.from_numpy(np.ascontiguousarray(rows_of(array, plan.views[idx], idx))).float().shape[0]
        rates.append(seen / (time.perf_counter() - t0 + (opening if epoch == 1 else 0.0)))
    return rates[0], rates[1]


def raw_get_rate(url: str, plan_args: dict, chunks: int) -> float:
    """Rows/s of fetching the epoch's chunk objects (logits and params of each view it uses), nothing else."""
    import obstore
    from concurrent.futures import ThreadPoolExecutor
    from kdcache.store import locate

    objects = locate(url).objects()
    plan = epoch_plan(**plan_args)
    views = sorted({int(v) for v in np.unique(plan.views)})
    keys = [f"{node}/c/{v}/{j}/0" for node in ("teachers/t/logits", "views/params") for v in views
            for j in range(chunks)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda k: len(obstore.get(objects, k).bytes()), keys))
    assert all(sizes)
    return len(plan.order) / (time.perf_counter() - t0)


def student_rate(batch: int, steps: int) -> float:
    """Training samples/s of kdcache:mlp (forward, KD-like loss, backward, SGD step) at ``batch``."""
    from kdcache.zoo import create_model

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=100, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, t = torch.randn(batch, 1, 28, 28), torch.randn(batch, 100)
    for _ in range(3):  # warm-up
        loss = torch.nn.functional.kl_div(model(x).log_softmax(1), t.softmax(1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.kl_div(model(x).log_softmax(1), t.softmax(1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.samples, args.repeats = 2048, 1
    figures = Figures(__file__, argv)
    figures.config(samples=args.samples, classes=args.classes, views=args.views, batch=args.batch,
                   repeats=args.repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # A server in this process competes with the reader for the interpreter lock: a real
        # measurement runs moto as its own process; a smoke run saves that process's start-up
        # (and keeps the server's log of every request off the output).
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with s3_server(subprocess_server=not args.smoke) as server:
            run(args, server, figures)
        figures.write(args.json)  # before the threads are restored: the record names the ones measured
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, server, figures: Figures) -> None:  # type: ignore[no-untyped-def]
    from zarr.storage import FsspecStore

    with tempfile.TemporaryDirectory() as tmp:
        bucket = f"bench{os.getpid()}"
        server.make_bucket(bucket)
        local = Path(tmp, "store.zarr")
        url = f"s3://{bucket}/store.zarr"
        make_store(local, args.samples, args.classes, args.views)
        upload(local, url)
        size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
        grid = Store.open(local).grid
        raw = Path(tmp, "logits.f16")
        np.asarray(Store.open(local).logits("t")[:]).tofile(raw)
        print(f"store: N={args.samples:,} C={args.classes} V={args.views} float16, {grid.chunk_rows} rows/chunk, "
              f"{size / 1e6:.1f} MB; batch {args.batch}; {args.repeats} repeats; moto S3 on {server.endpoint}")

        def fsspec_store() -> Store:
            s = Store.open(url)
            group = zarr.open_group(FsspecStore.from_url(url, storage_options={"endpoint_url": server.endpoint},
                                                          read_only=True), mode="r")
            return Store(s.location, group, writable=False, manifest=s.manifest)

        def open_memmap():  # type: ignore[no-untyped-def]
            return memmap_rows, np.memmap(raw, dtype=np.float16, mode="r", shape=(args.views, args.samples,
                                                                                  args.classes))

        def open_plain_zarr():  # type: ignore[no-untyped-def]
            from kdcache.store import locate

            return plain_zarr_rows, zarr.open_group(locate(url).zarr_store(read_only=True), mode="r")["teachers/t/logits"]

        readers = {
            "local": (lambda: Store.open(local), None),
            "s3 obstore": (lambda: Store.open(url), None),
            "s3 obstore x1": (lambda: Store.open(url), 1),
            "s3 fsspec": (fsspec_store, 8),
        }
        plain = {"s3 plain zarr": open_plain_zarr, "local memmap": open_memmap}
        step = figures.add("student step rate", [student_rate(128, 3 if args.smoke else 30)
                                                 for _ in range(3)], "samples/s")["median"]
        for policy in ("cycle", "random"):
            plan_args = {"seed": 0, "epoch": 1, "num_samples": args.samples, "num_views": args.views,
                         "policy": policy}
            names = [*readers, *plain]
            first: dict[str, list[float]] = {name: [] for name in names}
            steady: dict[str, list[float]] = {name: [] for name in names}
            steady["s3 raw GET"] = []
            for _ in range(args.repeats):
                for name, (opener, conc) in readers.items():
                    a, b = rows_per_second(opener, plan_args, args.batch, conc)
                    first[name].append(a)
                    steady[name].append(b)
                for name, open_rows in plain.items():
                    a, b = gather_rates(open_rows, plan_args, args.batch)
                    first[name].append(a)
                    steady[name].append(b)
                steady["s3 raw GET"].append(raw_get_rate(url, {**plan_args, "epoch": 2}, grid.num_chunks))
            for label, epoch, results in (("epoch 2 (steady state)", "epoch 2", steady),
                                          ("epoch 1 (includes opening)", "epoch 1", first)):
                print(f"\n--view-policy {policy}, {label}: rows/s (median of {args.repeats}; min-max)")
                for name, values in results.items():
                    key = f"{policy}/{epoch}/{name}"
                    fig = figures.add(f"{key}/rows per s", values, "rows/s")
                    local_ratio = figures.add(f"{key}/ratio to local", [a / b for a, b in zip(values, results["local"])])
                    figures.add(f"{key}/ratio to local memmap", [a / b for a, b in zip(values, results["local memmap"])])
                    figures.add(f"{key}/x student step rate", [a / step for a in values])
                    print(f"  {name:<15} {fig['median']:>12,.0f}   ({fig['min']:,.0f}-{fig['max']:,.0f})   "
                          f"{local_ratio['median']:.2f}x local   {fig['median'] / step:.1f}x student step rate")
        print(f"\nstudent step rate (kdcache:mlp, batch 128, 1 thread): {step:,.0f} samples/s")


if __name__ == "__main__":
    main()
