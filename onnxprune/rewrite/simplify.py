"""Graph overhead after the rewrite: fold what pruning made static, drop no-op Pad and Slice.

* **Constant folding**: a node whose every output is computable from constants (initializers,
  Constant nodes and what follows from them, e.g. the Pad arguments torch computes for the option-A
  shortcut of CIFAR ResNets) and that feeds a node which is not, gets its outputs replaced by
  initializers; the constant sub-graph behind it is then dead and removed. Values larger than
  ``max_elements`` are left to the runtime.
* **No-op Pad / Slice**: a constant-mode Pad whose pads are all zero, a Slice that keeps every
  element of its input (static shape, unit steps): its consumers read its input instead.

Graph inputs and outputs keep their names (an op whose output is a graph output stays), and values
are unchanged: folding evaluates the same ops, a no-op Pad/Slice returns its input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.graph.edit import ModelEdit
from onnxprune.graph.view import GraphView, attr
from onnxprune.log import get_logger

__all__ = ["simplify", "SimplifyReport"]

log = get_logger(__name__)

_NEVER_FOLD = {"Constant", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "Dropout"}


@dataclass
class SimplifyReport:
    folded: int = 0                # nodes whose outputs became initializers
    dropped: list[str] = field(default_factory=list)    # no-op Pad/Slice removed
    removed_nodes: int = 0         # nodes before - after

    def to_dict(self) -> dict:
        return {"folded": self.folded, "dropped_noop": self.dropped, "removed_nodes": self.removed_nodes}


def _is_output(view: GraphView, name: str) -> bool:
    return name in view.graph_outputs


def _foldable(view: GraphView, idx: int, max_elements: int) -> bool:
    node = view.nodes[idx]
    if node.op_type in _NEVER_FOLD or node.domain not in ("", "ai.onnx") or not node.output:
        return False
    if any(_is_output(view, o) for o in node.output):
        return False
    values = [view.constant(o) for o in node.output]
    # shape arithmetic only: a float constant is a weight in its stored form (int8 behind
    # DequantizeLinear, fp16 behind Cast), which folding would silently re-store as fp32
    return all(v is not None and v.size <= max_elements and v.dtype.kind in "iub" for v in values)


def _noop_pad(view: GraphView, node) -> bool:
    if node.op_type != "Pad" or attr(node, "mode", b"constant") not in (b"constant", "constant"):
        return False
    pads = attr(node, "pads", None) if view.opset < 11 else (view.constant(node.input[1]) if len(node.input) > 1 else None)
    return pads is not None and not np.any(np.asarray(pads))


def _noop_slice(view: GraphView, node) -> bool:
    if node.op_type != "Slice" or view.opset < 10 or len(node.input) < 3:
        return False
    shape = view.shape(node.input[0])
    args = [view.constant(n) if k < len(node.input) and node.input[k] else None for k, n in
            enumerate(node.input[:5] + [""] * (5 - len(node.input)), start=0)][1:]
    starts, ends, axes, steps = args
    if shape is None or any(d is None for d in shape) or starts is None or ends is None:
        return False
    if (len(node.input) > 3 and node.input[3] and axes is None) or (len(node.input) > 4 and node.input[4] and steps is None):
        return False
    axes = range(len(starts)) if axes is None else axes
    steps = np.ones(len(starts)) if steps is None else steps
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = shape[int(a)]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st != 1 or s != 0 or min(e, dim) != dim:
            return False
    return True


def simplify(model: onnx.ModelProto, max_elements: int = 1 << 16) -> tuple[onnx.ModelProto, SimplifyReport]:
    """The model with static sub-graphs folded and no-op Pad/Slice dropped, and what was done."""
    view = GraphView(model)
    edit = ModelEdit(model, view)
    report = SimplifyReport()
    foldable = {i for i in range(len(view.nodes)) if _foldable(view, i, max_elements)}
    made: dict[str, object] = {}
    for i in sorted(foldable):
        node = view.nodes[i]
        consumers = {c for o in node.output for c, _ in view.consumers.get(o, [])}
        if consumers and consumers <= foldable:
            continue
        for k, o in enumerate(node.output):
            if o not in made:
                made[o] = edit.constant(view.constant(o), o + "_folded")
            edit.nodes[i].outputs[k].replace_all_uses_with(made[o])
        report.folded += 1
    for i, node in enumerate(view.nodes):
        if i in foldable or not (_noop_pad(view, node) or _noop_slice(view, node)):
            continue
        if _is_output(view, node.output[0]):
            continue
        source = edit.nodes[i].inputs[0]
        edit.nodes[i].outputs[0].replace_all_uses_with(source)
        report.dropped.append(view.label(i))
    ops = {n.op_type for n in view.nodes}
    edit.cleanup(ops - {"Constant"} | {"Constant"})
    out = edit.to_proto()
    report.removed_nodes = len(model.graph.node) - len(out.graph.node)
    log.info("simplify: %d constant sub-graph outputs folded, %d no-op Pad/Slice dropped, %d nodes fewer",
             report.folded, len(report.dropped), report.removed_nodes)
    return out, report
