"""(Being replaced by kdcache.engine.) Pieces shared by every training command: optimizers, schedules, evaluation, run records.

``distill`` and ``train-teacher`` both build on these, so a student and a
teacher are trained, checkpointed, evaluated and logged the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdcache.data import DataSource
from kdcache.errors import KdcacheError, RunError
from kdcache.views import Render, ViewDataset, load_recipe

from kdcache.engine import OPTIMIZERS, SCHEDULES, OptimConfig  # noqa: E402,F401 - moved there


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the seed papers' CIFAR recipe) or AdamW."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule. multistep: x0.1 at 5/8, 3/4 and 7/8 of training (mdistiller's
    150/180/210 of 240 epochs); cosine: to zero over the run; constant."""
    if cfg.schedule == "multistep":
        milestones = sorted({max(1, round(cfg.epochs * f)) for f in (5 / 8, 3 / 4, 7 / 8)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed torch, numpy and random; on request make torch's kernels deterministic.

    Data order and views never use these generators (they are pure functions of
    the seed), so this only fixes model initialisation and dropout.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def eval_loader(source: DataSource, render: Render, batch_size: int, workers: int) -> DataLoader:
    """Un-augmented images of ``source`` rendered like the training views (size, normalisation)."""
    dataset = ViewDataset(source, load_recipe("none"), 0, [render])
    keys = [(i, 0) for i in range(len(source))]
    batches = [keys[b : b + batch_size] for b in range(0, len(keys), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Top-1 and top-5 accuracy (top-5 is top-min(5, C))."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for batch in loader:
        x = batch["images"][0].to(device, non_blocking=True)
        y = batch["label"].to(device)
        logits = model(x)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += int(y.shape[0])
    model.train(was_training)
    return {"val_top1": correct1 / max(1, total), "val_top5": correct5 / max(1, total)}


def canonical_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON: how a run records which manifest it used."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to the target and rename it over, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def prepare_run_dir(out: Path, record: dict[str, Any], resume: bool, compare_keys: Iterable[str]) -> None:
    """Create ``out`` for a new run, or check on ``--resume`` that it was made by the same arguments."""
    run_json = out / "run.json"
    if resume:
        if not run_json.exists():
            raise RunError(f"--resume: {out} holds no run to resume (no run.json); drop --resume to start one")
        previous = json.loads(run_json.read_text())
        diffs = [
            f"{k}: {previous['args'].get(k)!r} -> {record['args'].get(k)!r}"
            for k in compare_keys
            if previous["args"].get(k) != record["args"].get(k)
        ]
        if diffs:
            raise RunError(f"--resume with different arguments than the run in {out} ({'; '.join(diffs)})")
        return
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} already holds files; pass --resume to continue that run, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_json, record)


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Keep the metrics of epochs <= ``last_epoch`` (those a checkpoint covers); return them."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("epoch", 0) <= last_epoch]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows
