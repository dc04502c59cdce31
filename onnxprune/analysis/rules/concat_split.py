"""Rules that join or cut the channel axis: Concat, Split, Slice, Pad."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import Layout, Segment, Update
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def concat(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ry = p.v.rank(y) or 0
    axis = int(attr(node, "axis", 1))
    axis = axis + ry if axis < 0 else axis
    present = [p.layouts[i] for i in node.input if i in p.layouts]
    if not present:
        return
    if all(l.axis != axis for l in present):   # concatenation along another axis: channels align
        base = present[0]
        for lay in present[1:]:
            if lay.axis != base.axis:
                p.block(lay, "Concat of tensors with channels on different axes", idx)
                p.block(base, "Concat of tensors with channels on different axes", idx)
                return
            p.couple(base, lay, idx)
        for name in node.input:
            if name not in p.layouts:
                p.block(base, f"Concat with untracked tensor '{name}'", idx)
        p.set(y, base)
        return
    segments, block = [], None
    for name in node.input:
        lay = p.layouts.get(name) or p.layout_or_opaque(name, axis, idx)
        if lay is None or lay.axis != axis or (block is not None and lay.block != block):
            for l in present:
                p.block(l, "Concat of inputs whose channel layouts differ", idx)
            return
        block = lay.block
        segments.extend(lay.segments)
    p.set(y, Layout(axis, block or 1, tuple(segments)))


def cut(lay: Layout, start: int, stop: int) -> tuple[Segment, ...]:
    """Segments covering channel positions ``start..stop`` of a layout."""
    out, pos = [], 0
    for s in lay.segments:
        a, b = max(start, pos), min(stop, pos + s.length)
        if a < b:
            out.append(Segment(s.node, s.start + a - pos, b - a))
        pos += s.length
    return tuple(out)


def split(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    axis = int(attr(node, "axis", 0))
    axis = axis + rank if axis < 0 else axis
    if axis != lay.axis:
        for o in node.output:
            p.set(o, lay)
        return
    sizes = [p.channel_dim(o, axis) for o in node.output]
    if lay.block != 1 or any(s is None for s in sizes):
        p.block(lay, "Split of the channel axis with unknown sizes", idx)
        return
    pos = 0
    for o, s in zip(node.output, sizes):
        p.set(o, Layout(axis, 1, cut(lay, pos, pos + s)))
        pos += s
    p.updates.append(Update(idx, "split", node.input[0], axis, tuple(sizes)))


def _slice_params(p: ChannelPass, node: onnx.NodeProto):
    if p.v.opset < 10:
        return (attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None)
    vals = [p.const_input(node, k) for k in range(1, 5)]
    if vals[0] is None or vals[1] is None or (len(node.input) > 3 and node.input[3] and vals[2] is None) \
            or (len(node.input) > 4 and node.input[4] and vals[3] is None):
        return None
    return tuple(None if v is None else [int(t) for t in v.ravel()] for v in vals)


def slice_channels(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    params = _slice_params(p, node)
    if params is None:
        p.block(lay, "Slice with computed bounds", idx)
        return
    starts, ends, axes, steps = params
    rank = p.v.rank(node.input[0]) or 0
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
    steps = steps or [1] * len(starts)
    if lay.axis not in axes:
        p.set(node.output[0], lay)
        return
    i = axes.index(lay.axis)
    c = lay.channels
    if steps[i] != 1 or lay.block != 1:
        p.block(lay, "Slice of the channel axis with a step", idx)
        return
    a, b = starts[i], ends[i]
    a = max(0, min(c, a + c if a < 0 else a))
    b = max(0, min(c, b + c if b < 0 else b))
    p.set(node.output[0], Layout(lay.axis, 1, cut(lay, a, max(a, b))))
    p.updates.append(Update(idx, "slice", node.input[0], lay.axis, (i, a, max(a, b))))


def pad(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    pads = attr(node, "pads") if p.v.opset < 11 else p.const_input(node, 1)
    axes = p.const_input(node, 3) if p.v.opset >= 18 and len(node.input) > 3 and node.input[3] else None
    if pads is None:
        p.block(lay, "Pad with computed pads", idx)
        return
    pads = [int(v) for v in np.asarray(pads).ravel()]
    axes = list(range(rank)) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    n = len(axes)
    if lay.axis not in axes:
        p.set(node.output[0], lay)
        return
    i = axes.index(lay.axis)
    before, after = pads[i], pads[i + n]
    if before < 0 or after < 0 or lay.block != 1:
        p.block(lay, "Pad that crops the channel axis", idx)
        return
    mode = attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        p.block(lay, "non-constant Pad of the channel axis", idx)
        return
    segs = list(lay.segments)
    if before:
        segs.insert(0, Segment(p.new_space(before, "pad", idx), 0, before))
    if after:
        segs.append(Segment(p.new_space(after, "pad", idx), 0, after))
    out = Layout(lay.axis, 1, tuple(segs))
    p.set(node.output[0], out)
    p.updates.append(Update(idx, "pad", node.output[0], lay.axis, (i, n, before, after)))
