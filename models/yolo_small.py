"""A small YOLOv8-style detector (64x64 input, width 16, ~0.9M parameters).

The building blocks of the Ultralytics YOLOv8 family, at test size:

* ``C2f``: ``Conv1x1 -> chunk(2) (as ``split((c, c))``) -> n Bottlenecks on the second half -> Concat(all) -> Conv1x1``
  (exported as ``Split`` + ``Concat``; bottlenecks with a residual ``Add`` in the backbone);
* ``SPPF``: ``Conv1x1 -> three chained MaxPool 5x5 -> Concat(4) -> Conv1x1``;
* a PAN neck: nearest ``Upsample`` x2 + ``Concat`` top-down, strided ``Conv`` + ``Concat`` bottom-up;
* a decoupled head at strides 8, 16, 32: a box branch (``4 * reg_max`` distance bins) and a
  class branch, each ``Conv3x3 -> Conv3x3 -> Conv1x1``, giving six graph outputs
  ``cls_p3, box_p3, cls_p4, box_p4, cls_p5, box_p5``, each ``[N, H*W, C]`` (the map flattened,
  channels last, as detection exports lay out scores and boxes; no decoding).

Conv blocks are ``Conv (no bias) -> BatchNorm -> SiLU`` as in YOLOv8.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ConvBNAct", "Bottleneck", "C2f", "SPPF", "YoloSmall", "yolo_small", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("cls_p3", "box_p3", "cls_p4", "box_p4", "cls_p5", "box_p5")


class ConvBNAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3)
        self.cv2 = ConvBNAct(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions, as in YOLOv8."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBNAct(c_in, 2 * self.c, 1)
        self.cv2 = ConvBNAct((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        # chunk(2) written as split((c, c)): the legacy exporter turns chunk into Shape->Div->Slice,
        # whose output sizes onnx shape inference does not resolve; split gives a static Split
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.cv2 = ConvBNAct(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DetectHead(nn.Module):
    """Decoupled head for one scale: box distances and class scores."""

    def __init__(self, c_in: int, num_classes: int, reg_max: int, c_box: int, c_cls: int):
        super().__init__()
        self.box = nn.Sequential(ConvBNAct(c_in, c_box, 3), ConvBNAct(c_box, c_box, 3),
                                 nn.Conv2d(c_box, 4 * reg_max, 1))
        self.cls = nn.Sequential(ConvBNAct(c_in, c_cls, 3), ConvBNAct(c_cls, c_cls, 3),
                                 nn.Conv2d(c_cls, num_classes, 1))

    def forward(self, x):
        return self.cls(x).flatten(2).transpose(1, 2), self.box(x).flatten(2).transpose(1, 2)


class YoloSmall(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10, reg_max: int = 4):
        super().__init__()
        w = width
        self.stem = ConvBNAct(3, w, 3, 2)                                              # /2
        self.stage1 = nn.Sequential(ConvBNAct(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1, True))       # /4
        self.stage2 = nn.Sequential(ConvBNAct(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 2, True))   # /8  P3
        self.stage3 = nn.Sequential(ConvBNAct(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1, True))   # /16 P4
        self.stage4 = nn.Sequential(ConvBNAct(8 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1, True),
                                    SPPF(8 * w, 8 * w))                                          # /32 P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C2f(16 * w, 8 * w, 1)
        self.top3 = C2f(12 * w, 4 * w, 1)
        self.down3 = ConvBNAct(4 * w, 4 * w, 3, 2)
        self.bottom4 = C2f(12 * w, 8 * w, 1)
        self.down4 = ConvBNAct(8 * w, 8 * w, 3, 2)
        self.bottom5 = C2f(16 * w, 8 * w, 1)
        c_box, c_cls = max(16, w), max(num_classes, w)
        self.heads = nn.ModuleList(DetectHead(c, num_classes, reg_max, c_box, c_cls)
                                   for c in (4 * w, 8 * w, 8 * w))

    def forward(self, x):
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        n4 = self.top4(torch.cat([self.up(p5), p4], 1))
        out3 = self.top3(torch.cat([self.up(n4), p3], 1))
        out4 = self.bottom4(torch.cat([self.down3(out3), n4], 1))
        out5 = self.bottom5(torch.cat([self.down4(out4), p5], 1))
        outs = []
        for head, feat in zip(self.heads, (out3, out4, out5)):
            outs.extend(head(feat))
        return tuple(outs)


def yolo_small(num_classes: int = 10) -> YoloSmall:
    return YoloSmall(width=16, num_classes=num_classes)
