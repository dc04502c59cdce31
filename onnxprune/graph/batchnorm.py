"""BatchNormalization re-insertion and folding, as edits through :class:`ModelEdit` (numpy, onnx
and onnx_ir; no torch).

``reinsert_batchnorm(model)``
    Insert an exactly-identity BatchNormalization (scale 1, B 0, mean 0, var such that
    float32(var + eps) == 1) after each Conv feeding a Relu/Add/Clip, so models exported with
    BN folded can fine-tune with BN.  The inserted nodes' names are recorded in the model's
    metadata under :data:`REINSERTED_BN_KEY`.
``fold_batchnorm(model, only=None)``
    Fold inference-form BN that directly follows a Conv back into the Conv's weight and bias.

Both return a modified copy and never touch their input; :func:`fold_batchnorm_into` does the
fold on an open :class:`ModelEdit`.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.edit import ModelEdit

__all__ = ["reinsert_batchnorm", "fold_batchnorm", "fold_batchnorm_into", "reinserted_bn_names",
           "REINSERTED_BN_KEY"]

# metadata key listing the BatchNormalization nodes reinsert_batchnorm added (a JSON list)
REINSERTED_BN_KEY = "onnxprune.reinserted_bn"

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def reinserted_bn_names(model: onnx.ModelProto) -> list[str]:
    """The BatchNormalization nodes :func:`reinsert_batchnorm` recorded in ``model``."""
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props.get(REINSERTED_BN_KEY, "[]"))


def _initializer(value: ir.Value | None) -> np.ndarray | None:
    """The constant ``value`` holds as an initializer, or None."""
    if value is None or not value.is_initializer() or value.const_value is None:
        return None
    return value.const_value.numpy()


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


def _wants_bn(node: ir.Node, after: set[str]) -> bool:
    """A Conv with a constant weight whose output feeds one of ``after`` and no BN yet."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    readers = [user.op_type for user, _ in node.outputs[0].uses()]
    if not any(op in after for op in readers) or "BatchNormalization" in readers:
        return False
    return node.inputs[1] is not None and node.inputs[1].is_initializer()


def _add_identity_bn(edit: ModelEdit, conv: ir.Node, list_inputs: bool, eps: float, momentum: float,
                     var: np.float32) -> str:
    """Identity BN tensors (as initializers) and node after ``conv``; the BN takes over the
    Conv's output name, the Conv writes ``<name>__prebn``. Returns the BN's name."""
    y = conv.outputs[0]
    c = int(_initializer(conv.inputs[1]).shape[0])
    base = conv.name or y.name
    names = [edit.numbered_name(f"{base}.bn.{f}") for f in _BN_FIELDS]
    arrays = [np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
              np.full(c, var, np.float32)]
    params = [edit.add_initializer(n, a, graph_input=list_inputs) for n, a in zip(names, arrays)]
    pre = edit.numbered_name(f"{y.name}__prebn")
    bn = edit.node_after(conv, "BatchNormalization", [y, *params], edit.numbered_name(f"{base}__bn"),
                         epsilon=float(np.float32(eps)), momentum=float(momentum))
    edit.take_over(y, bn.outputs[0], old_renamed=pre)
    return bn.name


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
    edit = ModelEdit(model)
    after = set(after)
    list_inputs = model.ir_version < 4 or any(v.is_initializer() for v in edit.graph.inputs)
    var = _identity_var(eps)
    added = [_add_identity_bn(edit, node, list_inputs, eps, momentum, var)
             for node in edit.nodes if _wants_bn(node, after)]
    edit.set_metadata(REINSERTED_BN_KEY, json.dumps(reinserted_bn_names(model) + added))
    return edit.to_proto()


# --------------------------------------------------------------------------------------
# folding
# --------------------------------------------------------------------------------------

def _foldable_conv(bn: ir.Node, only: set[str] | None) -> ir.Node | None:
    """The Conv an inference-form BN folds into, or None."""
    if bn.op_type != "BatchNormalization" or (only is not None and bn.name not in only):
        return None
    if any(o.name for o in bn.outputs[1:]) or len(bn.inputs) < 5 or bn.inputs[0] is None:
        return None
    x = bn.inputs[0]
    conv = x.producer()
    if conv is None or conv.op_type != "Conv" or len(x.uses()) != 1 or x.is_graph_output() \
            or len(conv.inputs) < 2:
        return None
    if _initializer(conv.inputs[1]) is None or any(_initializer(v) is None for v in bn.inputs[1:5]):
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] is not None and _initializer(conv.inputs[2]) is None:
        return None
    return conv


def _conv_bias(conv: ir.Node) -> ir.Value | None:
    return conv.inputs[2] if len(conv.inputs) > 2 else None


def _folded(conv: ir.Node, bn: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    """The Conv's new weight and bias (computed in float64, stored in the weight's dtype)."""
    eps = bn.attributes["epsilon"].as_float() if "epsilon" in bn.attributes else 1e-5
    scale, beta, mean, var = (_initializer(v).astype(np.float64) for v in bn.inputs[1:5])
    w = _initializer(conv.inputs[1])
    s = scale / np.sqrt(var + np.float64(np.float32(eps)))
    bias = _conv_bias(conv)
    b = _initializer(bias).astype(np.float64) if bias is not None else np.zeros_like(mean)
    w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b_new = ((b - mean) * s + beta).astype(w.dtype)
    return w_new, b_new


def _write(edit: ModelEdit, conv: ir.Node, k: int, source: ir.Value, array: np.ndarray) -> None:
    """Conv input ``k`` becomes ``array``: written into ``source`` when nobody else reads it (the
    Conv's own weight or bias, or the BN's B, which the Conv then reads), else into a new
    initializer named after it."""
    if len(source.uses()) == 1:
        edit.replace_initializer(source.name, array, cast=False)
        if k >= len(conv.inputs) or conv.inputs[k] is not source:
            edit.replace_input(conv, k, source)
        return
    name = edit.numbered_name(source.name + "__bnfold")
    edit.replace_input(conv, k, edit.add_initializer(name, array))


def _fold_one(edit: ModelEdit, conv: ir.Node, bn: ir.Node) -> set[str]:
    """Fold ``bn`` into ``conv``; returns the initializers that may have become unused."""
    w_new, b_new = _folded(conv, bn)
    bias = _conv_bias(conv)
    maybe_dead = {v.name for v in bn.inputs[1:5]} | {conv.inputs[1].name}
    maybe_dead |= {bias.name} if bias is not None else set()
    _write(edit, conv, 1, conv.inputs[1], w_new)
    _write(edit, conv, 2, bias if bias is not None else bn.inputs[2], b_new)
    edit.take_over(bn.outputs[0], conv.outputs[0])
    edit.remove_node(bn)
    return maybe_dead


def fold_batchnorm_into(edit: ModelEdit, only: Iterable[str] | None = None) -> None:
    """Fold, in ``edit``, every inference-form BatchNormalization that directly follows a Conv
    (see :func:`fold_batchnorm`)."""
    only = set(only) if only is not None else None
    maybe_dead: set[str] = set()
    for bn in list(edit.graph):
        conv = _foldable_conv(bn, only)
        if conv is not None:
            maybe_dead |= _fold_one(edit, conv, bn)
    edit.remove_unused_initializers(maybe_dead)


def fold_batchnorm(model: onnx.ModelProto, only: Iterable[str] | None = None) -> onnx.ModelProto:
    """Copy of ``model`` with every inference-form BatchNormalization that directly follows a
    Conv (whose output feeds nothing else) folded into the Conv's weight and bias.

    ``only``: fold just the BN nodes with these names.  Computed in float64, stored in the
    Conv weight's dtype.  Initializers left unused are removed.
    """
    edit = ModelEdit(model)
    fold_batchnorm_into(edit, only)
    return edit.to_proto()
