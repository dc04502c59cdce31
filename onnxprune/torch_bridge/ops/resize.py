"""Resize and Upsample: nearest and (bi/tri)linear, every coordinate transformation mode."""
from __future__ import annotations

import math

import numpy as np
import torch

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import floats, given, ints, node_desc, norm_axis
from onnxprune.torch_bridge.ops.registry import register

_CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_half_pixel_for_nearest")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _src_coords(out_len, in_len, scale, ctm):
    """Source coordinate of every output position along one axis."""
    x = torch.arange(out_len, dtype=torch.float32)
    scale = torch.tensor(scale, dtype=torch.float32)
    if ctm == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adj = torch.tensor(out_len, dtype=torch.float32) / (scale * in_len)
        center = torch.tensor(in_len / 2.0, dtype=torch.float32)
        offset = center * (1 - adj)
        return offset + (x + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(x)
    if ctm == "align_corners":
        if out_len == 1:
            return torch.zeros_like(x)
        return x * (torch.tensor(in_len - 1, dtype=torch.float32) / (out_len - 1))
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nearest":
        return (x + 0.5) / scale
    raise ValueError(ctm)


def _nearest_index(xo, nearest_mode, scale, in_len):
    if nearest_mode == "round_prefer_floor":
        i = torch.ceil(xo - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        i = torch.floor(xo + 0.5)
    elif nearest_mode == "floor":
        i = torch.floor(xo)
    elif nearest_mode == "ceil":
        i = torch.ceil(xo)
    else:  # "simple": onnxruntime's rule for Upsample and opset-10 Resize
        i = torch.ceil(xo) if scale < 1 else torch.trunc(xo)
    return i.to(torch.int64).clamp(0, in_len - 1)


def _modes(a, opset, node):
    """(mode, coordinate transformation mode, nearest mode, legacy) of a Resize/Upsample."""
    mode = a.get("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise OnnxPruneError(f"{node_desc(node, a)}: mode={mode!r} is not supported (nearest and linear are)")
    if node.op_type == "Upsample" or opset < 11:
        return mode, "asymmetric", "simple", True
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    if ctm not in _CTMS:
        raise OnnxPruneError(f"{node_desc(node, a)}: coordinate_transformation_mode={ctm!r} is not supported")
    if nearest_mode not in _NEAREST:
        raise OnnxPruneError(f"{node_desc(node, a)}: nearest_mode={nearest_mode!r} is not supported")
    if int(a.get("antialias", 0)):
        raise OnnxPruneError(f"{node_desc(node, a)}: antialias=1 is not supported")
    return mode, ctm, nearest_mode, False


def _out_sizes(ins, scales, sizes, policy):
    """Output sizes and per-axis scales from ``sizes`` (with the aspect policy) or ``scales``."""
    if sizes is None:
        scl = list(scales)
        return [int(math.floor(n * s)) for n, s in zip(ins, scl)], scl
    if policy == "stretch":
        outs = list(sizes)
        return outs, [float(np.float32(o) / np.float32(n)) for o, n in zip(outs, ins)]
    ratios = [o / n for o, n in zip(sizes, ins)]
    sc = min(ratios) if policy == "not_larger" else max(ratios)
    return [int(math.floor(n * sc + 0.5)) for n in ins], [sc] * len(ins)


def _linear_axis(y, ax, xo, n, o):
    """Linear interpolation of ``y`` along ``ax`` at source coordinates ``xo``."""
    xo = xo.clamp(0, n - 1)
    i0 = torch.floor(xo).to(torch.int64)
    i1 = torch.clamp(i0 + 1, max=n - 1)
    w1 = (xo - i0.to(xo.dtype)).to(dtype=y.dtype, device=y.device)
    shape = [1] * y.dim()
    shape[ax] = o
    w1 = w1.reshape(shape)
    y0 = y.index_select(ax, i0.to(y.device))
    y1 = y.index_select(ax, i1.to(y.device))
    return y0 + (y1 - y0) * w1


@register("Resize", "Upsample")
def _resize(a, opset, node):
    mode, ctm, nearest_mode, legacy = _modes(a, opset, node)
    attr_scales = a.get("scales")
    attr_axes = a.get("axes")
    policy = a.get("keep_aspect_ratio_policy", "stretch")

    def run(args, rt):
        x = args[0]
        r = x.dim()
        sizes = None
        if legacy:
            scales = floats(args[1]) if given(args, 1) else list(attr_scales)
        else:
            scales = floats(args[2]) if given(args, 2) and args[2].numel() else None
            sizes = ints(args[3]) if given(args, 3) and args[3].numel() else None
        axes = [norm_axis(v, r) for v in attr_axes] if attr_axes is not None else list(range(r))
        ins = [x.shape[ax] for ax in axes]
        outs, scl = _out_sizes(ins, scales, sizes, policy)
        y = x
        for ax, n, o, sc in zip(axes, ins, outs, scl):
            if o == n and sc == 1.0:
                continue
            xo = _src_coords(o, n, sc, ctm)
            if mode == "nearest":
                y = y.index_select(ax, _nearest_index(xo, nearest_mode, sc, n).to(y.device))
            else:
                y = _linear_axis(y, ax, xo, n, o)
        return [y]
    return run
