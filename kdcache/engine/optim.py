"""Optimizers and per-epoch learning-rate schedules of every training command."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from kdcache.validate import require_choice, require_int, require_number
from kdcache.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule of one training run.

    ``epochs`` is the run's length, given once on the run's own config;
    here it may be left ``None`` (or repeat the same number).
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    epochs: int | None = None

    def check(self, epochs: int | None = None) -> None:
        """Refuse bad values with one line naming the option."""
        epochs = self.epochs if epochs is None else epochs
        require_choice("--optimizer", self.optimizer, OPTIMIZERS)
        require_choice("--schedule", self.schedule, SCHEDULES)
        require_number("--lr", self.lr, minimum=0.0, inclusive=False)
        require_number("--momentum", self.momentum, minimum=0.0, below=1.0)
        require_number("--weight-decay", self.weight_decay, minimum=0.0)
        require_int("--epochs", epochs, 1)
        if self.epochs is not None and self.epochs != epochs:
            raise UsageError(f"the optimizer config says {self.epochs} epochs but the run has {epochs}; give one")


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the usual CIFAR distillation recipe) or AdamW."""
    if require_choice("--optimizer", cfg.optimizer, OPTIMIZERS) == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule over ``epochs``. multistep: x0.1 at 5/8, 3/4 and 7/8 of training
    (150/180/210 of 240 epochs, the common CIFAR distillation schedule); cosine: to zero over
    the run; constant."""
    schedule = require_choice("--schedule", cfg.schedule, SCHEDULES)
    if schedule == "multistep":
        milestones = sorted({max(1, round(epochs * f)) for f in (5 / 8, 3 / 4, 7 / 8)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)
