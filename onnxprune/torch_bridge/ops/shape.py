"""Shape and data movement: Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Concat, Split,
Slice, Pad, Gather, Expand, Tile."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import align, given, ints, node_desc, norm_axis, scalar, torch_pads
from onnxprune.torch_bridge.ops.registry import register


@register("Flatten")
def _flatten(a, opset, node):
    axis = int(a.get("axis", 1))

    def run(args, rt):
        x = args[0]
        ax = norm_axis(axis, x.dim())
        lead = int(np.prod(x.shape[:ax], dtype=np.int64))
        rest = int(np.prod(x.shape[ax:], dtype=np.int64))
        return [x.reshape(lead, rest)]
    return run


@register("Reshape")
def _reshape(a, opset, node):
    allowzero = bool(a.get("allowzero", 0))

    def run(args, rt):
        x = args[0]
        shape = ints(args[1])
        if not allowzero:
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return [x.reshape(shape)]
    return run


@register("Transpose")
def _transpose(a, opset, node):
    perm = a.get("perm")
    return lambda args, rt: [args[0].permute(list(perm) if perm is not None
                                             else list(range(args[0].dim() - 1, -1, -1)))]


@register("Squeeze")
def _squeeze(a, opset, node):
    attr_axes = a.get("axes")

    def run(args, rt):
        x = args[0]
        axes = ints(args[1]) if given(args, 1) else attr_axes
        if axes is None:
            return [x.squeeze()] if x.dim() else [x]
        axes = tuple(norm_axis(v, x.dim()) for v in axes)
        return [x.squeeze(axes) if axes else x]
    return run


@register("Unsqueeze")
def _unsqueeze(a, opset, node):
    attr_axes = a.get("axes")

    def run(args, rt):
        x = args[0]
        axes = ints(args[1]) if given(args, 1) else list(attr_axes)
        r = x.dim() + len(axes)
        for ax in sorted(norm_axis(v, r) for v in axes):
            x = x.unsqueeze(ax)
        return [x]
    return run


@register("Concat")
def _concat(a, opset, node):
    axis = int(a["axis"])

    def run(args, rt):
        ts = align(*[t for t in args if t is not None])
        return [torch.cat(ts, dim=norm_axis(axis, ts[0].dim()))]
    return run


@register("Split")
def _split(a, opset, node):
    axis = int(a.get("axis", 0))
    attr_split = a.get("split")
    n_out = len(node.output)
    num_outputs = a.get("num_outputs")

    def run(args, rt):
        x = args[0]
        ax = norm_axis(axis, x.dim())
        split = ints(args[1]) if given(args, 1) else attr_split
        if split is None:
            n = int(num_outputs) if num_outputs is not None else n_out
            size = x.shape[ax]
            chunk = -(-size // n)
            split = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
            if num_outputs is None and len(split) != n:
                raise OnnxPruneError(f"{node_desc(node, a)}: cannot split {size} evenly into {n}")
        return list(torch.split(x, list(split), dim=ax))
    return run


def _slice_params(a, args, attr_form):
    """starts, ends, axes, steps of a Slice (attribute form before opset 10, inputs after)."""
    if attr_form:
        starts, ends = list(a["starts"]), list(a["ends"])
        return starts, ends, list(a.get("axes", range(len(starts)))), [1] * len(starts)
    starts, ends = ints(args[1]), ints(args[2])
    axes = ints(args[3]) if given(args, 3) else list(range(len(starts)))
    steps = ints(args[4]) if given(args, 4) else [1] * len(starts)
    return starts, ends, axes, steps


@register("Slice")
def _slice(a, opset, node):
    attr_form = "starts" in a

    def run(args, rt):
        x = args[0]
        index: list = [slice(None)] * x.dim()
        flips = []
        for st, en, ax, sp in zip(*_slice_params(a, args, attr_form)):
            ax = norm_axis(ax, x.dim())
            n = x.shape[ax]
            st = st + n if st < 0 else st
            en = en + n if en < 0 else en
            if sp > 0:
                st, en = min(max(st, 0), n), min(max(en, 0), n)
                index[ax] = slice(st, en, sp)
            elif sp < 0:
                st, en = min(max(st, 0), n - 1), min(max(en, -1), n - 1)
                flips.append((ax, torch.arange(st, en, sp, dtype=torch.int64)))
            else:
                raise OnnxPruneError(f"{node_desc(node, a)}: step 0")
        y = x[tuple(index)]
        for ax, idx in flips:
            y = y.index_select(ax, idx.to(y.device))
        return [y]
    return run


def _index_pad(x, ax, b, e, mode):
    n = x.shape[ax]
    idx = torch.arange(-b, n + e, dtype=torch.int64)
    if mode == "edge":
        idx = idx.clamp(0, n - 1)
    elif mode == "reflect":
        if n == 1:
            idx = torch.zeros_like(idx)
        else:
            period = 2 * (n - 1)
            m = torch.remainder(idx, period)
            idx = torch.where(m >= n, period - m, m)
    elif mode == "wrap":
        idx = torch.remainder(idx, n)
    return x.index_select(ax, idx.to(x.device))


def _pad_params(a, args, attr_form, r):
    """Per-axis begin/end pads and the constant value of a Pad (attribute or input form)."""
    if attr_form:
        pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), list(range(r))
    else:
        pads = ints(args[1])
        value = scalar(args[2]) if given(args, 2) and args[2].numel() else 0
        axes = [norm_axis(v, r) for v in ints(args[3])] if given(args, 3) else list(range(r))
    na = len(axes)
    begin, end = [0] * r, [0] * r
    for i, ax in enumerate(axes):
        begin[ax], end[ax] = pads[i], pads[i + na]
    return begin, end, value


@register("Pad")
def _pad(a, opset, node):
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise OnnxPruneError(f"{node_desc(node, a)}: mode={mode!r} is not supported")
    attr_form = "pads" in a

    def run(args, rt):
        x = args[0]
        r = x.dim()
        begin, end, value = _pad_params(a, args, attr_form, r)
        if mode == "constant":
            # trim leading axes without padding (F.pad pads from the last axis)
            first = next((i for i in range(r) if begin[i] or end[i]), r)
            if first == r:
                return [x]
            return [F.pad(x, torch_pads(begin[first:], end[first:]), value=value)]
        for ax in range(r):
            if begin[ax] or end[ax]:
                x = _index_pad(x, ax, begin[ax], end[ax], mode)
        return [x]
    return run


@register("Gather")
def _gather(a, opset, node):
    axis = int(a.get("axis", 0))

    def run(args, rt):
        x, idx = args[0], args[1]
        ax = norm_axis(axis, x.dim())
        n = x.shape[ax]
        idx = idx.to(device=x.device, dtype=torch.int64)
        idx = torch.where(idx < 0, idx + n, idx)
        y = x.index_select(ax, idx.reshape(-1))
        return [y.reshape(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]))]
    return run


@register("Expand")
def _expand(a, opset, node):
    def run(args, rt):
        x = args[0]
        shape = torch.broadcast_shapes(tuple(x.shape), tuple(ints(args[1])))
        return [x.expand(shape)]
    return run


@register("Tile")
def _tile(a, opset, node):
    return lambda args, rt: [torch.tile(args[0], tuple(ints(args[1])))]
