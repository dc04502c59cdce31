"""The real models in ../shared/assets: pretrained ResNet-56 (both exporters) and two face detectors
from another exporter (opset 9, unfused BN, depthwise convs, initializers listed as inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.analysis import analyze
from onnxprune.model_io import load_model
from onnxprune.pipeline import PruneConfig, prune

DETECTORS = ["face-detector-version-RFB-320.onnx", "face-detector-version-slim-320.onnx"]


@pytest.mark.parametrize("name", DETECTORS)
def test_face_detector_groups_and_head(assets, name):
    a = analyze(load_model(assets / "onnx" / name))
    skipped = [g for g in a.groups if not g.prunable]
    assert len(a.prunable) >= 15
    # the detection head (Conv -> Transpose -> Reshape -> Concat) must stay intact
    assert skipped and all(any("Reshape" in r for r in g.skip_reasons) for g in skipped)


@pytest.mark.parametrize("target", [0.3, 0.5])
@pytest.mark.parametrize("name", DETECTORS)
def test_face_detector_prunes_and_verifies(assets, name, target):
    model = load_model(assets / "onnx" / name)
    result = prune(model, PruneConfig(flops_reduction=target, round_to=4))
    assert result.report.ok
    assert abs(result.plan.budget["achieved"]["macs_reduction"] - target) <= 0.01
    out_names = [o.name for o in result.model.graph.output]
    assert out_names == [o.name for o in model.graph.output] == ["scores", "boxes"]
    assert result.model.opset_import[0].version == 9
    init_names = {t.name for t in result.model.graph.initializer}
    assert init_names <= {i.name for i in result.model.graph.input}   # still listed as inputs


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_pretrained_resnet56_prunes_and_keeps_accuracy_sane(assets, exported, exporter):
    from onnxprune.data import Preprocess, load_dataset
    from onnxprune.tools.evaluate import top1_accuracy
    path = exported("resnet56", exporter, "folded",
                    weights=assets / "pretrained" / "cifar10-resnet56-4bfd9763.th")
    model = load_model(path)
    x, y = load_dataset(assets / "cifar10-lossless-test-first1017.npz",
                        Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                        shuffle=False).arrays()
    assert top1_accuracy(model, x, y) == pytest.approx(0.9272, abs=0.002)   # as published here
    calib = load_dataset(assets / "cifar10-jpeg" / "train.tar.gz",
                         Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), limit=64)
    result = prune(model, PruneConfig(flops_reduction=0.455, method="infoconc"), data=calib)
    assert result.report.ok
    assert abs(result.plan.budget["achieved"]["macs_reduction"] - 0.455) <= 0.01
    acc = top1_accuracy(result.model, x, y)
    assert 0.1 < acc < 0.93        # one-shot: well above chance, below the unpruned model
    assert np.isfinite(acc)
