"""The one training loop of kdcache: ``distill`` and ``train-teacher`` both run through :class:`Engine`.

A trainer contributes a :class:`TrainingTask`: the networks it trains, the
dataset and per-epoch batches (plus, in lockstep, any side input such as
cached teacher logits), and a step that returns a dict of named loss parts
(``{"loss": ..., "ce": ..., "kd": ...}``; ``"loss"`` is the one minimised).
The engine owns everything else, identically for every trainer: optimizers
and schedules, the DataLoader and its prefetching, the progress bar,
evaluation, ``metrics.jsonl`` / ``steps.jsonl``, the full training state
saved after every epoch, and resuming from it.

Order at the end of an epoch: schedules step, the model is evaluated, the
logs are appended (fsynced), and the training state is written last. A run
killed anywhere resumes from the last state; logs are cut back to it.

Under torchrun (:mod:`kdcache.distributed`) the same loop is data-parallel:
the batches of an epoch are a pure function of (seed, epoch), so every rank
builds the same global batches and trains on its own slice of each
(:mod:`kdcache.engine.parallel`: DDP, the loss scale, SyncBatchNorm); loss
parts and evaluation counts are reduced over ranks, so every rank holds the
same history, and rank 0 alone writes the logs and the training state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdcache import distributed
from kdcache.engine import parallel
from kdcache.engine.evaluate import evaluate
from kdcache.engine.optim import OptimConfig, make_optimizer, make_scheduler
from kdcache.engine.records import append_jsonl, read_jsonl, rewrite_jsonl
from kdcache.engine.state import load_into, read_state, save_state
from kdcache.distill.prefetch import prefetch
from kdcache.progress import make_progress, rate_text

log = logging.getLogger(__name__)

# Keys of a metrics row that measure the machine, not the training (they differ run to run).
TIMING_KEYS = ("samples_per_s", "epoch_seconds")


class TrainingTask(Protocol):
    """What a trainer contributes to :class:`Engine`."""

    modules: dict[str, nn.Module]
    """Every trained network by name (saved and restored under these names)."""
    evaluated: str
    """Name of the module that is evaluated every epoch (the student, the teacher)."""
    dataset: Dataset
    num_samples: int
    """Samples visited per epoch (the progress bar's total)."""

    def param_groups(self) -> list[Iterable[nn.Parameter]]:
        """Parameters of each optimizer (one optimizer and one schedule per entry)."""
        ...

    def epoch_batches(self, epoch: int, batch_size: int) -> tuple[Iterable[list[Any]], Iterator[Any] | None]:
        """The DataLoader's ``batch_sampler`` for ``epoch`` (lists of dataset keys) and, if any, an
        iterator giving each batch's side input, ``next`` once per batch in the order trained."""
        ...

    def step(self, batch: dict[str, Any], side: Any, epoch: int) -> dict[str, torch.Tensor]:
        """Named loss parts of one batch; ``"loss"`` is back-propagated."""
        ...


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its training state and logs."""

    state: Path
    metrics: Path
    steps: Path


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: length, batches, loading, device, optimisation, and its label in output."""

    epochs: int
    batch_size: int
    workers: int
    device: torch.device
    optim: OptimConfig
    label: str = "epoch"
    sync_bn: bool = False  # BatchNorm statistics over the global batch (under torchrun)
    precision: str = "fp32"  # autocast dtype of forward passes: fp32 (none), bf16, fp16


class Engine:
    """Trains a :class:`TrainingTask` (see the module docstring)."""

    def __init__(self, task: TrainingTask, settings: LoopSettings, files: RunFiles, *, command: str,
                 args: dict[str, Any], val_loader: DataLoader,
                 same: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """``args`` key the saved state: a resume continues only a state saved with equal ``args``,
        compared after ``same`` (e.g. resolving loss options, so a default spelled out is the default)."""
        self.task = task
        self.settings = settings
        self.files = files
        self.command = command
        self.args = args
        self.same = same
        self.val_loader = val_loader
        self.dist = distributed.current()
        parallel.check_batches(task.num_samples, settings.batch_size, self.dist.world)
        if self.dist.enabled:
            if not hasattr(task, "forward"):
                raise TypeError(f"{type(task).__name__} has no 'forward' modules; it cannot train data-parallel")
            # The task calls its networks through `forward`: DDP wrappers here, the modules themselves
            # in one process. `modules` stay the unwrapped networks (saved, evaluated).
            task.forward = parallel.wrap_modules(task.modules, settings.device, settings.sync_bn)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(settings.device.type) if settings.precision == "fp16" else None
        self.optimizers = [make_optimizer(p, settings.optim) for p in task.param_groups()]
        self.schedulers = [make_scheduler(o, settings.optim, settings.epochs) for o in self.optimizers]
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 1

    def start(self, resume: bool) -> int:
        """Begin a fresh run (empty logs), or, with ``resume`` and a saved state, continue it.

        Returns the first epoch still to train (``epochs + 1`` when all are done).
        """
        f = self.files
        if resume and f.state.exists():
            # Every rank loads the one state rank 0 wrote: it holds nothing rank-specific, so a run
            # may continue with another world size.
            state = read_state(f.state, command=self.command, args=self.args, same=self.same)
            epoch, self.history = load_into(state, self.task.modules, self.optimizers, self.schedulers)
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self.start_epoch = epoch + 1
            # The state is the truth; logs may hold a later epoch (killed before the state was
            # written) or a torn line (killed mid-append).
            if self.dist.is_main:
                rewrite_jsonl(f.metrics, self.history)
                rewrite_jsonl(f.steps, [r for r in read_jsonl(f.steps) if r["epoch"] <= epoch])
            if self.start_epoch <= self.settings.epochs:
                log.info("resuming %s from epoch %d (%s)", self.command, self.start_epoch, f.state)
        elif self.dist.is_main:
            rewrite_jsonl(f.metrics, [])
            rewrite_jsonl(f.steps, [])
        distributed.barrier()  # no rank starts before rank 0 has cut the logs back to the state
        return self.start_epoch

    def run(self, progress: bool = True) -> list[dict[str, Any]]:
        """Train the remaining epochs; return the metric history (one row per epoch)."""
        d = self.dist
        with make_progress(unit="samples", enabled=progress and d.is_main) as bar:
            for epoch in range(self.start_epoch, self.settings.epochs + 1):
                s = self.settings
                keys, side = self.task.epoch_batches(epoch, s.batch_size)
                slices = parallel.RankSlices(keys, d.rank, d.world) if d.enabled else None
                loader = self.loader(slices if slices is not None else keys)
                task_id = bar.add_task(f"{s.label} {epoch}/{s.epochs}", total=self.task.num_samples, rate="")
                tally = self.begin_epoch(epoch)
                for batch in loader if s.workers else prefetch(loader):
                    rows = next(side) if side is not None else None
                    if slices is None:
                        self.train_step(tally, batch, rows)
                    else:
                        n, lo, hi = slices.pop()
                        self.train_step(tally, batch, parallel.slice_side(rows, n, lo, hi), global_rows=n)
                    bar.update(task_id, completed=tally.seen,
                               rate=rate_text(tally.seen, time.perf_counter() - tally.t0, "samples"))
                bar.remove_task(task_id)
                self.end_epoch(tally, progress)
        return self.history

    def loader(self, keys: Iterable[list[Any]]) -> DataLoader:
        """The DataLoader of one epoch over the task's dataset, batched by ``keys``."""
        s = self.settings
        # The loader gets its own generator so that iterating it never draws from torch's
        # global RNG (which dropout and initialisation use): the worker count cannot change results.
        return DataLoader(self.task.dataset, batch_sampler=keys, num_workers=s.workers,
                          pin_memory=s.device.type == "cuda", generator=torch.Generator())  # non_blocking copies

    # The three steps of an epoch are public so that one driver can step several engines on the
    # same batches (a sweep trains many students from one pass over the data).

    def begin_epoch(self, epoch: int) -> EpochTally:
        """Start counting ``epoch``: the learning rate it starts with, the clock."""
        return EpochTally(epoch=epoch, lr=self.optimizers[0].param_groups[0]["lr"], t0=time.perf_counter())

    def train_step(self, tally: EpochTally, batch: dict[str, Any], side: Any,
                   global_rows: int | None = None) -> dict[str, float]:
        """One optimisation step on ``batch`` (with its side input); returns the loss parts.

        Data-parallel, ``batch`` is this rank's slice of a global batch of ``global_rows`` rows; the
        returned parts are the global batch's (reduced over ranks), the same on every rank.
        """
        s = self.settings
        with parallel.autocast(s.device, s.precision):
            parts = self.task.step(batch, side, tally.epoch)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        n = len(batch["label"])
        total = global_rows if global_rows is not None else n
        loss = parts["loss"]
        if self.dist.enabled:
            # DDP averages gradients over ranks; this scale makes that the global batch's mean.
            loss = loss * (n * self.dist.world / total)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            for opt in self.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            for opt in self.optimizers:
                opt.step()
        values = parallel.reduce_parts({k: float(v.detach()) for k, v in parts.items()}, n, total)
        tally.add(total, values)
        return values

    def end_epoch(self, tally: EpochTally, progress: bool = True, seconds: float | None = None) -> dict[str, Any]:
        """Step the schedules, evaluate, append the logs and save the state (in that order).

        ``seconds`` is the epoch's training time when the caller measured it (a sweep's one pass
        shared by its students); by default the time since ``tally`` started.
        """
        s = self.settings
        seconds = time.perf_counter() - tally.t0 if seconds is None else seconds
        for sched in self.schedulers:
            sched.step()
        model = self.task.modules[self.task.evaluated]
        seen, sums, epoch = tally.seen, tally.sums, tally.epoch
        row = {
            "epoch": epoch,
            "train_loss": sums.get("loss", 0.0) / max(1, seen),
            **{f"train_{k}": v / max(1, seen) for k, v in sums.items() if k != "loss"},
            **evaluate(model, self.val_loader, s.device, s.precision),
            "lr": tally.lr,
            "samples_per_s": seen / seconds if seconds > 0 else None,
            "epoch_seconds": seconds,
        }
        self.history.append(row)
        if self.dist.is_main:  # one copy of the records for the whole job
            append_jsonl(self.files.metrics, [row])
            append_jsonl(self.files.steps, tally.steps)
            # Logs first, state last: a resume cuts the logs back to the state's epoch.
            save_state(self.files.state, command=self.command, args=self.args, epoch=epoch,
                       modules=self.task.modules, optimizers=self.optimizers, schedulers=self.schedulers,
                       history=self.history,
                       extra={"scaler": self.scaler.state_dict()} if self.scaler is not None else None)
        if progress and self.dist.is_main:
            log.info("%s %d: loss %.4f  val top-1 %.2f%%  top-5 %.2f%%  %s samples/s", s.label, epoch,
                     row["train_loss"], 100 * row["val_top1"], 100 * row["val_top5"],
                     f"{row['samples_per_s'] or 0:,.0f}")
        return row


@dataclass
class EpochTally:
    """What one epoch has trained so far: samples, weighted loss sums, per-step log rows."""

    epoch: int
    lr: float
    t0: float
    seen: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, n: int, values: dict[str, float]) -> None:
        self.steps.append({"epoch": self.epoch, "step": len(self.steps), **values})
        self.seen += n
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n
