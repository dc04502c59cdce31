"""A small squeeze-and-excitation residual CNN for CIFAR (32x32 input, ~0.18M parameters).

Basic residual blocks (``Conv3x3-BN-ReLU-Conv3x3-BN``) whose residual branch is
recalibrated by an SE gate before the add::

    s = GlobalAvgPool(out) -> reduce -> ReLU -> expand -> Sigmoid
    out = out * s            # broadcast Mul over H, W
    y = ReLU(out + shortcut(x))

Two SE flavours are used so both common export patterns appear: ``"conv"``
(1x1 convs on the pooled N x C x 1 x 1 tensor, torchvision style) in stages 1-2
and ``"linear"`` (flatten -> Linear -> ReLU -> Linear -> Sigmoid -> reshape to
N x C x 1 x 1, original SENet style) in stage 3.  Shortcuts are identity or
``Conv1x1 -> BN`` projections.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SqueezeExcitation", "SEBasicBlock", "SENetSmall", "senet_small"]


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 4, impl: str = "conv"):
        super().__init__()
        if impl not in ("conv", "linear"):
            raise ValueError(f"impl must be 'conv' or 'linear', got {impl!r}")
        hidden = max(4, channels // reduction)
        self.impl = impl
        self.channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if impl == "conv":
            self.fc1 = nn.Conv2d(channels, hidden, 1)
            self.fc2 = nn.Conv2d(hidden, channels, 1)
        else:
            self.fc1 = nn.Linear(channels, hidden)
            self.fc2 = nn.Linear(hidden, channels)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.avgpool(x)
        if self.impl == "linear":
            s = torch.flatten(s, 1)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        if self.impl == "linear":
            s = s.reshape(-1, self.channels, 1, 1)
        return x * s


class SEBasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, se_impl: str = "conv", reduction: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.se = SqueezeExcitation(out_ch, reduction, se_impl)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)
        return self.relu(out + self.shortcut(x))


class SENetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(16, 32, 64), blocks_per_stage: int = 2,
                 se_impls=("conv", "conv", "linear")):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        ch = widths[0]
        stages = []
        for i, (w, impl) in enumerate(zip(widths, se_impls)):
            blocks = []
            for j in range(blocks_per_stage):
                blocks.append(SEBasicBlock(ch, w, 2 if (i > 0 and j == 0) else 1, impl))
                ch = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(ch, num_classes)
        for m in self.modules():
            # Main-path convs (no bias): He init; SE convs/linears keep PyTorch defaults.
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.linear(x)


def senet_small(num_classes: int = 10) -> SENetSmall:
    return SENetSmall(num_classes=num_classes)
