"""N students in one `kdcache sweep` against N separate `kdcache distill` runs, side by side in one run.

Both train the same N students (runs x init seeds) from the same store with the same options, so
they end with the same weights (the sweep's guarantee, tested in tests/test_sweep.py); what differs
is what the sweep shares: each batch is rendered once and its cached rows read once for all
students, and validation images are rendered once. The figure is the wall time of the whole
training (library calls in this process, so neither side pays a process start-up; evaluation
included, as a user waits for it), median over interleaved repeats, and the ratio of the medians.
A sweep also writes its report (matplotlib plots); that time is shown apart, and the training
ratio leaves it out.

    nice -n 10 python benchmarks/bench_sweep.py                      # 1, 3 and 6 students
    nice -n 10 python benchmarks/bench_sweep.py --students 3 --repeats 5
    python benchmarks/bench_sweep.py --smoke     # seconds (synthetic data), for the tests
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchlib import Figures, add_common_args
from kdcache.distill.run import DistillConfig, distill
from kdcache.engine import OptimConfig
from kdcache.precompute.run import TeacherRequest, precompute
import kdcache.distill.sweep
from kdcache.distill.sweep import SweepConfig, SweepRun, sweep

RUNS = [SweepRun("ce", "ce"), SweepRun("kd", "kd", {"temperature": 2}), SweepRun("nkd", "nkd")]


def students(n: int) -> tuple[list[SweepRun], list[int]]:
    """The first ``n`` (run, seed) students: every run with seed 0, then every run with seed 1."""
    seeds = [0] if n <= len(RUNS) else [0, 1]
    runs = RUNS[:n] if n <= len(RUNS) else RUNS
    if len(runs) * len(seeds) != n:
        raise SystemExit(f"--students must be 1-{len(RUNS)} or {2 * len(RUNS)}")
    return runs, seeds


def time_separate(store: Path, out: Path, n: int, args: argparse.Namespace) -> float:
    runs, seeds = students(n)
    t0 = time.perf_counter()
    for run in runs:
        for seed in seeds:
            distill(DistillConfig(data=args.data, val_data=args.val_data, student=args.student, loss=run.loss,
                                  loss_opts=dict(run.loss_opts), epochs=args.epochs, out=out / f"{run.name}-s{seed}",
                                  store=str(store), batch_size=args.batch_size,
                                  optim=OptimConfig(schedule="constant"), init_seed=seed), progress=False)
    return time.perf_counter() - t0


def time_sweep(store: Path, out: Path, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds of the whole sweep, and of its report alone (timed around the sweep's own call)."""
    runs, seeds = students(n)
    report = kdcache.distill.sweep.report_sweep
    spent: list[float] = []

    def timed_report(*a: object, **k: object) -> object:
        t = time.perf_counter()
        try:
            return report(*a, **k)  # type: ignore[arg-type]
        finally:
            spent.append(time.perf_counter() - t)

    kdcache.distill.sweep.report_sweep = timed_report  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        sweep(SweepConfig(store=str(store), data=args.data, val_data=args.val_data, student=args.student, runs=runs,
                          init_seeds=seeds, epochs=args.epochs, out=out, batch_size=args.batch_size,
                          optim=OptimConfig(schedule="constant")), progress=False)
        return time.perf_counter() - t0, sum(spent)
    finally:
        kdcache.distill.sweep.report_sweep = report  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="embedded")
    p.add_argument("--val-data", default="embedded,split=test")
    p.add_argument("--student", default="kdcache:tiny_cnn")
    p.add_argument("--teacher", default="kdcache:cnn_small")
    p.add_argument("--students", type=int, action="append", help="students per comparison (default 1, 3, 6)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    add_common_args(p)
    args = p.parse_args(argv)
    counts = args.students or [1, 3, 6]
    if args.smoke:
        args.data = "synthetic:samples=128,classes=10,size=28,channels=1,seed=0"
        args.val_data = "synthetic:samples=64,classes=10,size=28,channels=1,seed=1"
        args.student, args.teacher, args.repeats, counts = "kdcache:tiny_cnn", "kdcache:tiny_cnn", 1, [3]
    figures = Figures(__file__, argv)
    figures.config(data=args.data, val_data=args.val_data, student=args.student, teacher=args.teacher,
                   epochs=args.epochs, batch=args.batch_size, repeats=args.repeats,
                   threads=os.environ.get("OMP_NUM_THREADS", "unset"))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        store = tmp / "store.zarr"
        # A random-init teacher: its logits cost the same to read as a trained one's.
        precompute(data=args.data, teachers=[TeacherRequest(args.teacher, random_init=True)], views=2, seed=0,
                   out=store, progress=False)
        print(f"student {args.student} on {args.data} (validation {args.val_data}), teacher {args.teacher} "
              f"(store: 2 views, float16), batch {args.batch_size}, {args.epochs} epoch(s), "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
              f"median of {args.repeats} interleaved repeats\n")
        print(f"{'students':>8}  {'separate runs':>13}  {'one sweep':>9}  {'its report':>10}  "
              f"{'sweep training / separate':>25}")
        for n in counts:
            separate, swept, reports = [], [], []
            for r in range(args.repeats):  # interleaved, so drifts of the shared machine hit both alike
                separate.append(time_separate(store, tmp / f"sep-{n}-{r}", n, args))
                whole, report = time_sweep(store, tmp / f"sweep-{n}-{r}", n, args)
                swept.append(whole - report)
                reports.append(report)
            a = figures.add(f"{n} students/separate runs s", separate, "s")["median"]
            b = figures.add(f"{n} students/one sweep s", [x + y for x, y in zip(swept, reports)], "s")["median"]
            c = figures.add(f"{n} students/its report s", reports, "s")["median"]
            # Per repeat: the two sides of a repeat ran back to back, under the same load.
            ratio = figures.add(f"{n} students/sweep training / separate", [x / y for x, y in zip(swept, separate)])
            print(f"{n:>8}  {a:>12.1f}s  {b:>8.1f}s  {c:>9.1f}s  {ratio['median']:>25.2f}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
