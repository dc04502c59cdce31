"""Seeded random CNNs for fuzzing the pruner, and their ONNX export.

``random_cnn(seed)`` builds a small ``torch.nn.Module`` from a chain of randomly chosen blocks
(plain / residual / projection / option-A shortcuts, depthwise-separable, inverted residual,
grouped conv, dense Concat, channel chunk + Concat, squeeze-excitation through Conv or Linear,
channel Slice, ConvTranspose, Resize, pooling, layer scale, channel shuffle, assorted
activations) and one or more heads. ``export_case(case, path)`` writes it with the legacy or the
dynamo exporter, BatchNorm folded or kept, static or dynamic batch, fp32 or fp16.
"""
from __future__ import annotations

import contextlib
import io
import logging
import random
import warnings
from dataclasses import dataclass

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Case", "random_cnn", "random_case", "export_case", "BLOCKS"]


def _act(rng: random.Random, c: int) -> nn.Module:
    kind = rng.choice(["relu", "relu", "relu6", "silu", "gelu", "hardswish", "leaky", "sigmoid",
                       "tanh", "prelu", "prelu1", "elu"])
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU,
            "hardswish": nn.Hardswish, "leaky": lambda: nn.LeakyReLU(0.1), "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh, "prelu": lambda: nn.PReLU(c), "prelu1": nn.PReLU, "elu": nn.ELU}[kind]()


def _cba(rng, cin, cout, k=3, stride=1, groups=1, act=True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=rng.random() < 0.3),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(_act(rng, cout))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, rng, c):
        super().__init__()
        self.body = nn.Sequential(_cba(rng, c, c), _cba(rng, c, c, act=False))
        self.act = _act(rng, c)

    def forward(self, x):
        return self.act(x + self.body(x))


class Projection(nn.Module):
    def __init__(self, rng, c, cout, stride):
        super().__init__()
        self.body = nn.Sequential(_cba(rng, c, cout, stride=stride), _cba(rng, cout, cout, act=False))
        self.short = _cba(rng, c, cout, k=1, stride=stride, act=False)

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class OptionA(nn.Module):
    """CIFAR ResNet shortcut: subsample, then zero-pad the channels."""

    def __init__(self, rng, c):
        super().__init__()
        self.body = nn.Sequential(_cba(rng, c, 2 * c, stride=2), _cba(rng, 2 * c, 2 * c, act=False))
        self.pad = c // 2, c - c // 2

    def forward(self, x):
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad[0], self.pad[1]))
        return F.relu(self.body(x) + short)


class DepthwiseSeparable(nn.Module):
    def __init__(self, rng, c, cout):
        super().__init__()
        self.dw = _cba(rng, c, c, groups=c)
        self.pw = _cba(rng, c, cout, k=1)

    def forward(self, x):
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    def __init__(self, rng, c, cout, expand):
        super().__init__()
        hidden = c * expand
        self.body = nn.Sequential(_cba(rng, c, hidden, k=1), _cba(rng, hidden, hidden, groups=hidden),
                                  _cba(rng, hidden, cout, k=1, act=False))
        self.residual = c == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class Dense(nn.Module):
    def __init__(self, rng, c, growth):
        super().__init__()
        self.conv = _cba(rng, c, growth)

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class SplitConcat(nn.Module):
    def __init__(self, rng, c):
        super().__init__()
        self.conv = _cba(rng, c // 2, c // 2)
        self.use_split = rng.random() < 0.5

    def forward(self, x):
        if self.use_split:
            a, b = torch.split(x, x.shape[1] // 2, dim=1)
        else:
            a, b = x.chunk(2, dim=1)
        return torch.cat([a, self.conv(b)], 1)


class SqueezeExcite(nn.Module):
    def __init__(self, rng, c, linear):
        super().__init__()
        mid = max(2, c // 4)
        self.linear = linear
        if linear:
            self.fc = nn.Sequential(nn.Linear(c, mid), nn.ReLU(), nn.Linear(mid, c))
        else:
            self.fc = nn.Sequential(nn.Conv2d(c, mid, 1), nn.ReLU(), nn.Conv2d(mid, c, 1))
        self.gate = rng.choice([nn.Sigmoid(), nn.Hardsigmoid()])

    def forward(self, x):
        if self.linear:
            s = self.fc(x.mean((2, 3)))[:, :, None, None]
        else:
            s = self.fc(F.adaptive_avg_pool2d(x, 1))
        return x * self.gate(s)


class ChannelSlice(nn.Module):
    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def forward(self, x):
        return x[:, :self.keep]


class Shuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(1, c, 1, 1) + 0.5)

    def forward(self, x):
        return x * self.gamma


class Up(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode=self.mode)


BLOCKS = ("plain", "residual", "projection", "option_a", "dwsep", "inverted", "grouped", "dense",
          "split", "se_conv", "se_linear", "slice", "convtranspose", "resize", "pool", "layerscale",
          "shuffle")


def _block(rng: random.Random, kind: str, c: int, hw: int) -> tuple[nn.Module, int, int] | None:
    """One block and its output channels and spatial size, or None when it does not fit."""
    widths = [4, 6, 8, 12, 16]
    if kind == "plain":
        cout = rng.choice(widths)
        return _cba(rng, c, cout), cout, hw
    if kind == "residual":
        return Residual(rng, c), c, hw
    if kind == "projection":
        stride = 2 if hw >= 8 else 1
        cout = rng.choice(widths)
        return Projection(rng, c, cout, stride), cout, (hw + stride - 1) // stride
    if kind == "option_a" and hw >= 8 and c <= 12:
        return OptionA(rng, c), 2 * c, (hw + 1) // 2
    if kind == "dwsep":
        cout = rng.choice(widths)
        return DepthwiseSeparable(rng, c, cout), cout, hw
    if kind == "inverted":
        cout = rng.choice([c, c, rng.choice(widths)])
        return InvertedResidual(rng, c, cout, rng.choice([1, 2, 3])), cout, hw
    if kind == "grouped" and c % 2 == 0:
        g = rng.choice([d for d in (2, 4) if c % d == 0])
        cout = g * rng.choice([2, 3, 4])
        return _cba(rng, c, cout, groups=g), cout, hw
    if kind == "dense" and c <= 16:
        growth = rng.choice([2, 4, 6])
        return Dense(rng, c, growth), c + growth, hw
    if kind == "split" and c % 2 == 0:
        return SplitConcat(rng, c), c, hw
    if kind in ("se_conv", "se_linear"):
        return SqueezeExcite(rng, c, kind == "se_linear"), c, hw
    if kind == "slice" and c >= 4:
        keep = rng.randint(2, c - 1)
        return ChannelSlice(keep), keep, hw
    if kind == "convtranspose" and hw <= 8:
        cout = rng.choice(widths)
        return nn.Sequential(nn.ConvTranspose2d(c, cout, 2, 2), nn.BatchNorm2d(cout), _act(rng, cout)), cout, 2 * hw
    if kind == "resize" and hw <= 8:
        return Up(rng.choice(["nearest", "bilinear"])), c, 2 * hw
    if kind == "pool" and hw >= 4:
        pool = rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)])
        return pool, c, hw // 2
    if kind == "layerscale":
        return LayerScale(c), c, hw
    if kind == "shuffle" and c % 2 == 0:
        return Shuffle(2), c, hw
    return None


class RandomCNN(nn.Module):
    def __init__(self, seed: int, hw: int, depth: int | None = None):
        super().__init__()
        rng = random.Random(seed)
        c = rng.choice([4, 6, 8])
        self.stem = _cba(rng, 3, c)
        blocks, self.kinds = [], []
        for _ in range(depth or rng.randint(2, 6)):
            for _try in range(20):
                kind = rng.choice(BLOCKS)
                made = _block(rng, kind, c, hw)
                if made is not None:
                    break
            else:
                continue
            block, c, hw = made
            blocks.append(block)
            self.kinds.append(kind)
        self.blocks = nn.Sequential(*blocks)
        self.heads = nn.ModuleList()
        self.head_kinds = []
        for _ in range(rng.choice([1, 1, 1, 2])):
            kind = rng.choice(["gap_linear", "flatten_linear", "conv"])
            self.head_kinds.append(kind)
            if kind == "gap_linear":
                self.heads.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5)))
            elif kind == "flatten_linear":
                self.heads.append(nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, 5)))
            else:
                self.heads.append(nn.Conv2d(c, 3, 1))

    def forward(self, x):
        y = self.blocks(self.stem(x))
        outs = [h(y) for h in self.heads]
        return outs[0] if len(outs) == 1 else tuple(outs)


def random_cnn(seed: int, hw: int = 16) -> RandomCNN:
    """The seeded random network, in eval mode with random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = RandomCNN(seed, hw)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@dataclass(frozen=True)
class Case:
    """One fuzz case: the network and how it is exported, and how it is pruned."""
    seed: int
    hw: int = 16
    exporter: str = "legacy"     # legacy | dynamo
    opset: int = 17
    bn: str = "folded"           # folded | unfused
    dynamic: bool = False        # symbolic batch dimension
    fp16: bool = False
    budget: float = 0.3
    budget_kind: str = "flops"   # flops | params | ratio
    criterion: str = "l1"
    allocation: str = "uniform"
    round_to: int = 1

    @property
    def export_key(self) -> tuple:
        return (self.seed, self.hw, self.exporter, self.opset, self.bn, self.dynamic, self.fp16)

    def describe(self) -> str:
        return (f"seed={self.seed} hw={self.hw} {self.exporter} opset={self.opset} bn={self.bn} "
                f"{'dynamic' if self.dynamic else 'static'} {'fp16' if self.fp16 else 'fp32'} "
                f"{self.budget_kind}={self.budget} {self.allocation}/{self.criterion} round={self.round_to}")


def random_case(seed: int, dynamo_share: float = 0.1) -> Case:
    """Export and prune settings drawn from ``seed``."""
    rng = random.Random(seed * 7919 + 1)
    exporter = "dynamo" if rng.random() < dynamo_share else "legacy"
    opset = rng.choice([18, 20]) if exporter == "dynamo" else rng.randint(11, 20)
    return Case(seed=seed, hw=rng.choice([8, 12, 16]), exporter=exporter, opset=opset,
                bn=rng.choice(["folded", "unfused"]), dynamic=rng.random() < 0.4,
                fp16=exporter == "legacy" and rng.random() < 0.15,
                budget=round(rng.uniform(0.05, 0.7), 2), budget_kind=rng.choice(["flops", "flops", "params", "ratio"]),
                criterion=rng.choice(["l1", "l2", "fpgm", "random"]), allocation=rng.choice(["uniform", "global"]),
                round_to=rng.choice([1, 1, 1, 2, 4]))


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def export_case(case: Case, path) -> onnx.ModelProto:
    """Export the case's network to ``path`` and return the ONNX model."""
    model = random_cnn(case.seed, case.hw)
    x = torch.randn(2 if case.dynamic else 1, 3, case.hw, case.hw)
    if case.fp16:
        model, x = model.half(), x.half()
    n_out = len(model.heads)
    outputs = ["out"] if n_out == 1 else [f"out{k}" for k in range(n_out)]
    with _quiet():
        if case.exporter == "legacy":
            training = torch.onnx.TrainingMode.PRESERVE if case.bn == "unfused" else torch.onnx.TrainingMode.EVAL
            dyn = {n: {0: "batch"} for n in ["input", *outputs]} if case.dynamic else None
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=case.opset,
                              input_names=["input"], output_names=outputs, dynamic_axes=dyn,
                              training=training, do_constant_folding=True)
            proto = onnx.load(str(path))
        else:
            proto = _export_dynamo(model, x, case, outputs)
            onnx.save(proto, str(path))
    return proto


def _export_dynamo(model, x, case: Case, outputs: list[str]) -> onnx.ModelProto:
    shapes = ({"x": {0: torch.export.Dim("batch", min=1, max=64)}} if case.dynamic else None)
    prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=case.opset, input_names=["input"],
                             output_names=outputs, dynamic_shapes=shapes,
                             optimize=case.bn == "folded")
    if case.bn == "unfused":
        from models.export import _without_bn_fusion_rules
        import onnxscript.optimizer
        with _without_bn_fusion_rules():
            onnxscript.optimizer.optimize_ir(prog.model)
    return prog.model_proto
