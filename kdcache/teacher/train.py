"""``kdcache train-teacher``: make a teacher, with plain CE, label smoothing or RegT.

Training uses the same replayable views as everything else (epoch e draws
view e-1 of every sample), so a teacher run is reproducible from its
arguments. How the teacher was trained goes into its checkpoint's card and,
from there, into every store made with it (a RegT teacher is recorded as
such, since it changes what distillation receives). With a recipe that mixes
views (its ``mix`` op), CE and label smoothing train on timm's mixed target
``lam·y + (1 − lam)·partner``; RegT, defined on one label per image, is
refused there.

The loop is :mod:`kdcache.engine`'s, as for ``distill``: after every epoch the
whole training state goes to ``OUT.state.pt`` and the logs to
``OUT.metrics.jsonl`` / ``OUT.steps.jsonl``. Running the same command again
continues from the state, bit for bit; the finished checkpoint replaces the
state. A checkpoint or state that another command wrote is never overwritten.
One process at a time trains a checkpoint: a second is refused while the first
holds the run's writer lock (:mod:`kdcache.engine.run_dir`, the lock file
``.OUT.lock`` beside it, removed once the checkpoint is written). Under
torchrun it trains data-parallel through the engine (rank 0 writes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcache import distributed, losses
from kdcache.data import DataSource, open_data
from kdcache.engine import (
    MAY_CHANGE,
    Engine,
    LoopSettings,
    OptimConfig,
    eval_loader,
    identity_args,
    read_jsonl,
    recorded_args,
    seed_everything,
)
from kdcache.engine.config import diff_args
from kdcache.engine.parallel import PRECISIONS
from kdcache.engine.run_dir import RunDir, check_val_classes, check_val_images
from kdcache.engine.parallel import check_batches
from kdcache.engine.state import determinism
from kdcache.errors import ModelError, RunError, UsageError
from kdcache.distill.cached_rows import epoch_plan
from kdcache.models import build_model, check_output_width, load_checkpoint, save_checkpoint
from kdcache.validate import require_choice, require_int, require_number
from kdcache.views import Recipe, ViewDataset, resolve_recipe

COMMAND = "train-teacher"
log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    """Arguments of one teacher-training run (recorded in the checkpoint's card).

    Fields marked ``MAY_CHANGE`` may differ when an interrupted run is
    continued; all others must repeat.
    """

    data: str
    val_data: str
    model: str
    epochs: int
    out: Path = field(metadata=MAY_CHANGE)
    recipe: str | None = None  # None: the dataset's default recipe
    label_smoothing: float = 0.0
    regt: float | None = None
    batch_size: int = 128
    workers: int = field(default=0, metadata=MAY_CHANGE)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = field(default="cpu", metadata=MAY_CHANGE)
    sync_bn: bool = field(default=False, metadata=MAY_CHANGE)  # under torchrun (the world size may change too)
    precision: str = "fp32"  # autocast of forward passes: fp32 (none), bf16, fp16

    def check(self) -> None:
        """Refuse bad option values with one line each (before anything is read or written)."""
        require_int("--epochs", self.epochs, 1)
        require_int("--batch-size", self.batch_size, 1)
        require_int("--workers", self.workers, 0)
        require_int("--seed", self.seed, 0)
        self.optim.check(self.epochs)
        require_choice("--precision", self.precision, tuple(PRECISIONS))
        require_number("--label-smoothing", self.label_smoothing, minimum=0.0, below=1.0)
        if self.regt is not None:
            require_number("--regt", self.regt, minimum=0.0)
            if self.label_smoothing:
                raise UsageError("choose --label-smoothing or --regt, not both")


@dataclass
class TeacherResult:
    out: Path
    val_top1: float
    val_top5: float
    seconds: float
    history: list[dict[str, Any]]


class _TeacherTask:
    """What train-teacher contributes to the engine: the model, its views, and CE / LS / RegT."""

    evaluated = "model"

    def __init__(self, cfg: TeacherConfig, source: DataSource, recipe: Recipe, device: torch.device) -> None:
        self.render = recipe.render
        in_channels = self.render.channels or source.channels
        model, self.card = build_model(cfg.model, source.num_classes, in_channels, random_init=True, role="model")
        # A model that cannot take these images (a fixed-size ViT) is one line now, not a traceback mid-epoch.
        check_output_width(model, in_channels, self.render.size or recipe.output_size(source.image_size(0)),
                           source.num_classes, micro_batch=2, role="model")
        self.model = model.to(device).train()
        self.in_channels = in_channels
        self.recipe = recipe
        self.modules: dict[str, nn.Module] = {"model": self.model}
        self.forward = self.modules  # what the step calls: the engine puts DDP wrappers here under torchrun
        self.dataset = ViewDataset(source, recipe, cfg.seed, [self.render])
        self.cfg = cfg
        self.num_samples = len(source)
        self.device = device

    def check_val(self, val_source: DataSource) -> None:
        """Refuse validation images the model cannot take (another channel count or size), one line."""
        check_val_images(self.model, val_source, self.recipe, self.render, self.in_channels,
                         val_source.num_classes, "model")

    def param_groups(self) -> list[Iterable[nn.Parameter]]:
        return [self.model.parameters()]

    def epoch_batches(self, epoch: int, batch_size: int) -> tuple[Iterable[list[Any]], Iterator[Any] | None]:
        # View e-1 of every sample: fresh augmentation each epoch, replayable.
        n = self.num_samples
        plan = epoch_plan(self.cfg.seed, epoch, n, num_views=epoch, policy="cycle", window=n)
        return plan.batches(batch_size), None

    def step(self, batch: dict[str, Any], side: Any, epoch: int) -> dict[str, torch.Tensor]:
        x = batch["images"][0].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        logits = self.forward["model"](x)
        if "lam" in batch:  # a recipe with mix: the view shows lam of its sample, 1 - lam of a partner
            mixed = losses.MixedLabels(y, batch["partner_label"].to(self.device, non_blocking=True),
                                       batch["lam"].to(self.device, non_blocking=True))
            return {"loss": mixed_target_ce(logits, mixed, self.cfg.label_smoothing)}
        if self.cfg.regt is not None:
            return losses.regt(logits, y, beta=self.cfg.regt)
        return {"loss": F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)}


def mixed_target_ce(logits: torch.Tensor, labels: losses.MixedLabels, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE against timm's mixed, smoothed target: ``lam·smooth(y) + (1 − lam)·smooth(partner)``.

    ``smooth(k) = (1 − ε)·onehot(k) + ε/C``, as timm's ``mixup_target`` and ``F.cross_entropy``'s
    ``label_smoothing`` define it, so the loss is ``(1 − ε)·mixed_CE + ε·mean_c(−log p_c)``; with
    ``ε = 0`` it is :func:`kdcache.losses.mixed_cross_entropy` itself.
    """
    ce = losses.mixed_cross_entropy(logits, labels)
    if not label_smoothing:
        return ce
    uniform = -torch.log_softmax(logits, dim=1).mean(dim=1).mean()
    return (1.0 - label_smoothing) * ce + label_smoothing * uniform


def check_mixed_loss(cfg: TeacherConfig, recipe: Recipe) -> None:
    """Refuse RegT on a recipe that mixes views (one line, before anything is written).

    Plain CE and label smoothing train on the mixed target, as timm does; RegT's regulariser needs
    the one label of each image (its probability against the rest), which a mixed view does not have.
    """
    if cfg.regt is not None and recipe.mix is not None:
        raise UsageError(f"--regt needs one label per image, but recipe {recipe.name} mixes views (its mix op); "
                         "choose a recipe without mix, or train with plain CE or --label-smoothing")


def _finished_card(out: Path, args: dict[str, Any]) -> dict[str, Any] | None:
    """The card of ``out`` if it is this very run's finished teacher; None if ``out`` does not exist.

    Anything else at ``out`` (a distill's final.pt, another run's teacher, a
    stranger's file) is refused: train-teacher never overwrites what it did
    not write for these arguments.
    """
    if not out.exists():
        return None
    if out.is_dir():
        raise RunError(f"--out {out} is a directory; give the checkpoint file to write, e.g. {out / 'teacher.pt'}")
    fix = "choose another --out, or delete it to train here"
    try:
        card = load_checkpoint(out)["card"]
    except ModelError:
        raise RunError(f"{out} exists and is not a checkpoint; {fix}") from None
    recorded = ((card or {}).get("trained") or {}).get("args")
    if not isinstance(recorded, dict):
        raise RunError(f"{out} holds a checkpoint that no `kdcache train-teacher` run wrote; {fix}")
    diffs = diff_args(recorded, args)
    if diffs:
        raise RunError(f"{out} holds a teacher trained with other arguments ({'; '.join(diffs)}); {fix}")
    return card


def _already_trained(out: Path, run: RunDir, args: dict[str, Any], is_main: bool) -> TeacherResult | None:
    """The result of this very run if ``out`` already holds its finished teacher (nothing to do)."""
    card = _finished_card(out, args)
    if card is None:
        return None
    if is_main:
        run.files.state.unlink(missing_ok=True)  # killed between writing the teacher and removing its state
    log.info("%s already holds the teacher this command trains; delete it to train again", out)
    trained = card["trained"]
    return TeacherResult(out=out, val_top1=trained["val_top1"], val_top5=trained["val_top5"], seconds=0.0,
                         history=read_jsonl(run.files.metrics))


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> TeacherResult:
    """Train ``cfg.model`` on ``cfg.data`` and save a checkpoint with its card at ``cfg.out``."""
    cfg.check()
    ctx, device = distributed.init(cfg.device)  # under torchrun: join the job; cuda -> cuda:LOCAL_RANK
    out = Path(cfg.out)
    run = RunDir.beside(out)
    args = identity_args(cfg)
    done = _already_trained(out, run, args, ctx.is_main)  # the same command again after it finished
    if done is not None:
        return done
    seed_everything(cfg.seed)
    source = open_data(cfg.data)
    val_source = open_data(cfg.val_data)
    check_val_classes(source, val_source)
    recipe = resolve_recipe(cfg.recipe, source)
    check_mixed_loss(cfg, recipe)
    if cfg.recipe is None and progress:
        log.info("recipe: %s (the default for %s; --recipe to choose another)", recipe.name, source.spec)
    task = _TeacherTask(cfg, source, recipe, device)
    task.check_val(val_source)  # before anything is written: one line, not a traceback after an epoch
    check_batches(task.num_samples, cfg.batch_size, distributed.current().world)  # the rank split, too
    if ctx.is_main:  # rank 0 is the run's one writer
        run.acquire()
        # Finished by another process before this one took the lock (one process: no rank to tell).
        done = None if ctx.enabled else _already_trained(out, run, args, is_main=True)
        if done is not None:
            run.lock.discard()  # the finished teacher needs no lock beside it (nor did the one who finished it)
            run.release()
            return done
    with run:
        return _train(cfg, task, run, source, val_source, recipe, device, args, progress)


def _train(cfg: TeacherConfig, task: _TeacherTask, run: RunDir, source: DataSource, val_source: DataSource,
           recipe: Recipe, device: torch.device, args: dict[str, Any], progress: bool) -> TeacherResult:
    """Train (or continue) the run, then write the checkpoint with its card and remove the state."""
    ctx = distributed.current()
    out = Path(cfg.out)
    files = run.files
    settings = LoopSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, workers=cfg.workers, device=device,
                            optim=cfg.optim, label="teacher epoch", sync_bn=cfg.sync_bn, precision=cfg.precision)
    val = eval_loader(val_source, recipe, task.render, 256, cfg.workers)
    # The state also records the data's content: the same spec over changed files is refused on resume.
    state_args = {**args, "data_fingerprint": source.fingerprint(), "val_data_fingerprint": val_source.fingerprint()}
    engine = Engine(task, settings, files, command=COMMAND, args=state_args, val_loader=val)
    t_start = time.perf_counter()
    engine.start(resume=True)  # the same command again continues its own state
    history = engine.run(progress)
    final = history[-1]
    trained = {
        "data": source.spec,
        "data_fingerprint": source.fingerprint(),
        "recipe": recipe.name,
        "epochs": cfg.epochs,
        "loss": "regt" if cfg.regt is not None else ("label_smoothing" if cfg.label_smoothing else "ce"),
        "label_smoothing": cfg.label_smoothing,
        "regt_beta": cfg.regt,
        "optimizer": recorded_args(cfg.optim),
        "seed": cfg.seed,
        "val_data": val_source.spec,
        "val_data_fingerprint": val_source.fingerprint(),
        "val_top1": final["val_top1"],
        "val_top5": final["val_top5"],
        "determinism": determinism(device),
        "world_size": ctx.world,
        "precision": cfg.precision,
        "args": args,  # what a re-run compares before touching this file
    }
    if ctx.is_main:
        save_checkpoint(out, task.model.cpu(), {**task.card, "trained": trained})
        files.state.unlink(missing_ok=True)
        # Finished: the lock protects nothing now. Removed while held; a process waiting to open it
        # takes the file then at the path (WriterLock), finds the teacher done, and removes its own.
        run.lock.discard()
    distributed.barrier()  # the checkpoint exists when any rank returns
    return TeacherResult(out=out, val_top1=final["val_top1"], val_top5=final["val_top5"],
                         seconds=time.perf_counter() - t_start, history=history)
