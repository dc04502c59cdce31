"""Rule for ``Expand``: a per-channel tensor (a CBAM / SE gate of shape [N, C, 1, 1]) broadcast to a
feature map keeps its channels in place.

The target's entry over the channel axis (read with ``shape_values``, so targets built from a
dynamic batch work too) is either 1 (nothing to change), a stored constant equal to the channel
count (rewritten with the kept count: an ``Update`` of kind ``shape_entry``), or the channel
dimension of a tracked tensor with the same channels (``expand_as``: ``Shape(t)``), which is
then coupled with the expanded tensor so the shape follows it at run time. Anything else is
refused with its reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.analysis.records import Layout, Update
from onnxprune.analysis.rules.shape_values import shape_entries

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["expand"]


def expand(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    entries = shape_entries(p, idx, 1)
    ri = p.v.rank(node.input[0])
    if entries is None or ri is None:
        p.block(lay, "Expand with a computed target shape", idx)
        return
    ro = max(ri, len(entries))
    out = Layout(lay.axis + ro - ri, lay.block, lay.segments)
    k = out.axis - (ro - len(entries))             # the target entry over the channel axis
    width = lay.channels * lay.block
    if not 0 <= k < len(entries) or entries[k].value == 1:
        p.set(node.output[0], out)
        return
    e = entries[k]
    if e.value is not None:
        if e.value != width:
            p.block(lay, f"Expand broadcasts {width} channels to {e.value}", idx)
            return
        if e.where is None:
            p.block(lay, "Expand with a computed target shape over the channel axis", idx)
            return
        node_idx, k_in, pos = e.where
        p.updates.append(Update(node_idx, "shape_entry", node.input[0], pos, (k_in, lay.block)))
        p.set(node.output[0], out)
        return
    lay_t = p.layouts.get(e.tensor)
    if lay_t is None or lay_t.axis != e.axis or lay_t.block != out.block or lay_t.channels != out.channels:
        p.block(lay, f"Expand to the shape of '{e.tensor}', whose channels are not these", idx)
        return
    p.couple(out, lay_t, idx)
    p.set(node.output[0], out)
