"""The README's Python snippet runs as written and the public API stays what the README shows."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import onnxprune

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"__version__", "load_model", "save_model", "analyze", "Analysis", "CostModel", "PruneConfig",
          "PruneResult", "Pruner", "prune", "METHODS", "Plan", "apply_plan", "verify_pruned", "masked_model",
          "VerifyReport", "load_dataset", "Preprocess", "FinetuneConfig", "finetune_model", "OnnxPruneError"}


def test_public_api_is_pinned():
    assert set(onnxprune.__all__) == PUBLIC
    for name in PUBLIC - {"FinetuneConfig", "finetune_model"}:   # those two need torch at run time only
        assert getattr(onnxprune, name) is not None, name
    with pytest.raises(AttributeError):
        onnxprune.no_such_name  # noqa: B018


def test_import_is_light():
    code = ("import sys, onnxprune; bad = [m for m in ('onnxruntime', 'torch', 'cvxpy') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _snippet() -> str:
    text = (ROOT / "README.md").read_text()
    tail = text[text.index("The Python API is shaped like scikit-learn"):]
    return re.search(r"```python\n(.*?)```", tail, re.S).group(1)


@pytest.mark.torch
def test_readme_snippet_runs_as_written(assets, tmp_path):
    pytest.importorskip("torch")
    weights = assets / "pretrained" / "cifar10-resnet20-12fca82f.th"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "models.export", "resnet20", "-o", str(tmp_path / "resnet20.onnx"),
                    "--weights", str(weights)], check=True, cwd=ROOT, env=env, capture_output=True)
    code = _snippet().replace("../shared/assets", str(assets))   # the README's path, from the project root
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split("\n")
    assert lines[0] == "infoconc"
    ok, achieved = lines[1].split()
    assert ok == "True" and 0.45 <= float(achieved) <= 0.46
    assert (tmp_path / "resnet20-pruned.onnx").is_file() and (tmp_path / "resnet20-pruned.plan.json").is_file()
    plan = onnxprune.Plan.load(tmp_path / "resnet20-pruned.plan.json")
    assert plan.refit is not None                   # the snippet's data turned the refit on
