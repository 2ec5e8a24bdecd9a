"""VGG with batch norm in the CIFAR layout of the KD papers.

Five conv blocks separated by 2x2 max pools, the last pool replaced by a
global average pool and one linear classifier (no 4096-wide FC layers), as
in CRD/DKD/mdistiller, where ``vgg13`` (a CIFAR-100 teacher) and ``vgg8``
(a student) mean the batch-norm variants. The fourth pool is only applied
to inputs of 64 pixels or more (the Tiny-ImageNet setting of those
papers), so 28x28 and 32x32 inputs keep a 3x3 / 4x4 map in the last block.
State-dict keys (``block0.0.weight``, ..., ``classifier.weight``) are those
of the reference code, so its CIFAR checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcache.zoo._registry import register_model

_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [
        [64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512],
    ],
}


def _block(widths: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cout in widths:
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """VGG-BN for small images."""

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"a CIFAR VGG has 5 blocks, got {len(cfg)}")
        cins = [in_channels] + [stage[-1] for stage in cfg[:-1]]
        # Named block0..block4, not a ModuleList, for the reference key names.
        for i, (stage, cin) in enumerate(zip(cfg, cins)):
            self.add_module(f"block{i}", _block(stage, cin))
        self.pool = nn.MaxPool2d(2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A static shape test: torch.jit.trace / torch.export specialise it.
        large = x.shape[-2] >= 64
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        x = self.block3(x)
        if large:
            x = self.pool(x)
        x = self.block4(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _register(name: str) -> None:
    cfg = _CONFIGS[name]

    @register_model(name)
    def factory(*, num_classes: int, in_channels: int = 3) -> nn.Module:
        return CifarVGG(cfg, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"VGG-BN ({name}), CIFAR layout."


for _name in _CONFIGS:
    _register(_name)
