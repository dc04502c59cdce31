"""MobileNetV2 (Sandler et al. 2018): inverted residuals, depthwise 3x3 convs, ReLU6.

``input_size=32`` (default) is the usual CIFAR adaptation: the stem conv and
the first stride-2 stage use stride 1, so a 32x32 input ends at a 4x4 map
(instead of 1x1).  ``input_size=224`` is the ImageNet configuration (strides
as in the paper, 7x7 final map).  ``width_mult`` scales every channel count
(rounded to a multiple of 8 as in the reference implementation).  The
classifier is ``AdaptiveAvgPool2d(1) -> flatten -> Dropout -> Linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenetv2", "mobilenetv2_cifar", "mobilenetv2_imagenet"]


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # do not round down by more than 10%
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel_size=1))  # pointwise expand
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # pointwise-linear projection
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# t (expansion), c (channels), n (repeats), s (stride of first block)
_IMAGENET_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        input_size: int = 32,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ):
        super().__init__()
        cifar = input_size <= 64
        setting = [list(row) for row in _IMAGENET_SETTING]
        stem_stride = 2
        if cifar:
            # CIFAR variant: keep resolution longer (stem stride 1, 2nd stage stride 1).
            stem_stride = 1
            setting[1][3] = 1
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU(3, input_channel, stride=stem_stride)]
        for t, c, n, s in setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenetv2(num_classes: int = 10, width_mult: float = 1.0, input_size: int = 32) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, input_size=input_size)


def mobilenetv2_cifar(num_classes: int = 10, width_mult: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, input_size=32)


def mobilenetv2_imagenet(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, input_size=224)
