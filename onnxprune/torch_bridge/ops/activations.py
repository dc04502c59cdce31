"""Activation functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import align, given, node_desc
from onnxprune.torch_bridge.ops.registry import register, register_unary

register_unary("Relu", F.relu)
register_unary("Sigmoid", torch.sigmoid)
register_unary("Tanh", torch.tanh)
register_unary("Softsign", F.softsign)
register_unary("Mish", F.mish)


@register("LeakyRelu")
def _leaky(a, opset, node):
    alpha = float(a.get("alpha", 0.01))
    return lambda args, rt: [F.leaky_relu(args[0], alpha)]


@register("Elu")
def _elu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [F.elu(args[0], alpha)]


@register("Celu")
def _celu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [F.celu(args[0], alpha)]


@register("Selu")
def _selu(a, opset, node):
    alpha = float(a.get("alpha", 1.67326319217681884765625))
    gamma = float(a.get("gamma", 1.05070102214813232421875))

    def run(args, rt):
        x = args[0]
        return [gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))]
    return run


@register("ThresholdedRelu")
def _trelu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [torch.where(args[0] > alpha, args[0], torch.zeros_like(args[0]))]


@register("Softplus")
def _softplus(a, opset, node):
    return lambda args, rt: [F.softplus(args[0])]


@register("HardSigmoid")
def _hsig(a, opset, node):
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    return lambda args, rt: [torch.clamp(args[0] * alpha + beta, 0.0, 1.0)]


@register("HardSwish")
def _hswish(a, opset, node):
    return lambda args, rt: [F.hardswish(args[0])]


@register("Gelu")
def _gelu(a, opset, node):
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        raise OnnxPruneError(f"{node_desc(node, a)}: approximate={approx!r} is not supported")
    return lambda args, rt: [F.gelu(args[0], approximate=approx)]


@register("PRelu")
def _prelu(a, opset, node):
    def run(args, rt):
        x, slope = align(args[0], args[1])
        return [torch.where(x >= 0, x, x * slope)]
    return run


def _host_bound(v, x):
    """A Clip bound: a 0-d tensor as a Python number, a larger one on x's device."""
    if isinstance(v, torch.Tensor):
        return v.to(x.device) if v.dim() else v.item()
    return v


@register("Clip")
def _clip(a, opset, node):
    amin, amax = a.get("min"), a.get("max")

    def run(args, rt):
        x = args[0]
        lo = _host_bound(args[1] if given(args, 1) else amin, x)
        hi = _host_bound(args[2] if given(args, 2) else amax, x)
        if lo is None and hi is None:
            return [x]
        return [torch.clamp(x, lo, hi)]
    return run
