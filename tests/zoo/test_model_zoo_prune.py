"""Every model in models/, both exporters: prune at 30 % and 50 % MACs, verify, check the budget."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("torch")

from models import MODELS  # noqa: E402
from onnxprune.model_io import load_model  # noqa: E402
from onnxprune.pipeline import PruneConfig, prune  # noqa: E402

NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in ("resnet50", "resnet32", "resnet44") else n
         for n in MODELS]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", NAMES)
def test_prune_model_zoo(exported, name, exporter):
    model = load_model(exported(name, exporter, "folded"))
    for target in (0.3, 0.5):
        result = prune(model, PruneConfig(flops_reduction=target, seed=1))
        assert result.report.ok, result.report
        achieved = result.plan.budget["achieved"]["macs_reduction"]
        assert target - 1e-9 <= achieved <= target + 0.01, (name, exporter, target, achieved)
        assert sum(len(g.kept) < g.channels for g in result.plan.groups) >= 1


@pytest.mark.parametrize("name,exporter", [("resnet20", "legacy"), ("resnet20", "dynamo"),
                                           ("mobilenetv2", "legacy"), ("senet_small", "dynamo"),
                                           ("densenet_small", "legacy"), ("resnext_small", "dynamo")])
def test_prune_unfused_batchnorm(exported, name, exporter):
    model = load_model(exported(name, exporter, "unfused"))
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    result = prune(model, PruneConfig(flops_reduction=0.4, round_to=4))
    assert result.report.ok
    assert abs(result.plan.budget["achieved"]["macs_reduction"] - 0.4) <= 0.01


def test_resnet_groups_merge_through_option_a_pad(exported):
    """The residual width of a CIFAR ResNet is one group across all three stages."""
    from onnxprune.analysis import analyze
    a = analyze(load_model(exported("resnet20", "legacy", "folded")))
    widest = max(a.groups, key=lambda g: len(g.producers))
    assert widest.channels == 64 and len(widest.producers) == 1 + 9 and widest.prunable
    assert len(a.groups) == 1 + 9 + 1 and len(a.prunable) == 10


def test_resnext_grouped_conv_keeps_equal_blocks(exported):
    from onnxprune.analysis import analyze
    a = analyze(load_model(exported("resnext_small", "legacy", "folded")))
    assert any(g.equal_blocks == 8 for g in a.prunable)
    result = prune(load_model(exported("resnext_small", "legacy", "folded")),
                   PruneConfig(flops_reduction=0.3))
    assert result.report.ok
