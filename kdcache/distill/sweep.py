"""``kdcache sweep``: train many students from one store in one pass over the data.

A sweep is a list of runs (``NAME:LOSS[:key=value,...]``) times a list of
init seeds; each (run, init seed) pair is one student, which ends bitwise
identical to ``kdcache distill STORE ... --loss LOSS --loss-opt ... --init-seed
N`` with the same other options, and writes the same run directory,
``OUT/NAME-sN/`` (``run.json``, ``metrics.jsonl``, ``steps.jsonl``,
``checkpoint.pt``, ``final.pt``, ``summary.json``); ``distill --resume`` on it
is accepted. ``OUT/leaderboard.md`` and ``OUT/leaderboard.csv`` rank them.

What is shared, and why the result is still each single run's:

* ONE DataLoader per epoch renders each batch once. Every student of a sweep
  trains at the teacher's rendering, with the same batch size, data-order
  seed, view policy and window, so every single run would render the same
  batches in the same order.
* ONE reader reads each batch's cached rows once: the logits and the union of
  the per-row statistics the runs' losses declare. Each student is handed
  exactly its own loss's statistics from them. (A topk store is decoded at
  each loss's temperature, so runs at different temperatures get one reader
  per temperature.) Validation images are rendered once for all students
  while they fit in ``VAL_CACHE_BYTES``.
* Each student has its own :class:`~kdcache.engine.Engine` (optimizers,
  schedules, logs, checkpoint), stepped with the engine's public
  ``begin_epoch`` / ``train_step`` / ``end_epoch``.
* Each student has its own random generators (torch, CUDA, numpy, python):
  it is built right after seeding with its init seed, exactly as distill
  builds it (student, then any extra networks such as SLKD's), and its
  generator states are restored before each of its steps and saved after, so
  dropout draws what the single run would draw. The DataLoader draws from a
  private generator, never from the global one.

A killed sweep resumes with ``--resume``: each student continues from its own
last saved epoch (students may stop at different epochs; one that is ahead
skips the epochs it already trained). ``OUT/sweep.json`` records the sweep;
a resume may add runs and seeds but not drop or change any
(:mod:`kdcache.distill.sweep_records`, which also writes the leaderboard).

Timing: a student's ``epoch_seconds`` is the wall time of the sweep's one
pass over the epoch's data (loading, and every active student's steps, not
evaluation or checkpoint writes), the same figure for every student of that
epoch, and its ``samples_per_s`` is the epoch's samples over it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from kdcache import losses
from kdcache.data import open_data
from kdcache.distill.run import (
    DistillConfig,
    DistillOptions,
    DistillResult,
    DistillTask,
    finish_run,
    parse_loss_opts,
    resolve_identity,
    run_record,
    store_inputs,
)
from kdcache.engine import (
    Engine,
    LoopSettings,
    capture_rng,
    eval_loader,
    restore_rng,
    seed_everything,
)
from kdcache.validate import require_int
from kdcache.engine.loop import EpochTally
from kdcache.engine.run_dir import LOCK_NAME, RunDir, RunLock, check_val_classes
from kdcache.errors import RunError, UsageError
from kdcache.distill.cached_rows import CachedBatches, epoch_plan
from kdcache.distill.logit_sources import CachedLogits
from kdcache.distill.prefetch import prefetch
from kdcache.progress import make_progress, rate_text
from kdcache.report import report_sweep
from kdcache.distill.sweep_records import (
    check_resume,
    leaderboard,
    student_name,
    write_leaderboard,
    write_sweep_record,
)
from kdcache.views import ViewDataset

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRun:
    """One ``--run NAME:LOSS[:key=value,...]``: a loss and its options, trained once per init seed."""

    name: str
    loss: str
    loss_opts: dict[str, Any] = field(default_factory=dict)


def _split_top_level(text: str) -> list[str]:
    """Split ``text`` on commas outside brackets and quotes (``grid=[1,2,4],lam=0.5`` is two items)."""
    items, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def parse_run(text: str) -> SweepRun:
    """``NAME:LOSS[:key=value,...]`` to a :class:`SweepRun`; values are JSON when they parse, as ``--loss-opt``."""
    name, _, rest = text.partition(":")
    loss, _, opts = rest.partition(":")
    if not name or not loss:
        raise UsageError(f"--run {text!r} must look like NAME:LOSS[:key=value,...], e.g. kd-t2:kd:temperature=2")
    if not _NAME.match(name):
        raise UsageError(f"--run name {name!r} must be letters, digits and _ . + - (it names the run's directory)")
    if loss not in losses.names():
        raise UsageError(f"--run {text!r}: unknown loss {loss!r}; valid: {', '.join(losses.names())}")
    return SweepRun(name=name, loss=loss, loss_opts=parse_loss_opts(_split_top_level(opts), f"--run {name}"))


@dataclass(kw_only=True)
class SweepConfig(DistillOptions):
    """A sweep: the runs, the init seeds, and every distill option they share (:class:`DistillOptions`)."""

    store: str = field(metadata={"may_change_on_resume": True})  # a sweep reads a store (no online mode)
    runs: list[SweepRun]
    init_seeds: list[int]

    def student_config(self, run: SweepRun, init_seed: int) -> DistillConfig:
        """The config of the single ``distill`` run this student equals: the shared options, as given."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(DistillOptions)}
        return DistillConfig(**{**shared, "out": Path(self.out) / student_name(run.name, init_seed)},
                             loss=run.loss, loss_opts=dict(run.loss_opts), init_seed=init_seed)

    def check(self) -> None:
        """Refuse bad option values, one line each, before anything is read or written."""
        if not self.runs:
            raise UsageError("give at least one --run NAME:LOSS[:key=value,...]")
        names = [r.name for r in self.runs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError(f"--run names must differ (each names a directory); repeated: {', '.join(dup)}")
        if not self.init_seeds:
            raise UsageError("give at least one --init-seed N")
        for s in self.init_seeds:
            require_int("--init-seed", s, 0)
        if len(set(self.init_seeds)) != len(self.init_seeds):
            raise UsageError("--init-seed values must differ (each trains its own students)")
        for run in self.runs:
            self.student_config(run, self.init_seeds[0]).check()


@dataclass
class _Student:
    """One (run, init seed): its config, task, engine and its own random generators."""

    run: SweepRun
    init_seed: int
    cfg: DistillConfig
    task: DistillTask
    engine: Engine
    rng: dict[str, Any]
    run_dir: RunDir


@dataclass
class SweepResult:
    out: Path
    students: list[DistillResult]
    board: list[dict[str, Any]]
    seconds: float


def _check_out(cfg: SweepConfig) -> None:
    """Refuse an output that would mix this sweep with other files, before any student directory is made."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; sweep writes a directory, give a directory path")
    if not cfg.resume and out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunError(f"{out} already holds files; pass --resume to continue that sweep, or choose a new --out")
    if cfg.resume:
        check_resume(cfg)  # the same sweep (runs and seeds may be added), or one line naming what differs


def _check_new_run_dir(out: Path) -> None:
    """Refuse a new student's directory that ``RunDir.open(resume=False)`` would refuse, before any write."""
    try:
        RunDir(out).check_new()
    except RunError:
        what = ("is a file where the sweep would write a student's run directory" if out.is_file() else
                "already holds files but no run.json (not a run this sweep can continue)")
        raise RunError(f"{out} {what}; move it away, or use a new --out") from None


def _build(cfg: SweepConfig, device: torch.device,
           held: contextlib.ExitStack) -> tuple[list[_Student], CachedLogits, ViewDataset]:
    """Open the store once, build every student as its single distill run would, prepare its directory.

    Before the first write the sweep takes its directory's writer lock, then each student's run
    directory's; ``held`` releases them when the sweep ends.
    """
    source = open_data(cfg.data)
    val_source = open_data(cfg.val_data)
    check_val_classes(source, val_source)
    fingerprints = {"data_fingerprint": source.fingerprint(), "val_data_fingerprint": val_source.fingerprint()}
    # Every loss is resolved and its statistics found before any directory is written.
    resolved = []
    base: CachedLogits | None = None
    for run in cfg.runs:
        spec = losses.spec(run.loss)
        hparams = spec.resolve(run.loss_opts)
        teacher = (CachedLogits(cfg.store, cfg.teacher_name, source, spec, hparams,
                                allow_approximate=cfg.allow_approximate_encoding) if base is None
                   else base.for_loss(spec, hparams))
        base = base or teacher
        resolved.append((run, spec, hparams, teacher, {
            **store_inputs(teacher), **fingerprints}))
    if base is None:  # cfg.check() refuses an empty list of runs; this keeps the type checker honest
        raise UsageError("give at least one --run NAME:LOSS[:key=value,...]")
    if cfg.view_policy is not None and base.num_views == 1:
        raise UsageError("--view-policy chooses among views, but the teacher has 1 view per sample; drop it")
    # Every student is built (and its generators captured) before anything is written, so a student
    # that cannot be built is one error with nothing left behind.
    built = []
    for run, spec, hparams, teacher, inputs in resolved:
        for init_seed in cfg.init_seeds:
            scfg = cfg.student_config(run, init_seed)
            # A student added to a sweep being resumed (or never started) starts fresh.
            scfg.resume = cfg.resume and (Path(scfg.out) / "run.json").exists()
            if not scfg.resume:
                _check_new_run_dir(Path(scfg.out))
            seed_everything(init_seed)  # exactly as distill: seed, then build student and extra networks
            task = DistillTask(scfg, spec, hparams, teacher, source, device)
            record, args = run_record(scfg, dict(inputs), teacher, task, device)
            built.append((run, init_seed, scfg, task, record, args, capture_rng()))
            if len(built) == 1:  # every student is one model of one spec, fed the same validation images
                task.check_val(val_source)
    # Nothing is written before this point; from here on the sweep is the one writer of its directory
    # and of every student's run directory (locks taken in that order, released by the caller).
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    lock = RunLock(Path(cfg.out))
    lock.acquire()
    held.callback(lock.release)
    _check_out(cfg)  # again, as the writer: another sweep may have written here since the first check
    runs = [RunDir(scfg.out) for _run, _seed, scfg, *_rest in built]
    for run_dir in runs:
        held.callback(run_dir.close)
    for run_dir, (_run, _seed, scfg, _task, record, _args, _rng) in zip(runs, built, strict=True):
        if scfg.resume:  # the same run as before, or one error naming the differences (nothing written yet)
            run_dir.open(record, resume=True, same=resolve_identity)
    write_sweep_record(cfg)
    settings = LoopSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, workers=cfg.workers, device=device,
                            optim=cfg.optim, precision=cfg.precision)
    val = _shared_val(eval_loader(val_source, base.recipe, base.render, max(cfg.batch_size, 256), cfg.workers),
                      len(val_source))
    students = []
    for run_dir, (run, init_seed, scfg, task, record, args, rng) in zip(runs, built, strict=True):
        if not scfg.resume:
            run_dir.open(record, resume=False)
        engine = Engine(task, settings, run_dir.files, command="distill", args=args, val_loader=val,
                        same=resolve_identity)
        restore_rng(rng)
        engine.start(resume=scfg.resume)  # restores the student's saved generators, if any
        students.append(_Student(run, init_seed, scfg, task, engine, capture_rng(), run_dir))
    dataset = ViewDataset(source, base.recipe, base.seed, base.renders(base.render))
    return students, base, dataset


# Validation batches are rendered once for all students while they fit in this many bytes.
VAL_CACHE_BYTES = 512 * 2**20


def _shared_val(loader: DataLoader, num_samples: int) -> Any:
    """The validation batches, rendered once and kept for every student and epoch when they are small.

    Evaluation only iterates its loader, and validation rendering has no randomness, so the kept
    batches are the very tensors each student's single run would render; a large validation set
    (over ``VAL_CACHE_BYTES``) is rendered again per student instead of held in memory.
    """
    batches = iter(loader)
    first = next(batches, None)
    if first is None or first["images"][0][0].element_size() * first["images"][0][0].numel() * num_samples \
            > VAL_CACHE_BYTES:
        return loader
    return [first, *batches]


def sweep(cfg: SweepConfig, progress: bool = True) -> SweepResult:
    """Train every (run, init seed) student from one pass over the data per epoch (see the module docstring)."""
    cfg.check()
    _check_out(cfg)
    device = torch.device(cfg.device)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as held:  # the writer locks of the sweep and its students, released at the end
        students, base, dataset = _build(cfg, device, held)
        _train(cfg, students, base, dataset, device, progress)
        results = [finish_run(s.run_dir, s.task, s.engine.history, t_start) for s in students]
        board = leaderboard([(s.run, s.init_seed, s.engine.history) for s in students])
        write_leaderboard(Path(cfg.out), board)
        result = SweepResult(out=Path(cfg.out), students=results, board=board, seconds=time.perf_counter() - t_start)
        # The sweep's report (plots and a page) is written here, once every student has finished.
        report_sweep(cfg.out, [Path(s.cfg.out) for s in students], cfg.store, cfg.teacher_name)
    return result


def _train(cfg: SweepConfig, students: list[_Student], base: CachedLogits, dataset: ViewDataset,
           device: torch.device, progress: bool) -> None:
    """Every epoch still to train: one pass over the data, each batch stepping every active student."""
    # One reader of the logits and the union of the per-row statistics per decode temperature: a topk
    # store is decoded at each loss's own temperature, as its single run decodes it (dense stores: one).
    groups: dict[float, list[_Student]] = {}
    for s in students:
        groups.setdefault(getattr(s.task.teacher, "decode_temperature", 1.0), []).append(s)
    readers = [(base.rows_for([s.task.teacher for s in group]), {id(s) for s in group}) for group in groups.values()]
    first = min(s.engine.start_epoch for s in students)
    with make_progress(unit="samples", enabled=progress) as bar:
        for epoch in range(first, cfg.epochs + 1):
            active = [s for s in students if s.engine.start_epoch <= epoch]
            plan = epoch_plan(cfg.seed, epoch, len(dataset), base.num_views, cfg.view_policy or "cycle", cfg.window)
            batches = CachedBatches(readers[0][0], plan, cfg.batch_size)
            side = batches.side()
            others = [(r.iterate(plan, cfg.batch_size), members) for r, members in readers[1:]]
            # As Engine.loader: a private generator, so loading never draws from the students' global RNG.
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda", generator=torch.Generator())
            bar_id = bar.add_task(f"epoch {epoch}/{cfg.epochs} ({len(active)} students)", total=len(dataset), rate="")
            tallies = [s.engine.begin_epoch(epoch) for s in active]
            t0, seen = time.perf_counter(), 0  # the clock of the shared pass
            for batch in loader if cfg.workers else prefetch(loader):
                cached = next(side)
                extra = [(next(rows_of), members) for rows_of, members in others]
                if device.type != "cpu":  # copied to the device once, not once per student (copies are exact)
                    batch = {**batch, "images": [x.to(device, non_blocking=True) for x in batch["images"]],
                             **{k: batch[k].to(device, non_blocking=True)  # partner_label, lam: mixed views
                                for k in ("label", "partner_label", "lam") if k in batch}}
                    cached = {k: v.to(device, non_blocking=True) for k, v in cached.items()}
                    extra = [({k: v.to(device, non_blocking=True) for k, v in r.items()}, m) for r, m in extra]
                for s, tally in zip(active, tallies, strict=True):
                    rows = next((r for r, members in extra if id(s) in members), cached)
                    restore_rng(s.rng)
                    s.engine.train_step(tally, batch, rows)
                    s.rng = capture_rng()
                seen += len(batch["label"])
                bar.update(bar_id, advance=len(batch["label"]),
                           rate=rate_text(seen, time.perf_counter() - t0, "samples"))
            pass_seconds = time.perf_counter() - t0
            bar.remove_task(bar_id)
            for rows_of, _members in others:
                rows_of.close()  # stops its read-ahead thread
            _end_epochs(active, tallies, pass_seconds)
            if progress:
                best = max(active, key=lambda s: s.engine.history[-1]["val_top1"])
                log.info("epoch %d: %d students trained; best val top-1 %.2f%% (%s-s%d)", epoch, len(active),
                         100 * best.engine.history[-1]["val_top1"], best.run.name, best.init_seed)


def _end_epochs(active: list[_Student], tallies: list[EpochTally], pass_seconds: float) -> None:
    """End the epoch of every active student, each recording ``pass_seconds`` as its epoch's time.

    By default ``Engine.end_epoch`` times an epoch from its tally's start; ended one after another,
    student k's clock would also run through the evaluations and checkpoint writes of students
    0..k-1. So every student records the shared pass instead (timings only: nothing trained or
    evaluated depends on them).
    """
    for s, tally in zip(active, tallies, strict=True):
        restore_rng(s.rng)
        s.engine.end_epoch(tally, progress=False, seconds=pass_seconds)
        s.rng = capture_rng()


def format_result(result: SweepResult) -> str:
    """The human summary at the end of ``kdcache sweep``."""
    if not result.board:
        return f"sweep {result.out}: no student"
    top = result.board[0]
    return (f"sweep {result.out}: {len(result.board)} students in {result.seconds:.0f}s; best {top['student']} "
            f"val top-1 {top['val_top1']:.2%}; leaderboard in {result.out / 'leaderboard.md'}; "
            f"plots in {result.out / 'report' / 'report.md'}")
