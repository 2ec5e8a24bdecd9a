"""A teacher for the torchrun progress test: slow on rank 1, so rank 0 finishes its share first."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from tests.helpers import tiny


class _SlowOnRank1(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.slow = os.environ.get("RANK") == "1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slow:
            time.sleep(0.25)
        return self.net(x)


def slow_on_rank1(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return _SlowOnRank1(tiny(num_classes, in_channels))
