"""Channel choice by reconstruction error: the elimination cost, the order, eligibility, passes."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnx_builders import Net, small_resnet
from onnxprune.analysis import analyze
from onnxprune.errors import BudgetError
from onnxprune.pipeline import PruneConfig, prune
from onnxprune.recover.normal_eq import NormalEquations
from onnxprune.scoring.reconstruction import (_Elimination, eligible_groups, reconstruction_scores)


def _images(n, shape=(3, 10, 10), seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


def _refit_error(x, y, keep_cols, ridge):
    """Squared error of the ridge least squares on the kept columns (plus a bias column)."""
    xb = np.concatenate([x[:, keep_cols], np.ones((len(x), 1))], axis=1)
    a = xb.T @ xb
    full = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    lam = ridge * np.mean(np.diag(full.T @ full))
    w = np.linalg.solve(a + lam * np.eye(len(a)), xb.T @ y)
    r = xb @ w - y
    return float(np.sum(r * r) + lam * np.sum(w * w))


def test_elimination_cost_is_the_refitted_error_growth():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 12))
    y = x @ rng.standard_normal((12, 5)) + 0.1 * rng.standard_normal((400, 5))
    sums = NormalEquations(1, 12, 5, bias=True)
    sums.update(x[:, None, :].astype(np.float32), y[:, None, :].astype(np.float32))
    x32, y32 = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    ridge = 1e-3
    rows = {c: np.arange(2 * c, 2 * c + 2) for c in range(6)}     # 6 channels of 2 inputs each
    state = _Elimination(sums, ridge, dict(rows))
    full = _refit_error(x32, y32, np.arange(12), ridge)
    for c in (0, 3):
        kept = np.setdiff1d(np.arange(12), rows[c])
        grown = _refit_error(x32, y32, kept, ridge) - full
        assert state.costs([c])[0] * state.scale == pytest.approx(grown, rel=1e-6)
    state.remove([3])                                              # downdated, then again
    kept = np.setdiff1d(np.arange(12), np.concatenate([rows[3], rows[5]]))
    grown = _refit_error(x32, y32, kept, ridge) - _refit_error(x32, y32, np.setdiff1d(np.arange(12), rows[3]), ridge)
    assert state.costs([5, 3])[0] * state.scale == pytest.approx(grown, rel=1e-6)
    assert state.costs([3]) == 0.0                                     # gone: nothing read


def _duplicate_channel_net():
    """conv(3→6) → Relu → conv(6→4): channel 5 repeats channel 1's filter at 5x the weight, so
    dropping it costs nothing after a refit although its L1 norm is the largest."""
    n = Net(seed=2)
    x = n.input("x", ["N", 3, 10, 10])
    h = n.relu(n.conv(x, 3, 6, bias=False))
    n.output(n.conv(h, 6, 4))
    model = n.model()
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    first = model.graph.node[0].input[1]
    w1 = w[first].copy()
    w1[5] = 5.0 * w1[1]
    for t in model.graph.initializer:
        if t.name == first:
            t.CopyFrom(numpy_helper.from_array(w1, first))
    return model


def test_redundant_channel_goes_first():
    model = _duplicate_channel_net()
    a = analyze(model)
    scores = reconstruction_scores(model, a, _images(32), provider="cpu")
    (g, s), = scores.items()
    assert int(np.argmin(s)) in (1, 5)              # one of the pair is the cheapest to drop
    other = 6 - int(np.argmin(s))                   # the pair's survivor carries their signal
    assert s[other] > np.sort(s)[1]
    assert len(set(np.round(s, 12))) == len(s)      # a strict order: top-k is well defined


def _middle_conv_net(group: int):
    """conv(3→6) → Relu → conv(6→6, group) → Relu → conv(6→4) → output."""
    n = Net(seed=1)
    x = n.input("x", ["N", 3, 10, 10])
    h = n.relu(n.conv(x, 3, 6))
    h = n.relu(n.conv(h, 6, 6, group=group))
    n.output(n.conv(h, 6, 4))
    return n


def test_grouped_consumer_keeps_the_criterion_and_depthwise_passes_through():
    n = _middle_conv_net(group=2)
    a = analyze(n.model())
    ok, why = eligible_groups(a)
    grouped = [g for g, r in why.items() if "grouped" in r]
    assert grouped and not set(grouped) & set(ok)
    scores = reconstruction_scores(n.model(), a, _images(8), provider="cpu")
    assert not set(grouped) & set(scores)
    # a depthwise conv passes its channels through: the group is scored at the conv after it
    n = _middle_conv_net(group=6)
    a = analyze(n.model())
    ok, why = eligible_groups(a)
    (g, consumers), = ok.items()
    assert [a.view.nodes[i].op_type for i in consumers] == ["Conv"]
    assert a.view.nodes[consumers[0]].output[0] == n.outputs[0].name     # the last conv, not the depthwise


def test_passes_within_a_small_memory_give_the_same_scores():
    model = small_resnet(shape=("N", 3, 16, 16))
    a = analyze(model)
    imgs = _images(16, (3, 16, 16))
    one = reconstruction_scores(model, a, imgs, provider="cpu")
    many = reconstruction_scores(model, a, imgs, provider="cpu", memory_mb=0.001)
    assert one and one.keys() == many.keys()
    for g in one:
        np.testing.assert_array_equal(np.argsort(one[g]), np.argsort(many[g]))
        np.testing.assert_allclose(one[g], many[g], rtol=1e-5)


def test_prune_defaults_to_reconstruction_choice_when_it_refits():
    model = small_resnet(shape=("N", 3, 16, 16))
    data = _images(48, (3, 16, 16))
    res = prune(model, PruneConfig(flops_reduction=0.3, method="infoconc", temperatures=(1.0,)), data=data)
    assert res.plan.settings["channel_choice"] == "reconstruction"
    assert res.plan.settings["scored_by_reconstruction"]
    off = prune(model, PruneConfig(flops_reduction=0.3, method="infoconc", temperatures=(1.0,), recover="none"),
                data=data)
    assert off.plan.settings["channel_choice"] == "criterion"
    assert off.plan.settings["scored_by_reconstruction"] == []


def test_reconstruction_choice_needs_data():
    with pytest.raises(BudgetError, match="channel-choice reconstruction needs calibration data"):
        prune(small_resnet(), PruneConfig(flops_reduction=0.3, method="uniform-l1", channel_choice="reconstruction"))
    with pytest.raises(BudgetError, match="unknown channel choice"):
        PruneConfig(flops_reduction=0.3, channel_choice="lasso").validate()


def test_large_layers_use_fewer_images(monkeypatch, caplog):
    import onnxprune.scoring.reconstruction as rc
    model = small_resnet(shape=("N", 3, 16, 16))
    a = analyze(model)
    monkeypatch.setattr(rc, "GRAM_WORK", 1.0)
    with caplog.at_level("INFO", logger="onnxprune"):
        scores = rc.reconstruction_scores(model, a, _images(80, (3, 16, 16)), provider="cpu")
    assert scores and "64 of the 80 images" in caplog.text
