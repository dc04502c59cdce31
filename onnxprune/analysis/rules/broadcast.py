"""Rule for ``Expand``: a per-channel tensor (a CBAM / SE gate of shape [N, C, 1, 1]) broadcast to a
feature map keeps its channels in place.

The target shape's channel entry is either 1 (nothing to change), a stored constant equal to the
channel count (rewritten with the kept count, like a Reshape target), or ``Shape(t)`` of a tracked
tensor ``t`` with the same channels (``expand_as``): then the two are coupled, so the shape
follows ``t`` at run time. Anything else is refused with its reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.analysis.records import Layout, Update

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["expand"]


def expand(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    target = p.const_input(node, 1)
    ri = p.v.rank(node.input[0])
    if target is None or ri is None:
        p.block(lay, "Expand with a computed target shape", idx)
        return
    ro = max(ri, target.size)
    axis = lay.axis + ro - ri
    k = axis - (ro - target.size)             # the target entry over the channel axis
    width = lay.channels * lay.block
    wanted = int(target[k]) if 0 <= k < target.size else 1
    if wanted not in (1, width):
        p.block(lay, f"Expand broadcasts {width} channels to {wanted}", idx)
        return
    out = Layout(axis, lay.block, lay.segments)
    if wanted == width and width > 1 and not _follows_channels(p, idx, node, out):
        if p.v.stored_weight(node.input[1]) is None or p.v.stored_weight(node.input[1]).via is not None:
            p.block(lay, "Expand with a computed target shape over the channel axis", idx)
            return
        p.updates.append(Update(idx, "reshape", node.input[0], k, (lay.block,)))
    p.set(node.output[0], out)


def _follows_channels(p: ChannelPass, idx: int, node: onnx.NodeProto, out: Layout) -> bool:
    """True when the target shape is ``Shape(t)`` of a tensor whose channels sit on the same axis;
    ``t`` and the expanded tensor are then coupled."""
    prod = p.v.producer.get(node.input[1])
    if prod is None or p.v.nodes[prod].op_type != "Shape" or len(p.v.nodes[prod].attribute):
        return False
    t = p.v.nodes[prod].input[0]
    lay_t = p.layouts.get(t)
    if lay_t is None or lay_t.axis != out.axis or lay_t.block != out.block or lay_t.channels != out.channels:
        return False
    p.couple(out, lay_t, idx)
    return True
