"""Tensors read inside If/Loop/Scan bodies: their groups are blocked, their initializers kept."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis import analyze
from onnxprune.graph.edit import ModelEdit
from onnxprune.pipeline import PruneConfig, prune
from onnxprune.runtime import make_session


def _w(rng, *shape):
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def if_model() -> onnx.ModelProto:
    """x -> conv a (8) -> relu -> t; If(cond): then conv b(t), else conv c(t); plus a plain
    prunable chain x -> conv d (6) -> relu -> conv e -> y2. Weights b, c are top-level initializers."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_w(rng, *s), n) for n, s in
             [("wa", (8, 3, 3, 3)), ("wb", (4, 8, 1, 1)), ("wc", (4, 8, 3, 3)), ("wd", (6, 3, 3, 3)), ("we", (4, 6, 3, 3))]]
    out_vi = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    then_g = helper.make_graph([helper.make_node("Conv", ["t", "wb"], ["y_then"], name="branch_conv_b")],
                               "then", [], [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1, 4, 8, 8])])
    else_g = helper.make_graph([helper.make_node("Conv", ["t", "wc"], ["y_else"], name="branch_conv_c", pads=[1, 1, 1, 1])],
                               "else", [], [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [1, 4, 8, 8])])
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["t"], name="relu_a"),
             helper.make_node("If", ["cond"], ["y"], name="the_if", then_branch=then_g, else_branch=else_g),
             helper.make_node("Conv", ["x", "wd"], ["d"], name="conv_d", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["d"], ["dr"], name="relu_d"),
             helper.make_node("Conv", ["dr", "we"], ["y2"], name="conv_e", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "ifnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          out_vi + [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def test_group_read_in_subgraph_is_blocked_with_the_node_named():
    a = analyze(if_model())
    by_producer = {g.producers[0]: g for g in a.groups}
    blocked = by_producer["conv_a"]
    assert not blocked.prunable
    assert any("subgraph of If" in r and "the_if" in r for r in blocked.skip_reasons), blocked.skip_reasons
    assert by_producer["conv_d"].prunable


@pytest.mark.parametrize("verify", [True, False])
def test_prune_keeps_branch_initializers_and_runs(verify):
    model = if_model()
    result = prune(model, PruneConfig(ratio=0.5, verify=verify))
    names = {t.name for t in result.model.graph.initializer}
    assert {"wb", "wc"} <= names
    onnx.checker.check_model(result.model, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for cond in (True, False):
        ref = make_session(model).run(None, {"x": x, "cond": np.array(cond)})
        got = make_session(result.model).run(None, {"x": x, "cond": np.array(cond)})
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)   # branch group untouched
        assert got[1].shape == ref[1].shape


def test_cleanup_keeps_initializers_read_only_in_subgraphs():
    edit = ModelEdit(if_model())
    edit.cleanup(set())
    assert {"wb", "wc"} <= set(edit.graph.initializers)
