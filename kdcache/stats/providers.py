"""The statistics kdcache computes: ISATS τ* per row, FGCR class tables, teacher accuracy per view.

The formulas are in ``docs/losses.md`` (ISATS and FGCR sections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdcache import losses
from kdcache.errors import KdcacheBug, KdcacheError, StoreIncompleteError
from kdcache.store import Store
from kdcache.store.stat_io import StatWriter, read_static
from kdcache.stats.registry import Accumulator, StatContext, StatProvider, StatsOptions, option_number, register


class _TauAcc(Accumulator):
    def __init__(self, grid: list[float], writer_name: str) -> None:
        self.grid = grid
        self.name = writer_name
        self.hist: dict[float, int] = {g: 0 for g in grid}
        # τ* is stored (and searched) in float32: a grid value float32 cannot hold exactly (1.2)
        # comes back as its float32 neighbour, which must count under the grid value, not beside it.
        self._grid_of = {float(np.float32(g)): g for g in grid}
        self.chunks: list[tuple[int, int, np.ndarray]] = []
        self.writer: StatWriter | None = None

    def begin(self, writer: StatWriter) -> None:
        self.writer = writer
        writer.per_row(self.name, "float32", {"grid": self.grid, "method": "ISATS tau* per cached row"})

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        tau = losses.isats_tau_star(logits, labels, self.grid).to(torch.float32).numpy()
        if self.writer is None:
            raise KdcacheBug("per-row accumulator used before begin()")
        self.writer.write_rows(self.name, view, chunk, tau)
        values, counts = np.unique(tau, return_counts=True)
        for value, k in zip(values, counts):
            g = self._grid_of.get(float(value))
            if g is None:
                raise KdcacheBug(f"ISATS tau* {float(value)} is not on the grid {self.grid}")
            self.hist[g] += int(k)

    def finish(self, writer: StatWriter) -> dict[str, Any]:
        return {"grid": self.grid}


@register
class IsatsTau(StatProvider):
    """ISATS τ* of every cached (view, sample) row, searched over a temperature grid."""

    name = "isats_tau"
    per_row = True
    loss_arg = "tau_star"
    description = "ISATS tau* of every cached row"

    def start(self, ctx: StatContext, options: StatsOptions, previous: Mapping[str, Any] | None) -> Accumulator:
        return _TauAcc([float(g) for g in options.grid], self.name)

    def serve(self, store: Store, teacher: str, entry: Mapping[str, Any], wanted: Mapping[str, Any],
              fix: str) -> torch.Tensor | None:
        grid = [float(g) for g in entry.get("grid", [])]
        if grid != [float(g) for g in wanted["grid"]]:
            raise StoreIncompleteError(
                f"the store's tau* was searched over {grid}, the loss asks {list(wanted['grid'])}; {fix}")
        return None

    def fix_options(self, wanted: Mapping[str, Any]) -> str:
        return "".join(f" --grid {option_number(g)}" for g in wanted.get("grid", []))

    def made_with(self, entry: Mapping[str, Any]) -> str:
        return self.fix_options(entry)  # the entry records the grid as a loss asks for it


class _TableAcc(Accumulator):
    def __init__(self, tau0s: list[float], num_classes: int) -> None:
        self.tau0s = tau0s
        self.sums = np.zeros((len(tau0s), num_classes, num_classes), dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for k, t0 in enumerate(self.tau0s):
            s, c = losses.class_table_sums(logits, labels, self.sums.shape[1], t0)
            self.sums[k] += np.asarray(s, dtype=np.float64)
            if k == 0:
                self.counts += np.asarray(c, dtype=np.int64)

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

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct[view] += int((logits.argmax(dim=1) == labels).sum())

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
