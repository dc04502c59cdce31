"""Fixtures of the command-line tests: run ``onnxprune ARGS`` in-process, a small model, a pruned one."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnx_builders import small_resnet
from onnxprune.cli import main


@pytest.fixture
def cli(capsys):
    """Run ``onnxprune ARGS``; return (exit status, stdout, stderr)."""
    def run(*args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "net.onnx"
    onnx.save(small_resnet(), path)
    return path


@pytest.fixture
def pruned(cli, model_path):
    """(original, pruned model, plan) paths after ``prune --ratio 0.5``."""
    out = model_path.parent / "small.onnx"
    rc, _, err = cli("prune", model_path, "-o", out, "--ratio", 0.5)
    assert rc == 0, err
    return model_path, out, model_path.parent / "small.plan.json"
