"""Tiny models, calibration data and a runner shared by the recover tests."""
from __future__ import annotations

import numpy as np
import onnx

from onnx_builders import Net, small_resnet
from onnxprune.analysis import analyze
from onnxprune.rewrite.apply import apply_plan
from onnxprune.runtime import AnyBatchSession
from onnxprune.verify.random_plans import random_plan


def images(n: int, shape=(3, 16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)


def resnet() -> onnx.ModelProto:
    return small_resnet(shape=("N", 3, 16, 16))


def depthwise_bn_net() -> onnx.ModelProto:
    """conv → Relu → conv(bias-free) → BN → Relu → depthwise conv → Relu → conv → GAP → Flatten → Gemm."""
    n = Net(seed=3)
    x = n.input("x", ["N", 3, 12, 12])
    y = n.relu(n.conv(x, 3, 8))
    y = n.relu(n.bn(n.conv(y, 8, 8, bias=False), 8))
    y = n.relu(n.conv(y, 8, 8, group=8))
    y = n.relu(n.conv(y, 8, 6))
    n.head(y, 6)
    return n.model()


def residual_net() -> onnx.ModelProto:
    """Two blocks whose second conv feeds the residual Add directly (BatchNorm folded)."""
    n = Net(seed=4)
    x = n.input("x", ["N", 3, 12, 12])
    s = n.relu(n.conv(x, 3, 8))
    for _ in range(2):
        y = n.conv(n.relu(n.conv(s, 8, 8)), 8, 8)
        s = n.relu(n.node("Add", [s, y]))
    n.head(s, 8)
    return n.model()


def mlp() -> onnx.ModelProto:
    """x[N,16] → Gemm(16→12) → Relu → Gemm(12→5)."""
    n = Net(seed=1)
    x = n.input("x", ["N", 16])
    n.output(n.gemm(n.relu(n.gemm(x, 16, 12)), 12, 5))
    return n.model()


def pruned(model: onnx.ModelProto, keep: float = 0.5, seed: int = 0):
    a = analyze(model)
    plan = random_plan(a, keep, seed)
    return a, plan, apply_plan(a, plan)


def outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return AnyBatchSession(model).run(x)


def relative_error(model: onnx.ModelProto, reference: onnx.ModelProto, x: np.ndarray) -> float:
    """Relative MSE of the first output against the reference model's."""
    a, b = outputs(model, x)[0], outputs(reference, x)[0]
    return float(np.mean((a - b) ** 2) / np.mean(b ** 2))
