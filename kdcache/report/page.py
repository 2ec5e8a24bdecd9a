"""``kdcache report``: PNG plots of runs (and a store) plus a markdown page embedding them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdcache.errors import KdcacheError, StoreIncompleteError, UsageError
from kdcache.report import plots
from kdcache.report.runs import MethodSummary, RunRecord, load_runs, summarise

PAGE = "report.md"


@dataclass
class ReportResult:
    """What :func:`write_report` wrote: the page, every PNG, and the numbers behind them."""

    out: Path
    page: Path
    figures: dict[str, Path] = field(default_factory=dict)
    summaries: list[MethodSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class StoreFigures:
    """The store's statistics as plain data (see :func:`read_store_stats`)."""

    teacher: str
    classes: list[str]
    accuracy: list[float] | None
    tau_counts: dict[float, int] | None
    class_tables: dict[float, np.ndarray]


def _class_names(spec: str, num_classes: int) -> list[str]:
    """The class names of the store's dataset for the heat map's axes.

    The store records the data spec, not the names; the names come from
    opening that spec (which reads no images). Where the data is not on this
    machine the axes show class indices instead: the figure is still right,
    only less readable.
    """
    from kdcache.data import open_data

    try:
        names = [str(c) for c in open_data(spec).classes]
    except KdcacheError:
        return [str(c) for c in range(num_classes)]
    return names if len(names) == num_classes else [str(c) for c in range(num_classes)]


def read_store_stats(path: str | Path, teacher: str | None = None) -> StoreFigures:
    """Read a store's statistics (written by ``kdcache stats``): checksum-verified, read-only.

    A store without statistics is one line saying to run ``kdcache stats``.
    """
    from kdcache.store import Store
    from kdcache.store.stat_io import RowStatReader, listed, read_static

    store = Store.open(path)
    name = store.require_complete(teacher)
    entries = listed(store, name)
    if not entries:
        raise StoreIncompleteError(f"{path} has no statistics for teacher {name!r}; run `kdcache stats {path}` first")
    classes = _class_names(store.dataset.spec, store.dataset.num_classes)
    accuracy = None
    if "accuracy" in entries:
        values, _ = read_static(store, name, "accuracy")
        accuracy = [float(v) for v in np.asarray(values).ravel()]
    tau_counts = None
    if "isats_tau" in entries:
        grid = [float(g) for g in entries["isats_tau"].get("grid", [])]
        counts = {g: 0 for g in grid}
        reader = RowStatReader(store, name, "isats_tau")
        for view, chunk in store.iter_chunks():  # one chunk at a time: memory stays one chunk
            values, k = np.unique(reader.read_chunk(view, chunk), return_counts=True)
            for v, c in zip(values, k):
                counts[float(v)] = counts.get(float(v), 0) + int(c)
        tau_counts = counts
    tables: dict[float, np.ndarray] = {}
    if "class_table" in entries:
        data, attrs = read_static(store, name, "class_table")
        for i, t0 in enumerate(attrs.get("tau0", entries["class_table"].get("tau0", []))):
            tables[float(t0)] = np.asarray(data[i], dtype=np.float64)
    return StoreFigures(teacher=name, classes=classes, accuracy=accuracy, tau_counts=tau_counts, class_tables=tables)


def _opts_text(opts: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(opts.items())) or "defaults"


def _table(summaries: Sequence[MethodSummary], baseline: str | None) -> list[str]:
    base = next((s for s in summaries if s.group == baseline), None)
    lines = ["| method | loss | options | runs | final top-1 (%) | vs " + (baseline or "baseline") + " |",
             "|---|---|---|---|---|---|"]
    for s in sorted(summaries, key=lambda s: -s.mean):
        delta = f"{100 * (s.mean - base.mean):+.2f}" if base is not None else "n/a"
        lines.append(f"| {s.group} | {s.loss} | {_opts_text(s.loss_opts)} | {len(s.finals)} | "
                     f"{100 * s.mean:.2f} ± {100 * s.std:.2f} | {delta} |")
    return lines


def write_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    store: str | Path | None = None,
    teacher: str | None = None,
    baseline: str | None = "ce",
    title: str = "kdcache report",
) -> ReportResult:
    """Write PNG plots of ``runs`` (and of ``store``'s statistics) and ``out/report.md`` embedding them.

    Figures: validation accuracy per epoch per run (``curves.png``); final
    accuracy per method, mean ± std over the seeds of a method
    (``final.png``); for a store, the teacher's accuracy per view
    (``teacher_accuracy.png``), the histogram of ISATS τ*
    (``tau_star.png``) and one heat map per FGCR class table
    (``class_table_tau0-T.png``). A method is a group of run directories
    named ``NAME-sN`` (see :mod:`kdcache.report.runs`). ``baseline`` names
    the group the page compares against (CE by default) when present.
    Nothing is written before every input has been read, so a bad input
    leaves ``out`` as it was.
    """
    records: list[RunRecord] = load_runs(runs) if runs else []
    figures_data = read_store_stats(store, teacher) if store is not None else None
    if not records and figures_data is None:
        raise UsageError("nothing to report: pass run directories and/or --store STORE")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdcacheError(f"--out {out} exists and is not a directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out=out, page=out / PAGE)
    page = [f"# {title}", ""]
    if records:
        result.summaries = summarise(records)
        base = baseline if any(s.group == baseline for s in result.summaries) else None
        result.figures["curves"] = plots.accuracy_curves(records, out / "curves.png")
        result.figures["final"] = plots.final_accuracy(result.summaries, out / "final.png", base)
        unfinished = [r.name for r in records if not r.finished]
        page += ["## Students", "", *_table(result.summaries, base), "",
                 "Mean ± sample standard deviation over the runs of each method (its seeds).", ""]
        if unfinished:
            note = f"Still running (last logged epoch shown): {', '.join(unfinished)}."
            result.notes.append(note)
            page += [note, ""]
        page += ["![final accuracy per method](final.png)", "", "![validation accuracy per epoch](curves.png)", ""]
    if figures_data is not None:
        page += [f"## Store: teacher {figures_data.teacher}", ""]
        if figures_data.accuracy is not None:
            result.figures["teacher_accuracy"] = plots.accuracy_per_view(
                figures_data.accuracy, out / "teacher_accuracy.png", figures_data.teacher)
            page += [f"Teacher top-1 over the cached views: mean {100 * np.mean(figures_data.accuracy):.2f}%, "
                     f"range {100 * min(figures_data.accuracy):.2f}–{100 * max(figures_data.accuracy):.2f}%.", "",
                     "![teacher accuracy per view](teacher_accuracy.png)", ""]
        if figures_data.tau_counts is not None:
            result.figures["tau_star"] = plots.tau_star_histogram(figures_data.tau_counts, out / "tau_star.png")
            page += ["![ISATS tau* histogram](tau_star.png)", ""]
        for t0, table in sorted(figures_data.class_tables.items()):
            key = f"class_table_tau0-{t0:g}"
            result.figures[key] = plots.class_table_heatmap(table, figures_data.classes, t0, out / f"{key}.png")
            page += [f"![FGCR class table, tau0={t0:g}]({key}.png)", ""]
        if figures_data.accuracy is None and figures_data.tau_counts is None and not figures_data.class_tables:
            result.notes.append("the store lists no statistic this report draws")
    result.page.write_text("\n".join(page))
    return result


def store_has_stats(path: str | Path, teacher: str | None = None) -> bool:
    """Whether ``kdcache stats`` has written statistics for the store's teacher (read-only check)."""
    from kdcache.store import Store
    from kdcache.store.stat_io import listed

    store = Store.open(path)
    return bool(listed(store, store.resolve_teacher(teacher)))


def report_sweep(out: str | Path, runs: Sequence[str | Path], store: str | Path, teacher: str | None = None,
                 ) -> ReportResult:
    """The report ``kdcache sweep`` writes in ``OUT/report``: its students, and the store's statistics if it has them.

    A store without statistics is not an error here (a sweep of CE and KD
    needs none); the page then has the students only and says how to add
    the store figures.
    """
    with_stats = store_has_stats(store, teacher)
    result = write_report(runs, Path(out) / "report", store=store if with_stats else None, teacher=teacher,
                          title=f"kdcache sweep {Path(out).name}")
    if not with_stats:
        note = f"the store has no statistics; `kdcache stats {store}` then `kdcache report` adds its figures"
        result.notes.append(note)
        with result.page.open("a") as f:
            f.write(f"\n\nNo store figures: {note}.\n")
    return result


def format_report(result: ReportResult) -> str:
    """What ``kdcache report`` prints: where the page and each figure are."""
    lines = [f"report: {result.page}"]
    lines += [f"  {name:<22} {path}" for name, path in result.figures.items()]
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)
