"""Conv, ConvTranspose, Gemm and MatMul."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxprune.torch_bridge.common import align, explicit_pads, given, torch_pads
from onnxprune.torch_bridge.ops.registry import register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv_inputs(a, args):
    """Conv/ConvTranspose operands and geometry: x, w, bias or None, spatial rank, kernel,
    strides and dilations."""
    x, w = args[0], args[1]
    b = args[2] if given(args, 2) else None
    nd = w.dim() - 2
    return (x, w, b, nd, list(w.shape[2:]), list(a.get("strides", [1] * nd)),
            list(a.get("dilations", [1] * nd)))


@register("Conv")
def _conv(a, opset, node):
    auto_pad = a.get("auto_pad", "NOTSET")
    group = int(a.get("group", 1))

    def run(args, rt):
        x, w, b, nd, k, s, d = _conv_inputs(a, args)
        begin, end = explicit_pads(a, auto_pad, nd, x.shape[2:], k, s, d)
        if begin != end:
            x = F.pad(x, torch_pads(begin, end))
            begin = [0] * nd
        return [_CONV[nd](x, w, b, s, begin, d, group)]
    return run


def _convt_crops(a, auto_pad, nd, ins, k, s, d, op):
    """ConvTranspose begin/end crops of the full output (from pads, auto_pad or output_shape)."""
    if "output_shape" not in a and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * nd, [0] * nd
        p = list(a.get("pads", [0] * (2 * nd)))
        return p[:nd], p[nd:]
    full = [(n - 1) * ss + (kk - 1) * dd + 1 for n, ss, kk, dd in zip(ins, s, k, d)]
    outs = list(a["output_shape"])[-nd:] if "output_shape" in a else [n * ss for n, ss in zip(ins, s)]
    begin, end = [], []
    for f, o, t in zip(full, op, outs):
        total = max(0, f + o - t)
        if auto_pad == "SAME_UPPER":   # the odd one is cropped at the end
            begin.append(total // 2); end.append(total - total // 2)
        else:
            begin.append(total - total // 2); end.append(total // 2)
    return begin, end


@register("ConvTranspose")
def _convt(a, opset, node):
    auto_pad = a.get("auto_pad", "NOTSET")
    group = int(a.get("group", 1))

    def run(args, rt):
        x, w, b, nd, k, s, d = _conv_inputs(a, args)
        op = list(a.get("output_padding", [0] * nd))
        begin, end = _convt_crops(a, auto_pad, nd, list(x.shape[2:]), k, s, d, op)
        if begin == end and all(o < max(ss, dd) for o, ss, dd in zip(op, s, d)):
            return [_CONVT[nd](x, w, b, s, begin, op, group, d)]
        y = _CONVT[nd](x, w, None, s, 0, 0, group, d)
        y = F.pad(y, torch_pads([-bb for bb in begin], [o - e for o, e in zip(op, end)]))
        if b is not None:
            y = y + b.reshape([1, -1] + [1] * nd)
        return [y]
    return run


@register("Gemm")
def _gemm(a, opset, node):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))

    def run(args, rt):
        A, B = args[0], args[1]
        C = args[2] if given(args, 2) else None
        plain_bias = C is None or (C.dim() == 1 and C.shape[0] == B.shape[0])
        if tb and not ta and alpha == 1.0 and beta == 1.0 and plain_bias:
            return [F.linear(A, B, C)]
        A = A.t() if ta else A
        B = B.t() if tb else B
        y = A @ B
        if alpha != 1.0:
            y = y * alpha
        if C is not None:
            y = y + (C * beta if beta != 1.0 else C)
        return [y]
    return run


@register("MatMul")
def _matmul(a, opset, node):
    def run(args, rt):
        x, y = align(args[0], args[1])
        return [torch.matmul(x, y)]
    return run
