"""Rule for a fused gate/up projection: ``MatMul(x, W[D, 2H]) -> Split(last axis, H, H) -> act(gate) * up``.

Hidden unit j lives in column j (gate) and column H + j (up) of W, and in row j of the down
projection: one channel group of H units, each owning two columns. The MatMul's output is laid
out as two segments of the same group, so the Split's halves carry the same channels and the
gating Mul couples them position by position. Recognised only when the Split has two equal parts
on the last axis and its two outputs meet in one Mul (through unary activations); any other
MatMul is the plain rule.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from onnxprune.analysis.rules import linear
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["matmul", "fused_parts"]

_ACTIVATIONS = {"Sigmoid", "Relu", "Gelu", "Tanh", "Softplus", "HardSigmoid", "HardSwish", "Identity"}


def matmul(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    linear.matmul(p, idx, node, parts=fused_parts(p, node))


def fused_parts(p: ChannelPass, node: onnx.NodeProto) -> int:
    """2 for the gated pattern described above, else 1."""
    w = p.v.constant(node.input[1]) if len(node.input) > 1 else None
    users = p.v.consumers.get(node.output[0], [])
    if w is None or w.ndim != 2 or w.shape[1] % 2 or len(users) != 1:
        return 1
    split = p.v.nodes[users[0][0]]
    rank = p.v.rank(node.output[0]) or 0
    axis = int(attr(split, "axis", 0))
    if split.op_type != "Split" or len(split.output) != 2 or axis not in (-1, rank - 1):
        return 1
    sizes = [p.channel_dim(o, rank - 1) for o in split.output]
    if sizes != [w.shape[1] // 2] * 2:
        return 1
    ends = [_gate_mul(p, o) for o in split.output]
    return 2 if ends[0] is not None and ends[0] == ends[1] else 1


def _gate_mul(p: ChannelPass, tensor: str, depth: int = 4) -> int | None:
    """The Mul that combines ``tensor`` with the other half: followed through activations
    (``g * sigmoid(g)`` included), the first Mul that does not read the same tensor twice."""
    for _ in range(depth):
        users = p.v.consumers.get(tensor, [])
        if not users:
            return None
        nodes = {i for i, _ in users}
        muls = [i for i in nodes if p.v.nodes[i].op_type == "Mul"]
        # SiLU written as x * sigmoid(x): the Sigmoid and the Mul read the tensor
        if len(nodes) == 2 and len(muls) == 1 and any(p.v.nodes[i].op_type == "Sigmoid" for i in nodes):
            tensor = p.v.nodes[muls[0]].output[0]
            continue
        if len(nodes) != 1:
            return None
        n = p.v.nodes[next(iter(nodes))]
        if n.op_type == "Mul":
            return next(iter(nodes))
        if n.op_type not in _ACTIVATIONS:
            return None
        tensor = n.output[0]
    return None
