"""Rules for QuantizeLinear / DequantizeLinear on activations, and the check that every weight the
rewrite slices can be written back in its stored dtype.

On an activation a Q/DQ pair keeps channels in place: a per-tensor scale passes them through, a
per-axis scale on the channel axis is sliced with them (scale and zero-point), a per-axis scale on
another axis leaves them alone; blocked quantization over the channel axis is refused. Weights
stored as int8 behind a DequantizeLinear or as fp16 behind a Cast are sliced in their stored
dtype by the rewrite (see ``onnxprune.rewrite.apply``); a weight computed any other way from a
tensor of another dtype is refused here, with the reason, rather than re-stored as float.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.analysis.records import ParamSlice
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["quantize_linear", "refuse_unsliceable_weights"]


def quantize_linear(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    """QuantizeLinear / DequantizeLinear of a tracked activation."""
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    scale = p.const_input(node, 1)
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if scale is None or (zp_name and p.const_input(node, 2) is None):
        p.block(lay, f"{node.op_type} with a computed scale or zero-point", idx)
        return
    rank = p.v.rank(node.input[0]) or 0
    axis = int(attr(node, "axis", 1))
    axis = axis + rank if axis < 0 else axis
    if int(attr(node, "block_size", 0)) and axis == lay.axis:
        p.block(lay, f"{node.op_type} with blocked quantization over the channel axis", idx)
        return
    if scale.ndim >= 1 and scale.size > 1 and axis == lay.axis:
        if lay.block != 1:
            p.block(lay, f"{node.op_type} with a per-axis scale on a flattened channel axis", idx)
            return
        y = node.output[0]
        p.slices.append(ParamSlice(idx, 1, 0, y, count_as_param=False))
        if zp_name:
            p.slices.append(ParamSlice(idx, 2, 0, y, count_as_param=False))
    p.set(node.output[0], lay)


def _unsliceable(p: ChannelPass, s: ParamSlice) -> str | None:
    """Why the weight of ``s`` cannot be sliced in its stored dtype, or None."""
    name = p.v.nodes[s.node].input[s.input_index]
    w = p.v.stored_weight(name)
    if w is None:
        value = p.v.constant(name)
        sources = _stored_sources(p, name)
        other = sorted({p.v.dtypes.get(t) for t in sources} - {onnx.helper.np_dtype_to_tensor_dtype(value.dtype)}) \
            if value is not None else []
        if other:
            names = ", ".join(onnx.TensorProto.DataType.Name(d) for d in other)
            return f"weight '{name}' is computed from {names} tensors by several ops; cannot slice it in its stored dtype"
        return None
    if w.op != "DequantizeLinear" or w.axis is None or w.axis != s.axis:
        return None
    if w.block_size:
        return f"weight '{name}' is block-quantized along the pruned axis"
    if s.groups > 1:
        return f"weight '{name}' is quantized per channel along a grouped-conv axis"
    return None


def _stored_sources(p: ChannelPass, name: str, depth: int = 16) -> set[str]:
    """Initializers and Constant outputs a computed constant is made from."""
    if name in p.v.initializers or p.v.producer.get(name) is None or depth == 0:
        return {name} if name in p.v.initializers else set()
    node = p.v.nodes[p.v.producer[name]]
    if node.op_type == "Constant":
        return set()
    out: set[str] = set()
    for i in node.input:
        if i:
            out |= _stored_sources(p, i, depth - 1)
    return out


def refuse_unsliceable_weights(p: ChannelPass) -> None:
    """Block the groups whose pruning would force a weight out of its stored dtype."""
    for s in p.slices:
        why = _unsliceable(p, s)
        if why is not None:
            p.block(p.layouts.get(s.tensor), why, s.node)
