"""The masked-original oracle: it must catch a wrong rewrite, and it must work in the model's dtype
(fp16 models get fp16 masks); the coalition masks of network Shapley are the same masks."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune.analysis import analyze
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.runtime import make_session, random_inputs
from onnxprune.verify.oracle import RTOL, compare, masked_model, output_diff
from onnxprune.verify.random_plans import prune_and_check, random_plan

from onnx_builders import conv_chain, small_resnet


def init(model, name) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def node_named(model, name) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with float16 weights, inputs and outputs."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del m.graph.value_info[:]
    return m


# ------------------------------------------------------------------------------------------
# the oracle catches wrong rewrites
# ------------------------------------------------------------------------------------------
def _corrupted(model, plan_seed=50):
    an = analyze(model)
    plan = random_plan(an, 0.5, plan_seed)
    pruned = apply_plan(an, plan)
    assert compare(model, pruned, plan, rtol=RTOL).ok
    return an, plan, pruned


def _replace(model, name, value):
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def test_verify_detects_a_corrupted_weight():
    model = conv_chain()
    _, plan, pruned = _corrupted(model)
    name = node_named(pruned, "Conv_2").input[1]
    w = init(pruned, name).copy()
    w[1, 2, 1, 1] += 0.05
    _replace(pruned, name, w)
    report = compare(model, pruned, plan, rtol=RTOL)
    assert not report.ok and report.outputs[0].max_abs > 0


def test_verify_detects_swapped_kept_channels():
    model = conv_chain()
    _, plan, pruned = _corrupted(model)
    for node, k in (("Conv_1", 1), ("Conv_1", 2)):     # swap filters 0 and 1 of the producer only
        name = node_named(pruned, node).input[k]
        w = init(pruned, name).copy()
        w[[0, 1]] = w[[1, 0]]
        _replace(pruned, name, w)
    assert not compare(model, pruned, plan, rtol=RTOL).ok


def test_verify_detects_a_plan_that_does_not_match_the_rewrite():
    model = conv_chain()
    an, plan, pruned = _corrupted(model)
    other = random_plan(an, 0.5, 51)
    assert other.groups[0].kept != plan.groups[0].kept
    assert not compare(model, pruned, other, rtol=RTOL).ok


def test_output_diff_is_the_one_tolerance_rule():
    ref = np.array([2.0, -4.0])
    assert output_diff("y", ref, ref + 3e-5).ok                       # 3e-5 ≤ 1e-6 + 1e-5·4
    assert not output_diff("y", ref, ref + 5e-5).ok
    assert not output_diff("y", ref, ref[:1]).ok                      # shape mismatch


# ------------------------------------------------------------------------------------------
# fp16 models
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [conv_chain, small_resnet])
def test_fp16_model_prunes_and_verifies(make):
    model = to_fp16(make())
    pruned, plan, report = prune_and_check(model, keep=0.5, seed=3)
    assert report.ok
    assert {t.data_type for t in pruned.graph.initializer if t.name.startswith(("w", "b"))} == {TensorProto.FLOAT16}
    masked = masked_model(model, plan)
    masks = [t for t in masked.graph.initializer if t.name.startswith("__onnxprune_mask")]
    assert masks and all(t.data_type == TensorProto.FLOAT16 for t in masks)


def test_coalition_masks_work_on_fp16_models():
    """Coalition model = masked original for the same kept set, also when the model is fp16."""
    from onnxprune.scoring.coalitions import MASK_INPUT, coalition_model
    model = to_fp16(small_resnet())
    a = analyze(model)
    g = a.prunable[0]
    keep = np.sort(np.random.default_rng(3).choice(g.channels, g.channels // 2, replace=False))
    plan = Plan.build(a, {g.id: keep})
    x = random_inputs(model, seed=1)
    name = model.graph.input[0].name
    mask = np.zeros((1, g.channels), np.float32)
    mask[:, keep] = 1
    got = make_session(coalition_model(model, a, g.id)).run(None, {name: x[name], MASK_INPUT: mask})[0]
    want = make_session(masked_model(model, plan)).run(None, x)[0]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)


def test_tolerance_follows_the_output_dtype():
    """fp16 outputs are compared at fp16 precision (2**-10 relative); fp32 ones at 1e-5."""
    from onnxprune.verify.oracle import output_diff
    ref = np.array([1.0, -2.0, 4.0])
    one_fp16_step = ref * (1 + 2.0 ** -11)
    assert output_diff("y", ref.astype(np.float16), one_fp16_step.astype(np.float16)).ok
    assert not output_diff("y", ref.astype(np.float32), (ref * (1 + 1e-3)).astype(np.float32)).ok
    assert not output_diff("y", ref.astype(np.float16), (ref * 1.01).astype(np.float16)).ok
