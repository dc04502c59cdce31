"""Patterns a peer pruner (onnxsim's) handles: each is pruned and verified against the masked
original when that is exact, or refused with its reason when it is not."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from onnxprune.analysis import analyze
from onnxprune.pipeline import PruneConfig, prune
from onnxprune.runtime import make_session
from onnxprune.verify.oracle import compare
from tests.onnx_builders import Net


def _prunes_and_verifies(model, producers: list[str]) -> None:
    """The group made by ``producers`` is prunable, a 50 % plan on it verifies on two seeds."""
    a = analyze(model)
    group = next(g for g in a.groups if sorted(g.producers) == sorted(producers))
    assert group.prunable, group.skip_reasons
    result = prune(model, PruneConfig(ratio=0.5, seed=0))
    kept = next(g for g in result.plan.groups if g.id == group.id).kept
    assert len(kept) == group.channels // 2
    for seed in (0, 1):
        assert compare(model, result.model, result.plan, seed=seed).ok
    return result


def _reasons(model) -> list[str]:
    return [r for g in analyze(model).groups for r in g.skip_reasons]


def _head(n: Net, y: str, c: int) -> None:
    n.output(n.gemm(n.flatten(n.gap(y)), c, 5), [1, 5])


# --- CBAM channel gate: GAP and GMP -> shared MLP -> Sigmoid -> Expand -> Mul -------------
@pytest.mark.parametrize("target", ["constant", "shape_of"])
def test_cbam_channel_gate_with_expand_prunes(target):
    n = Net(opset=13, seed=1)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 16, name="c1"))
    w1, w2 = n.weight([4, 16, 1, 1]), n.weight([16, 4, 1, 1])   # the MLP is shared by both pools

    def mlp(t):
        return n.node("Conv", [n.relu(n.node("Conv", [t, w1], kernel_shape=[1, 1])), w2], kernel_shape=[1, 1])
    gate = n.node("Sigmoid", [n.node("Add", [mlp(n.gap(y)), mlp(n.node("GlobalMaxPool", [y]))])])
    shape = n.ints([1, 16, 8, 8]) if target == "constant" else n.node("Shape", [y])
    y = n.node("Mul", [y, n.node("Expand", [gate, shape])])
    _head(n, n.relu(n.conv(y, 16, 16, name="c2")), 16)
    result = _prunes_and_verifies(n.model(), ["c1", "Conv_3", "Conv_5"])
    expanded = make_session(result.model).run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert expanded[0].shape == (1, 5)


def test_expand_that_widens_the_channels_is_refused():
    """A one-channel map expanded to 16 channels before a Mul: the copies are not tracked, so the
    other operand's group is refused, naming the Expand (a plain broadcasting Mul is accepted)."""
    n = Net(opset=13, seed=1)
    x = n.input("x", [1, 3, 8, 8])
    g = n.node("Sigmoid", [n.conv(x, 3, 1, name="c1")])
    y = n.relu(n.conv(x, 3, 16, name="c2"))
    y = n.node("Mul", [y, n.node("Expand", [g, n.ints([1, 16, 8, 8])], name="widen")])
    _head(n, y, 16)
    c2 = next(g for g in analyze(n.model()).groups if g.producers == ["c2"])
    assert not c2.prunable
    assert any("Expand" in r or "widen" in r for r in c2.skip_reasons), c2.skip_reasons


# --- GroupNorm: native and decomposed, both refused with the reason ------------------------
def test_native_group_normalization_is_refused_with_reason():
    n = Net(opset=21, seed=2)
    x = n.input("x", [1, 3, 8, 8])
    y = n.conv(x, 3, 16, name="c1")
    y = n.node("GroupNormalization", [y, n.positive([16]), n.const(np.zeros(16, np.float32))], num_groups=4)
    _head(n, n.relu(n.conv(n.relu(y), 16, 16, name="c2")), 16)
    a = analyze(n.model())
    c1 = next(g for g in a.groups if g.producers == ["c1"])
    assert not c1.prunable
    assert any("GroupNormalization (4 groups)" in r and "whole groups" in r for r in c1.skip_reasons)


def test_decomposed_group_norm_is_refused_with_reason():
    n = Net(opset=13, seed=2)
    x = n.input("x", [1, 3, 8, 8])
    y = n.conv(x, 3, 16, name="c1")
    r = n.node("Reshape", [y, n.ints([1, 4, -1])])
    r = n.node("InstanceNormalization", [r, n.positive([4]), n.const(np.zeros(4, np.float32))])
    y = n.node("Reshape", [r, n.ints([1, 16, 8, 8])])
    y = n.node("Add", [n.node("Mul", [y, n.positive([16, 1, 1])]), n.const(np.zeros((16, 1, 1), np.float32))])
    _head(n, n.relu(n.conv(n.relu(y), 16, 16, name="c2")), 16)
    a = analyze(n.model())
    c1 = next(g for g in a.groups if g.producers == ["c1"])
    assert c1.skip_reasons == ["Reshape [1, 16, 8, 8]→[1, 4, 256] mixes the channel axis at Reshape_1"]
    assert next(g for g in a.groups if g.producers == ["c2"]).prunable


# --- Concat feeding a grouped conv aligned with the branches: refused, its output prunes ----
def test_concat_into_branch_aligned_grouped_conv():
    n = Net(opset=13, seed=3)
    x = n.input("x", [1, 3, 8, 8])
    a, b = n.relu(n.conv(x, 3, 8, name="a")), n.relu(n.conv(x, 3, 8, name="b"))
    y = n.relu(n.conv(n.node("Concat", [a, b], axis=1), 16, 16, group=2, name="gc"))
    _head(n, y, 16)
    model = n.model()
    an = analyze(model)
    for name in ("a", "b"):
        g = next(g for g in an.groups if g.producers == [name])
        assert g.skip_reasons == ["grouped Conv gc reads 2 groups (a Concat): its conv groups would need "
                                  "equal kept counts across them, which is not supported"]
    gc = next(g for g in an.groups if g.producers == ["gc"])
    assert gc.prunable and gc.equal_blocks == 2
    _prunes_and_verifies(model, ["gc"])


# --- view(N, -1) head with a dynamic batch ------------------------------------------------
@pytest.mark.parametrize("style", ["gather", "shape_slice"])
def test_view_n_minus_one_with_dynamic_batch_prunes(style):
    n = Net(opset=15, seed=4)
    x = n.input("x", ["N", 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8, name="c1"))
    if style == "gather":
        batch = n.node("Unsqueeze", [n.node("Gather", [n.node("Shape", [y]), n.const(np.array(0, np.int64))],
                                            axis=0), n.ints([0])])
    else:
        batch = n.node("Shape", [y], start=0, end=1)
    f = n.node("Reshape", [y, n.node("Concat", [batch, n.ints([-1])], axis=0)])
    n.output(n.gemm(f, 8 * 16, 5), ["N", 5])
    result = _prunes_and_verifies(n.model(), ["c1"])
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    out = make_session(result.model).run(None, {"x": np.ones((3, 3, 4, 4), np.float32)})[0]
    assert out.shape == (3, 5)


def test_computed_target_naming_the_channels_is_refused():
    """view(N, C, -1) with a dynamic batch: the computed target holds the channel count."""
    n = Net(opset=15, seed=4)
    x = n.input("x", ["N", 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8, name="c1"))
    t = n.node("Concat", [n.node("Shape", [y], start=0, end=1), n.ints([8, -1])], axis=0)
    y = n.node("ReduceMean", [n.node("Reshape", [y, t])], axes=[2], keepdims=0)
    n.output(n.gemm(y, 8, 5), ["N", 5])
    reasons = _reasons(n.model())
    assert any(r.startswith("Reshape with a computed target shape that names the channel count") for r in reasons)


# --- fused gate/up MatMul -> Split -> gated FFN -------------------------------------------
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_fused_gate_up_split_gated_ffn_prunes(act):
    n = Net(opset=20, seed=5)
    x = n.input("x", [1, 6, 16])
    h = n.node("MatMul", [x, n.weight([16, 64], fan_in=16)], name="gate_up")
    g, u = n.node("Split", [h, n.ints([32, 32])], outputs=2, axis=-1)
    a = n.node("Mul", [g, n.node("Sigmoid", [g])]) if act == "silu" else n.node("Gelu", [g])
    y = n.node("MatMul", [n.node("Mul", [a, u]), n.weight([32, 16], fan_in=32)], name="down")
    n.output(n.node("Add", [x, y]), [1, 6, 16])
    model = n.model()
    group = next(g for g in analyze(model).groups if g.producers == ["gate_up"])
    assert group.channels == 32                     # hidden units, each owning a gate and an up column
    result = _prunes_and_verifies(model, ["gate_up"])
    w = {t.name: t for t in result.model.graph.initializer}
    gate_up = next(nd for nd in result.model.graph.node if nd.name == "gate_up")
    assert list(w[gate_up.input[1]].dims) == [16, 32]


def test_split_halves_not_gated_together_stay_separate():
    """MatMul -> Split whose halves are not multiplied together: the plain rule, two ranges."""
    n = Net(opset=13, seed=5)
    x = n.input("x", [1, 6, 16])
    h = n.node("MatMul", [x, n.weight([16, 64], fan_in=16)], name="proj")
    g, u = n.node("Split", [h, n.ints([32, 32])], outputs=2, axis=-1)
    y = n.node("Add", [n.node("MatMul", [n.node("Relu", [g]), n.weight([32, 16])]),
                       n.node("MatMul", [n.node("Relu", [u]), n.weight([32, 16])])])
    n.output(y, [1, 6, 16], TensorProto.FLOAT)
    group = next(g for g in analyze(n.model()).groups if g.producers == ["proj"])
    assert group.channels == 64 and group.prunable
