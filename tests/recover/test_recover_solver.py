"""The streamed ridge solve: equal to a direct least-squares solution, independent of the batch
size, bounded in memory, and careful with too few images."""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from recover_models import images, mlp, pruned, resnet
from onnx_builders import Net
from onnxprune.analysis import analyze
from onnxprune.recover import reconstruct
from onnxprune.recover.normal_eq import NormalEquations
from onnxprune.recover.reconstruct import prefix_model
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.runtime import AnyBatchSession


def _two_convs() -> onnx.ModelProto:
    n = Net(seed=2)
    x = n.input("x", ["N", 3, 7, 7])
    h = n.relu(n.conv(x, 3, 6, name="c1"))
    n.output(n.conv(h, 6, 4, k=3, stride=2, pad=1, name="c2"))
    return n.model()


def _im2col_loops(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """Rows [N*Ho*Wo, C*k*k] by explicit loops (independent of recover.im2col)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = xp.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    rows = []
    for i in range(n):
        for r in range(ho):
            for q in range(wo):
                rows.append(xp[i, :, r * stride:r * stride + k, q * stride:q * stride + k].ravel())
    return np.asarray(rows, np.float64)


def test_refit_equals_direct_lstsq():
    model = _two_convs()
    a = analyze(model)
    group = next(g for g in a.prunable if "c1" in " ".join(g.producers))
    plan = Plan.build(a, {group.id: np.array([0, 2, 3, 5])})
    structural = apply_plan(a, plan)
    calib = images(40, (3, 7, 7))
    refit, record = reconstruct(model, structural, a, plan, calib, positions_per_image=None, ridge=1e-10)
    assert [layer.node for layer in record.layers] == ["c2"]
    c2 = next(n for n in model.graph.node if n.name == "c2")
    h = AnyBatchSession(prefix_model(structural, [c2.input[0]])).run(calib)[0]
    target = AnyBatchSession(model).run(calib)[0]                      # [N, 4, 4, 4]
    x = np.hstack([_im2col_loops(h, 3, 2, 1), np.ones((len(calib) * 16, 1))])
    y = target.transpose(0, 2, 3, 1).reshape(-1, 4).astype(np.float64)
    solution = np.linalg.lstsq(x, y, rcond=None)[0]
    inits = {t.name: numpy_helper.to_array(t) for t in refit.graph.initializer}
    node = next(n for n in refit.graph.node if n.name == "c2")
    w, b = inits[node.input[1]], inits[node.input[2]]
    np.testing.assert_allclose(w.reshape(4, -1).T, solution[:-1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b, solution[-1], rtol=1e-3, atol=1e-4)


def test_streaming_equals_one_batch():
    model = resnet()
    analysis, plan, structural = pruned(model)
    calib = images(60)
    one, _ = reconstruct(model, structural, analysis, plan, calib, batch_size=60, positions_per_image=None)
    many, _ = reconstruct(model, structural, analysis, plan, calib, batch_size=7, positions_per_image=None)
    for t, u in zip(one.graph.initializer, many.graph.initializer):
        np.testing.assert_allclose(numpy_helper.to_array(t), numpy_helper.to_array(u), rtol=2e-4, atol=2e-5)


def test_memory_is_bounded_in_the_number_of_images(monkeypatch):
    """The sums have a fixed size and every update sees at most one batch of rows."""
    model = resnet()
    analysis, plan, structural = pruned(model)
    seen: dict[str, list] = {"shapes": [], "rows": []}
    original_update = NormalEquations.update

    def spy(self, x, y):
        seen["rows"].append(len(x))
        original_update(self, x, y)
        seen["shapes"].append((self.xtx.shape, self.xty.shape, self.yy.shape))
    monkeypatch.setattr(NormalEquations, "update", spy)
    shapes = {}
    for n in (16, 160):
        seen["shapes"].clear()
        _, record = reconstruct(model, structural, analysis, plan, images(n), batch_size=8, positions_per_image=32)
        shapes[n] = sorted(set(seen["shapes"]))
        assert max(r.rows for r in record.layers) >= n     # more images did give more rows ...
    assert shapes[16] == shapes[160]                        # ... into sums of the same size
    assert max(seen["rows"]) <= 8 * 16 * 16                 # one batch of 8 images at a time


def test_too_few_images_warns_and_falls_back_to_stronger_ridge(caplog):
    model = mlp()
    analysis, plan, structural = pruned(model)
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        refit, record = reconstruct(model, structural, analysis, plan, images(3, (16,)), weak_ridge=0.1)
    warned = [layer for layer in record.layers if layer.warning]
    assert warned and all(layer.ridge == 0.1 for layer in warned)
    assert "images would be needed" in caplog.text
    assert all(np.all(np.isfinite(numpy_helper.to_array(t))) for t in refit.graph.initializer)
    assert all(layer.error_after <= layer.error_before + 1e-12 for layer in record.layers)
