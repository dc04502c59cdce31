"""Groups that may lose every channel: a residual branch removed whole (layer pruning).

When a group keeps no channel, the layers that write it vanish and every convolution that reads it
outputs its bias alone, a constant over batch and space. That is valid where the constant can take
the reader's place without changing a shape: the reader's output must reach, through elementwise
ops only, a broadcasting join (``Add``, ``Sum``, ``Sub``, ``Mul``…) whose other operand has the
reader's full output shape: the residual ``Add`` of a ResNet or MobileNetV2 block.

Group ``g`` is **emptiable** when

* every tensor carrying channels of ``g`` carries ``g``'s channels only (no ``Concat`` with other
  groups), is not a graph output and is not read inside a subgraph;
* every node writing such a tensor is a ``Conv`` (a producer) or maps ``g``'s channels onto ``g``'s
  channels (BatchNormalization, an activation, a depthwise ``Conv``, ``Mul``/``Add``/``Sub``/``Div``
  by a constant);
* every node reading such a tensor writes one itself or is a ``Conv`` with ``group=1`` reading it as
  its data input (a *reader*);
* every reader's output passes through elementwise ops only, to joins whose other operand has the
  reader output's shape and does not itself come from the reader of another emptiable group.

A group read only by the writers of an emptiable group (the first 1x1 conv of a ResNet-50
bottleneck, read only by the 3x3 conv) goes with it: its ``upstream``.

:func:`emptiable_groups` returns, per prunable group, ``None`` (emptiable) or the reason it is not.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxprune.analysis.records import Analysis
from onnxprune.graph.view import attr

__all__ = ["Emptying", "emptiable_groups", "emptying_of"]

UNARY = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
         "Softplus", "Mish", "Gelu", "Identity", "BatchNormalization", "Dropout", "PRelu"}
_CONST_BINARY = {"Mul", "Add", "Sub", "Div"}
JOINS = {"Add", "Sum", "Sub", "Mul", "Max", "Min"}


@dataclass(frozen=True)
class Emptying:
    """What emptying one group removes: the nodes that write its tensors (producers and the
    elementwise ops between them, in graph order) and the convolutions that read it (each becomes a
    constant: its bias as ``[1, C, 1, …]``). ``upstream``: groups read only by those writers (a
    bottleneck's first 1x1 conv), which go with it: their writers are in ``writers`` too."""

    group: int
    writers: tuple[int, ...]
    readers: tuple[int, ...]
    joins: tuple[tuple[int, str], ...]     # (join node, operand from another branch)
    upstream: tuple[int, ...] = ()

    @property
    def groups(self) -> tuple[int, ...]:
        return (self.group,) + self.upstream


def _group_tensors(analysis: Analysis, g: int) -> tuple[set[str], str | None]:
    """Tensors carrying channels of g; a reason when one of them carries another group's too."""
    out = set()
    for name, lay in analysis.layouts.items():
        groups = {s.group for s in lay.segments}
        if g in groups:
            if groups != {g}:
                return out, f"tensor '{name}' also carries other channels"
            out.add(name)
    return out, None


def _is_depthwise(view, idx: int) -> bool:
    node = view.nodes[idx]
    w = view.shape(node.input[1]) if len(node.input) > 1 else None
    g = attr(node, "group", 1)
    return node.op_type == "Conv" and w is not None and g > 1 and w[1] == 1


def _maps_group(view, idx: int, tensors: set[str]) -> bool:
    """Node idx maps the group's channels onto the group's channels (its other inputs constant)."""
    node = view.nodes[idx]
    data = [n for n in node.input if n and not view.is_constant(n)]
    if not data or any(n not in tensors for n in data) or not all(o in tensors for o in node.output if o):
        return False
    return node.op_type in UNARY or _is_depthwise(view, idx) or \
        (node.op_type in _CONST_BINARY and len(data) == 1)


def _chain_to_joins(view, tensor: str, shape) -> tuple[list[tuple[int, str]], str | None]:
    """Follow ``tensor`` through elementwise ops to its joins: [(join node, other operand)]."""
    joins, todo, seen = [], [tensor], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in view.graph_outputs or t in view.subgraph_reads:
            return [], f"'{t}' is a graph output or read in a subgraph"
        for idx, k in view.consumers.get(t, []):
            node = view.nodes[idx]
            if node.op_type in UNARY and k == 0:
                todo.extend(o for o in node.output[:1] if o)
                continue
            if node.op_type in JOINS and len(node.input) >= 2:
                others = [n for i, n in enumerate(node.input) if i != k and n]
                if len(others) != 1 or view.is_constant(others[0]) or view.shape(others[0]) != shape \
                        or shape is None or None in shape[1:]:
                    return [], f"{view.label(idx)} has no other operand of the full shape"
                joins.append((idx, others[0]))
                continue
            return [], f"{view.label(idx)} reads it and needs its full shape"
    return joins, None


def _origin(view, tensor: str) -> int | None:
    """The node that makes ``tensor``, looking through elementwise unary ops."""
    while True:
        p = view.producer.get(tensor)
        if p is None or view.nodes[p].op_type not in UNARY:
            return p
        tensor = view.nodes[p].input[0]


def _writers(analysis: Analysis, g: int, tensors: set[str]) -> tuple[set[int], str | None]:
    """Nodes writing the group's tensors: convolutions and ops mapping the group onto itself."""
    view, writers = analysis.view, set()
    for t in tensors:
        if t in view.graph_outputs or t in view.subgraph_reads:
            return writers, f"'{t}' is a graph output or read in a subgraph"
        p = view.producer.get(t)
        if p is None:
            return writers, f"'{t}' is a graph input"
        node = view.nodes[p]
        if (node.op_type == "Conv" and attr(node, "group", 1) == 1) or _maps_group(view, p, tensors):
            writers.add(p)
        else:
            return writers, f"{view.label(p)} writes it"
    return writers, None


def _upstream(analysis: Analysis, writers: set[int], g: int) -> tuple[list[int], set[int]]:
    """Groups whose every reader is one of ``writers`` (they die with the branch), transitively,
    and their own writers."""
    view, found, extra = analysis.view, [], set()
    todo = sorted(writers)
    while todo:
        w = todo.pop()
        node = view.nodes[w]
        if node.op_type != "Conv" or not node.input:
            continue
        lay = analysis.layouts.get(node.input[0])
        groups = {s.group for s in lay.segments} if lay else set()
        if len(groups) != 1 or None in groups:
            continue
        h = groups.pop()
        if h == g or h in found or any(gr.id == h and gr.skip_reasons for gr in analysis.groups):
            continue
        tensors, why = _group_tensors(analysis, h)
        if why:
            continue
        h_writers, why = _writers(analysis, h, tensors)
        readers = {i for t in tensors for i, _ in view.consumers.get(t, [])}
        if why or not readers <= writers | extra | h_writers:
            continue
        found.append(h)
        extra |= h_writers
        todo.extend(sorted(h_writers))
    return found, extra


def _emptying(analysis: Analysis, g: int) -> Emptying | str:
    view = analysis.view
    tensors, why = _group_tensors(analysis, g)
    if why:
        return why
    writers, why = _writers(analysis, g, tensors)
    if why:
        return why
    readers, joins = set(), []
    for t in tensors:
        for idx, k in view.consumers.get(t, []):
            node = view.nodes[idx]
            if all(o in tensors for o in node.output if o) and _maps_group(view, idx, tensors):
                continue
            if node.op_type == "Conv" and k == 0 and attr(node, "group", 1) == 1:
                readers.add(idx)
                continue
            return f"{view.label(idx)} reads it"
    if not readers:
        return "no convolution reads it"
    for r in sorted(readers):
        out = view.nodes[r].output[0]
        found, why = _chain_to_joins(view, out, view.shape(out))
        if why:
            return why
        joins.extend(found)
    upstream, extra = _upstream(analysis, writers, g)
    return Emptying(g, tuple(sorted(writers | extra)), tuple(sorted(readers)), tuple(joins), tuple(upstream))


def emptiable_groups(analysis: Analysis) -> dict[int, Emptying | str]:
    """Per prunable group: its :class:`Emptying` or the reason it cannot lose every channel."""
    found = {gr.id: _emptying(analysis, gr.id) for gr in analysis.groups if not gr.skip_reasons}
    readers = {r: g for g, e in found.items() if isinstance(e, Emptying) for r in e.readers}
    for g, e in list(found.items()):
        if not isinstance(e, Emptying):
            continue
        for _, other in e.joins:
            o = _origin(analysis.view, other)
            if o in readers and readers[o] != g:
                found[g] = f"its branch joins the branch of group {readers[o]}, also emptiable"
                break
    return found


def emptying_of(analysis: Analysis, groups) -> dict[int, Emptying]:
    """The :class:`Emptying` of each group in ``groups`` that is emptiable itself (a group that only
    goes with another one of ``groups``, its upstream, needs none); PlanError naming a group that
    cannot be emptied."""
    from onnxprune.errors import PlanError
    groups = set(groups)
    if not groups:                  # every plan goes through here; most empty nothing
        return {}
    found = emptiable_groups(analysis)
    out = {g: found[g] for g in sorted(groups) if isinstance(found.get(g), Emptying)}
    covered = {h for e in out.values() for h in e.upstream}
    for g in sorted(groups - set(out) - covered):
        raise PlanError(f"group {g} cannot keep 0 channels: {found.get(g, 'it is not prunable')}")
    return out
