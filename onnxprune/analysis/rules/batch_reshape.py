"""Rule for a Reshape whose target copies a dynamic batch: ``x.view(x.size(0), -1)`` exported with a
dynamic batch is ``Reshape(x, Concat(Shape(x)[0:1], [-1]))``, a target no constant folding
resolves.

The target is read piece by piece (constants, and the batch dimension of the reshaped tensor
itself); when the channels end up in the ``-1`` entry, the Reshape needs no change after pruning
(the batch is still copied at run time, ``-1`` absorbs the new width), so the channels pass through
as for a constant target. Any other computed target goes to the plain rule, which refuses it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import Layout
from onnxprune.analysis.rules import shape
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["reshape", "batch_target"]

BATCH = "batch"


def reshape(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    target = batch_target(p, node.input[1], node.input[0]) if p.const_input(node, 1) is None else None
    if lay is None or target is None or BATCH not in target or target.count(-1) != 1:
        shape.reshape(p, idx, node)
        return
    xs = p.v.shape(node.input[0])
    if xs is None or not xs or any(d is None for d in xs[1:]) or lay.axis == 0 or target.index(BATCH) != 0:
        shape.reshape(p, idx, node)
        return
    rest = [int(d) for d in xs[1:]]
    fixed = int(np.prod([t for t in target[1:] if t != -1]))
    if fixed == 0 or int(np.prod(rest)) % fixed:
        shape.reshape(p, idx, node)
        return
    ys = [1] + [int(np.prod(rest)) // fixed if t == -1 else int(t) for t in target[1:]]
    found = _channel_axis(lay, [1] + rest, ys)
    if found is None or target[found[0]] != -1:
        p.block(lay, "Reshape with a computed target shape that names the channel count", idx)
        return
    p.set(node.output[0], Layout(found[0], found[1], lay.segments))


def _channel_axis(lay: Layout, xs: list[int], ys: list[int]) -> tuple[int, int] | None:
    """(axis, block) of the channels after reshaping ``xs`` to ``ys``, as ``shape.reshape`` finds it."""
    c = lay.axis
    before = int(np.prod(xs[:c]))
    chunk = lay.block * int(np.prod(xs[c + 1:]))
    for c2 in range(len(ys)):
        if int(np.prod(ys[:c2])) != before:
            continue
        rest = int(np.prod(ys[c2 + 1:]))
        if chunk % rest == 0 and ys[c2] == lay.channels * (chunk // rest):
            return c2, chunk // rest
    return None


def batch_target(p: ChannelPass, name: str, data: str) -> list | None:
    """The entries of a computed 1-D target: ints, or ``BATCH`` for dimension 0 of ``data``."""
    prod = p.v.producer.get(name)
    if prod is None:
        return None
    node = p.v.nodes[prod]
    if node.op_type == "Concat" and int(attr(node, "axis", 0)) == 0:
        out: list = []
        for i in node.input:
            part = _piece(p, i, data)
            if part is None:
                return None
            out.extend(part)
        return out
    return _piece(p, name, data)


def _piece(p: ChannelPass, name: str, data: str) -> list | None:
    value = p.v.constant(name)
    if value is not None:
        return [int(v) for v in np.asarray(value).ravel()]
    prod = p.v.producer.get(name)
    node = p.v.nodes[prod] if prod is not None else None
    if node is None:
        return None
    if node.op_type == "Shape":
        start, end = int(attr(node, "start", 0)), attr(node, "end", None)
        return [BATCH] if node.input[0] == data and start == 0 and end == 1 else None
    if node.op_type == "Unsqueeze":          # Unsqueeze(Gather(Shape(data), 0), [0])
        g = p.v.producer.get(node.input[0])
        gn = p.v.nodes[g] if g is not None else None
        if gn is None or gn.op_type != "Gather" or int(attr(gn, "axis", 0)) != 0:
            return None
        sh = p.v.producer.get(gn.input[0])
        index = p.v.constant(gn.input[1])
        if sh is None or index is None or index.size != 1 or int(index.ravel()[0]) != 0:
            return None
        shn = p.v.nodes[sh]
        ok = shn.op_type == "Shape" and shn.input[0] == data and int(attr(shn, "start", 0)) == 0
        return [BATCH] if ok else None
    return None
