"""BatchNormalization re-insertion and folding: pure ONNX rewrites (numpy + onnx, no torch).

``reinsert_batchnorm(model)``
    Insert an exactly-identity BatchNormalization (scale 1, B 0, mean 0, var such that
    float32(var + eps) == 1) after each Conv feeding a Relu/Add/Clip, so models exported with
    BN folded can fine-tune with BN.  The inserted nodes' names are recorded in the model's
    metadata under :data:`REINSERTED_BN_KEY`.
``fold_batchnorm(model, only=None)``
    Fold inference-form BN that directly follows a Conv back into the Conv's weight and bias.

Both return a modified copy and never touch their input.  They work on the protos directly
with the small helpers below (use counts, unique names, pruning dead initializers); these
are the pieces to port onto a shared graph-edit layer.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.view import GraphView

__all__ = ["reinsert_batchnorm", "fold_batchnorm", "REINSERTED_BN_KEY"]

# metadata key listing the BatchNormalization nodes reinsert_batchnorm added (a JSON list)
REINSERTED_BN_KEY = "onnxprune.reinserted_bn"

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


# --------------------------------------------------------------------------------------
# small proto helpers
# --------------------------------------------------------------------------------------

def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``... whichever is not taken yet (then taken)."""
    cand, i = name, 1
    while cand in taken:
        cand, i = f"{name}_{i}", i + 1
    taken.add(cand)
    return cand


def _replace_all(field, items) -> None:
    """Replace the contents of a repeated proto field."""
    items = list(items)
    del field[:]
    field.extend(items)


def _set_input(node: onnx.NodeProto, slot: int, name: str) -> None:
    while len(node.input) <= slot:
        node.input.append("")
    node.input[slot] = name


def _read_reinserted(model: onnx.ModelProto) -> list[str]:
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props.get(REINSERTED_BN_KEY, "[]"))


# --------------------------------------------------------------------------------------
# re-insertion
# --------------------------------------------------------------------------------------

def _identity_var(eps: float) -> np.float32:
    """The float32 variance v with float32(v + eps) == 1 exactly."""
    e = np.float32(eps)
    v = np.float32(1) - e
    for _ in range(8):
        s = np.float32(v + e)
        if s == np.float32(1):
            return v
        v = np.nextafter(v, np.float32(0) if s > 1 else np.float32(2), dtype=np.float32)
    raise OnnxPruneError(f"no float32 variance makes var + {eps} exactly 1")


def _wants_bn(view: GraphView, node: onnx.NodeProto, inits, after: set[str]) -> bool:
    """A Conv with a constant weight whose output feeds one of ``after`` and no BN yet."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    cons = [view.nodes[i].op_type for i, _ in view.consumers.get(node.output[0], [])]
    if not any(op in after for op in cons) or "BatchNormalization" in cons:
        return False
    return node.input[1] in inits


def _add_identity_bn(g: onnx.GraphProto, conv: onnx.NodeProto, c: int, taken: set[str],
                     list_inputs: bool, eps: float, momentum: float, var: np.float32) -> onnx.NodeProto:
    """Identity BN tensors (as initializers) and node after ``conv``; the BN takes over the
    Conv's output name, the Conv writes ``<name>__prebn``."""
    y = conv.output[0]
    base = conv.name or y
    names = [_unique(f"{base}.bn.{f}", taken) for f in _BN_FIELDS]
    vals = [np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
            np.full(c, var, np.float32)]
    for nm, v in zip(names, vals):
        g.initializer.append(numpy_helper.from_array(v, nm))
        if list_inputs:
            g.input.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, [c]))
    pre = _unique(f"{y}__prebn", taken)
    conv.output[0] = pre
    return helper.make_node("BatchNormalization", [pre] + names, [y], name=_unique(f"{base}__bn", taken),
                            epsilon=float(np.float32(eps)), momentum=float(momentum))


def reinsert_batchnorm(model: onnx.ModelProto, after: Iterable[str] = ("Relu", "Add", "Clip"),
                       eps: float = 1e-5, momentum: float = 0.9) -> onnx.ModelProto:
    """Copy of ``model`` with an identity BatchNormalization after every Conv whose output
    feeds one of ``after`` (and no BatchNormalization already).

    The new BN has scale 1, B 0, mean 0 and var = float32(1 - eps) adjusted so that
    float32(var + eps) == 1 exactly, so outputs are unchanged bit for bit.  The Conv's
    output tensor keeps its name on the BN's output (the Conv now writes
    ``<name>__prebn``).  The new nodes' names are recorded in metadata
    ``onnxprune.reinserted_bn`` so ``to_onnx`` folds exactly these back.
    """
    m = _copy(model)
    g = m.graph
    after = set(after)
    view = GraphView(m)
    inits = view.initializers
    taken = set(inits) | {n.name for n in g.node} | {o for n in g.node for o in n.output} \
        | {i for n in g.node for i in n.input} | {vi.name for vi in g.input}
    list_inputs = m.ir_version < 4 or any(vi.name in inits for vi in g.input)
    var = _identity_var(eps)
    new_nodes, added = [], []
    for node in view.nodes:
        new_nodes.append(node)
        if _wants_bn(view, node, inits, after):
            c = int(inits[node.input[1]].dims[0])
            bn = _add_identity_bn(g, node, c, taken, list_inputs, eps, momentum, var)
            new_nodes.append(bn)
            added.append(bn.name)
    _replace_all(g.node, new_nodes)
    props = {p.key: p.value for p in m.metadata_props}
    helper.set_model_props(m, {**props, REINSERTED_BN_KEY: json.dumps(_read_reinserted(m) + added)})
    return m


# --------------------------------------------------------------------------------------
# folding
# --------------------------------------------------------------------------------------

class _Graph:
    """The mutable bookkeeping of one folding pass: initializers by name, use counts,
    producers, names taken, and initializers that may have become dead."""

    def __init__(self, g: onnx.GraphProto):
        self.g = g
        self.inits = {t.name: t for t in g.initializer}
        self.uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.outputs = {o.name for o in g.output}
        self.producer = {o: n for n in g.node for o in n.output}
        self.taken = set(self.inits) | {o for n in g.node for o in n.output}
        self.maybe_dead: set[str] = set()

    def add_init(self, base: str, arr: np.ndarray) -> str:
        nm = _unique(base + "__bnfold", self.taken)
        self.g.initializer.append(numpy_helper.from_array(arr, nm))
        self.inits[nm] = self.g.initializer[-1]
        return nm

    def overwrite(self, name: str, arr: np.ndarray) -> None:
        self.inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    def rewire(self, node: onnx.NodeProto, slot: int, name: str) -> None:
        """Point ``node``'s input ``slot`` at ``name``, keeping the use counts."""
        old = node.input[slot] if slot < len(node.input) else ""
        if old:
            self.uses[old] -= 1
            self.maybe_dead.add(old)
        _set_input(node, slot, name)
        self.uses[name] = self.uses.get(name, 0) + 1


def _foldable_conv(st: _Graph, bn: onnx.NodeProto, only: set[str] | None) -> onnx.NodeProto | None:
    """The Conv an inference-form BN folds into, or None."""
    if bn.op_type != "BatchNormalization" or (only is not None and bn.name not in only):
        return None
    if any(o for o in bn.output[1:]) or len(bn.input) < 5:
        return None
    conv = st.producer.get(bn.input[0])
    if conv is None or conv.op_type != "Conv" or st.uses.get(bn.input[0], 0) != 1 \
            or bn.input[0] in st.outputs:
        return None
    if conv.input[1] not in st.inits or not all(n in st.inits for n in bn.input[1:5]):
        return None
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in st.inits:
        return None
    return conv


def _folded(st: _Graph, conv: onnx.NodeProto, bn: onnx.NodeProto):
    """The Conv's new weight and bias (computed in float64, stored in the weight's dtype)."""
    eps = float(_attr(bn, "epsilon", 1e-5))
    scale, beta, mean, var = (numpy_helper.to_array(st.inits[n]).astype(np.float64) for n in bn.input[1:5])
    w = numpy_helper.to_array(st.inits[conv.input[1]])
    s = scale / np.sqrt(var + np.float64(np.float32(eps)))
    has_b = len(conv.input) > 2 and bool(conv.input[2])
    b = numpy_helper.to_array(st.inits[conv.input[2]]).astype(np.float64) if has_b else np.zeros_like(mean)
    w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b_new = ((b - mean) * s + beta).astype(w.dtype)
    return w_new, b_new


def _write_weight(st: _Graph, conv: onnx.NodeProto, w_new: np.ndarray) -> None:
    """In place when the Conv is the weight's only user, else as a new initializer."""
    if st.uses.get(conv.input[1], 0) == 1:
        st.overwrite(conv.input[1], w_new)
    else:
        st.rewire(conv, 1, st.add_init(conv.input[1], w_new))


def _write_bias(st: _Graph, conv: onnx.NodeProto, bn: onnx.NodeProto, b_new: np.ndarray) -> None:
    """In the Conv's own bias, else in the BN's B (when only this BN uses it), else new."""
    has_b = len(conv.input) > 2 and bool(conv.input[2])
    if has_b and st.uses.get(conv.input[2], 0) == 1:
        st.overwrite(conv.input[2], b_new)
    elif not has_b and st.uses.get(bn.input[2], 0) == 1:
        st.overwrite(bn.input[2], b_new)   # the BN's own B becomes the Conv's bias
        st.rewire(conv, 2, bn.input[2])
    else:
        st.rewire(conv, 2, st.add_init(conv.input[2] if has_b else bn.input[2], b_new))


def _drop_dead(st: _Graph, removed: set[str]) -> None:
    """Remove initializers (and their graph inputs) the folds left unused, and the value_info
    of the Conv outputs that disappeared."""
    g = st.g
    live = {i for n in g.node for i in n.input} | st.outputs
    dead = {t.name for t in g.initializer if t.name in st.maybe_dead and t.name not in live}
    _replace_all(g.initializer, [t for t in g.initializer if t.name not in dead])
    _replace_all(g.input, [vi for vi in g.input if vi.name not in dead])
    _replace_all(g.value_info, [vi for vi in g.value_info if vi.name not in removed])


def fold_batchnorm(model: onnx.ModelProto, only: Iterable[str] | None = None) -> onnx.ModelProto:
    """Copy of ``model`` with every inference-form BatchNormalization that directly follows a
    Conv (whose output feeds nothing else) folded into the Conv's weight and bias.

    ``only``: fold just the BN nodes with these names.  Computed in float64, stored in the
    Conv weight's dtype.  Initializers left unused are removed.
    """
    m = _copy(model)
    st = _Graph(m.graph)
    only = set(only) if only is not None else None
    removed: set[str] = set()
    for bn in list(m.graph.node):
        conv = _foldable_conv(st, bn, only)
        if conv is None:
            continue
        w_new, b_new = _folded(st, conv, bn)
        _write_weight(st, conv, w_new)
        _write_bias(st, conv, bn, b_new)
        for n in bn.input[1:5]:
            st.uses[n] = st.uses.get(n, 0) - 1
            st.maybe_dead.add(n)
        removed.add(conv.output[0])
        conv.output[0] = bn.output[0]
        st.producer[bn.output[0]] = conv
        m.graph.node.remove(bn)
    if removed:
        _drop_dead(st, removed)
    return m
