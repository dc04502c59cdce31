"""A small ResNeXt-style CIFAR net (32x32 input, ~0.25M parameters).

Bottleneck blocks ``Conv1x1 -> BN -> ReLU -> grouped Conv3x3 (cardinality
groups) -> BN -> ReLU -> Conv1x1 -> BN`` plus a shortcut (identity, or
``Conv1x1 -> BN`` projection when shape changes), then ReLU.  Three stages of
two blocks (64/128/256 output channels, group width ``base_width`` per group,
cardinality 8 by default), global average pool and a linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ResNeXtBlock", "ResNeXtSmall", "resnext_small"]


class ResNeXtBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, group_width: int):
        super().__init__()
        width = cardinality * group_width
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNeXtSmall(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        cardinality: int = 8,
        base_width: int = 4,
        stage_channels=(64, 128, 256),
        blocks_per_stage: int = 2,
        stem: int = 32,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        ch = stem
        stages = []
        for i, out_ch in enumerate(stage_channels):
            gw = base_width * (2 ** i)
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ResNeXtBlock(ch, out_ch, stride, cardinality, gw))
                ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnext_small(num_classes: int = 10) -> ResNeXtSmall:
    return ResNeXtSmall(num_classes=num_classes)
