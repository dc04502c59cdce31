"""The peer patterns as PyTorch's two exporters write them: a CBAM channel gate with
``expand_as`` and a ``view(N, -1)`` head exported with a dynamic batch."""
from __future__ import annotations

import io
import warnings

import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from onnxprune.analysis import analyze  # noqa: E402
from onnxprune.pipeline import PruneConfig, prune  # noqa: E402


class CBAMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1))
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        gate = torch.sigmoid(self.mlp(y.mean((2, 3), keepdim=True)) + self.mlp(y.amax((2, 3), keepdim=True)))
        y = y * gate.expand_as(y)
        y = torch.relu(self.c2(y))
        return self.fc(y.view(y.size(0), -1))


def _export(exporter: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    model, x = CBAMNet().eval(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
            return onnx.load_from_string(buf.getvalue())
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                 dynamic_shapes=({0: torch.export.Dim("N")},), verbose=False, report=False)
        return prog.model_proto


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_cbam_and_dynamic_view_head_prune_from_both_exporters(exporter):
    model = _export(exporter)
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")   # dynamic batch
    a = analyze(model)
    reasons = [r for g in a.groups for r in g.skip_reasons]
    assert len(a.prunable) == len(a.groups) - 1, reasons          # only the output Gemm is skipped
    assert all(r.startswith("reaches graph output") for r in reasons)
    result = prune(model, PruneConfig(ratio=0.5, seed=0))
    assert result.report.ok, result.report
    fc = [list(t.dims) for t in result.model.graph.initializer if len(t.dims) == 2 and 5 in t.dims]
    assert fc and all(8 * 8 * 8 in d for d in fc)                  # the view head follows c2's 8 kept channels
