"""The README's first command: the embedded digits demo runs end to end."""
from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torch")


def test_digits_demo(tmp_path, capsys):
    from onnxprune.demo.story import main
    assert main(["--dataset", "digits", "--epochs", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()
            if line.startswith(("original", "pruned (one-shot)", "pruned + fine-tuned"))}
    acc = {k: float(v.split("%")[0].split()[-1]) for k, v in rows.items()}
    assert acc["original"] > 90
    assert acc["pruned + fine-tuned"] > acc["pruned (one-shot)"] and acc["pruned + fine-tuned"] > 90
    for name in ("digits.onnx", "digits-pruned.onnx", "digits-pruned.plan.json", "digits-finetuned.onnx", "bench.md"):
        assert (tmp_path / name).exists()
