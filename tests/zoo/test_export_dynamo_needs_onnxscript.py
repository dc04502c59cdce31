"""models.export: the dynamo exporter says in one line that it needs onnxscript."""
from __future__ import annotations

import sys

import pytest

pytest.importorskip("torch")

from models.export import ExportError, export_model  # noqa: E402


def test_dynamo_export_without_onnxscript_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)    # import raises ImportError
    with pytest.raises(ExportError) as e:
        export_model("resnet20", tmp_path / "m.onnx", exporter="dynamo")
    assert str(e.value) == "the dynamo exporter needs onnxscript: pip install onnxscript"
    assert not (tmp_path / "m.onnx").exists()
