"""Reading run directories (``distill``'s files) into what the report plots.

A run directory is what ``kdcache distill`` (or one student of ``kdcache
sweep``) writes: ``run.json``, ``metrics.jsonl`` and, once finished,
``summary.json``. Runs are grouped into *methods* by their directory name
with a trailing ``-sN`` (the init seed a sweep appends) removed, so
``kd-s0``, ``kd-s1`` and ``kd-s2`` are the three seeds of ``kd``; a run
without that suffix is a group of one.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdcache.errors import RunError

_SEED_SUFFIX = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")


@dataclass(frozen=True)
class RunRecord:
    """One run: its name, method group, loss, options and per-epoch validation accuracy."""

    path: Path
    name: str
    group: str
    seed: int | None
    loss: str
    loss_opts: dict[str, Any]
    epochs: list[int]
    val_top1: list[float]
    finished: bool

    @property
    def final_top1(self) -> float:
        """Validation top-1 after the last logged epoch."""
        return self.val_top1[-1]


@dataclass(frozen=True)
class MethodSummary:
    """The runs of one group: mean and sample standard deviation of their final accuracy."""

    group: str
    loss: str
    loss_opts: dict[str, Any]
    finals: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals)

    @property
    def std(self) -> float:
        # Sample standard deviation (n-1): with 3 seeds it is the usual "± std" of papers; 0 for one run.
        return statistics.stdev(self.finals) if len(self.finals) > 1 else 0.0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read as JSON ({type(exc).__name__}); is this a kdcache run directory?") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object; is this a kdcache run directory?")
    return data


def load_run(path: str | Path) -> RunRecord:
    """Read one run directory; a directory that is not a kdcache run is one :class:`RunError` line."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a directory; pass run directories (the --out of kdcache distill or sweep)")
    metrics_path = path / "metrics.jsonl"
    if not (path / "run.json").is_file() or not metrics_path.is_file():
        raise RunError(f"{path} has no run.json and metrics.jsonl; pass run directories (the --out of kdcache distill)")
    args = _read_json(path / "run.json").get("args", {})
    epochs: list[int] = []
    top1: list[float] = []
    for n, line in enumerate(metrics_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            epoch, acc = int(row["epoch"]), float(row["val_top1"])
        except (ValueError, KeyError, TypeError):
            raise RunError(f"{metrics_path}: line {n} is not an epoch record with epoch and val_top1") from None
        if not math.isfinite(acc):
            raise RunError(f"{metrics_path}: line {n} has a non-finite val_top1")
        epochs.append(epoch)
        top1.append(acc)
    if not top1:
        raise RunError(f"{path} has no finished epoch yet (metrics.jsonl is empty); report it once an epoch is logged")
    match = _SEED_SUFFIX.match(path.name)
    group, seed = (match["group"], int(match["seed"])) if match else (path.name, None)
    opts = args.get("loss_opts") or {}
    return RunRecord(path=path, name=path.name, group=group, seed=seed, loss=str(args.get("loss", "?")),
                     loss_opts=dict(opts) if isinstance(opts, dict) else {}, epochs=epochs, val_top1=top1,
                     finished=(path / "summary.json").is_file())


def load_runs(paths: Sequence[str | Path]) -> list[RunRecord]:
    """Read every run directory; two runs with the same directory name would be confused in the plots."""
    if not paths:
        raise RunError("no run directories given; pass at least one RUN_DIR")
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunError(f"two run directories are both named {dup[0]!r}; report them separately or rename one")
    return runs


def summarise(runs: Sequence[RunRecord]) -> list[MethodSummary]:
    """One summary per group, in the order the groups first appear."""
    by_group: dict[str, MethodSummary] = {}
    for r in runs:
        s = by_group.setdefault(r.group, MethodSummary(r.group, r.loss, r.loss_opts))
        s.finals.append(r.final_top1)
    return list(by_group.values())
