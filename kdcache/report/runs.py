"""Reading run directories (``distill``'s files) into what the report plots.

A run directory is what ``kdcache distill`` (or one student of ``kdcache
sweep``) writes: ``run.json``, ``metrics.jsonl`` and, once finished,
``summary.json``; it is read through :class:`kdcache.engine.run_dir.RunDir`,
which refuses a ``metrics.jsonl`` that repeats an epoch (two writers). Runs are grouped into *methods*: runs whose directory
names agree once a trailing ``-sN`` (the init seed a sweep appends) is
removed, so ``kd-s0``, ``kd-s1`` and ``kd-s2`` are the three seeds of
``kd``; a run without that suffix is a group of one.

A name alone does not make runs comparable (``sweepA/kd-s0`` and
``sweepB/kd-s1`` may have used other temperatures), so a group also agrees
on everything its ``run.json`` records as the run's identity: the loss and
its resolved hyper-parameters, the student, the epochs, the optimiser, the
data (spec and content) and the store or online teacher it read (by
content hash). Only the seeds (``seed``, ``init_seed``, ``view_seed``) may
vary within a group. Runs of one name that differ in anything else are
split into separate methods, each labelled by the name and the fields that
tell them apart: ``kd (temperature=2)`` and ``kd (temperature=8)``.
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

from kdcache.engine.run_dir import RunDir
from kdcache.errors import RunError

_SEED_SUFFIX = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
SEED_FIELDS = ("seed", "init_seed", "view_seed")
"""Identity fields that are expected to vary among the runs of one method (its seeds)."""
# What the run read, recorded beside its identity: compared by content, shown under these names.
_INPUTS = {"store_input_hash": "store", "teacher_input_hash": "teacher card",
           "data_fingerprint": "data content", "val_data_fingerprint": "val data content"}
_FIRST = ("loss", "loss_opts.", "student", "epochs", "store_input_hash", "teacher", "teacher_input_hash")
_MISSING = object()  # a field one run records and another does not


@dataclass(frozen=True)
class RunRecord:
    """One run: its name, loss, options, what it is comparable on, and its per-epoch validation accuracy."""

    path: Path
    name: str
    group: str  # the directory name less a trailing -sN
    seed: int | None  # N of that -sN
    loss: str
    loss_opts: dict[str, Any]
    epochs: list[int]
    val_top1: list[float]
    finished: bool
    settings: dict[str, Any] = field(default_factory=dict)  # dotted field -> JSON value; equal within a method
    seeds: dict[str, Any] = field(default_factory=dict)  # the recorded seed fields
    store: str | None = None  # the store path it read (for labels; the content is in settings)

    @property
    def final_top1(self) -> float:
        """Validation top-1 after the last logged epoch."""
        return self.val_top1[-1]

    @property
    def key(self) -> str:
        """The settings as one canonical string: runs of one name with equal keys are one method."""
        return json.dumps(self.settings, sort_keys=True)


@dataclass(frozen=True)
class MethodSummary:
    """The runs of one method: mean and sample standard deviation of their final accuracy.

    ``group`` is the label shown (the name, plus the differing fields when
    runs of that name were split); ``differs`` names those fields.
    """

    group: str
    name: str
    loss: str
    loss_opts: dict[str, Any]
    runs: tuple[RunRecord, ...] = ()
    differs: tuple[str, ...] = ()

    @property
    def finals(self) -> list[float]:
        """Final validation top-1 of each run, in the order given."""
        return [r.final_top1 for r in self.runs]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1), the usual "± std" over seeds; None for one run (no spread known)."""
        return statistics.stdev(self.finals) if len(self.runs) > 1 else None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _resolved_opts(loss: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The loss's complete hyper-parameters, so ``{}`` and the defaults spelled out compare equal (as a
    ``--resume`` compares them); a loss this kdcache does not know is compared as recorded."""
    from kdcache.distill.run import resolve_identity

    return resolve_identity({"loss": loss, "loss_opts": opts})["loss_opts"]


def _identity(record: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """What the run recorded as its identity; for a record without one (older kdcache), its arguments less those
    that may change on resume."""
    identity = record.get("identity")
    if isinstance(identity, dict):
        return identity
    from dataclasses import fields

    from kdcache.distill.run import DistillConfig

    may_change = {f.name for f in fields(DistillConfig) if f.metadata.get("may_change_on_resume")}
    return {k: v for k, v in args.items() if k not in may_change}


def _settings(record: dict[str, Any], args: dict[str, Any], loss: str, opts: dict[str, Any]) -> dict[str, Any]:
    identity = {k: v for k, v in _identity(record, args).items() if k not in SEED_FIELDS}
    identity["loss_opts"] = _resolved_opts(loss, opts)
    settings = _flatten(identity)
    settings.update({k: record[k] for k in _INPUTS if record.get(k) is not None})
    return settings


def load_run(path: str | Path) -> RunRecord:
    """Read one run directory; a directory that is not a kdcache run is one :class:`RunError` line."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a directory; pass run directories (the --out of kdcache distill or sweep)")
    run = RunDir(path)
    if not run.record_path.is_file() or not run.files.metrics.is_file():
        raise RunError(f"{path} has no run.json and metrics.jsonl; pass run directories (the --out of kdcache distill)")
    record = run.read_record()
    args = record.get("args") if isinstance(record.get("args"), dict) else {}
    rows = run.read_metrics()  # each epoch once, or one line saying the records cannot be trusted
    epochs = [int(r["epoch"]) for r in rows]
    top1 = [float(r["val_top1"]) for r in rows]
    bad = next((e for e, acc in zip(epochs, top1) if not math.isfinite(acc)), None)
    if bad is not None:
        raise RunError(f"{run.files.metrics}: epoch {bad} has a non-finite val_top1")
    if not top1:
        raise RunError(f"{path} has no finished epoch yet (metrics.jsonl is empty); report it once an epoch is logged")
    match = _SEED_SUFFIX.match(path.name)
    group, seed = (match["group"], int(match["seed"])) if match else (path.name, None)
    raw_opts = args.get("loss_opts") or {}
    opts = dict(raw_opts) if isinstance(raw_opts, dict) else {}
    loss = str(args.get("loss", "?"))
    store = args.get("store")
    return RunRecord(path=path, name=path.name, group=group, seed=seed, loss=loss, loss_opts=opts, epochs=epochs,
                     val_top1=top1, finished=(path / "summary.json").is_file(),
                     settings=_settings(record, args, loss, opts),
                     seeds={k: args[k] for k in SEED_FIELDS if args.get(k) is not None},
                     store=str(store) if store is not None else None)


def expand_sweeps(paths: Sequence[str | Path]) -> list[Path]:
    """Each path, with a sweep's ``--out`` (it holds ``sweep.json``) replaced by its students' run
    directories, so ``kdcache report runs/main`` reports every student of that sweep."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "sweep.json").is_file() and not (p / "run.json").exists():
            students = sorted(d for d in p.iterdir() if (d / "run.json").is_file())
            if not students:
                raise RunError(f"{p} is a sweep with no student run yet; report it once a student has started")
            out += students
        else:
            out.append(p)
    return out


def load_runs(paths: Sequence[str | Path]) -> list[RunRecord]:
    """Read every run directory; two runs with the same directory name would be confused in the plots."""
    if not paths:
        raise RunError("no run directories given; pass at least one RUN_DIR")
    runs = [load_run(p) for p in expand_sweeps(paths)]
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunError(f"two run directories are both named {dup[0]!r}; report them separately or rename one")
    return runs


def _field_order(name: str) -> tuple[int, str]:
    rank = next((i for i, p in enumerate(_FIRST) if name == p or (p.endswith(".") and name.startswith(p))),
                len(_FIRST))
    return rank, name


def _short(name: str) -> str:
    return _INPUTS.get(name, name.removeprefix("loss_opts."))


def _canonical(value: Any) -> str:
    return "\0unset" if value is _MISSING else json.dumps(value, sort_keys=True)


def _value_text(value: Any) -> str:
    if value is _MISSING:
        return "unset"
    if isinstance(value, str):
        return value[len("sha256:"):][:8] if value.startswith("sha256:") else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # temperature=2 as the user typed it, not the resolved 2.0
    return json.dumps(value)


def _split_labels(name: str, groups: list[list[RunRecord]]) -> tuple[list[str], list[str]]:
    """Labels telling apart the methods that share ``name``, and the fields they differ in."""
    keys = sorted({k for g in groups for k in g[0].settings}, key=_field_order)
    differ = [k for k in keys if len({_canonical(g[0].settings.get(k, _MISSING)) for g in groups}) > 1]
    texts: dict[str, list[str]] = {k: [_value_text(g[0].settings.get(k, _MISSING)) for g in groups] for k in differ}
    if "store_input_hash" in texts:  # a store's path reads better than its hash, where it tells them apart
        paths = [Path(g[0].store).name if g[0].store else None for g in groups]
        hashes = texts["store_input_hash"]
        if None not in paths and len(set(paths)) == len(set(hashes)) == len(set(zip(paths, hashes))):
            texts["store_input_hash"] = [str(p) for p in paths]
    labels = [f"{name} ({', '.join(f'{_short(k)}={texts[k][i]}' for k in differ)})" for i in range(len(groups))]
    return labels, [_short(k) for k in differ]


def summarise(runs: Sequence[RunRecord]) -> list[MethodSummary]:
    """One summary per method (runs of one name and equal settings), in the order the methods first appear.

    Runs of one name whose settings differ become separate methods labelled
    by the differing fields (see the module docstring); every label is unique.
    """
    by_name: dict[str, dict[str, list[RunRecord]]] = {}
    for r in runs:
        by_name.setdefault(r.group, {}).setdefault(r.key, []).append(r)
    summaries: list[MethodSummary] = []
    for name, by_key in by_name.items():
        groups = list(by_key.values())
        labels, differs = ([name], []) if len(groups) == 1 else _split_labels(name, groups)
        for label, members in zip(labels, groups):
            summaries.append(MethodSummary(label, name, members[0].loss, members[0].loss_opts, tuple(members),
                                           tuple(differs)))
    seen: dict[str, int] = {}
    unique: list[MethodSummary] = []
    for s in summaries:  # a directory literally named like another method's label: number the later one
        seen[s.group] = seen.get(s.group, 0) + 1
        unique.append(s if seen[s.group] == 1 else MethodSummary(f"{s.group} #{seen[s.group]}", s.name, s.loss,
                                                                  s.loss_opts, s.runs, s.differs))
    return unique


def grouping_notes(summaries: Sequence[MethodSummary]) -> list[str]:
    """Sentences for the page: which names were split into several methods, and runs that repeat a seed."""
    notes: list[str] = []
    split: dict[str, list[MethodSummary]] = {}
    for s in summaries:
        if s.differs:
            split.setdefault(s.name, []).append(s)
    for name, parts in split.items():
        notes.append(f"Runs named {name} differ in {', '.join(parts[0].differs)}, so they are separate methods: "
                     f"{'; '.join(p.group for p in parts)}.")
    for s in summaries:
        by_seeds: dict[str, list[str]] = {}
        for r in s.runs:
            if r.seeds:
                by_seeds.setdefault(json.dumps(r.seeds, sort_keys=True), []).append(r.name)
        for names in by_seeds.values():
            if len(names) > 1:
                notes.append(f"Runs {', '.join(names)} of {s.group} recorded the same seeds, "
                             "so they are likely one run counted twice.")
    return notes
