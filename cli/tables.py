"""Tables the CLI renders from data the library returns (the library itself prints nothing)."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the import costs torch; the CLI has already paid it when it holds a result
    from kdcache.precompute.run import PrecomputeResult
    from kdcache.quickstart import QuickstartResult


def quickstart_table(result: QuickstartResult) -> str:
    """The closing table of ``kdcache quickstart``: accuracy, time and throughput per student, and the speed-up."""
    ce = result.row("ce", "cached").val_top1
    lines = [
        f"teacher {result.teacher}: val top-1 {result.teacher_top1:.2%}; precompute {result.precompute_seconds:.1f}s",
        f"student {result.student} on {result.data} ({result.val_data} for validation)",
        "",
        f"{'method':<8} {'mode':<7} {'val top-1':>9} {'vs CE':>7} {'time':>7} {'samples/s':>10}  options",
    ]
    for r in result.rows:
        opts = ", ".join(f"{k}={v:g}" for k, v in r.options.items()) or "defaults"
        lines.append(
            f"{r.method:<8} {r.mode:<7} {r.val_top1:>9.2%} {100 * (r.val_top1 - ce):>+6.2f}p "
            f"{r.seconds:>6.1f}s {r.samples_per_s:>10,.0f}  {opts}"
        )
    lines += ["", f"speed-up of cached over online KD: {result.speedup:.2f}x "
                  f"(online runs the teacher every step; cached reads its logits from {result.store})"]
    if result.plot is not None:
        lines += [f"plot: {result.plot} (accuracy per method); every figure: {result.report}"]
    return "\n".join(lines)


def format_summary(result: PrecomputeResult) -> str:
    """The human summary printed at the end of ``kdcache precompute``."""
    lines = [f"store: {result.store}"]
    for t in result.teachers:
        acc = ", ".join(f"{a:.2%}" for a in t.accuracy_per_view[:8])
        more = " ..." if len(t.accuracy_per_view) > 8 else ""
        mean = statistics.fmean(t.accuracy_per_view) if t.accuracy_per_view else math.nan
        lines.append(
            f"teacher {t.name}: {t.rows_written:,} views scored"
            + (f" ({t.rows_skipped:,} already stored)" if t.rows_skipped else "")
            + f" in {t.seconds:.1f}s ({t.rows_per_s:,.0f} views/s)"
        )
        lines.append(f"  accuracy per view: {acc}{more} (mean {mean:.2%})")
        lines.append(f"  logits: {t.bytes_per_view / 1e6:.2f} MB per view; store on disk {t.disk_bytes / 1e6:.2f} MB")
    return "\n".join(lines)
