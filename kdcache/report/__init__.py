"""Plots people would rather look at than read: ``kdcache report``.

:func:`write_report` turns run directories (and optionally a store's
statistics) into PNG figures and a markdown page embedding them; ``kdcache
quickstart`` and ``kdcache sweep`` call it on their own runs.
"""

from __future__ import annotations

from kdcache.report.page import (
    ReportResult,
    StoreFigures,
    format_report,
    read_store_stats,
    remove_earlier_report,
    report_sweep,
    store_has_stats,
    write_report,
)
from kdcache.report.runs import MethodSummary, RunRecord, grouping_notes, load_run, load_runs, summarise

__all__ = [
    "MethodSummary",
    "ReportResult",
    "RunRecord",
    "StoreFigures",
    "format_report",
    "grouping_notes",
    "load_run",
    "load_runs",
    "read_store_stats",
    "remove_earlier_report",
    "report_sweep",
    "store_has_stats",
    "summarise",
    "write_report",
]
