"""One progress-bar style for every long kdcache command (rich)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def make_progress(unit: str = "rows", enabled: bool = True) -> Progress:
    """A rich progress bar showing done/total, throughput in ``unit``/s and ETA.

    Disabled (rendering nothing) when ``enabled`` is false, so library callers
    and tests stay quiet while the CLI shows the bar.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
        refresh_per_second=4 if sys.stderr.isatty() else 0.5,
    )


def rate_text(done: float, seconds: float, unit: str) -> str:
    """'1,234 unit/s' for a progress field."""
    if seconds <= 0:
        return f"- {unit}/s"
    return f"{done / seconds:,.0f} {unit}/s"
