"""The graph-edit layer: splice_mul, initializer and attribute edits, cleanup, and what a round
trip through it keeps (names, opset, metadata, doc strings, value_info, initializer inputs)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.graph.edit import ModelEdit, splice_mul
from onnxprune.runtime import make_session

from onnx_builders import Net, conv_chain


def _relu_chain(dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r1", doc_string="first"),
         helper.make_node("Relu", ["y"], ["z"], name="r2")], "g",
        [helper.make_tensor_value_info("x", dtype, [2, 3, 2])],
        [helper.make_tensor_value_info("z", dtype, [2, 3, 2])],
        value_info=[helper.make_tensor_value_info("y", dtype, [2, 3, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], doc_string="doc", ir_version=8)
    helper.set_model_props(m, {"author": "tests"})
    return m


def test_round_trip_keeps_what_the_rewrite_must_keep():
    model = conv_chain()
    model.doc_string = "chain"
    helper.set_model_props(model, {"k": "v"})
    model.graph.node[0].doc_string = "the first conv"
    out = ModelEdit(model).to_proto()
    assert [(n.name, n.op_type, list(n.input), list(n.output), n.doc_string) for n in out.graph.node] == \
           [(n.name, n.op_type, list(n.input), list(n.output), n.doc_string) for n in model.graph.node]
    assert out.opset_import == model.opset_import and out.ir_version == model.ir_version
    assert [(p.key, p.value) for p in out.metadata_props] == [("k", "v")] and out.doc_string == "chain"
    assert [t.name for t in out.graph.initializer] == [t.name for t in model.graph.initializer]
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]


def test_round_trip_keeps_initializers_listed_as_inputs():
    n = Net(opset=8)
    n.head(n.relu(n.conv(n.input("x", [1, 3, 6, 6]), 3, 4)), 4)
    model = n.model(ir_version=3, initializers_as_inputs=True)
    out = ModelEdit(model).to_proto()
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]
    assert out.ir_version == 3


def test_splice_mul_masks_the_consumer_input_in_its_dtype():
    for dtype, np_dtype in ((TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)):
        model = _relu_chain(dtype)
        before = model.SerializeToString()
        edit = ModelEdit(model)
        mask = np.array([1.0, 0.0, 1.0]).reshape(3, 1)                 # float64 on purpose
        product = splice_mul(edit, 1, 0, mask)
        out = edit.to_proto()
        assert model.SerializeToString() == before                      # the input is untouched
        assert [n.op_type for n in out.graph.node] == ["Relu", "Mul", "Relu"]
        assert out.graph.node[2].input[0] == product.name
        stored = next(t for t in out.graph.initializer if t.name == out.graph.node[1].input[1])
        assert stored.data_type == dtype
        x = np.random.default_rng(0).standard_normal((2, 3, 2)).astype(np_dtype)
        z = make_session(out).run(None, {"x": x})[0]
        np.testing.assert_array_equal(z, np.maximum(x, 0) * mask.astype(np_dtype))
        assert [vi.name for vi in out.graph.value_info][:1] == ["y"]     # value_info kept


def test_replace_initializer_keeps_its_dtype_and_cleanup_drops_dead_nodes():
    n = Net()
    x = n.input("x", [1, 2])
    w = n.const(np.ones((2, 2), np.float32), "w")
    shape = n.ints([1, 2])
    unused = n.node("Reshape", [w, shape])                              # nobody reads it
    n.output(n.node("MatMul", [x, w]))
    model = n.model()
    edit = ModelEdit(model)
    edit.replace_initializer(w, np.full((2, 1), 3.0))                   # float64 in, float32 stored
    edit.cleanup({"Reshape"})
    out = edit.to_proto()
    assert [nd.op_type for nd in out.graph.node] == ["MatMul"] and unused not in {o for nd in out.graph.node for o in nd.output}
    stored = next(t for t in out.graph.initializer if t.name == w)
    assert stored.data_type == TensorProto.FLOAT and list(stored.dims) == [2, 1]
    assert numpy_helper.to_array(stored).tolist() == [[3.0], [3.0]]
    assert shape not in {t.name for t in out.graph.initializer}


def test_external_data_models_are_rewritten_self_contained(tmp_path):
    from onnxprune.analysis import analyze
    from onnxprune.model_io import load_model
    from onnxprune.rewrite.apply import apply_plan
    from onnxprune.verify.oracle import compare
    from onnxprune.verify.random_plans import random_plan
    model = conv_chain()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    loaded = load_model(tmp_path / "m.onnx")
    an = analyze(loaded)
    plan = random_plan(an, 0.5, 5)
    pruned = apply_plan(an, plan)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in pruned.graph.initializer)
    assert compare(loaded, pruned, plan).ok
