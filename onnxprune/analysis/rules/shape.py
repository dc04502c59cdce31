"""Rules that move the channel axis: Flatten, Reshape, Transpose, Squeeze/Unsqueeze, Reduce*."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import Layout, Update
from onnxprune.analysis.rules.shape_values import copied_dims
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def flatten(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    shape = p.v.shape(node.input[0])
    a = int(attr(node, "axis", 1))
    a = a + len(shape) if a < 0 else a
    c = lay.axis
    if shape is None or any(d is None for d in shape[a:]) or c < a or np.prod(shape[a:c]) != 1:
        p.block(lay, "Flatten that mixes the channel axis with another", idx)
        return
    p.set(node.output[0], Layout(1, lay.block * int(np.prod(shape[c + 1:])), lay.segments))


def _reshape_target(xs, target, allowzero: int) -> list[int] | None:
    """The output shape of a Reshape from its (constant) target, as the spec defines it."""
    if xs is None or any(d is None for d in xs):
        return None
    out = [int(xs[i]) if (t == 0 and not allowzero) else int(t) for i, t in enumerate(target.tolist())]
    if out.count(-1) == 1:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or int(np.prod(xs)) % known:
            return None
        out[out.index(-1)] = int(np.prod(xs)) // known
    return out if -1 not in out else None


def reshape(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    target = p.const_input(node, 1)
    xs, ys = p.v.shape(node.input[0]), p.v.shape(node.output[0])
    if target is None:
        p.block(lay, "Reshape with a computed target shape", idx)
        return
    if ys is None or any(d is None for d in ys):
        ys = _reshape_target(xs, target, int(attr(node, "allowzero", 0)))
    if xs is None or ys is None or any(d is None for d in xs) or any(d is None for d in ys):
        p.block(lay, "Reshape with unknown shapes", idx)
        return
    c = lay.axis
    before = int(np.prod(xs[:c]))
    chunk = lay.block * int(np.prod(xs[c + 1:]))      # elements per channel, contiguous
    for c2 in range(len(ys)):
        if int(np.prod(ys[:c2])) != before:
            continue
        rest = int(np.prod(ys[c2 + 1:]))
        if chunk % rest == 0 and ys[c2] == lay.channels * (chunk // rest):
            p.set(node.output[0], Layout(c2, chunk // rest, lay.segments))
            if int(target[c2]) not in (-1, 0):
                copies = () if int(attr(node, "allowzero", 0)) else copied_dims(p, idx, 1, node.input[0])
                p.updates.append(Update(idx, "reshape", node.input[0], c2,
                                        (chunk // rest, tuple(j for j in copies if j != c2))))
            elif int(target[c2]) == 0 and c2 != c:
                p.block(lay, "Reshape copies a channel dimension to another axis", idx)
            return
    p.block(lay, f"Reshape {list(xs)}→{list(ys)} mixes the channel axis", idx)


def transpose(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    perm = attr(node, "perm") or list(range(rank))[::-1]
    p.set(node.output[0], Layout(list(perm).index(lay.axis), lay.block, lay.segments))


def axes_of(p: ChannelPass, node: onnx.NodeProto, rank: int, input_from: int):
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = p.v.constant(node.input[1])
        if v is None:
            return "computed"
        axes = v.ravel().tolist()
        if p.v.opset < input_from:
            axes = attr(node, "axes")
    return None if axes is None else sorted(int(a) + rank if a < 0 else int(a) for a in axes)


def squeeze(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank_in, rank_out = p.v.rank(node.input[0]), p.v.rank(node.output[0])
    if node.op_type == "Squeeze":
        axes = axes_of(p, node, rank_in or 0, 13)
        if axes == "computed" or axes is None or lay.axis in axes:
            p.block(lay, "Squeeze of unknown axes or of the channel axis", idx)
            return
        p.set(node.output[0], Layout(lay.axis - sum(a < lay.axis for a in axes), lay.block, lay.segments))
    else:
        axes = axes_of(p, node, rank_out or 0, 13)
        if axes in ("computed", None):
            p.block(lay, "Unsqueeze with computed axes", idx)
            return
        ax = lay.axis
        for a in axes:          # axes refer to the output; insert in increasing order
            if a <= ax:
                ax += 1
        p.set(node.output[0], Layout(ax, lay.block, lay.segments))


def reduce(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    axes = axes_of(p, node, rank, 18 if node.op_type != "ReduceSum" else 13)
    if axes == "computed" or axes is None or lay.axis in axes or lay.block != 1:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    keep = int(attr(node, "keepdims", 1))
    ax = lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)
    p.set(node.output[0], Layout(ax, 1, lay.segments))
