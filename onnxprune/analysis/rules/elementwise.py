"""Rules for ops that keep channels in place: unary, spatial (pooling, resize), element-wise with coupling, Softmax."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import Layout, ParamSlice, Update
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def unary(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    for k in range(1, len(node.input)):       # Clip bounds, Dropout ratio: scalars only
        v = p.const_input(node, k)
        if node.input[k] and (v is None or v.size != 1) and node.op_type != "Dropout":
            p.block(lay, f"{node.op_type} with a non-scalar input '{node.input[k]}'", idx)
    p.set(node.output[0], lay)


def spatial(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    if lay.axis != 1 or lay.block != 1:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    if node.op_type in ("Resize", "Upsample"):
        scales_idx = 2 if node.op_type == "Resize" and p.v.opset >= 11 else 1
        scales = p.const_input(node, scales_idx)
        if scales is None and node.op_type == "Upsample" and p.v.opset < 9:
            scales = np.array(attr(node, "scales", []))
        if scales is not None and scales.size > 1 and scales[1] != 1:
            p.block(lay, f"{node.op_type} scales the channel axis", idx)
            return
        sizes = p.const_input(node, 3) if node.op_type == "Resize" else None
        if sizes is not None and sizes.size > 1:
            p.updates.append(Update(idx, "resize_sizes", node.input[0], 1))
        elif node.op_type == "Resize" and len(node.input) > 3 and node.input[3] and sizes is None:
            p.block(lay, "Resize with computed output sizes", idx)
            return
    p.set(node.output[0], lay)


def elementwise(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ry = p.v.rank(y)
    ys = p.v.shape(y)
    lays = []
    for k, name in enumerate(node.input):
        if name in p.layouts:
            lay = p.layouts[name]
            shift = (ry or 0) - (p.v.rank(name) or 0)
            lays.append((k, Layout(lay.axis + shift, lay.block, lay.segments)))
    # a one-channel tensor broadcast over the channels (a spatial attention map [N,1,H,W]) is
    # read whole by every output channel: nothing to couple; the rewrite refuses to empty it
    lays = [(k, l) for k, l in lays
            if not (ys is not None and l.channels * l.block == 1 and l.axis < len(ys)
                    and ys[l.axis] is not None and ys[l.axis] > 1)]
    if not lays:
        return
    axis, block = lays[0][1].axis, lays[0][1].block
    width = lays[0][1].channels * block
    if ys is None or ys[axis] != width:
        for _, lay in lays:
            p.block(lay, f"{node.op_type} broadcasts a channel tensor", idx)
        return
    base = lays[0][1]
    for _, lay in lays[1:]:
        if lay.axis != axis:
            p.block(base, f"{node.op_type} aligns channels with another axis", idx)
            p.block(lay, f"{node.op_type} aligns channels with another axis", idx)
            return
        p.couple(base, lay, idx)
    with_layout = {k for k, _ in lays}
    for k, name in enumerate(node.input):
        if k in with_layout or not name:
            continue
        shape = p.v.shape(name)
        rk = len(shape) if shape is not None else None
        if rk is None:
            p.block(base, f"{node.op_type} with input '{name}' of unknown shape", idx)
            continue
        pos = axis - (ry - rk)
        dim = shape[pos] if 0 <= pos < rk else 1
        if dim == 1:
            continue
        if p.v.is_constant(name) and dim == width:
            p.slices.append(ParamSlice(idx, k, pos, y, block=block))
            continue
        other = p.layout_or_opaque(name, pos, idx) if dim == width and block == 1 else None
        if other is not None:
            p.couple(base, Layout(axis, block, other.segments), idx)
        else:
            p.block(base, f"{node.op_type} mixes channels with '{name}'", idx)
    p.set(y, base)


def softmax(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    default = -1 if p.v.opset >= 13 else 1
    a = int(attr(node, "axis", default))
    a = a + rank if a < 0 else a
    covers = lay.axis == a if p.v.opset >= 13 else lay.axis >= a
    if covers:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    p.set(node.output[0], lay)


def maxpool(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    if len([o for o in node.output if o]) > 1:
        p.unknown(idx, node, "MaxPool with indices output")
        return
    spatial(p, idx, node)
