"""The graph-edit primitives the BatchNormalization passes use: numbered names, initializers
added and dropped (with their IR < 4 graph-input entries), a node inserted after another that
takes over a tensor, node removal and metadata changes."""
from __future__ import annotations

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import PlanError
from onnxprune.graph.edit import ModelEdit
from onnxprune.runtime import make_session


def _chain(ir_version: int = 8, bias_input: bool = False) -> onnx.ModelProto:
    """x -> Add(b) -> y -> Relu -> z, with value_info for y."""
    b = numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "b")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    if bias_input:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [3]))
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"], name="add"),
         helper.make_node("Relu", ["y"], ["z"], name="y_1")], "g", inputs,
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])], [b],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = ir_version
    helper.set_model_props(m, {"first": "1", "second": "2"})
    return m


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model, quiet=True).run(None, {"x": x})[0]


def test_numbered_name_avoids_tensor_and_node_names():
    edit = ModelEdit(_chain())
    assert edit.numbered_name("y") == "y_2"          # tensor "y" and node "y_1" are taken
    assert edit.numbered_name("y") == "y_3"          # names handed out are taken too
    assert edit.numbered_name("new") == "new"


def test_node_after_takes_over_the_tensor():
    model = _chain()
    edit = ModelEdit(model)
    add = edit.nodes[0]
    y = add.outputs[0]
    neg = edit.node_after(add, "Neg", [y], "negate")
    edit.take_over(y, neg.outputs[0], old_renamed="y_pre")
    out = edit.to_proto()
    onnx.checker.check_model(out)
    assert [(n.name, list(n.input), list(n.output)) for n in out.graph.node] == \
        [("add", ["x", "b"], ["y_pre"]), ("negate", ["y_pre"], ["y"]), ("y_1", ["y"], ["z"])]
    assert [vi.name for vi in out.graph.value_info] == ["y"]     # the taken-over shape, no y_pre
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    np.testing.assert_array_equal(_run(out, x), np.maximum(-(x + [1, -2, 3]), 0))
    assert [n.name for n in model.graph.node] == ["add", "y_1"]   # the source is untouched


def test_take_over_a_graph_output_then_remove_the_node():
    edit = ModelEdit(_chain())
    relu = edit.nodes[1]
    edit.take_over(relu.outputs[0], edit.nodes[0].outputs[0])
    edit.remove_node(relu)
    out = edit.to_proto()
    onnx.checker.check_model(out)
    assert [(n.name, list(n.output)) for n in out.graph.node] == [("add", ["z"])]
    assert [o.name for o in out.graph.output] == ["z"]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(_run(out, x), x + [1, -2, 3])


def test_initializers_added_replaced_and_dropped_with_their_input_entries():
    edit = ModelEdit(_chain(ir_version=3, bias_input=True))
    c = edit.add_initializer(edit.numbered_name("c"), np.array([5.0, 6.0, 7.0]), graph_input=True)
    edit.replace_input(edit.nodes[0], 1, c)                  # a node, not only an index
    edit.remove_unused_initializers({"b", "c", "nothing"})
    edit.replace_initializer("c", np.array([1, 2, 3], np.float32), cast=False)
    out = edit.to_proto()
    assert [t.name for t in out.graph.initializer] == ["c"]
    assert numpy_helper.to_array(out.graph.initializer[0]).dtype == np.float32
    assert [i.name for i in out.graph.input] == ["x", "c"]
    assert out.graph.input[1].type.tensor_type.elem_type == TensorProto.FLOAT
    np.testing.assert_array_equal(_run(out, np.zeros((2, 3), np.float32)), [[1, 2, 3]] * 2)


def test_replace_initializer_casts_unless_told_not_to():
    edit = ModelEdit(_chain())
    edit.replace_initializer("b", np.array([1, 2, 3], np.float64))
    assert edit.initializer("b").dtype == np.float32
    edit.replace_initializer("b", np.array([1, 2, 3], np.float64), cast=False)
    assert edit.initializer("b").dtype == np.float64


def test_metadata_set_and_removed_in_place():
    edit = ModelEdit(_chain())
    edit.set_metadata("first", None)
    edit.set_metadata("second", "two")
    edit.set_metadata("third", "3")
    assert [(p.key, p.value) for p in edit.to_proto().metadata_props] == [("second", "two"), ("third", "3")]
    assert [(p.key, p.value) for p in ModelEdit(_chain()).to_proto().metadata_props] == \
        [("first", "1"), ("second", "2")]


def test_add_outputs_exposes_intermediate_tensors_and_inputs():
    model = _chain()
    edit = ModelEdit(model)
    edit.add_outputs(["y", "z", "x", "y"])
    out = edit.to_proto()
    assert [o.name for o in out.graph.output] == ["z", "y", "x"]
    assert "y" not in {vi.name for vi in out.graph.value_info}
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 4
    z, y, x_out = make_session(out, quiet=True).run(None, {"x": x})
    np.testing.assert_array_equal(y, x + [1, -2, 3])
    np.testing.assert_array_equal(z, np.maximum(y, 0))
    np.testing.assert_array_equal(x_out, x)
    with pytest.raises(PlanError, match="no tensor 'nope'"):
        ModelEdit(model).add_outputs(["nope"])
