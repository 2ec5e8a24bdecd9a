"""Distill step cost, side by side in one run: plain CE, cached KD, online KD; and memory.

Same student, data, views, batches and optimizer for all three:

* plain CE: the ordinary training loop a user would write without kdcache
  (the same DataLoader of views and prefetch, student forward, CE, backward, step);
* cached KD: `kdcache.distill.run.distill` from a store (reads cached logits);
* online KD: `kdcache.distill.run.distill` with the teacher run live (what a user
  does without a cache).

The teacher is a randomly initialised network saved as a checkpoint (its
logits cost the same to compute and read as a trained one's), so the store
and the online run use the same weights. Throughput is the training
samples/s of each epoch (evaluation excluded); the modes are interleaved
repeat by repeat and the ratios are taken per repeat (median, min-max).
Then, with --memory, the peak RSS of a distill run from a store and from one
10x larger (10x the views), each in a fresh process.

    python benchmarks/bench_distill.py
    python benchmarks/bench_distill.py --memory --skip-speed
    python benchmarks/bench_distill.py --smoke --memory       # seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchlib import Figures, add_common_args, peak_rss_mib, rss_child
from kdcache.data import open_data
from kdcache.distill.run import DistillConfig, distill
from kdcache.engine import OptimConfig, make_optimizer, seed_everything
from kdcache.distill.cached_rows import epoch_plan
from kdcache.models import build_model
from kdcache.models.checkpoints import save_checkpoint
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.distill.prefetch import prefetch
from kdcache.store import dir_size
from kdcache.views import ViewDataset, load_recipe


def plain_ce(data: str, student: str, classes: int, epochs: int, batch: int, workers: int) -> list[float]:
    """Samples/s per epoch of a plain CE training loop over the same views."""
    seed_everything(0)
    source = open_data(data)
    recipe = load_recipe("cifar")
    model, _ = build_model(student, classes, 3, random_init=True)
    model.train()
    opt = make_optimizer(model.parameters(), OptimConfig())
    dataset = ViewDataset(source, recipe, 0, [recipe.render])
    rates = []
    for epoch in range(1, epochs + 1):
        plan = epoch_plan(0, epoch, len(source), 2, "cycle")
        loader = DataLoader(dataset, batch_sampler=plan.batches(batch), num_workers=workers)
        t0 = time.perf_counter()
        # The same input pipeline as distill (thread prefetch when workers=0), so the
        # ratio isolates what the cache adds: reading teacher rows and the KD loss.
        for b in (loader if workers else prefetch(loader)):
            loss = F.cross_entropy(model(b["images"][0]), b["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(source) / (time.perf_counter() - t0))
    return rates


def run_distill(tmp: Path, name: str, data: str, student: str, epochs: int, batch: int, workers: int,
                **kw: object) -> list[float]:
    cfg = DistillConfig(data=data, val_data=data,
                        student=student, loss="kd", epochs=epochs, out=tmp / name, batch_size=batch,
                        workers=workers, optim=OptimConfig(epochs=epochs), seed=0, **kw)  # type: ignore[arg-type]
    result = distill(cfg, progress=False)
    return [m["samples_per_s"] for m in result.metrics]


def random_teacher(path: Path, spec: str, classes: int, channels: int) -> Path:
    """A randomly initialised teacher saved as a checkpoint: precompute and online KD both load it."""
    model, card = build_model(spec, classes, channels, random_init=True, role="teacher")
    save_checkpoint(path, model, card)
    return path


def speed(args: argparse.Namespace, tmp: Path, figures: Figures) -> None:
    data = f"synthetic:samples={args.samples},classes={args.classes},size=32,channels=3,seed=0"
    store = tmp / "store.zarr"
    weights = str(random_teacher(tmp / "teacher.pt", args.teacher, args.classes, 3))
    precompute(data=data, teachers=[TeacherRequest(args.teacher, weights)], views=2, seed=0, out=store,
               recipe="cifar", progress=False)
    figures.config(student=args.student, teacher=args.teacher, samples=args.samples, classes=args.classes,
                   batch=args.batch_size, workers=args.workers, repeats=args.repeats,
                   online_repeats=args.online_repeats, epochs=args.epochs)
    print(f"student {args.student}, teacher {args.teacher} (random init), {args.samples} samples 32x32x3, "
          f"C={args.classes}, batch {args.batch_size}, workers {args.workers}; {args.repeats} interleaved repeats of "
          f"{args.epochs} epoch(s) each")
    # Interleave the modes repeat by repeat, so drifts of this shared machine
    # hit all of them alike; every repeat is a fresh run (same warm-up for all).
    rates: dict[str, list[float]] = {"plain CE": [], "cached KD": [], "online KD": []}
    cached_vs_ce, online_vs_cached = [], []
    for r in range(args.repeats):
        ce = plain_ce(data, args.student, args.classes, args.epochs, args.batch_size, args.workers)
        cached = run_distill(tmp, f"cached{r}", data, args.student, args.epochs, args.batch_size, args.workers,
                             store=str(store))
        rates["plain CE"] += ce
        rates["cached KD"] += cached
        # Step time ratios of this repeat (a step's time is 1 / its rate).
        cached_vs_ce.append(sum(ce) / sum(cached))
        if r < args.online_repeats:
            online = run_distill(tmp, f"online{r}", data, args.student, args.epochs, args.batch_size, args.workers,
                                 teacher=args.teacher, weights=weights, views=2, recipe="cifar")
            rates["online KD"] += online
            online_vs_cached.append(sum(cached) / sum(online))
    for k, v in rates.items():
        fig = figures.add(f"samples_per_s/{k}", v, "samples/s")
        print(f"  {k:<10} samples/s: {', '.join(f'{x:,.1f}' for x in v)}  (median {fig['median']:,.1f})")
    a = figures.add("ratio/cached KD step / plain CE step", cached_vs_ce)
    b = figures.add("ratio/online KD step / cached KD step", online_vs_cached)
    print(f"cached KD step time / plain CE step time: {a['median']:.3f} ({a['min']:.3f}-{a['max']:.3f}) "
          "(target <= 1.05)")
    print(f"online KD step time / cached KD step time: {b['median']:.2f}x ({b['min']:.2f}-{b['max']:.2f}) "
          "(the speed-up)")


def _rss_child(tmp: Path, store: Path, data: str, student: str, name: str, policy: str,
               env: dict[str, str]) -> subprocess.Popen[str]:
    code = (
        "from pathlib import Path\n"
        "from kdcache.distill.run import DistillConfig, distill\n"
        "from kdcache.engine import OptimConfig\n"
        f"distill(DistillConfig(data={data!r}, val_data={data!r}, student={student!r}, loss='kd', epochs=1,"
        f" out=Path({str(tmp / name)!r}), store={str(store)!r}, batch_size=256, optim=OptimConfig(epochs=1),"
        f" view_policy={policy!r}), progress=False)\n"
    )
    return rss_child(code, env)



def memory(args: argparse.Namespace, tmp: Path, figures: Figures) -> None:
    data = f"synthetic:samples={args.mem_samples},classes=1000,size=8,channels=3,seed=0"
    small, large = args.mem_views, 10 * args.mem_views
    weights = str(random_teacher(tmp / "mem-teacher.pt", "kdcache:tiny_cnn", 1000, 3))
    sizes = {}
    for views in (small, large):
        store = tmp / f"mem{views}.zarr"
        precompute(data=data, teachers=[TeacherRequest("kdcache:tiny_cnn", weights)], views=views, seed=0,
                   out=store, recipe="none", progress=False)
        sizes[views] = (store, dir_size(store) / 2**20)
    figures.config(mem_samples=args.mem_samples, mem_views=[small, large])
    # Peak RSS is a property of each process alone, so the fresh processes run side by side
    # (a smoke run keeps each to one thread: it shares the machine with the test suite).
    env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if args.smoke else {}))
    children = {(policy, v): _rss_child(tmp, s, data, "kdcache:tiny_cnn", f"mem-{policy}{v}", policy, env)
                for policy in args.mem_policies for v, (s, _) in sizes.items()}
    rss = {key: peak_rss_mib(child, "distill") for key, child in children.items()}
    for v, (_, mb) in sizes.items():
        figures.add(f"store MiB/views={v}", mb, "MiB")
    for policy in args.mem_policies:
        print(f"peak RSS of distill (1 epoch, view policy {policy}, {args.mem_samples} samples, C=1000):")
        for v, (_, mb) in sizes.items():
            figures.add(f"peak RSS MiB/{policy}/views={v}", rss[(policy, v)], "MiB")
            print(f"  store with {v:>2} views ({mb:,.0f} MiB on disk): peak RSS {rss[(policy, v)]:,.0f} MiB")
        growth = figures.add(f"peak RSS growth %/{policy}", 100 * (rss[(policy, large)] / rss[(policy, small)] - 1), "%")
        print(f"  growth with a 10x larger store: {growth['median']:+.1f}% (target < 10%)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="kdcache:resnet32x4")
    p.add_argument("--student", default="kdcache:resnet8x4")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1, help="epochs per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--online-repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS vs store size")
    p.add_argument("--mem-samples", type=int, default=20000)
    p.add_argument("--mem-views", type=int, default=2, help="views of the smaller store (the larger has 10x)")
    p.add_argument("--mem-policies", nargs="+", default=["cycle", "random"], choices=["cycle", "random"],
                   help="view policies of the memory runs")
    p.add_argument("--skip-speed", action="store_true")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.teacher = args.student = "kdcache:tiny_cnn"
        args.samples, args.classes, args.batch_size, args.repeats, args.online_repeats = 64, 10, 32, 1, 1
        # One policy: each memory run is a fresh process, whose start-up is most of a smoke run.
        args.mem_samples, args.mem_views, args.mem_policies = 128, 2, ["random"]
    figures = Figures(__file__, argv)
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_speed:
            speed(args, Path(d), figures)
        if args.memory:
            memory(args, Path(d), figures)
    figures.write(args.json)


if __name__ == "__main__":
    main()
