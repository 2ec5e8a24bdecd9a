"""Cost of each registered loss relative to plain cross-entropy, and of the store statistics.

    python benchmarks/bench_losses.py [--threads 1] [--repeats 21] [--device cpu]
    python benchmarks/bench_losses.py --smoke      # one repeat, for the tests

For B=256 and C in {100, 1000}: the median wall time of one forward+backward
of every registered loss (inputs built from its LossSpec alone, as the
distill loop builds them), next to ``torch.nn.functional.cross_entropy``.
A loss is a small part of a training step, so the ratio matters only when it
gets large. Then the throughput, in rows/s, of the ISATS τ* search and the
FGCR class-table accumulation that ``kdcache stats`` runs over a store.
Runs in well under a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchlib import Figures, add_common_args
from kdcache import losses

B = 256


def _time_ms(step: Callable[[], None], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / inner * 1e3


def times_ms(steps: dict[str, Callable[[], None]], repeats: int, inner: int) -> dict[str, list[float]]:
    """Per step, ``repeats`` times the mean time of ``inner`` back-to-back calls (ms).

    Steps are timed round-robin (every repeat times every step once), so a
    burst of load from another process hits all rows alike instead of
    skewing one of them, the CE baseline included.
    """
    for step in steps.values():
        step()  # warm-up: first-call allocations and dispatch caches
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            times[label].append(_time_ms(step, inner))
    return times


def loss_step(name: str, classes: int, device: str, stored_tau_star: bool = False) -> Callable[[], None]:
    """One forward+backward of ``name`` on fresh-looking inputs, call inputs from its LossSpec."""
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(B, classes, generator=g) * 2).to(device).requires_grad_()
    t = (torch.randn(B, classes, generator=g) * 3).to(device)
    y = torch.randint(0, classes, (B,), generator=g).to(device)
    spec = losses.spec(name)
    kwargs: dict = {}
    if spec.needs_epoch:
        kwargs["epoch"] = 5
    for stat, params in spec.store_stats().items():
        if stat == "class_table":
            rows = torch.arange(4 * classes, device=device) % classes
            kwargs[stat] = losses.class_table(torch.randn(4 * classes, classes, generator=g).to(device), rows, classes, **params)
        elif stat == "tau_star" and stored_tau_star:
            kwargs[stat] = losses.isats_tau_star(t, y, **params)
    networks = [torch.randn(B, classes, generator=g).to(device).requires_grad_() for _ in range(spec.extra_networks)]
    if networks:
        kwargs[spec.extra_networks_arg] = networks
    fn = spec.fn

    def step() -> None:
        fn(s, t, y, **kwargs)["loss"].backward()
        s.grad = None
        for u in networks:
            u.grad = None

    return step


def plain_ce_step(classes: int, device: str) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(B, classes, generator=g).to(device).requires_grad_()
    y = torch.randint(0, classes, (B,), generator=g).to(device)

    def step() -> None:
        F.cross_entropy(s, y).backward()
        s.grad = None

    return step




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable numbers)")
    parser.add_argument("--repeats", type=int, default=21, help="timed repeats; the median is reported")
    parser.add_argument("--inner", type=int, default=5, help="calls per timed repeat")
    parser.add_argument("--device", default="cpu")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.inner = 1, 1
    figures = Figures(__file__, argv)
    figures.config(batch=B, threads=args.threads, repeats=args.repeats, inner=args.inner, device=args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args, figures)
        figures.write(args.json)  # before the threads are restored: the record names the ones measured
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, figures: Figures) -> None:
    wall = time.perf_counter()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device={args.device}, "
          f"threads={args.threads}, B={B}, median of {args.repeats} x {args.inner} calls")

    sizes = (100, 1000)
    rows: list[tuple[str, Callable[[int, str], Callable[[], None]]]] = [("torch cross_entropy", plain_ce_step)]
    for name in losses.names():
        rows.append((name, lambda c, d, n=name: loss_step(n, c, d)))
        if "tau_star" in losses.spec(name).stats:
            rows.append((f"{name} (stored τ*)", lambda c, d, n=name: loss_step(n, c, d, stored_tau_star=True)))
    results: dict[int, dict[str, float]] = {}
    for c in sizes:
        times = times_ms({label: make(c, args.device) for label, make in rows}, args.repeats, args.inner)
        ce = times["torch cross_entropy"]
        results[c] = {label: figures.add(f"loss ms/C={c}/{label}", t, "ms")["median"] for label, t in times.items()}
        for label, t in times.items():  # per repeat: the rows of a repeat were timed back to back
            figures.add(f"loss x CE/C={c}/{label}", [a / b for a, b in zip(t, ce)])

    print()
    header = "| loss (fwd+bwd) | " + " | ".join(f"C={c} ms | x CE" for c in sizes) + " |"
    print(header)
    print("|---|" + "---:|---:|" * len(sizes))
    for label, _ in rows:
        cells = " | ".join(f"{results[c][label]:.3f} | {results[c][label] / results[c]['torch cross_entropy']:.2f}" for c in sizes)
        print(f"| {label} | {cells} |")

    print()
    print("| statistic (kdcache stats), 4096 rows | " + " | ".join(f"C={c} rows/s" for c in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    n = 4096
    stats_rows: dict[str, list[float]] = {}
    for c in sizes:
        g = torch.Generator().manual_seed(1)
        t = (torch.randn(n, c, generator=g) * 3).to(args.device)
        y = (torch.arange(n) % c).to(args.device)
        steps = {
            "ISATS τ* search (7-point grid)": lambda t=t, y=y: losses.isats_tau_star(t, y),
            "FGCR class_table_sums (float64)": lambda t=t, y=y, c=c: losses.class_table_sums(t, y, c, 3.0),
        }
        for label, ms in times_ms(steps, args.repeats, inner=1).items():
            stats_rows.setdefault(label, []).append([n / (t / 1e3) for t in ms])
    for label, values in stats_rows.items():
        medians = [figures.add(f"stats rows per s/C={c}/{label}", v, "rows/s")["median"] for c, v in zip(sizes, values)]
        print(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in medians) + " |")
    print(f"\ntotal benchmark time: {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
