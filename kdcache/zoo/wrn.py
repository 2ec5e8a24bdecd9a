"""Wide ResNets (Zagoruyko & Komodakis 2016) in the CIFAR layout of the KD papers.

``wrn_D_K`` has depth ``D = 6n + 4`` and widening factor ``K``; the
pre-activation blocks, the 16-channel stem and the final BN-ReLU follow the
original WRN code that CRD/DKD/mdistiller reuse (``wrn_40_2`` is a standard
CIFAR-100 teacher, ``wrn_16_2`` its student). The stem takes
``in_channels`` and the head pools adaptively, so 28x28 inputs work. The
state-dict keys (``block1.layer.0.convShortcut``, the final ``bn1``) are
those of that code, so its CIFAR checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcache.zoo._registry import register_model


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv, plus a shortcut.

    When the width or stride changes, the shortcut is a 1x1 convolution of
    the *pre-activated* input (as in the WRN reference code), else the raw
    input.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        # camelCase to keep the reference code's state-dict keys.
        self.convShortcut: nn.Module | None = None
        if cin != cout or stride != 1:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class _Stage(nn.Module):
    """A sequence of blocks, held as ``.layer`` (the reference code's key names)."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for small images."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        cin = widths[0]
        stages = []
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(WideBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            stages.append(_Stage(blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    @register_model(name)
    def factory(*, num_classes: int, in_channels: int = 3) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"Wide ResNet, depth {depth}, widening factor {widen}."


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_d, _k)
