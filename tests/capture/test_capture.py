"""Capture sessions: extra outputs for the probed tensors, and progress through onnxprune.log
(nothing on a non-interactive stderr, one summary line at DEBUG)."""
from __future__ import annotations

import logging

import numpy as np

from onnxprune.capture.session import CaptureSession, with_outputs
from onnx_builders import conv_chain


def test_with_outputs_keeps_the_source_and_adds_the_tensors():
    model = conv_chain()
    before = model.SerializeToString()
    inner = model.graph.node[0].output[0]
    out = with_outputs(model, [inner, model.graph.output[0].name])
    assert model.SerializeToString() == before
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output] + [inner]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_stream_reports_progress_through_the_logger(capsys, monkeypatch):
    model = conv_chain()
    inner = model.graph.node[0].output[0]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batches = [np.random.default_rng(i).standard_normal([2] + shape[1:]).astype(np.float32) for i in range(3)]
    session = CaptureSession(model, [inner], "cpu")
    # whatever an earlier CLI run configured: only this test's handler sees the package's records
    monkeypatch.setattr(logging.getLogger("onnxprune"), "handlers", [logging.NullHandler()])
    logger, records = logging.getLogger("onnxprune.capture.session"), _Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        got = list(session.stream(batches, total=6))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert len(got) == 3 and all(g[inner].shape[0] == 2 for g in got)
    np.testing.assert_array_equal(got[1][inner], session.run(batches[1])[inner])
    assert capsys.readouterr().err == ""
    assert any(m.startswith("capture: 6 img in") for m in records.messages)
