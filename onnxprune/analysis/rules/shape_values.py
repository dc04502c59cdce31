"""Reading a computed 1-D shape tensor (a Reshape or Expand target) entry by entry.

Exporters build targets with a dynamic batch from pieces: ``Concat(Shape(x)[0:1], [-1])``,
``Concat(Unsqueeze(Gather(Shape(x), 0)), [16, 8, 8])`` or a whole ``Shape(t)``. No constant
folding resolves them (a dimension is symbolic), but each entry is either a constant, stored in
one place the rewrite can change, or a dimension of some tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass

__all__ = ["Entry", "shape_entries", "copied_dims"]


@dataclass(frozen=True)
class Entry:
    """A constant ``value`` (``where``: node index, input index, position of the stored constant
    that holds it, or None when it is computed), or dimension ``axis`` of ``tensor``."""
    value: int | None = None
    where: tuple[int, int, int] | None = None
    tensor: str | None = None
    axis: int | None = None


def shape_entries(p: ChannelPass, node_idx: int, k: int) -> list[Entry] | None:
    """The entries of input ``k`` of node ``node_idx``, or None when they cannot be read."""
    name = p.v.nodes[node_idx].input[k]
    prod = p.v.producer.get(name)
    if prod is not None and p.v.nodes[prod].op_type == "Concat" and int(attr(p.v.nodes[prod], "axis", 0)) == 0:
        out: list[Entry] = []
        for j in range(len(p.v.nodes[prod].input)):
            part = _piece(p, prod, j)
            if part is None:
                return None
            out.extend(part)
        return out
    return _piece(p, node_idx, k)


def copied_dims(p: ChannelPass, node_idx: int, k: int, data: str) -> tuple[int, ...]:
    """Positions ``j`` of the computed target at input ``k`` of a Reshape whose entry is dimension
    ``j`` of the reshaped tensor ``data``, or the batch (dimension 0 of a tensor, at position 0).
    The rewrite stores a changed target as a constant; there these entries are written as 0 (copy
    the input's dimension), so a shape fixed only for the analysis (``--input-shape``) is not baked
    into the written model. Empty for a stored (initializer or Constant) target."""
    name = p.v.nodes[node_idx].input[k]
    stored = p.v.stored_weight(name)
    if stored is not None and stored.via is None:
        return ()
    entries = shape_entries(p, node_idx, k)
    if not entries:
        return ()
    return tuple(j for j, e in enumerate(entries)
                 if e.tensor is not None and e.axis == j and (e.tensor == data or j == 0))


def _piece(p: ChannelPass, node_idx: int, k: int) -> list[Entry] | None:
    name = p.v.nodes[node_idx].input[k]
    stored = p.v.stored_weight(name)
    if stored is not None and stored.via is None:
        return [Entry(int(v), (node_idx, k, i)) for i, v in enumerate(np.asarray(p.v.constant(name)).ravel())]
    prod = p.v.producer.get(name)
    node = p.v.nodes[prod] if prod is not None else None
    dims = _dims(p, node) if node is not None else None
    if dims is not None:
        return dims
    value = p.v.constant(name)         # folded from constants: no one place to change it
    return None if value is None else [Entry(int(v)) for v in np.asarray(value).ravel()]


def _dims(p: ChannelPass, node) -> list[Entry] | None:
    """Entries that are dimensions of a tensor: ``Shape(t)[start:end]``, ``Unsqueeze(Gather(Shape(t), i))``."""
    if node.op_type == "Shape":
        rank = p.v.rank(node.input[0])
        if rank is None:
            return None
        start, end = int(attr(node, "start", 0)), attr(node, "end", None)
        axes = range(rank)[slice(start, end)]
        return [Entry(tensor=node.input[0], axis=a) for a in axes]
    if node.op_type == "Unsqueeze":                      # Unsqueeze(Gather(Shape(t), i))
        g = p.v.producer.get(node.input[0])
        gn = p.v.nodes[g] if g is not None else None
        if gn is None or gn.op_type != "Gather" or int(attr(gn, "axis", 0)) != 0:
            return None
        sh = p.v.producer.get(gn.input[0])
        index = p.v.constant(gn.input[1])
        if sh is None or index is None or index.size != 1 or p.v.nodes[sh].op_type != "Shape":
            return None
        shn = p.v.nodes[sh]
        rank = p.v.rank(shn.input[0])
        if rank is None or attr(shn, "start", None) is not None or attr(shn, "end", None) is not None:
            return None
        i = int(index.ravel()[0])
        return [Entry(tensor=shn.input[0], axis=i + rank if i < 0 else i)]
    return None
