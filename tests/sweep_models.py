"""Students for the sweep tests, reachable as `import:tests.sweep_models:NAME` specs.

Unlike `tests.helpers`, these draw their initial weights from torch's GLOBAL generator and use
dropout in training, so a student ends equal to its single run only if the sweep gives every
student its own generator state (seeded by its init seed, restored around each of its steps).
"""

from __future__ import annotations

import time

import torch
from torch import nn


class DropoutNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(x)).mean(dim=(2, 3))))


def dropout_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return DropoutNet(num_classes, in_channels)


class _SlowDropout(DropoutNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)  # so a test can kill a sweep part-way
        return super().forward(x)


def slow_dropout_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _SlowDropout(num_classes, in_channels)
