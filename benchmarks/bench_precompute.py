"""Precompute throughput vs teacher inference alone, on the same batches, in one run.

Inference-only: the same views, rendered beforehand into memory, scored by
`run_model` in the same batches (the ceiling: no rendering, no writing).
Precompute: `kdcache.precompute.run.precompute` end to end (render, score,
encode, write, checksum, fsync, per-view accuracy) into a fresh store.
Both are timed per repeat, alternating; the ratio of medians is printed.

    python benchmarks/bench_precompute.py                  # resnet32x4, 32x32, C=100
    python benchmarks/bench_precompute.py --teacher kdcache:resnet8x4 --samples 2048

``--scaling`` measures instead the same `kdcache precompute` command run as
1 process (with 1 and with 2 intra-op threads) and as 2 torchrun ranks of 1
thread each, alternating, and prints the medians side by side. The figure is
the one the command prints (views scored / seconds from the first batch to
the last rank's last chunk written and synced, i.e. without process start and
imports); each job's wall time, start-up included, is printed beside it.

    python benchmarks/bench_precompute.py --scaling --teacher kdcache:resnet8x4 --samples 2048

The teacher is randomly initialised (saved as a checkpoint for the comparison
with inference, ``--random-init`` under ``--scaling``): scoring costs the same
whatever the weights. ``--smoke`` runs either mode at tiny sizes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchlib import Figures, add_common_args
from kdcache.data import open_data
from kdcache.models import build_model, run_model
from kdcache.models.checkpoints import save_checkpoint
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.views import ViewDataset, load_recipe


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="kdcache:resnet32x4")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", action="store_true", help="1 process vs 2 torchrun ranks (see above)")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.teacher, args.samples, args.classes, args.batch_size, args.repeats = "kdcache:tiny_cnn", 64, 10, 32, 1
    figures = Figures(__file__, argv)
    if args.scaling:
        scaling(args, figures)
    else:
        versus_inference(args, figures)
    figures.write(args.json)


def versus_inference(args: argparse.Namespace, figures: Figures) -> None:
    """Precompute end to end against the same teacher scoring the same views from memory."""
    data = f"synthetic:samples={args.samples},classes={args.classes},size=32,channels=3,seed=0"
    source = open_data(data)
    recipe = load_recipe("cifar")
    model, card = build_model(args.teacher, args.classes, 3, random_init=True, role="teacher")
    dataset = ViewDataset(source, recipe, 0, [recipe.render])
    batches = [torch.stack([dataset[(i, 0)]["images"][0] for i in range(b, min(b + args.batch_size, args.samples))])
               for b in range(0, args.samples, args.batch_size)]
    print(f"teacher {args.teacher} (random init), {args.samples} views of 32x32x3, C={args.classes}, batch {args.batch_size}, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}")
    run_model(model, batches[0])  # warm-up (allocator, kernels)
    figures.config(teacher=args.teacher, samples=args.samples, classes=args.classes, batch=args.batch_size,
                   workers=args.workers, repeats=args.repeats, threads=torch.get_num_threads())
    infer, pre = [], []
    with tempfile.TemporaryDirectory() as d:
        # The same random network for both sides: precompute loads it as a checkpoint.
        weights = Path(d) / "teacher.pt"
        save_checkpoint(weights, model, card)
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for x in batches:
                run_model(model, x)
            infer.append(args.samples / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            precompute(data=data, teachers=[TeacherRequest(args.teacher, str(weights))], views=1, seed=0,
                       out=Path(d) / f"s{r}.zarr", recipe="cifar", batch_size=args.batch_size,
                       workers=args.workers, progress=False)
            pre.append(args.samples / (time.perf_counter() - t0))
            print(f"  repeat {r + 1}: inference only {infer[-1]:8.1f} views/s   precompute {pre[-1]:8.1f} views/s")
    i = figures.add("views_per_s/inference only", infer, "views/s")
    q = figures.add("views_per_s/precompute", pre, "views/s")
    ratio = figures.add("ratio/precompute / inference", [b / a for a, b in zip(infer, pre)])
    print(f"median: inference only {i['median']:.1f} views/s, precompute {q['median']:.1f} views/s, "
          f"ratio {ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f}) (target >= 0.95)")


# The summary line `kdcache precompute` prints: "teacher NAME: 2,048 views scored in 63.4s (32 views/s)".
SCORED = re.compile(r"([\d,]+) views scored(?: \([\d,]+ already stored\))? in ([\d.]+)s \(([\d,]+) views/s\)")


def parse_rate(text: str) -> float:
    """Views/s from the output of `kdcache precompute` (views over seconds from the first batch to the last
    chunk written; the printed rate, whose seconds are not rounded to 0.1 s)."""
    m = SCORED.search(text)
    if m is None:
        raise SystemExit(f"no 'views scored in ...s (... views/s)' line in the output:\n{text[-1000:]}")
    return float(m.group(3).replace(",", ""))


def _job(cmd: list[str], threads: int) -> tuple[float, float]:
    """Run one precompute job; return (views/s as the command reports it, wall seconds incl. start-up)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({' '.join(cmd[:6])} ...):\n{proc.stderr[-2000:]}")
    return parse_rate(proc.stdout + proc.stderr), wall


def scaling_jobs(args: argparse.Namespace, out: Path) -> dict[str, tuple[list[str], int]]:
    """The same `kdcache precompute` command as 1 process (2 or 1 threads) and as 2 torchrun ranks of 1 thread:
    name -> (argv, OMP_NUM_THREADS). Every job writes a fresh store under ``out``."""
    data = f"synthetic:samples={args.samples},classes={args.classes},size=32,channels=3,seed=0"
    kdcache = shutil.which("kdcache") or "kdcache"
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    configs = {
        "1 process x 2 threads": ([], 2),
        "1 process x 1 thread": ([], 1),
        "2 ranks x 1 thread": ([*launcher, "--standalone", "--nproc-per-node", "2", "--no-python"], 1),
    }
    return {name: ([*head, kdcache, "precompute", "--data", data, "--teacher", args.teacher, "--random-init",
                    "--views", "1", "--seed", "0", "--recipe", "cifar", "--out", str(out / name.replace(" ", "_")),
                    "--batch-size", str(args.batch_size), "--workers", str(args.workers)], threads)
            for name, (head, threads) in configs.items()}


def scaling(args: argparse.Namespace, figures: Figures) -> None:
    """1 process (1 or 2 threads) vs 2 torchrun ranks (1 thread each) on the same command line."""
    print(f"teacher {args.teacher} (random init), {args.samples} views of 32x32x3, C={args.classes}, batch "
          f"{args.batch_size}, workers {args.workers}, {os.cpu_count()} CPUs, {args.repeats} repeats")
    figures.config(teacher=args.teacher, samples=args.samples, classes=args.classes, batch=args.batch_size,
                   workers=args.workers, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as d:
        configs = scaling_jobs(args, Path(d))
        rates: dict[str, list[float]] = {k: [] for k in configs}
        walls: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.repeats):
            for name, (cmd, threads) in configs.items():
                rate, wall = _job(cmd, threads)
                rates[name].append(rate)
                walls[name].append(wall)
                print(f"  repeat {r + 1}: {name:22s} {rate:8.1f} views/s   (job wall {wall:5.1f} s)")
                shutil.rmtree(cmd[cmd.index("--out") + 1], ignore_errors=True)
    base = "1 process x 2 threads"
    for k in configs:
        figures.add(f"views_per_s/{k}", rates[k], "views/s")
        figures.add(f"job wall s/{k}", walls[k], "s")
        # Ratios per repeat: the configurations of one repeat ran back to back, under the same load.
        figures.add(f"ratio/{k} / {base}", [a / b for a, b in zip(rates[k], rates[base])])
    print("median views/s (job wall s):  " + "   ".join(
        f"{k}: {statistics.median(v):.1f} ({statistics.median(walls[k]):.1f} s)" for k, v in rates.items()))
    print(f"ratio to {base}:  " + "   ".join(
        f"{k}: {figures.median(f'ratio/{k} / {base}'):.2f}" for k in configs))


if __name__ == "__main__":
    main()
