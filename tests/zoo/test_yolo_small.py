"""The YOLOv8-style detector of the zoo: exports with both exporters, matches torch on all six
outputs, its only skipped groups are the six head convs that write graph outputs, and it prunes
and verifies against the masked original."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.export import build_seeded_model, example_input  # noqa: E402
from models.yolo_small import OUTPUT_NAMES  # noqa: E402
from onnxprune.analysis import analyze  # noqa: E402
from onnxprune.model_io import load_model  # noqa: E402
from onnxprune.pipeline import PruneConfig, prune  # noqa: E402
from onnxprune.runtime import make_session  # noqa: E402


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_yolo_export_matches_torch_on_every_output(exported, exporter):
    model = load_model(exported("yolo_small", exporter, "folded"))
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    ops = {n.op_type for n in model.graph.node}
    assert {"Split", "Concat", "MaxPool", "Resize", "Add", "Transpose"} <= ops
    x = example_input("yolo_small")
    with torch.no_grad():
        ref = [t.numpy() for t in build_seeded_model("yolo_small")(x)]
    got = make_session(model).run(None, {"input": x.numpy()})
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(r).max())))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_yolo_skip_list_is_only_the_output_convs(exported, exporter):
    a = analyze(load_model(exported("yolo_small", exporter, "folded")))
    skipped = [g for g in a.groups if not g.prunable]
    assert len(skipped) == len(OUTPUT_NAMES)
    reasons = sorted(r for g in skipped for r in g.skip_reasons)
    assert reasons == sorted(f"reaches graph output '{o}'" for o in OUTPUT_NAMES)
    # the C2f split halves and SPPF/neck Concats do not split groups into unprunable pieces
    assert len(a.prunable) == 50


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_yolo_prunes_and_verifies(exported, exporter):
    model = load_model(exported("yolo_small", exporter, "folded"))
    result = prune(model, PruneConfig(flops_reduction=0.4, round_to=4, seed=3))
    assert result.report.ok, result.report
    assert len(result.report.outputs) == len(OUTPUT_NAMES)
    assert abs(result.plan.budget["achieved"]["macs_reduction"] - 0.4) <= 0.01
    pruned_outputs = make_session(result.model).run(None, {"input": example_input("yolo_small").numpy()})
    assert [o.shape for o in pruned_outputs] == [(1, 64, 10), (1, 64, 16), (1, 16, 10),
                                                 (1, 16, 16), (1, 4, 10), (1, 4, 16)]
