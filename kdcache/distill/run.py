"""``kdcache distill``: train a student from cached teacher logits (or, online, from a live teacher).

The student sees its own rendering of exactly the view the teacher scored:
from a store it renders the view parameters the store recorded (never
re-drawn from a seed), online it renders the parameters drawn for the
teacher's view. So training from the store is the same computation as
training with the teacher present, without running it. The
loss is looked up in :mod:`kdcache.losses`; what it needs beyond (student,
teacher, labels) is read from its :class:`~kdcache.losses.LossSpec`: store
statistics, the epoch, extra trainable networks. There are no per-method
branches here.

This module contributes what is particular to distillation (where teacher
logits come from, the loss step, the run directory); the loop, checkpoints,
resume, logs and evaluation are :mod:`kdcache.engine`'s, shared with
``train-teacher``. The run directory (``run.json``, ``metrics.jsonl``,
``steps.jsonl``, ``checkpoint.pt``, ``final.pt``, ``summary.json``), its
writer lock and the checks of ``--resume`` are :mod:`kdcache.engine.run_dir`'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache import __version__, distributed, losses
from kdcache.api import assemble
from kdcache.data import DataSource, open_data
from kdcache.engine import (
    MAY_CHANGE,
    Engine,
    LoopSettings,
    OptimConfig,
    canonical_hash,
    eval_loader,
    identity_args,
    recorded_args,
    seed_everything,
)
from kdcache.validate import require_choice, require_int
from kdcache.losses.options import parse_loss_opts  # noqa: F401  (re-exported: sweep, the CLI)
from kdcache.engine.parallel import PRECISIONS, check_batches
from kdcache.engine.state import determinism
from kdcache.engine.run_dir import RunDir, check_val_classes, check_val_images
from kdcache.errors import KdcacheError, UsageError
from kdcache.distill.cached_rows import DEFAULT_WINDOW, VIEW_POLICIES, epoch_plan
from kdcache.distill.logit_sources import CachedLogits, LogitSource, OnlineLogits
from kdcache.models import build_model, check_output_width
from kdcache.store import library_versions
from kdcache.views import ViewDataset

COMMAND = "distill"
log = logging.getLogger(__name__)

# Options of one mode only: given in the other mode they are refused, not ignored.
_ONLINE_ONLY = {"views": "--views", "recipe": "--recipe", "weights": "--weights", "view_seed": "--view-seed"}
_CACHED_ONLY = {"teacher_name": "--teacher-name"}


@dataclass(kw_only=True)
class DistillOptions:
    """The options a student's training shares with every other student of a sweep.

    Each is declared once, here: :class:`DistillConfig` (one run) and
    ``kdcache.distill.sweep.SweepConfig`` (many students, each equal to one distill
    run) both derive from it, so an option added here reaches both.
    """

    data: str
    val_data: str
    student: str
    epochs: int
    out: Path = field(metadata=MAY_CHANGE)
    store: str | None = field(default=None, metadata=MAY_CHANGE)
    teacher_name: str | None = None
    batch_size: int = 128
    workers: int = field(default=0, metadata=MAY_CHANGE)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    view_policy: str | None = None  # None: cycle
    window: int = DEFAULT_WINDOW
    resume: bool = field(default=False, metadata=MAY_CHANGE)
    device: str = field(default="cpu", metadata=MAY_CHANGE)
    micro_batch: int = 64
    # Train on an encoding the loss cannot use exactly (a sample store with DKD, ...), with a warning.
    allow_approximate_encoding: bool = False
    precision: str = "fp32"  # autocast of forward passes: fp32 (none), bf16, fp16


@dataclass(kw_only=True)
class DistillConfig(DistillOptions):
    """Everything one distill run depends on (recorded in ``RUN_DIR/run.json``).

    Fields marked ``MAY_CHANGE`` may differ on ``--resume``; every other one
    must repeat (the loss options as resolved: a default spelled out is the
    default). The store's and the online teacher's weights' paths may
    change too: what the run reads from them is compared by content (the
    store's input hash, the weights' SHA-256).
    """

    loss: str
    loss_opts: dict[str, Any] = field(default_factory=dict)
    init_seed: int | None = None  # None: --seed (resolved by distill() before it is recorded)
    teacher: str | None = None  # online mode
    weights: str | None = field(default=None, metadata=MAY_CHANGE)  # compared by its SHA-256
    views: int | None = None
    recipe: str | None = None  # online; None: the dataset's default recipe
    view_seed: int | None = None  # online; None: --seed
    # Under torchrun: BatchNorm over the global batch (the world size may change on resume, so may this).
    sync_bn: bool = field(default=False, metadata=MAY_CHANGE)

    @property
    def online(self) -> bool:
        return self.teacher is not None

    def check(self) -> None:
        """Refuse bad or inapplicable option values, one line each, before anything is read or written."""
        if (self.store is None) == (self.teacher is None):
            raise UsageError("give exactly one of a STORE (cached: kdcache distill STORE ...) or --teacher SPEC (online)")
        for name, option in (_CACHED_ONLY if self.online else _ONLINE_ONLY).items():
            if getattr(self, name) is not None:
                mode = "online mode (--teacher)" if self.online else "a store, which records it"
                raise UsageError(f"{option} does not apply to {mode}; drop it")
        require_int("--epochs", self.epochs, 1)
        require_int("--batch-size", self.batch_size, 1)
        require_int("--workers", self.workers, 0)
        require_int("--seed", self.seed, 0)
        if self.init_seed is not None:
            require_int("--init-seed", self.init_seed, 0)
        require_int("--window", self.window, 1)
        require_int("micro_batch", self.micro_batch, 1)
        if self.online:
            if self.views is None:
                raise UsageError("online mode (--teacher) needs --views K (the views the teacher is run on)")
            require_int("--views", self.views, 1)
            if self.view_seed is not None:
                require_int("--view-seed", self.view_seed, 0)
        if self.view_policy is not None:
            require_choice("--view-policy", self.view_policy, VIEW_POLICIES)
        require_choice("--precision", self.precision, tuple(PRECISIONS))
        self.optim.check(self.epochs)


@dataclass
class DistillResult:
    out: Path
    metrics: list[dict[str, Any]]
    seconds: float

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def resolve_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded identity with its loss options resolved, the form in which two runs compare.

    ``--loss-opt ce_weight=0.1`` (KD's default spelled out) and no option are the same run; a loss or
    option this kdcache cannot resolve is compared as recorded.
    """
    loss, opts = identity.get("loss"), identity.get("loss_opts")
    if not isinstance(loss, str) or not isinstance(opts, dict):
        return identity
    try:
        resolved = losses.spec(loss).config(opts)["configuration"]
    except KdcacheError:
        return identity
    return {**identity, "loss_opts": json.loads(json.dumps(resolved, default=str))}


class DistillTask:
    """What distill contributes to the engine: the student (and extra networks), views, the loss step.

    Shared with ``kdcache sweep``, which builds each of its students exactly so.
    """

    evaluated = "student"

    def __init__(self, cfg: DistillConfig, spec: losses.LossSpec, hparams: dict[str, Any], teacher: LogitSource,
                 source: DataSource, device: torch.device) -> None:
        self.render = teacher.render  # the student is trained at the teacher's rendering
        if teacher.recipe.mix is not None:  # mixed views: a loss with no rule on them is refused before training
            losses.require_mixed_rule(spec, hparams)
        in_channels = self.render.channels or source.channels
        student, self.student_card = build_model(cfg.student, source.num_classes, in_channels,
                                                 random_init=True, role="student")
        # A student that cannot take the rendered views (a fixed-size ViT) is one line before training.
        check_output_width(student, in_channels, self.render.size or teacher.recipe.output_size(source.image_size(0)),
                           source.num_classes, micro_batch=2, role="student")
        self.student = student.to(device).train()
        self.extras: list[nn.Module] = []
        for _ in range(spec.extra_networks):  # e.g. SLKD's networks of the teacher's architecture
            net, _card = build_model(teacher.card["spec"], source.num_classes,
                                     teacher.card["in_channels"], random_init=True,
                                     role="SLKD network")
            self.extras.append(net.to(device).train())
        self.modules: dict[str, nn.Module] = {"student": self.student,
                                              **{f"extra{i}": n for i, n in enumerate(self.extras)}}
        self.forward = self.modules  # what the step calls: the engine puts DDP wrappers here under torchrun
        self.dataset = ViewDataset(source, teacher.recipe, teacher.seed, teacher.renders(self.render))
        self.cfg, self.spec, self.hparams, self.teacher = cfg, spec, hparams, teacher
        self.num_samples = len(source)
        self.in_channels = in_channels
        self.device = device

    def check_val(self, val_source: DataSource) -> None:
        """Refuse validation images the student cannot take (another channel count or size), one line."""
        check_val_images(self.student, val_source, self.teacher.recipe, self.render, self.in_channels,
                         val_source.num_classes, "student")

    def param_groups(self) -> list[Iterable[nn.Parameter]]:
        return [self.student.parameters(), *(n.parameters() for n in self.extras)]

    def epoch_batches(self, epoch: int, batch_size: int) -> tuple[Iterable[list[Any]], Iterator[Any] | None]:
        plan = epoch_plan(self.cfg.seed, epoch, self.num_samples, self.teacher.num_views,
                          self.cfg.view_policy or "cycle", self.cfg.window)
        return self.teacher.epoch_batches(plan, batch_size)

    def step(self, batch: dict[str, Any], rows: Any, epoch: int) -> dict[str, torch.Tensor]:
        # The same batch a user's own loop gets from kdcache.open_store(...).batches(...).
        b = assemble(batch, rows, self.teacher).to(self.device, non_blocking=True)
        kwargs: dict[str, Any] = dict(b.loss_inputs)
        if self.spec.needs_epoch:
            kwargs["epoch"] = epoch
        if self.extras:
            kwargs[self.spec.extra_networks_arg] = [self.forward[f"extra{i}"](b.images)
                                                    for i in range(len(self.extras))]
        return self.spec.fn(self.forward["student"](b.images), b.teacher_logits, b.labels, **self.hparams, **kwargs)


def _open_teacher(cfg: DistillConfig, source: DataSource, spec: losses.LossSpec, hparams: dict[str, Any],
                  device: torch.device, progress: bool) -> tuple[LogitSource, dict[str, Any]]:
    """The logit source of this mode, and what the run record says about its input."""
    if cfg.store is not None:
        cached = CachedLogits(cfg.store, cfg.teacher_name, source, spec, hparams,
                              allow_approximate=cfg.allow_approximate_encoding)
        return cached, store_inputs(cached)
    # What the loss declares it cannot do without (an optional statistic is computed from the batch).
    required = [k for k in spec.store_stats(hparams) if spec.stats.get(k, {}).get("required", True)]
    if required:
        raise UsageError(f"loss {cfg.loss!r} needs {', '.join(required)} precomputed over the whole training set; "
                         "use a store (kdcache precompute, then kdcache stats)")
    online = OnlineLogits(cfg, source, device)  # prints the recipe it chose when --recipe is not given
    # The teacher's card holds its weights' SHA-256, compared instead of their path (the file may move).
    card = {k: v for k, v in online.card.items() if k != "weights"}
    return online, {"store_manifest_hash": None, "store_input_hash": None, "teacher_input_hash": canonical_hash(card),
                    "teacher_input": card}


def store_inputs(cached: CachedLogits) -> dict[str, Any]:
    """What a cached run's record says about the store it reads: hashes to compare on ``--resume``, and
    the record they hash (``store_input``), so that a refusal can name what changed."""
    return {"store_manifest_hash": cached.manifest_hash(), "store_input_hash": cached.input_hash(),
            "store_input": cached.input_record()}


def with_init_seed(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` with ``init_seed`` resolved (``--seed`` when not given), so the record names the seed used."""
    return cfg if cfg.init_seed is not None else dataclasses.replace(cfg, init_seed=cfg.seed)


def run_record(cfg: DistillConfig, inputs: dict[str, Any], teacher: LogitSource, task: DistillTask,
               device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's ``run.json`` record and the arguments its training state is keyed by.

    Shared with ``kdcache sweep``, whose every student records exactly what its single distill run would.
    """
    args = {**identity_args(cfg), "data_fingerprint": inputs["data_fingerprint"],
            "val_data_fingerprint": inputs["val_data_fingerprint"]}
    record = {"kind": "kdcache-distill", "args": recorded_args(cfg), "identity": identity_args(cfg), **inputs,
              "teacher": teacher.card, "student": task.student_card, "versions": library_versions(),
              "determinism": determinism(device),
              "distributed": {"world_size": distributed.current().world, "sync_bn": cfg.sync_bn,
                              "precision": cfg.precision},
              "kdcache": __version__}
    return record, args


def finish_run(run: RunDir, task: DistillTask, history: list[dict[str, Any]], t_start: float) -> DistillResult:
    """Write ``final.pt`` and ``summary.json`` (atomically) once every epoch is trained (rank 0 under torchrun)."""
    result = DistillResult(out=run.path, metrics=history, seconds=time.perf_counter() - t_start)
    if distributed.is_main():
        run.write_final({k: v.detach().cpu() for k, v in task.student.state_dict().items()},
                        {"final": result.final, "seconds": result.seconds})
    return result


def distill(cfg: DistillConfig, progress: bool = True) -> DistillResult:
    """Train a student with ``cfg.loss`` from a store (or a live teacher); see the module docstring."""
    cfg.check()
    cfg = with_init_seed(cfg)
    _ctx, device = distributed.init(cfg.device)  # under torchrun: join the job; cuda -> cuda:LOCAL_RANK
    spec = losses.spec(cfg.loss)
    hparams = spec.resolve(cfg.loss_opts)
    run = RunDir(cfg.out)
    if cfg.resume:
        run.check_resumable()
    else:
        run.check_new()
    source = open_data(cfg.data)
    val_source = open_data(cfg.val_data)
    check_val_classes(source, val_source)
    teacher, inputs = _open_teacher(cfg, source, spec, hparams, device, progress)
    if cfg.view_policy is not None and teacher.num_views == 1:
        raise UsageError("--view-policy chooses among views, but the teacher has 1 view per sample; drop it")
    # Seeded right before the networks are built, so initialisation (and dropout) depends on the init
    # seed alone, not on what opening the teacher drew: a sweep builds each student the same way.
    seed_everything(cfg.init_seed if cfg.init_seed is not None else cfg.seed)
    task = DistillTask(cfg, spec, hparams, teacher, source, device)
    task.check_val(val_source)  # before the run directory exists: one line, not a traceback after an epoch
    # The rank split too (the engine checks it again): a usage error is found before anything is written.
    check_batches(task.num_samples, cfg.batch_size, distributed.current().world)
    # The data's content, not only its spec, is part of the run: a changed dataset is refused on resume.
    inputs.update(data_fingerprint=source.fingerprint(), val_data_fingerprint=val_source.fingerprint())
    record, args = run_record(cfg, inputs, teacher, task, device)
    if distributed.is_main():  # rank 0 is the run's one writer
        run.open(record, cfg.resume, same=resolve_identity)
    with run:
        distributed.barrier()  # the run directory exists (or was checked) before any rank trains
        settings = LoopSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, workers=cfg.workers, device=device,
                                optim=cfg.optim, sync_bn=cfg.sync_bn, precision=cfg.precision)
        val = eval_loader(val_source, teacher.recipe, task.render, max(cfg.batch_size, 256), cfg.workers)
        engine = Engine(task, settings, run.files, command=COMMAND, args=args, val_loader=val,
                        same=resolve_identity)
        t_start = time.perf_counter()
        if engine.start(resume=cfg.resume) > cfg.epochs:
            log.info("%s: all %d epochs already done", run.path, cfg.epochs)
        history = engine.run(progress)
        return finish_run(run, task, history, t_start)


def format_result(result: DistillResult) -> str:
    """The human summary at the end of ``kdcache distill``."""
    f = result.final
    if not f:
        return f"{result.out}: no epoch was run"
    return (
        f"run {result.out}: {f['epoch']} epochs; final val top-1 {f['val_top1']:.2%}, top-5 {f['val_top5']:.2%}; "
        f"{f['samples_per_s']:,.0f} samples/s; weights in {result.out / 'final.pt'}, "
        f"metrics in {result.out / 'metrics.jsonl'}"
    )
