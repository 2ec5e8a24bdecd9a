"""``kdcache report``: PNG plots of runs (and a store) plus a markdown page embedding them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdcache.errors import KdcacheError, RunError, StoreError, StoreIncompleteError, UsageError
from kdcache.report import plots
from kdcache.report.runs import MethodSummary, RunRecord, grouping_notes, load_runs, summarise

if TYPE_CHECKING:
    from kdcache.store import Store

PAGE = "report.md"
# Every file a report writes (the class tables by τ0, spelled as f"{tau0:g}"): removed from a reused --out first.
_OWN_FILES = frozenset({PAGE, "curves.png", "final.png", "teacher_accuracy.png", "tau_star.png"})
_CLASS_TABLE_FILE = re.compile(r"class_table_tau0-\d+(?:\.\d+)?(?:e[+-]\d+)?\.png")


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


def _tau_counts(store: Store, name: str, entry: dict[str, Any]) -> dict[float, int]:
    """Cached rows per grid temperature of the stored ISATS τ*, one chunk at a time (memory stays one chunk).

    τ* is stored as float32, and a grid value such as 1.2 or 0.3 is no
    float32: the rows are matched to the grid in float32 so that each grid
    value counts its rows once (keyed by the grid value as recorded). A
    value off the grid means the statistic does not fit its own record.
    """
    from kdcache.stats.providers import tau_star_grids, tau_star_key
    from kdcache.store.stat_io import RowStatReader

    grids = tau_star_grids(entry)  # the first grid the store holds τ* for (one figure)
    grid = [float(g) for g in (grids[0] if grids else [])]
    grid32, first = np.unique(np.asarray(grid, dtype=np.float32), return_index=True)
    counts = np.zeros(len(grid32), dtype=np.int64)
    reader = RowStatReader(store, name, tau_star_key(entry, grid) or "isats_tau")
    for view, chunk in store.iter_chunks():
        values = np.asarray(reader.read_chunk(view, chunk), dtype=np.float32).ravel()
        index = np.minimum(np.searchsorted(grid32, values), max(0, len(grid32) - 1))
        off = values.size if not len(grid32) else int(np.count_nonzero(grid32[index] != values))
        if off:
            raise StoreError(f"{store.path}: {off} ISATS tau* value(s) of teacher {name!r} in view {view}, chunk "
                             f"{chunk} are not on its grid {grid}; run `kdcache stats {store.path}` again")
        counts += np.bincount(index, minlength=len(grid32))
    return {grid[i]: int(c) for i, c in zip(first, counts)}


def read_store_stats(path: str | Path, teacher: str | None = None) -> StoreFigures:
    """Read a store's statistics (written by ``kdcache stats``): checksum-verified, read-only.

    A store without statistics is one line saying to run ``kdcache stats``.
    """
    from kdcache.store import Store
    from kdcache.store.stat_io import listed, read_static

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
    tau_counts = _tau_counts(store, name, entries["isats_tau"]) if "isats_tau" in entries else None
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
        # One run has no known spread: "± 0.00" would read as none.
        top1 = f"{100 * s.mean:.2f} (n=1)" if s.std is None else f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"
        lines.append(f"| {s.group} | {s.loss} | {_opts_text(s.loss_opts)} | {s.n} | {top1} | {delta} |")
    return lines


def check_sweep_records(paths: Sequence[str | Path]) -> None:
    """Refuse a sweep directory whose ``sweep.json`` is not the JSON object a sweep writes, naming the file.

    The report reads a sweep's students from their own run directories; a damaged record would
    otherwise pass for a sweep that has not started a student yet.
    """
    for path in map(Path, paths):
        record = path / "sweep.json"  # kdcache.distill.sweep_records.SWEEP_JSON
        if not (path.is_dir() and record.is_file()) or (path / "run.json").exists():
            continue
        try:
            data = json.loads(record.read_text())
        except ValueError as exc:  # not JSON, or not UTF-8
            problem = f"not JSON ({exc})"
        else:
            problem = "" if isinstance(data, dict) else f"a JSON {type(data).__name__}, not the object a sweep writes"
        if problem:
            raise RunError(f"{record} is malformed: {problem}; restore it, or report the sweep's students by "
                           f"their own run directories ({path}/NAME-sN)")


def make_report_dir(out: Path) -> None:
    """Create the report directory ``out`` (and its parents), or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise KdcacheError(f"the report directory {out} exists and is not a directory; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileNotFoundError as exc:
        # Its parents exist by now, so "no such file" means the filesystem refuses new entries (/proc, /sys).
        made = Path(exc.filename) if exc.filename else out
        raise KdcacheError(f"cannot create the report directory {out}: {made.parent} does not accept new "
                           "directories (a virtual or special filesystem); choose a path you can write to") from None


def remove_earlier_report(out: Path) -> list[Path]:
    """Delete the files an earlier report wrote in ``out``, so that no stale figure sits beside the new page.

    Only names this module writes are removed (``report.md``, the fixed
    PNGs, ``class_table_tau0-T.png`` with a number T); any other file in
    ``out`` is the user's and stays.
    """
    removed = []
    for path in sorted(out.iterdir()):
        own = path.name in _OWN_FILES or _CLASS_TABLE_FILE.fullmatch(path.name) is not None
        if own and (path.is_file() or path.is_symlink()):
            path.unlink()
            removed.append(path)
    return removed


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
    (``class_table_tau0-T.png``). A method is the run directories named
    ``NAME-sN`` that recorded the same settings but for their seeds; runs
    of one name that differ are split into methods labelled by the
    difference (see :mod:`kdcache.report.runs`). ``baseline`` names the
    method the page compares against (CE by default) when present.
    Nothing is written before every input has been read, so a bad input
    leaves ``out`` as it was; then the files of an earlier report in ``out``
    are removed (see :func:`remove_earlier_report`).
    """
    check_sweep_records(runs)
    records: list[RunRecord] = load_runs(runs) if runs else []
    figures_data = read_store_stats(store, teacher) if store is not None else None
    if not records and figures_data is None:
        raise UsageError("nothing to report: give run directories and/or a store")
    out = Path(out)
    make_report_dir(out)
    remove_earlier_report(out)
    result = ReportResult(out=out, page=out / PAGE)
    page = [f"# {title}", ""]
    if records:
        result.summaries = summarise(records)
        base = baseline if any(s.group == baseline for s in result.summaries) else None
        result.figures["curves"] = plots.accuracy_curves(result.summaries, out / "curves.png")
        result.figures["final"] = plots.final_accuracy(result.summaries, out / "final.png", base)
        unfinished = [r.name for r in records if not r.finished]
        page += ["## Students", "", *_table(result.summaries, base), "",
                 ("Mean ± sample standard deviation over the runs of each method (its seeds); "
                  "a method of one run shows its accuracy and n=1."), ""]
        for note in grouping_notes(result.summaries):
            result.notes.append(note)
            page += [note, ""]
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
