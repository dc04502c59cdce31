"""Rules for BatchNormalization and InstanceNormalization: per-channel parameters."""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.analysis.records import ParamSlice

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def batchnorm(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    if len([o for o in node.output if o]) > 1:
        p.block(lay, "BatchNormalization in training mode", idx)
        return
    if lay.axis != 1 or lay.block != 1:
        p.block(lay, "BatchNormalization over a non-channel axis", idx)
        return
    last = 5 if node.op_type == "BatchNormalization" else 3
    for k in range(1, min(last, len(node.input))):
        if not p.v.is_constant(node.input[k]):
            p.block(lay, f"{node.op_type} with a non-constant parameter '{node.input[k]}'", idx)
            return
        p.slices.append(ParamSlice(idx, k, 0, node.output[0], count_as_param=k <= 2))
    p.set(node.output[0], lay)
