"""Constant, ConstantOfShape, Shape, Size, Range and Dropout."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import given, ints, node_desc, scalar, to_tensor
from onnxprune.torch_bridge.ops.registry import register


def constant_value(a, node) -> np.ndarray:
    """The value a Constant node's attributes hold (tensor, float(s) or int(s))."""
    if "value" in a:
        return np.asarray(a["value"])
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise OnnxPruneError(f"{node_desc(node, a)}: only tensor/float/int values are supported")


@register("Constant")
def _constant(a, opset, node):
    t = to_tensor(constant_value(a, node))
    return lambda args, rt: [t]


@register("ConstantOfShape")
def _cos(a, opset, node):
    val = np.asarray(a.get("value", np.zeros(1, dtype=np.float32))).reshape(-1)
    fill = to_tensor(val[:1]).reshape(())

    def run(args, rt):
        shape = ints(args[0])
        dev = rt.device if fill.is_floating_point() else torch.device("cpu")
        return [torch.full(shape, fill.item(), dtype=fill.dtype, device=dev)]
    return run


@register("Shape")
def _shape(a, opset, node):
    start, end = a.get("start", 0), a.get("end")

    def run(args, rt):
        dims = list(args[0].shape)
        return [torch.tensor(dims[start:end] if end is not None else dims[start:], dtype=torch.int64)]
    return run


@register("Size")
def _size(a, opset, node):
    return lambda args, rt: [torch.tensor(args[0].numel(), dtype=torch.int64)]


@register("Range")
def _range(a, opset, node):
    def run(args, rt):
        start, limit, delta = (scalar(t) for t in args[:3])
        return [torch.arange(start, limit, delta, dtype=args[0].dtype, device=args[0].device)]
    return run


@register("Dropout")
def _dropout(a, opset, node):
    ratio_attr = float(a.get("ratio", 0.5))
    want_mask = len(node.output) > 1 and bool(node.output[1])

    def run(args, rt):
        x = args[0]
        ratio = float(scalar(args[1])) if given(args, 1) else ratio_attr
        if not rt.training or ratio == 0.0:
            return [x, torch.ones_like(x, dtype=torch.bool)] if want_mask else [x]
        if not want_mask:
            return [F.dropout(x, ratio, True)]
        mask = torch.rand_like(x) >= ratio
        return [x * mask / (1.0 - ratio), mask]
    return run
