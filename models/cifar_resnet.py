"""CIFAR-10 ResNets (ResNet-20/32/44/56/110, 6n+2 layers) with "option A" shortcuts.

The module layout, names and shortcut follow akamaster/pytorch_resnet_cifar10
(BSD-2-Clause) exactly, so its published checkpoints (``conv1``, ``bn1``,
``layer1..3``, ``linear``; keys prefixed with ``module.``) load with
:func:`load_pretrained`.  The downsampling shortcut has no parameters: it takes
every second pixel (``x[:, :, ::2, ::2]``) and zero-pads the channel axis by
``planes // 4`` on both sides.

Two cosmetic differences from the original ``forward`` that do not change the
function or the state dict: the residual add is out-of-place, and the head uses
``F.avg_pool2d`` with a constant kernel plus ``torch.flatten`` instead of
``out.size()``-based arguments, so the legacy (TorchScript) exporter emits a
static ``AveragePool -> Flatten -> Gemm`` rather than a ``Shape/Gather/Concat``
chain.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init

__all__ = [
    "LambdaLayer",
    "BasicBlock",
    "ResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "load_pretrained",
    "PretrainedLoadError",
]


def _weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        init.kaiming_normal_(m.weight)


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":
                # For CIFAR10 ResNet paper uses option A.
                self.shortcut = LambdaLayer(
                    lambda x: F.pad(
                        x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0
                    )
                )
            elif option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes),
                )
            else:
                raise ValueError(f"unknown shortcut option {option!r} (expected 'A' or 'B')")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int = 10, option: str = "A"):
        super().__init__()
        self.in_planes = 16

        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1, option=option)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2, option=option)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2, option=option)
        self.linear = nn.Linear(64, num_classes)

        self.apply(_weights_init)

    def _make_layer(self, block, planes, num_blocks, stride, option):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s, option))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        # Global average pool over the final map (8x8 for 32x32 inputs).
        out = F.avg_pool2d(out, int(out.shape[3]))
        out = torch.flatten(out, 1)
        out = self.linear(out)
        return out


def _cifar_resnet(depth: int, num_classes: int = 10, option: str = "A") -> ResNet:
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (got {depth})")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n, n, n], num_classes=num_classes, option=option)


def resnet20(num_classes: int = 10) -> ResNet:
    return _cifar_resnet(20, num_classes)


def resnet32(num_classes: int = 10) -> ResNet:
    return _cifar_resnet(32, num_classes)


def resnet44(num_classes: int = 10) -> ResNet:
    return _cifar_resnet(44, num_classes)


def resnet56(num_classes: int = 10) -> ResNet:
    return _cifar_resnet(56, num_classes)


def resnet110(num_classes: int = 10) -> ResNet:
    return _cifar_resnet(110, num_classes)


class PretrainedLoadError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model."""


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an akamaster-style checkpoint into ``model`` (in place) and return it.

    The file is read with ``torch.load(path, map_location='cpu', weights_only=True)``;
    a ``{'state_dict': ...}`` wrapper is unwrapped if present and ``module.``
    prefixes (from ``nn.DataParallel``) are stripped.  Missing or unexpected keys
    and shape mismatches raise :class:`PretrainedLoadError` naming them (absent
    BatchNorm ``num_batches_tracked`` buffers, as in the akamaster files, are allowed).
    """
    p = Path(path)
    if not p.is_file():
        raise PretrainedLoadError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise PretrainedLoadError(f"cannot read checkpoint {p}: {e}") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise PretrainedLoadError(f"{p}: expected a state dict or {{'state_dict': ...}}, got {type(ckpt).__name__}")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}

    own = model.state_dict()
    # Checkpoints saved by PyTorch < 0.4.1 have no BatchNorm ``num_batches_tracked``
    # buffers; they only matter for training with momentum=None, so keep the model's.
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or bad_shape:
        def _fmt(xs):
            return ", ".join(xs[:8]) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatches: {_fmt(bad_shape)}")
        raise PretrainedLoadError(
            f"checkpoint {p.name} does not match {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    return model
