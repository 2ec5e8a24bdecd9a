"""The report's figures, drawn with matplotlib's Agg backend (files only, no display needed).

Each function draws one figure into a PNG and returns its path. They take
plain data (runs, summaries, arrays) so that they are usable without a store
and testable on small inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report is files, never a window (must precede pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdcache.report.runs import MethodSummary  # noqa: E402

DPI = 110


def _colours(groups: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    return {g: cmap(i % cmap.N) for i, g in enumerate(groups)}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def accuracy_curves(methods: Sequence[MethodSummary], path: Path) -> Path:
    """Validation top-1 per epoch, one line per run, one colour per method (its seeds share it)."""
    colour = _colours([m.group for m in methods])
    fig, ax = plt.subplots(figsize=(8, 5))
    for m in methods:
        for i, r in enumerate(m.runs):
            ax.plot(r.epochs, [100 * a for a in r.val_top1], marker="o", markersize=3, linewidth=1.2,
                    color=colour[m.group], label=m.group if i == 0 else None, alpha=0.85)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, ncol=2 if len(methods) > 8 else 1, loc="lower right")
    return _save(fig, path)


def final_accuracy(summaries: Sequence[MethodSummary], path: Path, baseline: str | None = None) -> Path:
    """Final top-1 per method: a bar at the mean, an error bar of one std (none for one run), a dot per seed."""
    order = sorted(summaries, key=lambda s: s.mean)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.9 + 0.32 * len(order))))
    y = np.arange(len(order))
    means = [100 * s.mean for s in order]
    colours = ["tab:grey" if s.group == baseline else "tab:blue" for s in order]
    ax.barh(y, means, color=colours, alpha=0.6)
    # One run has no error bar: its spread is unknown, and a zero-length bar would read as none.
    spread = [(i, 100 * s.std) for i, s in enumerate(order) if s.std is not None]
    if spread:
        ax.errorbar([means[i] for i, _ in spread], [i for i, _ in spread], xerr=[e for _, e in spread],
                    fmt="none", ecolor="black", elinewidth=1, capsize=3)
    for i, s in enumerate(order):
        ax.scatter([100 * f for f in s.finals], [i] * len(s.finals), color="black", s=9, zorder=3)
        ax.text(100 * max(s.finals), i, f"  {100 * s.mean:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, [f"{s.group} (n={len(s.finals)})" for s in order], fontsize=8)
    lo = min(min(s.finals) for s in order) * 100
    hi = max(max(s.finals) for s in order) * 100
    ax.set_xlim(max(0.0, lo - 2.0), min(100.0, hi + 3.0))  # room for the mean printed after the last dot
    if baseline is not None and any(s.group == baseline for s in order):
        ax.axvline(100 * next(s for s in order if s.group == baseline).mean, color="tab:grey", linestyle="--",
                   linewidth=1, label=f"{baseline} mean")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("final validation top-1 (%): mean ± std over seeds, dots: seeds")
    ax.set_title("Final accuracy per method")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def accuracy_per_view(accuracy: Sequence[float], path: Path, teacher: str) -> Path:
    """The teacher's top-1 on each cached view of the training set."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    views = np.arange(len(accuracy))
    ax.bar(views, [100 * a for a in accuracy], color="tab:green", alpha=0.7)
    mean = 100 * float(np.mean(accuracy))
    ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.2f}%")
    lo, hi = 100 * min(accuracy), 100 * max(accuracy)
    ax.set_ylim(max(0.0, lo - max(1.0, hi - lo)), min(100.0, hi + max(0.5, (hi - lo) / 2)))
    ax.set_xlabel("view")
    ax.set_ylabel("teacher top-1 on the view (%)")
    ax.set_title(f"Teacher {teacher}: accuracy on each cached view")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tau_star_bars(counts: Mapping[float, int]) -> list[tuple[str, int, float]]:
    """The bars of the τ* histogram: (label, rows, share in %) per grid temperature, in increasing order.

    Labels are the shortest float32 spelling, the dtype τ* is stored in, so
    each grid value has one bar and its label reads as given (1.2, not
    1.2000000476837158).
    """
    total = sum(counts.values())
    return [(str(np.float32(g)).removesuffix(".0"), int(counts[g]), 100 * counts[g] / total if total else 0.0)
            for g in sorted(counts)]


def tau_star_histogram(counts: Mapping[float, int], path: Path) -> Path:
    """Share of cached rows whose ISATS τ* is each grid temperature."""
    bars = tau_star_bars(counts)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar([b[0] for b in bars], [b[2] for b in bars], color="tab:purple", alpha=0.7)
    for i, (_, _, share) in enumerate(bars):
        ax.text(i, share, f"{share:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("τ* (grid temperature)")
    ax.set_ylabel("cached rows (%)")
    ax.set_title(f"ISATS τ* over {sum(b[1] for b in bars):,} cached rows")
    return _save(fig, path)


def class_table_heatmap(table: np.ndarray, classes: Sequence[str], tau0: float, path: Path) -> Path:
    """FGCR's class table: row c is the teacher's mean softmax(t/τ0) over the cached rows of class c."""
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    im = ax.imshow(table, cmap="viridis", vmin=0.0, vmax=1.0)
    n = len(classes)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 20:  # a number per cell stays legible up to about 20 classes
        for i in range(n):
            for j in range(n):
                v = float(table[i, j])
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 else "white")
    ax.set_xlabel("predicted class (mean probability)")
    ax.set_ylabel("true class")
    ax.set_title(f"FGCR class table m (τ0 = {tau0:g})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def accuracy_vs_views(series: Mapping[str, Mapping[int, Sequence[float]]], path: Path) -> Path:
    """Final top-1 against the number of cached views K, one line per labelled series.

    Each series maps K to the final accuracies of its seeds: the line is the
    mean with ± std bars, and every seed is a dot, so a reader sees both the
    trend and how much of it the seed spread could explain.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    all_ks: set[int] = set()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, points) in enumerate(series.items()):
        ks = sorted(points)
        all_ks.update(ks)
        means = [100 * float(np.mean(points[k])) for k in ks]
        stds = [100 * float(np.std(points[k], ddof=1)) if len(points[k]) > 1 else 0.0 for k in ks]
        color = colors[i % len(colors)]
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, color=color, label=f"{label} (mean ± std)")
        for k in ks:
            ax.scatter([k] * len(points[k]), [100 * v for v in points[k]], color=color, s=9, zorder=3,
                       edgecolors="black", linewidths=0.3)
    ax.set_xscale("log", base=2)
    ticks = sorted(all_ks)
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.set_xlabel("cached views per sample K")
    ax.set_ylabel("final validation top-1 (%)")
    ax.set_title("Accuracy against the number of cached views")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
