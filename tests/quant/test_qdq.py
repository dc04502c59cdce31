"""Quantized (QDQ, onnxruntime.quantization.quantize_static) and fp16 weights are pruned in their
stored dtype; what cannot be is refused with a reason; the masked oracle verifies the result."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune.analysis import analyze
from onnxprune.model_io import load_model
from onnxprune.pipeline import PruneConfig, prune
from onnxprune.runtime import make_session
from onnxprune.verify.oracle import compare
from tests.onnx_builders import Net

quantization = pytest.importorskip("onnxruntime.quantization")


def _float_cnn(path) -> None:
    """Conv(3→16) → Relu → Conv(16→32) → Relu → Conv(32→256, 73 728 weights) → Relu → residual
    Conv(256→256, 1x1) + Add → GAP → Flatten → Gemm(256→10)."""
    n = Net(opset=17, seed=3)
    x = n.input("input", [1, 3, 16, 16])
    y = n.relu(n.conv(x, 3, 16, name="c1"))
    y = n.relu(n.conv(y, 16, 32, name="c2"))
    y = n.relu(n.conv(y, 32, 256, name="c3"))
    y = n.node("Add", [y, n.relu(n.conv(y, 256, 256, k=1, name="c4"))], name="add")
    n.output(n.gemm(n.flatten(n.gap(y)), 256, 10))
    onnx.save(n.model(), str(path))


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, n: int = 4) -> None:
        rng = np.random.default_rng(0)
        self._it = iter([{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq")
    _float_cnn(root / "f.onnx")
    quantization.quantize_static(str(root / "f.onnx"), str(root / "q.onnx"), _Calibration(),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 weight_type=quantization.QuantType.QInt8,
                                 activation_type=quantization.QuantType.QInt8)
    return root / "q.onnx"


def _int8_weights(model: onnx.ModelProto) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in model.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) >= 2}


def test_quantize_static_model_is_analysed(qdq_model):
    a = analyze(load_model(qdq_model))
    assert len(a.groups) == 4 and len(a.prunable) == 3       # c1, c2, c3+c4 (residual Add), Gemm
    skipped = [r for g in a.groups for r in g.skip_reasons]
    assert len(skipped) == 1 and skipped[0].startswith("reaches graph output")
    assert sorted(a.groups[2].producers) == ["c3", "c4"]


def test_quantize_static_model_prunes_in_int8(qdq_model, tmp_path):
    original = load_model(qdq_model)
    before = _int8_weights(original)
    result = prune(original, PruneConfig(flops_reduction=0.4, seed=0))
    assert result.report.ok, result.report
    after = _int8_weights(result.model)
    assert set(after) == set(before)                      # the same int8 initializers, sliced
    assert any(after[k] != before[k] for k in before)
    # no weight was re-stored as float: float initializers are scales and biases' scales only
    float_sizes = [int(np.prod(t.dims)) for t in result.model.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert max(float_sizes) <= 256
    # per-axis scales and zero-points follow their weights' output channels
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    for node in result.model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in after:
            assert inits[node.input[1]].shape[0] == inits[node.input[0]].shape[0]
            assert inits[node.input[2]].dtype == np.int8
    out = tmp_path / "pruned.onnx"
    onnx.save(result.model, str(out))
    assert out.stat().st_size < 0.8 * qdq_model.stat().st_size
    feeds = {"input": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    (y,) = make_session(onnx.load(str(out))).run(None, feeds)
    assert y.shape == (1, 10) and np.isfinite(y).all()
    for seed in range(3):       # the masked original agrees on several random inputs
        report = compare(original, result.model, result.plan, seed=seed)
        assert report.ok, report
    (y0,) = make_session(original).run(None, feeds)
    assert np.abs(y0 - y).max() > 0                       # pruning changed the model: the check has teeth


def test_verify_catches_an_unsliced_scale(qdq_model):
    """A pruned model whose int8 weight kept stale per-channel scales fails the oracle."""
    original = load_model(qdq_model)
    result = prune(original, PruneConfig(ratio=0.5, seed=0))
    bad = onnx.ModelProto.FromString(result.model.SerializeToString())
    for t in bad.graph.initializer:
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 1 and t.dims[0] > 1 and "scale" in t.name:
            arr = numpy_helper.to_array(t)[::-1].copy()
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    assert not compare(original, bad, result.plan).ok


def _fp16_cast_net(big: bool = False) -> onnx.ModelProto:
    """fp16 weights stored once, Cast to float before each Conv (mixed-precision exports)."""
    n = Net(opset=13, seed=1)
    x = n.input("x", [1, 3, 8, 8])

    def conv(x, cin, cout):
        w = n.rng.standard_normal((cout, cin, 3, 3)).astype(np.float16) / np.float16(np.sqrt(cin * 9))
        w32 = n.node("Cast", [n.const(w, "w16_")], to=TensorProto.FLOAT)
        b = n.node("Cast", [n.const((n.rng.standard_normal(cout) * 0.1).astype(np.float16), "b16_")],
                   to=TensorProto.FLOAT)
        return n.node("Conv", [x, w32, b], kernel_shape=[3, 3], pads=[1] * 4)

    y = n.relu(conv(x, 3, 16))
    y = n.relu(conv(y, 16, 96 if big else 16))
    y = n.relu(conv(y, 96 if big else 16, 96 if big else 16))      # 96*96*9 = 82 944 > 65 536
    n.head(y, 96 if big else 16)
    return n.model()


@pytest.mark.parametrize("big", [False, True])
def test_fp16_weights_behind_cast_stay_fp16(big):
    model = _fp16_cast_net(big)
    a = analyze(model)
    assert len(a.prunable) == 3
    result = prune(model, PruneConfig(ratio=0.5, seed=0))
    assert result.report.ok, result.report
    halves = {t.name: t for t in result.model.graph.initializer if t.name.startswith(("w16_", "b16_"))}
    assert len(halves) == 6 and all(t.data_type == TensorProto.FLOAT16 for t in halves.values())
    assert [t.dims[0] for n, t in sorted(halves.items()) if n.startswith("w16_")] != [16, 16, 96 if big else 16]
    assert not [t for t in result.model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 4]


def test_activation_qdq_per_channel_scale_is_sliced():
    """QuantizeLinear/DequantizeLinear with a per-channel scale on an activation (axis 1)."""
    n = Net(opset=13, seed=2)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8, name="c1"))
    scale = n.const(np.linspace(0.02, 0.05, 8).astype(np.float32), "s")
    zp = n.const(np.arange(8, dtype=np.int8) - 4, "zp")
    y = n.node("DequantizeLinear", [n.node("QuantizeLinear", [y, scale, zp], axis=1), scale, zp], axis=1)
    n.head(n.relu(n.conv(y, 8, 8, name="c2")), 8)
    model = n.model()
    result = prune(model, PruneConfig(ratio=0.5, seed=0))
    assert result.report.ok, result.report
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    q = next(nd for nd in result.model.graph.node if nd.op_type == "QuantizeLinear")
    kept = result.plan.groups[0].kept
    np.testing.assert_array_equal(inits[q.input[1]], np.linspace(0.02, 0.05, 8).astype(np.float32)[kept])
    np.testing.assert_array_equal(inits[q.input[2]], (np.arange(8, dtype=np.int8) - 4)[kept])


def test_weight_computed_from_int8_through_other_ops_is_refused():
    """An int8 weight dequantized and then transposed cannot be sliced in int8 here: refused, named."""
    n = Net(opset=13, seed=4)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8, name="c1"))
    wq = n.const(n.rng.integers(-100, 100, (3, 3, 8, 8)).astype(np.int8), "wq")
    w = n.node("DequantizeLinear", [wq, n.const(np.float32(0.01), "s")])
    w = n.node("Transpose", [w], perm=[3, 2, 0, 1])                # HWIO -> OIHW
    y = n.relu(n.node("Conv", [y, w], kernel_shape=[3, 3], pads=[1] * 4, name="c2"))
    n.head(y, 8)
    a = analyze(n.model())
    reasons = [r for g in a.groups for r in g.skip_reasons]
    assert any("is computed from INT8 tensors" in r and "at c2" in r for r in reasons), reasons
    assert a.groups[0].skip_reasons and a.groups[1].skip_reasons


def test_conv_with_an_unfoldable_weight_is_reported_not_dropped():
    """A weight computed from a large float tensor (Transpose of 96*96*9 elements) is not folded;
    its Conv still appears, as a skipped group with the reason."""
    n = Net(opset=13, seed=6)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 96, name="c1"))
    w = n.node("Transpose", [n.weight([3, 3, 96, 96], fan_in=96 * 9)], perm=[3, 2, 0, 1])
    y = n.relu(n.node("Conv", [y, w], kernel_shape=[3, 3], pads=[1] * 4, name="c2"))
    n.head(y, 96)
    a = analyze(n.model())
    c2 = next(g for g in a.groups if g.producers == ["c2"])
    assert any("not a constant" in r for r in c2.skip_reasons)
    assert any("non-constant weight" in r for r in a.groups[0].skip_reasons)


def test_int8_weights_count_as_parameters(qdq_model, tmp_path):
    """The int8 weights (and int32 biases) behind DequantizeLinear are the QDQ model's parameters:
    as many as the float model's, sliced with the pruned channels; scales and zero-points are not
    counted. --params-reduction prunes the QDQ model by its real weights."""
    from onnxprune.analysis.cost import CostModel
    from onnxprune.cli.main import main
    quantized, floating = load_model(qdq_model), load_model(qdq_model.parent / "f.onnx")
    assert CostModel(analyze(quantized)).params() == CostModel(analyze(floating)).params() == 147434
    result = prune(quantized, PruneConfig(params_reduction=0.5, seed=0))
    assert result.report.ok, result.report
    after = CostModel(analyze(result.model)).params()
    dequantized = {n.input[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    stored = sum(int(np.prod(t.dims)) for t in result.model.graph.initializer if t.name in dequantized)
    assert after == stored <= 0.5 * 147434
    assert result.plan.budget["achieved"]["params_reduction"] == pytest.approx(1 - after / 147434)
    out = tmp_path / "pruned.onnx"
    assert main(["prune", str(qdq_model), "-o", str(out), "--params-reduction", "0.5", "-q"]) == 0
    assert 0.45 * 147434 < CostModel(analyze(load_model(out))).params() <= 0.5 * 147434


def test_fp16_weights_behind_cast_count_as_sliced():
    from onnxprune.analysis.cost import CostModel
    model = _fp16_cast_net()
    result = prune(model, PruneConfig(ratio=0.5, seed=0))
    kept = {g.id: np.array(g.kept) for g in result.plan.groups}
    assert CostModel(analyze(model)).params(kept) == CostModel(analyze(result.model)).params()
    assert CostModel(analyze(result.model)).params() < 0.6 * CostModel(analyze(model)).params()
