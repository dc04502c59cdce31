"""The BatchNormalization passes without torch: re-insertion then folding gives back the very
bytes of the source, and folding leaves no trace of the tensors it removed."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.graph.batchnorm import REINSERTED_BN_KEY, fold_batchnorm, reinsert_batchnorm
from onnxprune.runtime import make_session


def _conv_relu(ir_version: int, bn: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    if bn:
        inits.update(s=rng.uniform(0.5, 2, 4).astype(np.float32), beta=rng.standard_normal(4).astype(np.float32),
                     m=rng.standard_normal(4).astype(np.float32), v=rng.uniform(0.5, 2, 4).astype(np.float32))
        nodes.append(helper.make_node("BatchNormalization", ["c", "s", "beta", "m", "v"], ["n"], name="bn"))
    nodes.append(helper.make_node("Relu", ["n" if bn else "c"], ["z"], name="relu"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])]
    if ir_version < 4:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inits.items()]
    value_info = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inits.items()] \
        if ir_version >= 4 else []     # value_info for initializers, as the dynamo exporter writes
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()], value_info=value_info)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = ir_version
    return m


@pytest.mark.parametrize("ir_version", [3, 8])
def test_reinsert_then_fold_gives_the_source_bytes_back(ir_version):
    model = _conv_relu(ir_version)
    with_bn = reinsert_batchnorm(model)
    assert [n.name for n in with_bn.graph.node] == ["conv", "conv__bn", "relu"]
    assert with_bn.graph.node[0].output[0] == "c__prebn" and with_bn.graph.node[1].output[0] == "c"
    assert len(with_bn.graph.input) == (1 if ir_version >= 4 else 3 + 4)
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 5)).astype(np.float32)
    ref = make_session(model, quiet=True).run(None, {"x": x})[0]
    np.testing.assert_array_equal(make_session(with_bn, quiet=True).run(None, {"x": x})[0], ref)
    back = fold_batchnorm(with_bn)
    # the metadata record aside, the folded model is the source, byte for byte
    assert [p.key for p in back.metadata_props] == [REINSERTED_BN_KEY]
    del back.metadata_props[:]
    assert back.SerializeToString() == model.SerializeToString()


def test_fold_drops_the_removed_tensors_and_their_value_info():
    model = _conv_relu(8, bn=True)
    folded = fold_batchnorm(model)
    names = {t.name for t in folded.graph.initializer}
    assert names == {"w", "b"}
    assert {vi.name for vi in folded.graph.value_info} <= names
    assert [(n.op_type, list(n.output)) for n in folded.graph.node] == [("Conv", ["n"]), ("Relu", ["z"])]
    x = np.random.default_rng(3).standard_normal((1, 3, 5, 5)).astype(np.float32)
    got = make_session(folded, quiet=True).run(None, {"x": x})[0]
    ref = make_session(model, quiet=True).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
