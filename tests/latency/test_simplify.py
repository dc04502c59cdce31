"""rewrite.simplify keeps every output and the input/output names, on a torch-exported CIFAR ResNet-20."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.pipeline import PruneConfig, prune
from onnxprune.rewrite.simplify import simplify
from onnxprune.runtime import make_session, random_inputs
from tests.onnx_builders import small_resnet


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    x = random_inputs(a, seed=3, batch=4)
    for p, q in zip(make_session(a).run(None, x), make_session(b).run(None, x)):
        np.testing.assert_array_equal(p, q)


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    pytest.importorskip("torch")
    from models.export import export_model
    path = tmp_path_factory.mktemp("r20") / "resnet20.onnx"
    export_model("resnet20", path)
    return onnx.load(path)


def test_simplify_folds_the_option_a_shortcut_arguments(resnet20):
    out, report = simplify(resnet20)
    ops = [n.op_type for n in out.graph.node]
    assert report.folded >= 2 and report.removed_nodes > 0
    assert "ConstantOfShape" not in ops and "Transpose" not in ops
    assert [i.name for i in out.graph.input] == [i.name for i in resnet20.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in resnet20.graph.output]
    _same_outputs(resnet20, out)


def test_pruned_and_simplified_matches_the_masked_original(resnet20):
    result = prune(resnet20, PruneConfig(flops_reduction=0.4))      # verify=True: the masked oracle
    assert result.report.ok
    assert "ConstantOfShape" not in {n.op_type for n in result.model.graph.node}


def test_noop_pad_is_dropped_and_outputs_kept():
    model = small_resnet()
    g = model.graph
    first = g.node[0]
    # a Pad with zero pads in front of the first node, and a full Slice after it
    pads = onnx.numpy_helper.from_array(np.zeros(8, np.int64), "zero_pads")
    g.initializer.append(pads)
    src = first.input[0]
    g.node.insert(0, onnx.helper.make_node("Pad", [src, "zero_pads"], ["padded"], mode="constant"))
    first.input[0] = "padded"
    out, report = simplify(model)
    assert len(report.dropped) == 1 and "Pad" not in {n.op_type for n in out.graph.node}
    _same_outputs(model, out)
