"""One progress-bar style for every long kdcache command (rich), and the only module that draws on the console.

On a terminal the bar redraws in place. When stderr is not a terminal (a log file, a batch job,
``torchrun``'s captured output) rich draws nothing until a bar stops, so a long phase would be
silent for hours: there each bar also reports a plain line on the ``kdcache.progress`` logger
every 10% of the work, or every minute when 10% takes longer (never more often than every
:data:`MIN_SECONDS`). The CLI prints those records (and every other kdcache log record) through
:data:`console`, above a live bar.

A bar left by an exception is erased, so the error line that follows stands alone.
"""

from __future__ import annotations

import datetime
import logging
import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
log = logging.getLogger(__name__)

# A plain line when a bar crosses each PERCENT_STEP, or when EVERY_SECONDS passed since the last one;
# never two within MIN_SECONDS (a short phase reports only its final bar).
PERCENT_STEP = 10
EVERY_SECONDS = 60.0
MIN_SECONDS = 5.0


def silence() -> None:
    """Draw and print nothing from this process (the other ranks of a torchrun job: one console per job)."""
    console.quiet = True


class LoggedProgress(Progress):
    """rich's :class:`~rich.progress.Progress`, plus log lines off a terminal and an erased bar on error."""

    def __init__(self, *columns: Any, unit: str = "rows", **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.unit = unit
        self._last_line: dict[TaskID, tuple[int, float]] = {}  # task -> (percent step reported, when)

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total, completed=completed, visible=visible,
                                   **fields)
        self._last_line[task_id] = (0, self.get_time())
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        if self.disable or self.console.is_terminal or self.console.quiet:
            return
        task = self._tasks[task_id]
        if not task.total:
            return
        now = self.get_time()
        step = min(100, int(100 * task.completed / task.total)) // PERCENT_STEP
        last_step, last_time = self._last_line.setdefault(task_id, (0, now))
        if step >= 100 // PERCENT_STEP or now - last_time < MIN_SECONDS:
            return  # the final bar, printed when the bar stops, reports 100%
        if step > last_step or now - last_time >= EVERY_SECONDS:
            self._last_line[task_id] = (step, now)
            log.info("%s", self.line(task_id))

    def line(self, task_id: TaskID) -> str:
        """One plain line of where a task stands: done/total, percent, rate, elapsed and ETA."""
        task = self._tasks[task_id]
        total = task.total or 0
        parts = [f"{task.description}: {task.completed:,.0f}/{total:,.0f} {self.unit} "
                 f"({100 * task.completed / total if total else 0:.0f}%)"]
        rate = task.fields.get("rate")
        if rate:
            parts.append(str(rate))
        parts.append(f"elapsed {_clock(task.elapsed)}")
        if task.time_remaining is not None:
            parts.append(f"ETA {_clock(task.time_remaining)}")
        return ", ".join(parts)

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        if exc_type is None:
            super().__exit__(exc_type, exc_val, exc_tb)
            return
        # Erase the bar (off a terminal: skip printing its final state, and the blank line rich adds
        # after it): the error line the caller prints next would otherwise follow a half-done bar.
        self.live.transient = True
        if not self.disable:
            self.live.stop()


def _clock(seconds: float | None) -> str:
    return str(datetime.timedelta(seconds=int(seconds or 0)))


def make_progress(unit: str = "rows", enabled: bool = True) -> LoggedProgress:
    """A rich progress bar showing done/total, throughput in ``unit``/s and ETA.

    Disabled (rendering nothing, logging nothing) when ``enabled`` is false, so library callers
    and tests stay quiet while the CLI shows the bar.
    """
    return LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        unit=unit,
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
