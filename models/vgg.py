"""VGG-16 with batch norm for CIFAR-10 (32x32 inputs).

Conv stack ``64,64,M,128,128,M,256x3,M,512x3,M,512x3,M`` (every conv is
``Conv3x3 -> BatchNorm -> ReLU``), leaving a 512x1x1 map that is flattened into
``Linear(512, num_classes)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["VGG", "CFG", "vgg16_bn", "vgg11_bn"]

CFG: dict[str, list] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list, num_classes: int = 10, batch_norm: bool = True, width_mult: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_ch = max(1, int(round(v * width_mult)))
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16_bn(num_classes: int = 10, width_mult: float = 1.0) -> VGG:
    return VGG(CFG["vgg16"], num_classes=num_classes, batch_norm=True, width_mult=width_mult)


def vgg11_bn(num_classes: int = 10, width_mult: float = 1.0) -> VGG:
    return VGG(CFG["vgg11"], num_classes=num_classes, batch_norm=True, width_mult=width_mult)
