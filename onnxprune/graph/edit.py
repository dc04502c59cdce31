"""The one graph-edit layer: every change to a model (the rewrite, the oracle's masks, the coalition
masks, the symbolic batch of ``runtime.with_dynamic_batch``) goes through :class:`ModelEdit`.

Built on ``onnx_ir`` rather than onnx-graphsurgeon (onnx-graphsurgeon 0.6.1, checked): its import
turns initializers that are also listed as graph inputs (IR < 4 style exports such as the face
detectors in the test assets: 185 graph inputs became 1) into constants and drops them from the
graph inputs, so the written model would no longer have the inputs it was given; and its export
drops node doc strings, the model doc string and ``metadata_props``. ``onnx_ir`` round-trips names,
opset imports, metadata, doc strings, value_info and initializer inputs unchanged, and keeps the
node order, so nodes can be addressed by their original index.

Nodes are addressed by their index in the original model (the index the analysis records use).
The input model is never modified: :meth:`ModelEdit.to_proto` writes a new ``ModelProto``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.errors import PlanError
from onnxprune.graph.view import node_label

__all__ = ["ModelEdit", "splice_mul", "keep_io_declarations"]


class ModelEdit:
    """An editable copy of ``model``; ``view`` (a GraphView of the same model) supplies dtypes and
    ranks, else they come from onnx shape inference on first use."""

    def __init__(self, model: onnx.ModelProto, view=None) -> None:
        self._source = model
        self.model = ir.serde.deserialize_model(model)
        self.graph = self.model.graph
        self.nodes: list[ir.Node] = list(self.graph)          # original order
        self._view = view
        self._types: dict[str, tuple[int, int | None]] | None = None
        self._names = {v.name for n in self.nodes for v in (*n.inputs, *n.outputs) if v is not None}
        self._names |= {v.name for v in self.graph.inputs} | set(self.graph.initializers)
        self._initializer_inputs = any(v.is_initializer() for v in self.graph.inputs)
        self._declared = {vi.name for vi in model.graph.value_info}     # value_info of the source
        self._node_names = {n.name for n in self.nodes if n.name}
        self._metadata: dict[str, str | None] = {}       # changes to the source's metadata_props

    # --- types ----------------------------------------------------------------------------
    def _type_map(self) -> dict[str, tuple[int, int | None]]:
        if self._types is None:
            if self._view is None:      # shapes inference leaves unknown come from one run
                from onnxprune.graph.view import GraphView
                self._view = GraphView(self._source)
            v = self._view
            self._types = {n: (v.dtypes.get(n, 0), None if s is None else len(s)) for n, s in v.shapes.items()}
        return self._types

    def dtype(self, tensor: str) -> int:
        """The ONNX element type of ``tensor`` (FLOAT when unknown)."""
        return self._type_map().get(tensor, (0, None))[0] or onnx.TensorProto.FLOAT

    def rank(self, tensor: str) -> int | None:
        return self._type_map().get(tensor, (0, None))[1]

    # --- names and values -----------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        """``base``, or ``base`` with underscores appended, unused in the graph."""
        name = base
        while name in self._names:
            name += "_"
        self._names.add(name)
        return name

    def numbered_name(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``..., unused by any tensor or node of the graph."""
        name, i = base, 1
        while name in self._names or name in self._node_names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def constant(self, array: np.ndarray, name: str) -> ir.Value:
        """A new initializer holding ``array`` (its dtype kept), under a fresh name."""
        value = ir.Value(name=self.fresh_name(name), const_value=ir.tensor(np.ascontiguousarray(array)))
        self.graph.register_initializer(value)
        return value

    def add_initializer(self, name: str, array: np.ndarray, graph_input: bool = False) -> ir.Value:
        """A new initializer called exactly ``name`` (from :meth:`numbered_name` or
        :meth:`fresh_name`), also listed as a graph input when ``graph_input`` (IR < 4 style)."""
        value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
        self.graph.register_initializer(value)
        if graph_input:
            value.type, value.shape = ir.TensorType(value.const_value.dtype), ir.Shape(array.shape)
            self.graph.inputs.append(value)
        return value

    def value(self, name: str) -> ir.Value:
        """The tensor called ``name``: a graph input, an initializer or a node output."""
        for v in self.graph.inputs:
            if v.name == name:
                return v
        if name in self.graph.initializers:
            return self.graph.initializers[name]
        for node in self.graph:
            for v in node.outputs:
                if v.name == name:
                    return v
        raise PlanError(f"the model has no tensor '{name}'")

    def add_outputs(self, names: list[str]) -> None:
        """Make the tensors ``names`` graph outputs too (after the existing ones), declared without
        dtype or shape as intermediate tensors (onnxruntime finds them)."""
        present = {v.name for v in self.graph.outputs}
        wanted = [n for n in dict.fromkeys(names) if n not in present]
        produced = {v.name: v for node in self.graph for v in node.outputs}
        for name in wanted:
            value = produced.get(name) or self.value(name)
            if value.producer() is not None:
                value.type, value.shape = None, None
            self.graph.outputs.append(value)

    def add_input(self, name: str, elem_type: int, shape: list) -> ir.Value:
        value = ir.Value(name=self.fresh_name(name), type=ir.TensorType(ir.DataType(elem_type)),
                         shape=ir.Shape(shape))
        self.graph.inputs.append(value)
        return value

    def node_before(self, index: int, op_type: str, inputs: list[ir.Value], name: str,
                    elem_type: int | None = None, **attributes: Any) -> ir.Value:
        """Insert ``op_type(inputs)`` right before node ``index``; its output is returned."""
        node = ir.Node("", op_type, inputs, ir.convenience.convert_attributes(attributes), num_outputs=1)
        out = node.outputs[0]
        out.name = self.fresh_name(name)
        if elem_type is not None:
            out.type = ir.TensorType(ir.DataType(elem_type))
        self.graph.insert_before(self.nodes[index], node)
        return out

    def node_after(self, anchor: ir.Node, op_type: str, inputs: list[ir.Value | None], name: str,
                   **attributes: Any) -> ir.Node:
        """Insert node ``name`` = ``op_type(inputs)`` (one output, not named yet) right after
        ``anchor``; attributes are written in the order given."""
        node = ir.Node("", op_type, inputs, ir.convenience.convert_attributes(attributes), num_outputs=1,
                       name=name)
        self._node_names.add(name)
        self.graph.insert_after(anchor, node)
        return node

    def take_over(self, old: ir.Value, new: ir.Value, old_renamed: str | None = None) -> None:
        """``new`` takes the place of ``old``: its readers (but ``new``'s own producer), its
        graph-output slots, its name, dtype and shape. ``old`` is renamed ``old_renamed`` and
        forgets its dtype and shape (its value_info is not written)."""
        producer = new.producer()
        for user, k in list(old.uses()):
            if user is not producer:
                user.replace_input_with(k, new)
        for i, out in enumerate(self.graph.outputs):
            if out is old:
                self.graph.outputs[i] = new
        name, dtype, shape = old.name, old.type, old.shape
        old.name, old.type, old.shape = old_renamed, None, None
        new.name, new.type, new.shape = name, dtype, shape

    def remove_node(self, node: ir.Node) -> None:
        """Remove ``node``, whose outputs nobody reads any more."""
        self.graph.remove(node, safe=True)

    def remove_unused_initializers(self, names: set[str]) -> None:
        """Drop the initializers of ``names`` nobody reads (and their graph-input entries)."""
        for name in names:
            value = self.graph.initializers.get(name)
            if value is None or value.uses() or value.is_graph_output():
                continue
            self.graph.initializers.pop(name)
            if value in self.graph.inputs:
                self.graph.inputs.remove(value)

    def input_value(self, index: int, k: int) -> ir.Value:
        node = self.nodes[index]
        if k >= len(node.inputs) or node.inputs[k] is None:
            raise PlanError(f"node {node_label(node, index)} has no input {k}")
        return node.inputs[k]

    # --- edits the rewrite needs ----------------------------------------------------------
    def set_attribute(self, index: int, name: str, value: Any) -> None:
        self.nodes[index].attributes[name] = ir.convenience.convert_attribute(name, value)

    def remove_attribute(self, index: int, name: str) -> None:
        self.nodes[index].attributes.pop(name, None)

    def replace_input(self, index: int | ir.Node, k: int, value: ir.Value) -> None:
        """Node ``index`` (or the node itself) reads ``value`` at input ``k`` (the input list
        grows when needed)."""
        node = index if isinstance(index, ir.Node) else self.nodes[index]
        if k >= len(node.inputs):
            node.resize_inputs(k + 1)
        node.replace_input_with(k, value)

    def replace_initializer(self, name: str, array: np.ndarray, cast: bool = True) -> None:
        """Give initializer ``name`` a new value in its stored dtype (``cast=False``: in the
        array's dtype)."""
        value = self.graph.initializers[name]
        if cast:
            array = array.astype(value.const_value.dtype.numpy(), copy=False)
        value.const_value = ir.tensor(np.ascontiguousarray(array), name=name)
        if value.shape is not None:     # declared as a graph input or in value_info
            value.shape = ir.Shape(array.shape)
        if value.type is not None and not cast:
            value.type = ir.TensorType(value.const_value.dtype)

    def set_metadata(self, key: str, value: str | None) -> None:
        """Set (``None``: remove) the model metadata entry ``key``."""
        self._metadata[key] = value

    def cleanup(self, dead_ops: set[str]) -> None:
        """Drop nodes of ``dead_ops`` whose outputs nobody reads (repeatedly) and unused
        initializers; forget the value_info of intermediate tensors and initializers (shape
        inference writes it again); initializers that were graph inputs (IR < 4) stay graph
        inputs, with their new shapes."""
        in_subgraphs = self._subgraph_reads()
        while True:
            dead = [n for n in self.graph if n.op_type in dead_ops and n.outputs
                    and not any(o.uses() or o.is_graph_output() or o.name in in_subgraphs for o in n.outputs)]
            if not dead:
                break
            self.graph.remove(dead, safe=True)
        for name, v in list(self.graph.initializers.items()):
            if not v.uses() and not v.is_graph_output() and name not in in_subgraphs:
                self.graph.initializers.pop(name)
        if self._initializer_inputs:
            keep = [v for v in self.graph.inputs if not v.is_initializer() and v.name not in self._dropped_inputs()]
            self.graph.inputs.clear()
            self.graph.inputs.extend(keep + list(self.graph.initializers.values()))
            for v in self.graph.initializers.values():
                v.type, v.shape = ir.TensorType(v.const_value.dtype), ir.Shape(v.const_value.shape)
        self.forget_shapes()

    def _subgraph_reads(self) -> set[str]:
        """Names the If/Loop/Scan bodies of the edited graph read from the top level."""
        reads: set[str] = set()
        defined: set[str] = set()
        for node in ir.traversal.RecursiveGraphIterator(self.graph):
            if node.graph is self.graph:
                continue
            reads.update(v.name for v in node.inputs if v is not None)
            defined.update(v.name for v in node.outputs)
            defined.update(v.name for v in node.graph.inputs)
            defined.update(node.graph.initializers)
            reads.update(v.name for v in node.graph.outputs)
        return reads - defined

    def forget_shapes(self) -> None:
        """Drop the value_info of intermediate tensors (shape inference writes it again)."""
        for n in self.graph:
            for o in n.outputs:
                if not o.is_graph_output():
                    o.shape, o.type = None, None
        self._declared = set()

    def _dropped_inputs(self) -> set[str]:
        """Inputs that were initializers of the source model and are no longer initializers."""
        return {t.name for t in self._source.graph.initializer} - set(self.graph.initializers)

    def set_batch_dim(self, param: str = "batch") -> None:
        """Make axis 0 of every graph input (initializers aside) and output symbolic."""
        for v in [v for v in self.graph.inputs if not v.is_initializer()] + list(self.graph.outputs):
            if v.shape is not None and len(v.shape):
                v.shape = ir.Shape([param, *list(v.shape)[1:]])

    def initializer(self, name: str) -> np.ndarray | None:
        """The value of initializer ``name``, or None."""
        v = self.graph.initializers.get(name)
        return None if v is None else v.const_value.numpy()

    def to_proto(self) -> onnx.ModelProto:
        """The edited model; value_info is written only for tensors that had it or were given it."""
        proto = ir.serde.serialize_model(self.model)
        # opset imports and model metadata exactly as the source wrote them (onnx_ir spells the
        # default domain "" out and sorts metadata keys)
        del proto.opset_import[:]
        proto.opset_import.extend(self._source.opset_import)
        del proto.metadata_props[:]
        if not self._metadata:
            proto.metadata_props.extend(self._source.metadata_props)
        else:
            props = {p.key: p.value for p in self._source.metadata_props}
            props.update(self._metadata)
            proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v)
                                        for k, v in props.items() if v is not None)
        keep = [vi for vi in proto.graph.value_info
                if vi.name not in self.graph.initializers or vi.name in self._declared]
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(keep)
        return proto


def splice_mul(edit: ModelEdit, index: int, k: int, factor: np.ndarray | ir.Value, name: str = "__onnxprune_mask") -> ir.Value:
    """Multiply input ``k`` of node ``index`` by ``factor`` (broadcast) before the node reads it.

    An array factor becomes an initializer in the tensor's dtype; a value factor of another dtype is
    cast to it first. Returns the product the node now reads."""
    tensor = edit.input_value(index, k)
    dtype = edit.dtype(tensor.name)
    if isinstance(factor, np.ndarray):
        factor = edit.constant(factor.astype(onnx.helper.tensor_dtype_to_np_dtype(dtype)), name)
    elif factor.dtype is not None and factor.dtype != ir.DataType(dtype):
        factor = edit.node_before(index, "Cast", [factor], name + "_cast", dtype, to=int(dtype))
    product = edit.node_before(index, "Mul", [tensor, factor], name + "ed", dtype)
    edit.replace_input(index, k, product)
    return product


def _io_values(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    inits = {t.name for t in graph.initializer}
    return {vi.name: vi for vi in list(graph.input) + list(graph.output) if vi.name not in inits}


def keep_io_declarations(model: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the graph inputs and outputs (initializers aside) declared exactly as in
    ``source``: symbolic dims stay symbolic, even where shape inference or an ``--input-shape``
    made them concrete. Inferred value_info is recomputed from the restored inputs."""
    declared = _io_values(source.graph)
    mine = _io_values(model.graph)
    if all(n not in declared or vi.type == declared[n].type for n, vi in mine.items()):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)

    def restore() -> None:
        for name, vi in _io_values(out.graph).items():
            if name in declared:
                vi.type.CopyFrom(declared[name].type)

    restore()
    kept = {vi.name for vi in source.graph.value_info}
    values = [vi for vi in out.graph.value_info if vi.name in kept]
    del out.graph.value_info[:]
    out.graph.value_info.extend(values)
    try:
        out = onnx.shape_inference.infer_shapes(out, strict_mode=False)
    except Exception:       # the declarations alone are still right
        pass
    restore()
    return out
