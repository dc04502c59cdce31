"""Name -> model constructor registry for the reference CNNs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from models import cifar_resnet, densenet_small, mobilenetv2, resnet50, resnext_small, se_net, vgg, yolo_small

__all__ = ["ModelSpec", "MODELS", "get_spec", "build_model"]

CIFAR_SHAPE = (1, 3, 32, 32)
IMAGENET_SHAPE = (1, 3, 224, 224)
DETECT_SHAPE = (1, 3, 64, 64)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    constructor: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]
    description: str
    num_classes: int = 10
    #: Checkpoints that load into this model with ``cifar_resnet.load_pretrained``
    #: (file names under ``<assets>/pretrained``), if any.
    pretrained: tuple[str, ...] = field(default=())
    #: Graph output names of the export (one per output of ``forward``).
    output_names: tuple[str, ...] = ("logits",)

    def build(self) -> nn.Module:
        return self.constructor()


def _spec(name, ctor, shape, desc, num_classes=10, pretrained=(), output_names=("logits",)):
    return name, ModelSpec(name, ctor, shape, desc, num_classes, tuple(pretrained), tuple(output_names))


MODELS: dict[str, ModelSpec] = dict(
    [
        _spec("resnet20", cifar_resnet.resnet20, CIFAR_SHAPE,
              "CIFAR ResNet-20 (akamaster layout, option-A Pad/strided-Slice shortcuts), 0.27M params",
              pretrained=["cifar10-resnet20-12fca82f.th"]),
        _spec("resnet32", cifar_resnet.resnet32, CIFAR_SHAPE,
              "CIFAR ResNet-32 (option-A shortcuts), 0.46M params",
              pretrained=["cifar10-resnet32-d509ac18.th"]),
        _spec("resnet44", cifar_resnet.resnet44, CIFAR_SHAPE,
              "CIFAR ResNet-44 (option-A shortcuts), 0.66M params",
              pretrained=["cifar10-resnet44-014dd654.th"]),
        _spec("resnet56", cifar_resnet.resnet56, CIFAR_SHAPE,
              "CIFAR ResNet-56 (option-A shortcuts), 0.85M params",
              pretrained=["cifar10-resnet56-4bfd9763.th"]),
        _spec("vgg16_bn", vgg.vgg16_bn, CIFAR_SHAPE,
              "VGG-16-BN for CIFAR (13 Conv-BN-ReLU, 5 MaxPool, 512x1x1 -> Linear), 15M params"),
        _spec("mobilenetv2", mobilenetv2.mobilenetv2_cifar, CIFAR_SHAPE,
              "MobileNetV2 x1.0, CIFAR strides (inverted residuals, depthwise, ReLU6), 2.2M params"),
        _spec("resnet50", resnet50.resnet50, IMAGENET_SHAPE,
              "ImageNet ResNet-50 (Bottleneck, projection shortcuts), 1000 classes, 25.6M params",
              num_classes=1000),
        _spec("densenet_small", densenet_small.densenet_small, CIFAR_SHAPE,
              "small DenseNet (Concat dense blocks, 1x1-conv+AvgPool transitions, 2x2 Flatten->Gemm head), 0.10M params"),
        _spec("resnext_small", resnext_small.resnext_small, CIFAR_SHAPE,
              "small ResNeXt (bottlenecks with grouped 3x3 conv, cardinality 8, projection shortcuts), 0.25M params"),
        _spec("senet_small", se_net.senet_small, CIFAR_SHAPE,
              "small SE-ResNet (squeeze-excitation Mul gates, conv- and linear-style SE, residual Adds), 0.18M params"),
        _spec("yolo_small", yolo_small.yolo_small, DETECT_SHAPE,
              "small YOLOv8-style detector (C2f Split/Concat blocks, SPPF, Upsample+Concat PAN neck, "
              "decoupled class/box head at 3 scales: 6 outputs [N, H*W, C]), 64x64 input, 1.3M params",
              output_names=yolo_small.OUTPUT_NAMES),
    ]
)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def build_model(name: str) -> nn.Module:
    """Construct model ``name`` with PyTorch's default (unseeded) initialisation."""
    return get_spec(name).build()
