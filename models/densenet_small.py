"""A small DenseNet-style CIFAR net (32x32 input, ~0.1M parameters).

Each dense layer computes ``Conv1x1 -> BN -> ReLU -> Conv3x3 -> BN -> ReLU`` on
its input and returns ``Concat([input, new_features], axis=1)``, so channel
counts grow by ``growth`` per layer.  Transitions are
``Conv1x1 (compression) -> BN -> ReLU -> AvgPool2x2``.

Unlike the original pre-activation DenseNet (BN-ReLU-Conv), every BN here
directly follows a Conv, so an exporter can fold all of them.

The head deliberately keeps spatial extent: the final 8x8 map is average-pooled
to 2x2 and ``flatten``-ed into ``Linear(C*2*2, num_classes)``, i.e. a
Flatten->Gemm whose input features are channel-major blocks of 4 per channel.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["DenseLayer", "Transition", "DenseNetSmall", "densenet_small"]


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bottleneck: int = 4):
        super().__init__()
        mid = bottleneck * growth
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(growth)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.relu(self.bn(self.conv(x))))


class DenseNetSmall(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        growth: int = 12,
        block_layers=(4, 4, 4),
        stem: int = 24,
        compression: float = 0.5,
        head_pool: int = 2,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        ch = stem
        blocks: list[nn.Module] = []
        for i, n in enumerate(block_layers):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(ch, growth))
                ch += growth
            blocks.append(nn.Sequential(*layers))
            if i != len(block_layers) - 1:
                out_ch = int(ch * compression)
                blocks.append(Transition(ch, out_ch))
                ch = out_ch
        self.features = nn.Sequential(*blocks)
        # 32x32 input -> 8x8 after two transitions -> (8 // head_pool)-sized pooling -> head_pool x head_pool
        spatial = 32 // (2 ** (len(block_layers) - 1))
        self.pool = nn.AvgPool2d(spatial // head_pool)
        self.linear = nn.Linear(ch * head_pool * head_pool, num_classes)
        self.num_features = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.linear(x)


def densenet_small(num_classes: int = 10) -> DenseNetSmall:
    return DenseNetSmall(num_classes=num_classes)
