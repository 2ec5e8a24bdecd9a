"""``kdcache train-teacher``: make a teacher, with plain CE, label smoothing or RegT.

Training uses the same replayable views as everything else (epoch e draws
view e-1 of every sample), so a teacher run is reproducible from its
arguments. How the teacher was trained goes into its checkpoint's card and,
from there, into every store made with it (METHODS.md §10 asks that RegT be
recorded).

Each epoch ends with a state file ``OUT.state.pt``; running the same command
again continues from it, and the finished checkpoint replaces it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdcache import losses
from kdcache.data import open_data
from kdcache.errors import KdcacheError, RunError
from kdcache.loader import epoch_plan
from kdcache.models import atomic_torch_save, build_model, save_checkpoint
from kdcache.progress import console, make_progress, rate_text
from kdcache.training import (
    OptimConfig,
    eval_loader,
    evaluate,
    make_optimizer,
    make_scheduler,
    seed_everything,
)
from kdcache.views import ViewDataset, load_recipe


@dataclass
class TeacherConfig:
    """Arguments of one teacher-training run (recorded in the checkpoint's card)."""

    data: str
    val_data: str
    model: str
    epochs: int
    out: Path
    recipe: str = "fashion-mnist"
    label_smoothing: float = 0.0
    regt: float | None = None
    batch_size: int = 128
    workers: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "cpu"


@dataclass
class TeacherResult:
    out: Path
    val_top1: float
    val_top5: float
    seconds: float
    history: list[dict[str, Any]]


def _args_json(cfg: TeacherConfig) -> str:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    return json.dumps(d, sort_keys=True)


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> TeacherResult:
    """Train ``cfg.model`` on ``cfg.data`` and save a checkpoint with its card at ``cfg.out``."""
    cfg.optim.check()
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise KdcacheError(f"--label-smoothing must be in [0, 1) (got {cfg.label_smoothing})")
    if cfg.regt is not None and cfg.regt < 0:
        raise KdcacheError(f"--regt must be non-negative (got {cfg.regt})")
    if cfg.regt is not None and cfg.label_smoothing:
        raise KdcacheError("choose --label-smoothing or --regt, not both")
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    source = open_data(cfg.data)
    val_source = open_data(cfg.val_data)
    recipe = load_recipe(cfg.recipe)
    render = recipe.render
    in_channels = render.channels or source.channels
    model, card = build_model(cfg.model, source.num_classes, in_channels)
    model = model.to(device).train()
    opt = make_optimizer(model.parameters(), cfg.optim)
    sched = make_scheduler(opt, cfg.optim)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".state.pt")
    start = 1
    history: list[dict[str, Any]] = []
    if state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location="cpu")
        if state["args"] != _args_json(cfg):
            raise RunError(
                f"{state_path} belongs to a run with other arguments; delete it to start over, "
                "or repeat that run's arguments to resume it"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        history = json.loads(state["history"])
        start = int(state["epoch"]) + 1
        for _ in range(start - 1):
            sched.step()
        console.print(f"resuming teacher training from epoch {start}")
    dataset = ViewDataset(source, recipe, cfg.seed, [render])
    val = eval_loader(val_source, render, 256, cfg.workers)
    t_start = time.perf_counter()
    with make_progress(enabled=progress) as bar:
        for epoch in range(start, cfg.epochs + 1):
            # View e-1 of every sample: fresh augmentation each epoch, replayable.
            plan = epoch_plan(cfg.seed, epoch, len(source), num_views=epoch, policy="cycle", window=len(source))
            loader = DataLoader(dataset, batch_sampler=plan.batches(cfg.batch_size), num_workers=cfg.workers)
            task = bar.add_task(f"teacher epoch {epoch}/{cfg.epochs}", total=len(source), rate="")
            total, seen, t0 = 0.0, 0, time.perf_counter()
            for batch in loader:
                x = batch["images"][0].to(device)
                y = batch["label"].to(device)
                logits = model(x)
                if cfg.regt is not None:
                    loss = losses.regt(logits, y, beta=cfg.regt)["loss"]
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += int(y.shape[0])
                total += float(loss.detach()) * int(y.shape[0])
                bar.update(task, advance=int(y.shape[0]), rate=rate_text(seen, time.perf_counter() - t0, "samples"))
            sched.step()
            metrics = {"epoch": epoch, "train_loss": total / max(1, seen), **evaluate(model, val, device)}
            model.train()
            history.append(metrics)
            bar.remove_task(task)
            if progress:
                console.print(f"teacher epoch {epoch}: loss {metrics['train_loss']:.4f}  val top-1 {metrics['val_top1']:.2%}")
            atomic_torch_save(state_path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(), "args": _args_json(cfg), "history": json.dumps(history),
            })
    final = history[-1] if history else {"val_top1": float("nan"), "val_top5": float("nan")}
    trained = {
        "data": source.spec,
        "data_fingerprint": source.fingerprint(),
        "recipe": recipe.name,
        "epochs": cfg.epochs,
        "loss": "regt" if cfg.regt is not None else ("label_smoothing" if cfg.label_smoothing else "ce"),
        "label_smoothing": cfg.label_smoothing,
        "regt_beta": cfg.regt,
        "optimizer": asdict(cfg.optim),
        "seed": cfg.seed,
        "val_data": val_source.spec,
        "val_top1": final["val_top1"],
        "val_top5": final["val_top5"],
    }
    save_checkpoint(out, model.cpu(), {**card, "trained": trained})
    state_path.unlink(missing_ok=True)
    return TeacherResult(out=out, val_top1=final["val_top1"], val_top5=final["val_top5"],
                         seconds=time.perf_counter() - t_start, history=history)
