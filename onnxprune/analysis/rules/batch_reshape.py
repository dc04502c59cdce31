"""Rule for a Reshape whose target copies a dynamic batch: ``x.view(x.size(0), -1)`` exported with a
dynamic batch is ``Reshape(x, Concat(Shape(x)[0:1], [-1]))``, a target no constant folding
resolves.

The target is read entry by entry (``shape_values``): constants, and the batch dimension
(dimension 0 of the reshaped tensor itself, or of the model's only graph input when the batch is
dynamic: every op of a CNN keeps the batch; the oracle checks the result on a batch of 2). When the
channels end up in the ``-1`` entry, the Reshape needs no change after pruning (``-1`` absorbs the
new width), so the channels pass through as for a constant target. Any other computed target goes
to the plain rule, which refuses it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import Layout, Update
from onnxprune.analysis.rules import shape
from onnxprune.analysis.rules.shape_values import Entry, shape_entries
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["reshape", "is_batch"]


def is_batch(p: ChannelPass, e: Entry, data: str) -> bool:
    """True when entry ``e`` is the batch dimension of ``data``."""
    if e.tensor is None or e.axis != 0:
        return False
    if e.tensor == data:
        return True
    xs = p.v.shape(data)
    return (len(p.v.graph_inputs) == 1 and e.tensor == p.v.graph_inputs[0]
            and xs is not None and len(xs) > 0 and xs[0] is None)


def reshape(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    xs = p.v.shape(node.input[0])
    target = p.const_input(node, 1)
    if (lay is not None and target is not None and xs and xs[0] is None and target.size
            and int(target.ravel()[0]) in (-1, 0) and all(d is not None for d in xs[1:])):
        _constant_target_dynamic_batch(p, idx, node, lay, [int(d) for d in xs[1:]], target)
        return
    entries = shape_entries(p, idx, 1) if lay is not None and target is None else None
    if (entries is None or not entries or not is_batch(p, entries[0], node.input[0])
            or any(e.value is None for e in entries[1:]) or [e.value for e in entries].count(-1) != 1
            or xs is None or any(d is None for d in xs[1:]) or lay.axis == 0):
        shape.reshape(p, idx, node)
        return
    target = [e.value for e in entries[1:]]
    rest = [int(d) for d in xs[1:]]
    fixed = int(np.prod([t for t in target if t != -1]))
    if fixed <= 0 or int(np.prod(rest)) % fixed:
        shape.reshape(p, idx, node)
        return
    ys = [1] + [int(np.prod(rest)) // fixed if t == -1 else int(t) for t in target]
    found = _channel_axis(lay, [1] + rest, ys)
    if found is None or found[0] == 0 or target[found[0] - 1] != -1:
        p.block(lay, "Reshape with a computed target shape that names the channel count", idx)
        return
    p.set(node.output[0], Layout(found[0], found[1], lay.segments))


def _constant_target_dynamic_batch(p: ChannelPass, idx: int, node: onnx.NodeProto, lay: Layout,
                                   rest: list[int], target) -> None:
    """A constant target whose first entry (-1 or 0) is the dynamic batch, e.g. ``[-1, C*H*W]``:
    worked out for a batch of 1; the channel entry is rewritten like a static Reshape's."""
    t = [int(v) for v in target.ravel()]
    if t.count(-1) > 1 or 0 in t[1:] or (t[0] == 0 and int(attr(node, "allowzero", 0))):
        shape.reshape(p, idx, node)
        return
    fixed = int(np.prod([v for v in t[1:] if v != -1]))
    if fixed <= 0 or int(np.prod(rest)) % fixed:
        shape.reshape(p, idx, node)
        return
    ys = [1] + [int(np.prod(rest)) // fixed if v == -1 else v for v in t[1:]]
    found = _channel_axis(lay, [1] + rest, ys)
    if found is None or found[0] == 0:
        p.block(lay, f"Reshape [N, {', '.join(map(str, rest))}]→{t} mixes the channel axis", idx)
        return
    p.set(node.output[0], Layout(found[0], found[1], lay.segments))
    if t[found[0]] != -1:
        p.updates.append(Update(idx, "reshape", node.input[0], found[0], (found[1], ())))


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
