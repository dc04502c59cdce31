"""Reduce* and Softmax / LogSoftmax."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.torch_bridge.common import given, ints, norm_axis
from onnxprune.torch_bridge.ops.registry import register


def _prod(x, axes, keep):
    for ax in sorted(axes, reverse=True):
        x = x.prod(dim=ax, keepdim=keep)
    return x


_REDUCERS = {
    "ReduceMean": lambda x, axes, keep: x.mean(dim=axes, keepdim=keep),
    "ReduceSum": lambda x, axes, keep: x.sum(dim=axes, keepdim=keep),
    "ReduceMax": lambda x, axes, keep: x.amax(dim=axes, keepdim=keep),
    "ReduceMin": lambda x, axes, keep: x.amin(dim=axes, keepdim=keep),
    "ReduceProd": _prod,
    "ReduceSumSquare": lambda x, axes, keep: (x * x).sum(dim=axes, keepdim=keep),
    "ReduceL2": lambda x, axes, keep: torch.sqrt((x * x).sum(dim=axes, keepdim=keep)),
    "ReduceL1": lambda x, axes, keep: x.abs().sum(dim=axes, keepdim=keep),
}


@register(*_REDUCERS)
def _reduce(a, opset, node):
    reducer = _REDUCERS[node.op_type]
    keep = bool(a.get("keepdims", 1))
    noop = bool(a.get("noop_with_empty_axes", 0))
    attr_axes = a.get("axes")

    def run(args, rt):
        x = args[0]
        axes = ints(args[1]) if given(args, 1) else (list(attr_axes) if attr_axes is not None else [])
        if not axes:
            if noop:
                return [x]
            axes = list(range(x.dim()))
        return [reducer(x, tuple(norm_axis(v, x.dim()) for v in axes), keep)]
    return run


@register("Softmax", "LogSoftmax")
def _softmax(a, opset, node):
    axis = int(a.get("axis", 1 if opset < 13 else -1))
    fn = F.log_softmax if node.op_type == "LogSoftmax" else F.softmax

    def run(args, rt):
        x = args[0]
        ax = norm_axis(axis, x.dim())
        if opset < 13:   # coerced to 2-D around the axis
            shape = x.shape
            lead = int(np.prod(shape[:ax], dtype=np.int64))
            return [fn(x.reshape(lead, -1), dim=1).reshape(shape)]
        return [fn(x, dim=ax)]
    return run
