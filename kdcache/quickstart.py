"""``kdcache quickstart``: the whole pipeline on the embedded real data, in a few CPU minutes.

teacher training -> precompute -> stats -> distill (CE baseline, KD, NKD,
ISATS from the store) -> KD online (the teacher run live) -> a table of
accuracy, time and the speed-up of cached over online distillation, and a
``kdcache report`` of the students and the store in ``workdir/report``.

Re-running reuses the teacher and the store in ``workdir`` (both resumable)
and re-trains the students. Each step is announced on the ``kdcache.quickstart``
logger; :func:`run_quickstart` returns the numbers, and the CLI renders the table.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdcache.distill.run import DistillConfig, distill
from kdcache.errors import KdcacheError
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.report import write_report
from kdcache.stats import compute_stats
from kdcache.teacher.train import TeacherConfig, train_teacher
from kdcache.engine import OptimConfig

log = logging.getLogger(__name__)

DATA = "embedded"
VAL = "embedded,split=test"
TEACHER = "kdcache:cnn_small"
STUDENT = "kdcache:tiny_cnn"
RECIPE = "fashion-mnist"
TEACHER_EPOCHS = 20
STUDENT_EPOCHS = 12
VIEWS = 8
SEED = 0
# Hyper-parameters for a 10-class problem. The defaults (docs/methods.md) are tuned for
# CIFAR-100 (T=4 flattens 10 classes to near-uniform); these are the methods'
# own ImageNet-style settings (NKD: gamma=1.5, T=1) and KD at T=2, 0.5/0.5.
METHODS: dict[str, dict[str, float]] = {
    "ce": {},
    "kd": {"temperature": 2.0, "ce_weight": 0.5, "kd_weight": 0.5},
    "nkd": {"gamma": 1.5, "temperature": 1.0},
    "isats": {},
}


@dataclass
class Row:
    """One student of the quickstart: its method, ``cached`` or ``online``, and how it did."""

    method: str
    mode: str
    val_top1: float
    seconds: float
    samples_per_s: float
    options: dict[str, float] = field(default_factory=dict)  # the loss options it was trained with


@dataclass
class QuickstartResult:
    """What the quickstart did and measured (the CLI prints it as a table)."""

    workdir: Path
    teacher_top1: float
    precompute_seconds: float
    rows: list[Row] = field(default_factory=list)
    teacher: str = TEACHER
    student: str = STUDENT
    data: str = DATA
    val_data: str = VAL
    report: Path | None = None  # the report page (kdcache report) of the students and the store
    plot: Path | None = None  # its figure of final accuracy per method

    @property
    def store(self) -> Path:
        return self.workdir / "store.zarr"

    def row(self, method: str, mode: str) -> Row:
        return next(r for r in self.rows if r.method == method and r.mode == mode)

    @property
    def speedup(self) -> float:
        """Online KD time / cached KD time for the same student, data and epochs."""
        return self.row("kd", "online").seconds / self.row("kd", "cached").seconds


def _fresh_run_dir(path: Path) -> Path:
    # Only ever delete a directory kdcache itself made for a run.
    if path.exists():
        record = path / "run.json"
        if not record.exists() or json.loads(record.read_text()).get("kind") != "kdcache-distill":
            raise KdcacheError(f"{path} exists and is not a kdcache run; choose another directory for the quickstart")
        shutil.rmtree(path)
    return path


def run_quickstart(workdir: Path, student_epochs: int | None = None, progress: bool = True) -> QuickstartResult:
    """Run the pipeline in ``workdir`` and return the numbers for the table."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    epochs = student_epochs or STUDENT_EPOCHS
    teacher_path = workdir / "teacher.pt"
    if not teacher_path.exists():
        log.info("1/5 training the teacher %s on %s", TEACHER, DATA)
        train_teacher(TeacherConfig(
            data=DATA, val_data=VAL, model=TEACHER, epochs=TEACHER_EPOCHS, out=teacher_path, recipe=RECIPE,
            optim=OptimConfig(lr=0.05, epochs=TEACHER_EPOCHS, schedule="cosine"), seed=SEED,
        ), progress=progress)
    else:
        log.info("1/5 reusing the teacher in %s", teacher_path)
    from kdcache.models import load_checkpoint

    teacher_top1 = float(load_checkpoint(teacher_path)["card"]["trained"]["val_top1"])

    store = workdir / "store.zarr"
    log.info("2/5 precomputing %d views of the teacher's logits into %s", VIEWS, store)
    t0 = time.perf_counter()
    precompute(data=DATA, teachers=[TeacherRequest(TEACHER, str(teacher_path), "teacher")], views=VIEWS,
               seed=SEED, out=store, recipe=RECIPE, encoding="float16", progress=progress)
    precompute_seconds = time.perf_counter() - t0
    log.info("3/5 computing statistics (ISATS tau*, FGCR class tables)")
    compute_stats(store, tau0=[3.0], progress=progress)

    result = QuickstartResult(workdir=workdir, teacher_top1=teacher_top1, precompute_seconds=precompute_seconds)
    optim = OptimConfig(lr=0.05, epochs=epochs, schedule="cosine")
    log.info("4/5 distilling %s from the store: %s", STUDENT, ", ".join(METHODS))
    for method, opts in METHODS.items():
        out = _fresh_run_dir(workdir / "runs" / method)
        r = distill(DistillConfig(data=DATA, val_data=VAL, student=STUDENT, loss=method, loss_opts=opts,
                                  epochs=epochs, out=out, store=str(store), optim=optim, seed=SEED),
                    progress=progress)
        result.rows.append(Row(method, "cached", r.final["val_top1"], r.seconds,
                               sum(m["samples_per_s"] for m in r.metrics) / len(r.metrics), dict(opts)))
    log.info("5/5 distilling with KD online (the teacher run live), for comparison")
    out = _fresh_run_dir(workdir / "runs" / "kd-online")
    r = distill(DistillConfig(data=DATA, val_data=VAL, student=STUDENT, loss="kd", loss_opts=METHODS["kd"],
                              epochs=epochs, out=out, teacher=TEACHER, weights=str(teacher_path), views=VIEWS, recipe=RECIPE,
                              optim=optim, seed=SEED), progress=progress)
    result.rows.append(Row("kd", "online", r.final["val_top1"], r.seconds,
                           sum(m["samples_per_s"] for m in r.metrics) / len(r.metrics), dict(METHODS["kd"])))
    written = write_report([workdir / "runs" / m for m in METHODS] + [out], workdir / "report", store=store,
                           title="kdcache quickstart")
    result.report, result.plot = written.page, written.figures["final"]
    return result

