"""Distill step cost, side by side in one run: plain CE, cached KD, online KD; and memory.

Same student, data, views, batches and optimizer for all three:

* plain CE: the ordinary training loop a user would write without kdcache
  (the same DataLoader of views and prefetch, student forward, CE, backward, step);
* cached KD: `kdcache.distill.distill` from a store (reads cached logits);
* online KD: `kdcache.distill.distill` with the teacher run live.

Throughput is the training samples/s of each epoch (evaluation excluded),
median over interleaved repeats. Then, with --memory, the peak RSS of a
distill run from a store and from one 10x larger (10x the views), each in a
fresh process.

    python benchmarks/bench_distill.py
    python benchmarks/bench_distill.py --memory
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdcache.data import open_data
from kdcache.distill import DistillConfig, distill
from kdcache.loader import epoch_plan
from kdcache.models import build_model
from kdcache.precompute import TeacherRequest, precompute
from kdcache.prefetch import prefetch
from kdcache.engine import OptimConfig, make_optimizer, seed_everything
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


def speed(args: argparse.Namespace, tmp: Path) -> None:
    data = f"synthetic:samples={args.samples},classes={args.classes},size=32,channels=3,seed=0"
    store = tmp / "store.zarr"
    precompute(data=data, teachers=[TeacherRequest(args.teacher)], views=2, seed=0, out=store, recipe="cifar",
               progress=False)
    print(f"student {args.student}, teacher {args.teacher}, {args.samples} samples 32x32x3, C={args.classes}, "
          f"batch {args.batch_size}, workers {args.workers}; {args.repeats} interleaved repeats of "
          f"{args.epochs} epoch(s) each")
    # Interleave the modes repeat by repeat, so drifts of this shared machine
    # hit all of them alike; every repeat is a fresh run (same warm-up for all).
    rates: dict[str, list[float]] = {"plain CE": [], "cached KD": [], "online KD": []}
    for r in range(args.repeats):
        rates["plain CE"] += plain_ce(data, args.student, args.classes, args.epochs, args.batch_size, args.workers)
        rates["cached KD"] += run_distill(tmp, f"cached{r}", data, args.student, args.epochs, args.batch_size,
                                          args.workers, store=str(store))
        if r < args.online_repeats:
            rates["online KD"] += run_distill(tmp, f"online{r}", data, args.student, args.epochs, args.batch_size,
                                              args.workers, teacher=args.teacher, views=2, recipe="cifar")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"  {k:<10} samples/s: {', '.join(f'{x:,.1f}' for x in v)}  (median {med[k]:,.1f})")
    print(f"cached KD step time / plain CE step time: {med['plain CE'] / med['cached KD']:.3f} (target <= 1.05)")
    print(f"online KD step time / cached KD step time: {med['cached KD'] / med['online KD']:.2f}x (the speed-up)")


def _peak_rss_of_distill(tmp: Path, store: Path, data: str, student: str, name: str, policy: str) -> float:
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from kdcache.distill import DistillConfig, distill\n"
        "from kdcache.engine import OptimConfig\n"
        f"distill(DistillConfig(data={data!r}, val_data={data!r}, student={student!r}, loss='kd', epochs=1,"
        f" out=Path({str(tmp / name)!r}), store={str(store)!r}, batch_size=256, optim=OptimConfig(epochs=1),"
        f" view_policy={policy!r}), progress=False)\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB


def memory(args: argparse.Namespace, tmp: Path) -> None:
    data = f"synthetic:samples={args.mem_samples},classes=1000,size=8,channels=3,seed=0"
    sizes = {}
    for views in (2, 20):
        store = tmp / f"mem{views}.zarr"
        precompute(data=data, teachers=[TeacherRequest("kdcache:tiny_cnn")], views=views, seed=0, out=store,
                   recipe="none", progress=False)
        from kdcache.store import dir_size

        sizes[views] = (store, dir_size(store) / 2**20)
    for policy in ("cycle", "random"):
        rss = {v: _peak_rss_of_distill(tmp, s, data, "kdcache:tiny_cnn", f"mem-{policy}{v}", policy)
               for v, (s, _) in sizes.items()}
        print(f"peak RSS of distill (1 epoch, view policy {policy}, {args.mem_samples} samples, C=1000):")
        for v, (_, mb) in sizes.items():
            print(f"  store with {v:>2} views ({mb:,.0f} MiB on disk): peak RSS {rss[v]:,.0f} MiB")
        print(f"  growth with a 10x larger store: {100 * (rss[20] / rss[2] - 1):+.1f}% (target < 10%)")


def main() -> None:
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
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_speed:
            speed(args, Path(d))
        if args.memory:
            memory(args, Path(d))


if __name__ == "__main__":
    main()
