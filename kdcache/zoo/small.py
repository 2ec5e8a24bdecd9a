"""Small models for tests and the 5-minute CPU quickstart on 28x28 Fashion-MNIST.

- ``tiny_cnn``: a few thousand parameters; fast stub for tests (timm's
  ``TinyClassifier`` idea), with a BatchNorm so checkpoints carry buffers.
- ``cnn_small``: the quickstart teacher; three conv-BN-ReLU stages. On
  Fashion-MNIST it reached 85% after 5 CPU epochs on 5,000 images and 88.6%
  after 4 epochs on 20,000 (docs/models.md), at 9.4x the multiply-adds of
  ``mlp`` (about 19x its training-step time on CPU).
- ``mlp``: the quickstart student; one hidden layer over the 28x28 pixels.

All three accept any input size: the CNNs pool adaptively, and ``mlp``
resamples inputs that are not 28x28 to 28x28 with adaptive average pooling
(28x28 inputs pass through untouched).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcache.zoo._registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class TinyCNN(nn.Module):
    """Three 3x3 conv layers (8, 16, 32 channels), global pooling, a linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 8),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages of 16/32/64 channels at full, 1/2 and 1/4 resolution.

    The head pools to a 3x3 grid rather than 1x1: where on the image a
    feature sits (a sleeve, a heel) is what separates the confusable
    Fashion-MNIST classes, and global pooling throws that away.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16),
            nn.MaxPool2d(2),
            *_conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
            nn.AdaptiveAvgPool2d(3),
        )
        self.fc = nn.Linear(64 * 9, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """Flatten a 28x28 image, one ReLU hidden layer, a linear head."""

    SIDE = 28

    def __init__(self, num_classes: int, in_channels: int = 3, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * self.SIDE * self.SIDE, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.SIDE, self.SIDE):
            x = F.adaptive_avg_pool2d(x, self.SIDE)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


@register_model("tiny_cnn")
def tiny_cnn(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A few-thousand-parameter CNN for tests."""
    return TinyCNN(num_classes, in_channels)


@register_model("cnn_small")
def cnn_small(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The quickstart teacher (85-89% on Fashion-MNIST after a few CPU epochs)."""
    return SmallCNN(num_classes, in_channels)


@register_model("mlp")
def mlp(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The quickstart student: a one-hidden-layer MLP on 28x28 inputs."""
    return MLP(num_classes, in_channels)
