"""A light read-only view of an ONNX graph: shapes, constants, producers and consumers.

Analysis code asks this view who produces or consumes a tensor and what a constant holds; it
never walks protobuf node lists by hand.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from onnxprune.errors import AnalysisError
from onnxprune.log import get_logger

log = get_logger(__name__)

__all__ = ["GraphView", "StoredWeight", "node_label", "fix_input_shapes", "subgraph_reads"]


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``OpType#index`` when the exporter left it unnamed."""
    return node.name or f"{node.op_type}#{index}"


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from its enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            reads |= _outer_reads(sub)
        defined.update(o for o in node.output if o)
    reads.update(o.name for o in graph.output)
    return reads - defined


def subgraph_reads(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """{tensor of ``graph``: indices of its nodes (If/Loop/Scan) whose subgraphs read it}."""
    out: dict[str, list[int]] = defaultdict(list)
    for idx, node in enumerate(graph.node):
        for sub in _subgraphs(node):
            for name in _outer_reads(sub):
                if idx not in out[name]:
                    out[name].append(idx)
    return dict(out)


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Return a copy whose graph inputs have the given static shapes (for dynamic models)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inputs = {i.name: i for i in model.graph.input}
    for name, shape in shapes.items():
        if name not in inputs:
            raise AnalysisError(f"--input-shape names '{name}', which is not a graph input "
                                f"(inputs: {', '.join(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise AnalysisError(f"--input-shape {name}: rank {len(shape)} given, input has rank {len(dims)}")
        for d, v in zip(dims, shape):
            d.Clear()
            d.dim_value = int(v)
    return model


@dataclass(frozen=True)
class StoredWeight:
    """How a constant weight is stored: initializer ``data`` read directly (``via`` None), through
    a ``Cast`` (fp16 weights) or through a ``DequantizeLinear`` (int8/uint8/int32 weights with
    ``scale``, ``zero_point``, per-axis ``axis`` or None for per-tensor, ``block_size`` 0 unless
    blocked); ``via`` is that node's index."""
    data: str
    via: int | None = None
    op: str = ""
    scale: str | None = None
    zero_point: str | None = None
    axis: int | None = None
    block_size: int = 0


@dataclass
class GraphView:
    """Shapes, constant values and use-def links of one (shape-inferred) model."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        try:
            inferred = shape_inference.infer_shapes(self.model, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise AnalysisError(f"shape inference failed: {str(exc).splitlines()[0]}") from None
        g = inferred.graph
        self.graph = self.model.graph
        self.nodes = list(self.graph.node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.shapes: dict[str, list[int | None] | None] = {}
        self.dtypes: dict[str, int] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.shapes[vi.name] = _dims(vi)
            self.dtypes[vi.name] = vi.type.tensor_type.elem_type
        for name, t in self.initializers.items():
            self.shapes[name] = list(t.dims)
            self.dtypes[name] = t.data_type
        self._fill_unknown_shapes()
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self._constant_nodes: dict[str, onnx.NodeProto] = {}
        for idx, node in enumerate(self.nodes):
            for k, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((idx, k))
            for name in node.output:
                if name:
                    self.producer[name] = idx
            if node.op_type == "Constant" and node.output:
                self._constant_nodes[node.output[0]] = node
        self.subgraph_reads = subgraph_reads(self.graph)
        self.graph_inputs = [i.name for i in self.graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in self.graph.output]
        self.opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self._const_cache: dict[str, np.ndarray | None] = {}

    # --- shapes inference leaves unknown ----------------------------------------------------
    def _unknown_tensors(self) -> list[str]:
        """Node outputs whose shape (batch axis aside) shape inference left unknown."""
        out = []
        for node in self.model.graph.node:
            for name in node.output:
                s = self.shapes.get(name)
                if name and (s is None or any(d is None for d in s[1:])):
                    out.append(name)
        return out

    def _static_inputs(self) -> bool | None:
        """None when an input has a dynamic dim besides axis 0; else whether axis 0 is symbolic."""
        symbolic = False
        inits = {t.name for t in self.model.graph.initializer}
        for vi in self.model.graph.input:
            if vi.name in inits:
                continue
            dims = _dims(vi)
            if dims is None or any(d is None for d in dims[1:]):
                return None
            symbolic |= bool(dims) and dims[0] is None
        return symbolic

    def _fill_unknown_shapes(self) -> None:
        """Where shape inference stops (a computed Split/Slice in a legacy export, say), one
        onnxruntime run at the static input shape (batch 1 for a symbolic batch, which stays
        symbolic here) reads the shapes of the tensors it left unknown."""
        names = self._unknown_tensors()
        symbolic = self._static_inputs() if names else None
        if not names or symbolic is None:
            return
        observed = _observed_shapes(self.model, names, self.dtypes)
        for name, (shape, dtype) in observed.items():
            known = self.shapes.get(name)
            if known is not None and len(known) == len(shape):
                shape = [k if k is not None else d for k, d in zip(known, shape)]
                if symbolic and shape:
                    shape[0] = known[0]
            elif symbolic and shape:
                shape[0] = None
            self.shapes[name] = list(shape)
            self.dtypes.setdefault(name, dtype)
            if not self.dtypes[name]:
                self.dtypes[name] = dtype

    # --- constants -------------------------------------------------------------------------
    def is_constant(self, name: str) -> bool:
        """True for initializers, Constant outputs and tensors folded from constants."""
        return self.constant(name) is not None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output, else None."""
        if not name:
            return None
        if name not in self._const_cache:
            value = None
            if name in self.initializers:
                value = numpy_helper.to_array(self.initializers[name])
            elif name in self._constant_nodes:
                node = self._constant_nodes[name]
                for a in node.attribute:
                    if a.name == "value":
                        value = numpy_helper.to_array(a.t)
                    elif a.name in ("value_float", "value_int"):
                        value = np.array(onnx.helper.get_attribute_value(a))
                    elif a.name in ("value_floats", "value_ints"):
                        value = np.array(onnx.helper.get_attribute_value(a))
            elif name in self.producer:
                value = self._weight_value(self.producer[name])
                if value is None:
                    value = self._fold(self.producer[name], name)
            self._const_cache[name] = value
        return self._const_cache[name]

    def stored_weight(self, name: str) -> StoredWeight | None:
        """Where constant ``name`` is stored (see :class:`StoredWeight`), or None when it is computed
        by anything else than one Cast or DequantizeLinear of an initializer."""
        if name in self.initializers or name in self._constant_nodes:
            return StoredWeight(name)
        idx = self.producer.get(name)
        if idx is None:
            return None
        node = self.nodes[idx]
        src = node.input[0] if node.input else ""
        if node.domain not in ("", "ai.onnx") or src not in self.initializers and src not in self._constant_nodes:
            return None
        if node.op_type == "Cast":
            return StoredWeight(src, idx, "Cast")
        if node.op_type != "DequantizeLinear" or self.constant(node.input[1]) is None:
            return None
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zp is not None and zp not in self.initializers and zp not in self._constant_nodes:
            return None
        scale = self.constant(node.input[1])
        rank = len(self.shape(src) or [])
        axis = int(attr(node, "axis", 1))
        per_axis = scale.ndim > 0 and scale.size > 1 or int(attr(node, "block_size", 0)) > 0
        return StoredWeight(src, idx, "DequantizeLinear", node.input[1], zp,
                            (axis + rank if axis < 0 else axis) if per_axis else None,
                            int(attr(node, "block_size", 0)))

    def _weight_value(self, idx: int) -> np.ndarray | None:
        """Cast and DequantizeLinear of a stored constant, evaluated here at any size (the
        reference evaluator has no DequantizeLinear before opset 19, and folding stops at
        65,536 elements)."""
        node = self.nodes[idx]
        w = self.stored_weight(node.output[0]) if node.output else None
        if w is None or w.via is None:
            return None
        data = self.constant(w.data)
        if data is None:
            return None
        if w.op == "Cast":
            try:
                return data.astype(onnx.helper.tensor_dtype_to_np_dtype(int(attr(node, "to"))))
            except Exception:
                return None
        return _dequantize(data, self.constant(w.scale), self.constant(w.zero_point) if w.zero_point else None,
                           w.axis, w.block_size, attr(node, "output_dtype", 0))

    _NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli", "If", "Loop", "Scan"}

    def _fold(self, idx: int, name: str) -> np.ndarray | None:
        """Evaluate a node whose inputs are all constant (exporters compute Pad and Reshape
        arguments this way); small integer/shape arithmetic only."""
        node = self.nodes[idx]
        if node.op_type in self._NOT_FOLDABLE or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Shape":
            s = self.shape(node.input[0])
            if s is None or any(d is None for d in s):
                return None
            start, end = attr(node, "start", 0), attr(node, "end", None)
            return np.array(s[start:end], dtype=np.int64)
        values = []
        for i in node.input:
            v = self.constant(i) if i else None
            if i and (v is None or v.size > 65536):
                return None
            values.append(v)
        from onnx.reference import ReferenceEvaluator
        try:
            sub = onnx.helper.make_graph(
                [node], "fold",
                [onnx.helper.make_tensor_value_info(f"in{k}", onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                 for k, v in enumerate(values) if v is not None], [])
            node_copy = onnx.NodeProto()
            node_copy.CopyFrom(node)
            del node_copy.input[:]
            node_copy.input.extend([f"in{k}" if v is not None else "" for k, v in enumerate(values)])
            sub = onnx.helper.make_graph([node_copy], "fold", sub.input,
                                         [onnx.helper.make_empty_tensor_value_info(o) for o in node.output])
            m = onnx.helper.make_model(sub, opset_imports=[onnx.helper.make_opsetid("", self.opset)])
            feeds = {f"in{k}": v for k, v in enumerate(values) if v is not None}
            outs = ReferenceEvaluator(m).run(None, feeds)
        except Exception:
            return None
        for o, v in zip(node.output, outs):
            self._const_cache[o] = np.asarray(v)
        return self._const_cache.get(name)

    # --- shapes ----------------------------------------------------------------------------
    def shape(self, name: str) -> list[int | None] | None:
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def label(self, idx: int) -> str:
        return node_label(self.nodes[idx], idx)


def _dequantize(data: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None,
                block_size: int, output_dtype: int) -> np.ndarray | None:
    """DequantizeLinear in numpy: ``(data - zero_point) * scale``, per tensor, per axis or blocked."""
    if data.dtype.kind not in "iu" or scale.dtype.kind != "f":
        return None
    zp = np.zeros_like(scale, dtype=np.int64) if zero_point is None else zero_point.astype(np.int64)
    if axis is not None:
        if block_size:
            scale, zp = (np.repeat(t, block_size, axis=axis).take(range(data.shape[axis]), axis=axis)
                         for t in (scale, zp))
        else:
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
    out_dtype = onnx.helper.tensor_dtype_to_np_dtype(output_dtype) if output_dtype else scale.dtype
    return ((data.astype(np.int64) - zp).astype(np.float32) * scale.astype(np.float32)).astype(out_dtype)


def _observed_shapes(model: onnx.ModelProto, names: list[str],
                     dtypes: dict[str, int]) -> dict[str, tuple[list[int], int]]:
    """{tensor: (shape, dtype)} from one onnxruntime run of ``model`` on seeded random inputs
    (batch 1) with ``names`` exposed as outputs; empty when the model does not run."""
    from onnxprune.runtime import make_session, random_inputs
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            if dtypes.get(name):
                probe.graph.output.append(onnx.helper.make_tensor_value_info(name, dtypes[name], None))
            else:
                probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    try:
        session = make_session(probe, quiet=True)
        feeds = random_inputs(model, seed=0, batch=1)
        outs = session.run(names, feeds)
    except Exception as exc:    # shapes stay unknown; the analysis says where they are needed
        log.debug("shape probe run failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return {}
    return {n: (list(np.shape(v)), onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype))
            for n, v in zip(names, outs)}


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's Python value, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
