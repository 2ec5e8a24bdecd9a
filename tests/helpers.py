"""Tiny models for tests, reachable as `import:tests.helpers:NAME` specs."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class TinyNet(nn.Module):
    """A few-hundred-parameter conv net: fast enough for round trips in a second."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _seeded(build, seed: int = 0) -> nn.Module:
    # Fixed weights without touching the caller's global RNG: two runs build the same teacher.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def tiny(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _seeded(lambda: TinyNet(num_classes, in_channels))


def wrong_width(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Outputs one class too many."""
    return _seeded(lambda: TinyNet(num_classes + 1, in_channels))


class _NaNAfter(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = TinyNet(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        # Images with a bright centre pixel give NaN: only some samples are bad.
        flat = x.flatten(1)
        bad = flat[:, flat.shape[1] // 2] > 1.0
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def nan_model(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _seeded(lambda: _NaNAfter(num_classes, in_channels))


class _NaNOnRank1(_NaNAfter):
    """NaN logits on torchrun rank 1 only: a failure that exactly one rank of a job meets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.full_like(out, float("nan")) if os.environ.get("RANK") == "1" else out


def nan_on_rank_1(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _seeded(lambda: _NaNOnRank1(num_classes, in_channels))


class _Slow(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = TinyNet(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)  # so a test can kill the run part-way
        return self.net(x)


def slow(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _seeded(lambda: _Slow(num_classes, in_channels))


# Training-time inputs seen by `import:tests.helpers:recording` students (a test reads and clears it).
RECORDED_INPUTS: list[torch.Tensor] = []


class _Recording(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = TinyNet(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            RECORDED_INPUTS.append(x.detach().clone())
        return self.net(x)


def recording(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A tiny student that records every training batch it is given (see RECORDED_INPUTS)."""
    return _seeded(lambda: _Recording(num_classes, in_channels))


class _Gated(nn.Module):
    """A tiny net whose training steps wait, while the file named by $KDCACHE_TEST_GATE is absent."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = TinyNet(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = os.environ.get("KDCACHE_TEST_GATE")
        while self.training and gate and not os.path.exists(gate):
            time.sleep(0.02)  # holds the run (and its writer lock) until the test opens the gate
        return self.net(x)


def gated(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A student (or teacher) that trains only once the test opens its gate: two processes overlap for sure."""
    return _seeded(lambda: _Gated(num_classes, in_channels))


def fixed_12(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A model that takes 12x12 images only (a linear layer over the flattened pixels), as a ViT takes one size."""
    return _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 12 * 12, num_classes)))
