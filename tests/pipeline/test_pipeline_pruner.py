"""The Pruner API: default method with data, input checks, transform's model, saved settings,
and the candidate choice on a model with several non-class outputs."""
from __future__ import annotations

import copy
import importlib
import json
import logging

import numpy as np
import pytest

from onnxprune.errors import DataError, PlanError
from onnxprune.pipeline import PruneConfig, Pruner, prune
from onnx_builders import small_resnet


def calib(n=24, shape=(3, 16, 16), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_data_selects_infoconc_and_no_data_keeps_uniform_l1(caplog):
    model = small_resnet()
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        p = Pruner(PruneConfig(flops_reduction=0.3, select_images=8)).fit(model, calib())
    assert p.config.method == "infoconc"
    assert p.plan().settings["criterion"] == "shapley" and p.plan().settings["allocation"] == "convex"
    assert any("using infoconc" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        q = Pruner(PruneConfig(flops_reduction=0.3)).fit(model)
    assert q.config.method == "uniform-l1" and q.plan().settings["criterion"] == "l1"
    assert any("would enable infoconc" in r.getMessage() for r in caplog.records)
    # an explicit choice is kept whatever the data
    r = Pruner(PruneConfig(flops_reduction=0.3, criterion="l2", allocation="uniform")).fit(model, calib())
    assert r.config.method is None and r.plan().settings["criterion"] == "l2"


def test_plan_records_the_choice_criterion():
    p = Pruner(PruneConfig(flops_reduction=0.3, method="infoconc", select_images=8)).fit(small_resnet(), calib())
    choice = p.plan().budget["allocation_choice"]
    assert choice["chosen"] == p.allocation_choice_
    # small_resnet has a 2-D class-score output and a 4-D side output ("aux")
    assert choice["criterion"].startswith("top-1 disagreement")
    assert "KL of softmax" in choice["criterion"] and "relative squared error" in choice["criterion"]
    assert set(choice["candidates"]) == {"convex t=0", "convex t=0.5", "convex t=1", "convex t=2", "uniform"}


def test_candidates_are_judged_after_a_quick_refit_on_other_images(monkeypatch):
    """With recovery on, each candidate is refitted on the images after the judging ones, then judged."""
    rec = importlib.import_module("onnxprune.recover.reconstruct")
    data, seen = calib(40), []
    real = rec.reconstruct

    def spy(original, pruned, analysis, plan, images, **kw):
        seen.append(np.asarray(images))
        return real(original, pruned, analysis, plan, images, **kw)
    monkeypatch.setattr(rec, "reconstruct", spy)
    p = Pruner(PruneConfig(flops_reduction=0.3, method="infoconc", select_images=8, select_refit_images=16))
    p.fit(small_resnet(), data)
    assert len(seen) == len(p.plan().budget["allocation_choice"]["candidates"]) == 5
    assert all(np.array_equal(x, data[8:24]) for x in seen)
    assert p.plan().budget["allocation_choice"]["criterion"].endswith("judged after a refit on 16 images")
    seen.clear()
    q = Pruner(PruneConfig(flops_reduction=0.3, method="infoconc", select_images=8, recover="none"))
    q.fit(small_resnet(), data)
    assert not seen and "refit" not in q.plan().budget["allocation_choice"]["criterion"]


def test_candidate_refit_falls_back_to_the_judging_images_when_data_is_short(monkeypatch):
    rec = importlib.import_module("onnxprune.recover.reconstruct")
    data, seen = calib(12), []
    real = rec.reconstruct
    monkeypatch.setattr(rec, "reconstruct", lambda o, pr, a, pl, images, **kw:
                        (seen.append(np.asarray(images)), real(o, pr, a, pl, images, **kw))[1])
    Pruner(PruneConfig(flops_reduction=0.3, method="infoconc", select_images=8)).fit(small_resnet(), data)
    assert seen and all(np.array_equal(x, data[:8]) for x in seen)


@pytest.mark.parametrize("data,match", [
    (calib(shape=(3, 8, 8)), "images are 8x8"),
    (calib(shape=(1, 16, 16)), "1 channels"),
    (np.zeros((4, 3, 16, 16), dtype=np.bool_), "not numeric"),
    (calib(shape=(16, 16)), "rank 3"),
    ([1, 2, 3], "NumPy array or an onnxprune Dataset"),
])
def test_calibration_data_is_checked_against_the_input(data, match):
    model = small_resnet()
    name = model.graph.input[0].name
    with pytest.raises(DataError, match=match) as err:
        Pruner(PruneConfig(flops_reduction=0.3, method="infoconc")).fit(model, data)
    assert name in str(err.value)


def test_transform_uses_the_fitted_model_and_refuses_another(tmp_path):
    model = small_resnet()
    p = Pruner(PruneConfig(flops_reduction=0.3)).fit(model)
    assert p.transform().report.ok
    assert p.transform(copy.deepcopy(model)).report.ok          # an identical copy is the same model
    with pytest.raises(PlanError, match="not the model this Pruner was fitted on"):
        p.transform(small_resnet(seed=1))
    with pytest.raises(PlanError, match="before fit"):
        Pruner(PruneConfig(flops_reduction=0.3)).transform(model)


def test_save_records_the_run_settings(tmp_path):
    p = Pruner(PruneConfig(flops_reduction=0.3, method="uniform-hrank"), provider="cpu", calib_batch_mb=64.0,
               rank_images=16, hsic_images=12, shapley_images=8).fit(small_resnet(), calib())
    p.save(tmp_path / "fit.json")
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["settings"] == {"provider": "cpu", "provider_used": p.provider_used, "calib_batch_mb": 64.0,
                                 "rank_images": 16, "hsic_images": 12, "shapley_images": 8}
    assert saved["settings"]["provider_used"] and saved["config"]["method"] == "uniform-hrank"


def test_prune_per_group_multiples():
    model = small_resnet()
    ids = [g.id for g in Pruner(PruneConfig(flops_reduction=0.3)).fit(model).analysis_.prunable]
    result = prune(model, PruneConfig(flops_reduction=0.3, round_to={ids[0]: 4}))
    g0 = next(g for g in result.plan.groups if g.id == ids[0])
    assert len(g0.kept) % 4 == 0 and result.report.ok
    assert result.plan.budget["achieved"]["macs_reduction"] >= 0.3


def test_face_detector_choice_reads_boxes_and_scores(assets):
    """A detector (outputs scores [1, N, 2] and boxes [1, N, 4]): every candidate gets a nonzero
    distance from both outputs; KL of the first output flattened would read 0 for all."""
    from onnxprune.model_io import load_model
    model = load_model(assets / "onnx" / "face-detector-version-slim-320.onnx")
    data = np.random.default_rng(0).uniform(-1, 1, (4, 3, 240, 320)).astype(np.float32)
    p = Pruner(PruneConfig(flops_reduction=0.3, method="infoconc", temperatures=(0.0, 1.0), select_images=4),
               rank_images=4, hsic_images=4, shapley_images=4).fit(model, data)
    choice = p.plan().budget["allocation_choice"]
    assert choice["criterion"] == ("mean output distance to the unpruned model (scores: relative squared "
                                   "error; boxes: relative squared error), each candidate judged after a "
                                   "refit on 4 images")
    distances = {k: v["distance"] for k, v in choice["candidates"].items()}
    assert all(d > 0 for d in distances.values()) and len(set(distances.values())) == len(distances)
    assert distances[choice["chosen"]] == min(distances.values())


def test_fit_names_the_input_for_raw_nhwc_pixels():
    """Raw uint8 NHWC images at the API boundary: one DataError naming the input and the fixes."""
    from onnxprune.errors import DataError
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(DataError) as err:
        Pruner(PruneConfig(flops_reduction=0.3)).fit(small_resnet(), pixels)
    msg = str(err.value)
    assert "'input'" in msg and "raw pixels" in msg and "transpose(0, 3, 1, 2)" in msg and "\n" not in msg
