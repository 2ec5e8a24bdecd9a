"""The statistics kdcache computes: ISATS τ* per row, FGCR class tables, teacher accuracy per view.

The formulas are in ``docs/losses.md`` (ISATS and FGCR sections).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kdcache import losses
from kdcache.errors import KdcacheBug, KdcacheError, StoreIncompleteError
from kdcache.losses.mixed import MixedLabels
from kdcache.store import Store
from kdcache.store.stat_io import StatWriter, read_static, row_key
from kdcache.stats.registry import Accumulator, StatContext, StatProvider, StatsOptions, option_number, register


Grid = tuple[float, ...]


def tau_star_grids(entry: Mapping[str, Any]) -> list[Grid]:
    """The grids an ``isats_tau`` card entry holds τ* for, in column order.

    An entry written since store format 2 lists them (``grids``, one column of the (V, N, K) array
    each); an older one holds τ* for the single ``grid`` it records, as a (V, N) array.
    """
    if "grids" in entry:
        return [tuple(float(g) for g in grid) for grid in entry["grids"]]
    return [tuple(float(g) for g in entry["grid"])] if "grid" in entry else []


def tau_star_key(entry: Mapping[str, Any], grid: Sequence[float]) -> str | None:
    """The row key (:func:`~kdcache.store.stat_io.row_key`) of the τ* searched over ``grid``, or None
    when the entry holds none for it."""
    grids = tau_star_grids(entry)
    wanted = tuple(float(g) for g in grid)
    if wanted not in grids:
        return None
    return row_key(IsatsTau.name, grids.index(wanted) if "grids" in entry else None)


def _grid_text(grid: Sequence[float]) -> str:
    return "[" + ", ".join(f"{g:g}" for g in grid) + "]"


class _TauAcc(Accumulator):
    """τ* of every row for each grid: column k of the (V, N, K) array holds the search over ``grids[k]``."""

    def __init__(self, grids: list[Grid], writer_name: str) -> None:
        self.grids = grids
        self.name = writer_name
        self.hist: dict[Grid, dict[float, int]] = {grid: {g: 0 for g in grid} for grid in grids}
        # τ* is stored (and searched) in float32: a grid value float32 cannot hold exactly (1.2)
        # comes back as its float32 neighbour, which must count under the grid value, not beside it.
        self._grid_of = {grid: {float(np.float32(g)): g for g in grid} for grid in grids}
        self.writer: StatWriter | None = None

    def begin(self, writer: StatWriter) -> None:
        self.writer = writer
        writer.per_row(self.name, "float32", {"grids": [list(g) for g in self.grids],
                                              "method": "ISATS tau* per cached row, column k searched over grids[k]"},
                       columns=len(self.grids))

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor | MixedLabels) -> None:
        if self.writer is None:
            raise KdcacheBug("per-row accumulator used before begin()")
        if isinstance(labels, MixedLabels):
            # Mixed rows need two τ* per grid (own label, partner: losses.isats_tau_star gives them);
            # the per-row layout for them comes with the store's mixed views.
            raise KdcacheBug("ISATS tau* of mixed rows needs two columns per grid, which this store layout lacks")
        columns = [losses.isats_tau_star(logits, labels, grid).to(torch.float32).numpy() for grid in self.grids]
        self.writer.write_rows(self.name, view, chunk, np.stack(columns, axis=1))
        for grid, tau in zip(self.grids, columns):
            values, counts = np.unique(tau, return_counts=True)
            for value, k in zip(values, counts):
                g = self._grid_of[grid].get(float(value))
                if g is None:
                    raise KdcacheBug(f"ISATS tau* {float(value)} is not on the grid {list(grid)}")
                self.hist[grid][g] += int(k)

    def finish(self, writer: StatWriter) -> dict[str, Any]:
        return {"grids": [list(g) for g in self.grids]}


@register
class IsatsTau(StatProvider):
    """ISATS τ* of every cached (view, sample) row, searched over each of the temperature grids asked for."""

    name = "isats_tau"
    per_row = True
    loss_arg = "tau_star"
    description = "ISATS tau* of every cached row, per grid"

    def start(self, ctx: StatContext, options: StatsOptions, previous: Mapping[str, Any] | None) -> Accumulator:
        # Keep the grids computed earlier: a second run adds a grid, never drops one (as class tables
        # keep their tau0), so a loss on either grid finds its τ*. Sorted: the columns do not depend
        # on the order the grids were asked in.
        grids = set(tau_star_grids(previous or {})) | {tuple(float(g) for g in options.grid)}
        return _TauAcc(sorted(grids), self.name)

    def serve(self, store: Store, teacher: str, entry: Mapping[str, Any], wanted: Mapping[str, Any],
              fix: str) -> str:
        key = tau_star_key(entry, wanted["grid"])
        if key is None:
            held = " and ".join(_grid_text(g) for g in tau_star_grids(entry)) or "no grid"
            raise StoreIncompleteError(
                f"the store's ISATS tau* was searched over {held}, the loss asks {_grid_text(wanted['grid'])}; "
                f"{fix} (the store keeps the tau* it has)")
        return key

    def fix_options(self, wanted: Mapping[str, Any]) -> str:
        return "".join(f" --grid {option_number(g)}" for g in wanted.get("grid", []))

    def made_with(self, entry: Mapping[str, Any]) -> str:
        # One grid is enough: a run keeps every grid the entry holds; naming none would add the default.
        grids = tau_star_grids(entry)
        return self.fix_options({"grid": grids[0]}) if grids else ""


class _TableAcc(Accumulator):
    def __init__(self, tau0s: list[float], num_classes: int) -> None:
        self.tau0s = tau0s
        self.sums = np.zeros((len(tau0s), num_classes, num_classes), dtype=np.float64)
        # float64 weights: a mixed row counts λ toward its class and 1 − λ toward its partner's
        # (docs/methods.md, FGCR, "Mixed views"); whole counts are exact in float64, so unmixed
        # tables are what integer counts gave.
        self.counts = np.zeros(num_classes, dtype=np.float64)

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor | MixedLabels) -> None:
        for k, t0 in enumerate(self.tau0s):
            s, c = losses.class_table_sums(logits, labels, self.sums.shape[1], t0)
            self.sums[k] += np.asarray(s, dtype=np.float64)
            if k == 0:
                self.counts += np.asarray(c, dtype=np.float64)

    def finish(self, writer: StatWriter) -> dict[str, Any]:
        empty = np.flatnonzero(self.counts == 0)
        if empty.size:
            raise KdcacheError(
                f"class(es) {empty.tolist()[:10]} have no cached rows, so their FGCR class-table row is "
                "undefined; precompute over data that holds every class"
            )
        table = (self.sums / self.counts[None, :, None]).astype(np.float32)
        writer.static("class_table", table, {"tau0": self.tau0s, "rows": "all cached (view, sample) rows, hard labels",
                                             "method": "FGCR class table m_c"})
        return {"tau0": self.tau0s, "rows": "all cached rows"}


@register
class ClassTable(StatProvider):
    """FGCR class tables: per τ0, row c is the mean softmax(t/τ0) over cached rows of class c."""

    name = "class_table"
    loss_arg = "class_table"
    description = "FGCR class tables, one per tau0"

    def start(self, ctx: StatContext, options: StatsOptions, previous: Mapping[str, Any] | None) -> Accumulator:
        # Keep the tables asked for earlier: a second run adds τ0 values, never drops one.
        before = [float(t) for t in (previous or {}).get("tau0", [])]
        return _TableAcc(sorted(set(options.tau0) | set(before)), ctx.num_classes)

    def serve(self, store: Store, teacher: str, entry: Mapping[str, Any], wanted: Mapping[str, Any],
              fix: str) -> torch.Tensor | None:
        tau0s = [float(t) for t in entry.get("tau0", [])]
        tau0 = float(wanted["tau0"])
        if tau0 not in tau0s:
            raise StoreIncompleteError(
                f"the loss needs the class table for tau0={tau0:g}, the store has {tau0s}; {fix}")
        table, _ = read_static(store, teacher, self.name)
        return torch.from_numpy(np.asarray(table[tau0s.index(tau0)], dtype=np.float32))

    def fix_options(self, wanted: Mapping[str, Any]) -> str:
        return f" --tau0 {option_number(wanted['tau0'])}"

    def made_with(self, entry: Mapping[str, Any]) -> str:
        # Every table the entry holds: a run keeps earlier ones anyway, and the command shows what it rewrites.
        return "".join(f" --tau0 {option_number(t)}" for t in entry.get("tau0", []))


class _AccuracyAcc(Accumulator):
    def __init__(self, num_views: int, num_samples: int) -> None:
        self.correct = np.zeros(num_views, dtype=np.int64)
        self.num_samples = num_samples

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor | MixedLabels) -> None:
        # A mixed view is right when the teacher's top class is its dominant label (timm's top-1 on mixed targets).
        target = labels.dominant() if isinstance(labels, MixedLabels) else labels
        self.correct[view] += int((logits.argmax(dim=1) == target).sum())

    def finish(self, writer: StatWriter) -> dict[str, Any]:
        accuracy = (self.correct / max(1, self.num_samples)).astype(np.float32)
        writer.static("accuracy", accuracy, {"method": "teacher top-1 per view"})
        return {"values": [float(a) for a in accuracy]}


@register
class Accuracy(StatProvider):
    """Teacher top-1 accuracy per view (not used by losses; shown by ``kdcache info``)."""

    name = "accuracy"
    description = "teacher top-1 per view"

    def start(self, ctx: StatContext, options: StatsOptions, previous: Mapping[str, Any] | None) -> Accumulator:
        return _AccuracyAcc(ctx.num_views, ctx.num_samples)
