"""Activation capture, information metrics and the Pruner fit/transform API."""
from __future__ import annotations

import json

import numpy as np
import pytest

from onnxprune.analysis import analyze
from onnxprune.capture.session import CaptureSession, probes_for
from onnxprune.metrics.information import local_shapley_conv, local_shapley_dense
from onnxprune.pipeline import PruneConfig, Pruner
from onnxprune.scoring.shapley import quadratic_game_shapley, reconstruction_gram
from onnx_builders import small_resnet

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("stride,pad,dil,groups", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2)])
def test_local_shapley_conv_matches_brute_force(stride, pad, dil, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32)
    contributions = []
    for c in range(4):     # contribution of input channel c alone, through torch's conv
        xc = np.zeros_like(x)
        xc[:, c] = x[:, c]
        y = torch.nn.functional.conv2d(torch.from_numpy(xc), torch.from_numpy(w), stride=stride,
                                       padding=pad, dilation=dil, groups=groups)
        contributions.append(y.numpy().ravel())
    expected = quadratic_game_shapley(reconstruction_gram(np.stack(contributions)))
    got = local_shapley_conv(x, w, (stride, stride), (pad,) * 4, (dil, dil), groups)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.isclose(got.sum(), np.sum(np.stack(contributions).sum(0) ** 2), rtol=1e-4)  # efficiency


def test_local_shapley_dense_blocks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 12)).astype(np.float32)
    w = rng.standard_normal((12, 3)).astype(np.float32)
    contributions = np.stack([(x[:, 2 * c:2 * c + 2] @ w[2 * c:2 * c + 2]).ravel() for c in range(6)])
    expected = quadratic_game_shapley(reconstruction_gram(contributions))
    np.testing.assert_allclose(local_shapley_dense(x, w, block=2), expected, rtol=1e-5, atol=1e-5)


def _bn_free_resnet():
    """onnx.reference's BatchNormalization disagrees with the ONNX formula (and onnxruntime), so
    the independent oracle gets a residual net without BN."""
    from onnx_builders import Net
    n = Net(13, 0)
    x = n.input("x", [1, 3, 16, 16])
    a = n.relu(n.conv(x, 3, 8))
    b = n.conv(n.relu(n.conv(a, 8, 8)), 8, 8)
    y = n.relu(n.node("Add", [a, b]))
    n.head(y, 8)
    return n.model()


def test_capture_equals_reference_evaluator():
    from onnx.reference import ReferenceEvaluator
    model = _bn_free_resnet()
    a = analyze(model)
    tensors = sorted({p.tensor for p in probes_for(a, [g.id for g in a.prunable])})
    assert tensors
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = CaptureSession(model, tensors, "cpu").run(x)
    ref = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x}, intermediate=True)
    for t in tensors:
        np.testing.assert_allclose(got[t], ref[t], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["infoconc", "itpruner", "uniform-hrank"])
def test_pruner_fit_transform(method, tmp_path):
    model = small_resnet()
    data = np.random.default_rng(0).standard_normal((48, 3, 16, 16)).astype(np.float32)
    p = Pruner(PruneConfig(flops_reduction=0.3, method=method)).fit(model, data)
    assert set(p.metrics_) == {g.id for g in p.analysis_.prunable}
    for m in p.metrics_.values():   # rank needs feature maps: None for a group read only as a vector
        assert m.entropy is not None and (m.rank is None or 0 < m.rank <= 1)
        assert m.concentration is not None and m.concentration > 0
    assert sum(m.rank is not None for m in p.metrics_.values()) >= 2
    if method == "infoconc":
        assert all(m.shapley is not None for m in p.metrics_.values())
    result = p.transform(model)
    assert result.report.ok
    achieved = result.plan.budget["achieved"]["macs_reduction"]
    assert 0.3 <= achieved <= 0.31 + 0.02   # tiny model: coarse channel steps
    p.save(tmp_path / "fit.json")
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["plan"]["groups"][0]["kept"] and saved["metrics"]


def test_pruner_needs_data():
    from onnxprune.errors import BudgetError
    with pytest.raises(BudgetError, match="calibration data"):
        Pruner(PruneConfig(flops_reduction=0.3, method="infoconc")).fit(small_resnet())


def test_capture_rejects_nan():
    from onnxprune.errors import DataError
    model = small_resnet()
    data = np.full((4, 3, 16, 16), np.nan, np.float32)
    with pytest.raises(DataError, match="NaN"):
        Pruner(PruneConfig(flops_reduction=0.3, method="infoconc")).fit(model, data)


def test_cli_data_of_wrong_shape(tmp_path, capsys):
    import onnx
    from onnxprune.cli import main
    path = tmp_path / "m.onnx"
    onnx.save(small_resnet(), path)
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 5, 16, 16), np.uint8), y=np.zeros(8, np.uint8))
    rc = main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--flops-reduction", "0.3",
               "--method", "infoconc", "--data", str(tmp_path / "d.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "d.npz" in err and not (tmp_path / "o.onnx").exists()


def test_network_shapley_efficiency_and_prune(tmp_path):
    from onnxprune.scoring.coalitions import CoalitionGame, network_shapley
    model = small_resnet()
    a = analyze(model)
    g = a.prunable[0]
    images = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    est = network_shapley(model, a, g.id, images, permutations=4, seed=0, truncation_tol=0.0)
    game = CoalitionGame(model, a, g.id, images)
    v_all, v_none = game(np.array([[True] * g.channels, [False] * g.channels]))
    assert v_all == pytest.approx(0.0, abs=1e-9)
    assert est.values.sum() == pytest.approx(v_all - v_none, rel=1e-6)
    data = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
    cfg = PruneConfig(flops_reduction=0.3, method="infoconc", criterion="shapley-mc",
                      shapley_permutations=2, shapley_mc_images=4)
    result = Pruner(cfg).fit(model, data).transform(model)
    assert result.report.ok
