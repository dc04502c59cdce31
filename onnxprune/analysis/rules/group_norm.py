"""Rule for native ``GroupNormalization`` (opset 18+): refused, with the reason.

Each output channel is normalised with the mean and variance of its whole group of C/G channels,
so removing one channel changes the statistics of the others: only whole groups could be removed
(and the scale/bias of opset 18 are per group, those of opset 21 per channel). Group-aligned
pruning is not implemented; the channels pass through so that everything they are coupled with
is refused with them. (A decomposed GroupNorm, Reshape to [N, G, -1], is refused by the Reshape
rule: the reshape mixes the channel axis.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["group_normalization"]


def group_normalization(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    groups = int(attr(node, "num_groups", 1))
    p.block(lay, f"GroupNormalization ({groups} groups) shares statistics across each group's channels: "
                 f"prunable only in whole groups, which is not supported", idx)
    p.set(node.output[0], lay)
