"""Precompute throughput vs teacher inference alone, on the same batches, in one run.

Inference-only: the same views, rendered beforehand into memory, scored by
`run_model` in the same batches (the ceiling: no rendering, no writing).
Precompute: `kdcache.precompute.precompute` end to end (render, score,
encode, write, checksum, fsync, per-view accuracy) into a fresh store.
Both are timed per repeat, alternating; the ratio of medians is printed.

    python benchmarks/bench_precompute.py                  # resnet32x4, 32x32, C=100
    python benchmarks/bench_precompute.py --teacher kdcache:resnet8x4 --samples 2048
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdcache.data import open_data
from kdcache.models import build_model, run_model
from kdcache.precompute import TeacherRequest, precompute
from kdcache.views import ViewDataset, load_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="kdcache:resnet32x4")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    data = f"synthetic:samples={args.samples},classes={args.classes},size=32,channels=3,seed=0"
    source = open_data(data)
    recipe = load_recipe("cifar")
    model, _ = build_model(args.teacher, args.classes, 3, random_init=True)
    dataset = ViewDataset(source, recipe, 0, [recipe.render])
    batches = [torch.stack([dataset[(i, 0)]["images"][0] for i in range(b, min(b + args.batch_size, args.samples))])
               for b in range(0, args.samples, args.batch_size)]
    print(f"teacher {args.teacher}, {args.samples} views of 32x32x3, C={args.classes}, batch {args.batch_size}, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}")
    run_model(model, batches[0])  # warm-up (allocator, kernels)
    infer, pre = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for x in batches:
                run_model(model, x)
            infer.append(args.samples / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            precompute(data=data, teachers=[TeacherRequest(args.teacher)], views=1, seed=0,
                       out=Path(d) / f"s{r}.zarr", recipe="cifar", batch_size=args.batch_size,
                       workers=args.workers, progress=False)
            pre.append(args.samples / (time.perf_counter() - t0))
            print(f"  repeat {r + 1}: inference only {infer[-1]:8.1f} views/s   precompute {pre[-1]:8.1f} views/s")
    i, q = statistics.median(infer), statistics.median(pre)
    print(f"median: inference only {i:.1f} views/s, precompute {q:.1f} views/s, ratio {q / i:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
