"""The records of ``kdcache sweep`` beside its students' run directories.

* ``OUT/sweep.json`` lists the sweep's runs, init seeds and students and the
  options every student shares (``identity``: the distill identity minus the
  loss, its options and the init seed). ``--resume`` compares the command
  against it before anything is read or written: a resume may add runs and
  seeds, but one that drops a student the sweep listed, changes a run's loss
  or options, or changes a shared option is refused in one line (else the
  dropped students would vanish from the leaderboard while their
  directories stayed, and a changed student would not be the sweep's).
* ``OUT/leaderboard.csv`` (one row per student, machine-readable: the loss
  options are a JSON object) and ``OUT/leaderboard.md`` (students best
  first, then each run over its seeds).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcache.distill.run import resolve_identity
from kdcache.engine import diff_args, identity_args, write_json_atomic
from kdcache.engine.records import write_text_atomic
from kdcache.errors import RunError

if TYPE_CHECKING:
    from kdcache.distill.sweep import SweepConfig, SweepRun

SWEEP_JSON = "sweep.json"
# What differs between the students of one sweep; every other identity field is shared and recorded once.
PER_STUDENT = ("loss", "loss_opts", "init_seed")


def student_name(run_name: str, init_seed: int) -> str:
    """The directory (and leaderboard) name of a sweep's student: ``NAME-sN``."""
    return f"{run_name}-s{init_seed}"


def shared_identity(cfg: SweepConfig) -> dict[str, Any]:
    """The identity arguments every student of ``cfg`` shares (what a resume must repeat besides the runs)."""
    ident = identity_args(cfg.student_config(cfg.runs[0], cfg.init_seeds[0]))
    return {k: v for k, v in ident.items() if k not in PER_STUDENT}


def _run_identity(run: SweepRun) -> dict[str, Any]:
    return json.loads(json.dumps({"loss": run.loss, "loss_opts": run.loss_opts}, sort_keys=True))


def sweep_record(cfg: SweepConfig) -> dict[str, Any]:
    """The content of ``OUT/sweep.json`` for ``cfg``."""
    return {"kind": "kdcache-sweep", "runs": [{"name": r.name, **_run_identity(r)} for r in cfg.runs],
            "init_seeds": list(cfg.init_seeds),
            "students": [student_name(r.name, s) for r in cfg.runs for s in cfg.init_seeds],
            "identity": shared_identity(cfg)}


def write_sweep_record(cfg: SweepConfig) -> None:
    """Write ``OUT/sweep.json`` (atomically); on a resume it lists the old students and any added ones."""
    write_json_atomic(Path(cfg.out) / SWEEP_JSON, sweep_record(cfg))


def check_resume(cfg: SweepConfig) -> None:
    """Refuse a ``--resume`` that is not a continuation of the sweep in ``cfg.out``, one line, before any write.

    Added runs and seeds are a continuation (their students start at epoch 1); a dropped student, a run
    whose loss or options changed, or a changed shared option is not.
    """
    out = Path(cfg.out)
    path = out / SWEEP_JSON
    if not path.exists():
        raise RunError(f"--resume: {out} holds no sweep to resume (no sweep.json); drop --resume to start one")
    try:
        old = json.loads(path.read_text())
    except ValueError:  # not JSON, or not UTF-8 text
        raise RunError(f"--resume: {path} is corrupted (not JSON); this sweep cannot be continued exactly, "
                       "start a new one with another --out") from None
    if (not isinstance(old, dict) or old.get("kind") != "kdcache-sweep"
            or not all(isinstance(r, dict) and "name" in r for r in old.get("runs", []))):
        raise RunError(f"--resume: {path} is not a kdcache sweep record; start a new sweep with another --out")
    students = {student_name(r.name, s) for r in cfg.runs for s in cfg.init_seeds}
    dropped = [name for name in old.get("students", []) if name not in students]
    if dropped:
        runs = [r["name"] for r in old.get("runs", []) if r["name"] not in {r.name for r in cfg.runs}]
        seeds = [s for s in old.get("init_seeds", []) if s not in cfg.init_seeds]
        missing = "; ".join([*(f"--run {n}" for n in runs), *(f"--init-seed {s}" for s in seeds)])
        raise RunError(f"--resume would drop {len(dropped)} student(s) the sweep in {out} lists "
                       f"({', '.join(dropped)}; missing {missing}); pass them again, or use a new --out")
    runs_now = {r.name: r for r in cfg.runs}
    for prev in old.get("runs", []):
        run = runs_now.get(prev.get("name"))
        if run is None:  # a run without students in the record (no student of it to drop)
            continue
        # As resolved hyper-parameters: a default spelled out (or left out) is the same run.
        diffs = diff_args(resolve_identity({k: prev.get(k) for k in ("loss", "loss_opts")}),
                          resolve_identity(_run_identity(run)))
        if diffs:
            raise RunError(f"--resume: run {run.name!r} differs from the sweep's in {out} ({'; '.join(diffs)}); "
                           "pass it as the sweep did (a new NAME adds a run), or use a new --out")
    if "identity" in old:  # a sweep.json of an older kdcache has none; each student's run.json is still compared
        diffs = diff_args(old["identity"], shared_identity(cfg))
        if diffs:
            raise RunError(f"--resume with different options than the sweep in {out} ({'; '.join(diffs)}); "
                           "repeat the sweep's options, or use a new --out")


def leaderboard(students: Sequence[tuple[SweepRun, int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per (run, init seed, metric history), best final validation top-1 first (ties: given order)."""
    rows = []
    for i, (run, init_seed, history) in enumerate(students):
        final = history[-1] if history else {}
        rows.append({"student": student_name(run.name, init_seed), "run": run.name, "loss": run.loss,
                     "loss_opts": run.loss_opts, "init_seed": init_seed, "epochs": final.get("epoch", 0),
                     "val_top1": final.get("val_top1", math.nan), "val_top5": final.get("val_top5", math.nan),
                     "train_loss": final.get("train_loss", math.nan), "order": i})
    rows.sort(key=lambda r: (-r["val_top1"], r["order"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        del r["order"]
    return rows


CSV_COLUMNS = ["rank", "student", "run", "loss", "loss_opts", "init_seed", "epochs", "val_top1", "val_top5",
               "train_loss"]


def _mean_spread(values: list[float]) -> str:
    """``mean ± sample std`` over seeds; one seed has no spread, and the cell says so."""
    mean = f"{statistics.fmean(values):.2%}"
    if len(values) == 1:
        return f"{mean} (n=1, no spread)"
    return f"{mean} ± {statistics.stdev(values):.2%}"


def write_leaderboard(out: Path, board: list[dict[str, Any]]) -> None:
    """``leaderboard.csv`` (one row per student; ``loss_opts`` as JSON) and ``leaderboard.md``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in board:
        writer.writerow({**{k: r[k] for k in CSV_COLUMNS}, "loss_opts": json.dumps(r["loss_opts"], sort_keys=True)})
    write_text_atomic(out / "leaderboard.csv", buf.getvalue())
    header = "| rank | student | loss | options | init seed | epochs | val top-1 | val top-5 | train loss |"
    lines = ["# Sweep leaderboard", "", header, "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in board:
        opts = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(r["loss_opts"].items())) or "defaults"
        lines.append(f"| {r['rank']} | {r['student']} | {r['loss']} | {opts} | {r['init_seed']} | {r['epochs']} | "
                     f"{r['val_top1']:.2%} | {r['val_top5']:.2%} | {r['train_loss']:.4f} |")
    by_run: dict[str, list[float]] = {}
    for r in board:
        by_run.setdefault(r["run"], []).append(r["val_top1"])
    lines += ["", "Per run, over init seeds (mean ± sample standard deviation; a run of one seed has no spread):",
              "", "| run | seeds | val top-1 |", "|---|---:|---:|"]
    for name, values in sorted(by_run.items(), key=lambda kv: -statistics.fmean(kv[1])):
        lines.append(f"| {name} | {len(values)} | {_mean_spread(values)} |")
    write_text_atomic(out / "leaderboard.md", "\n".join(lines) + "\n")
