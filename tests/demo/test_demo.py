"""The README's first command: the embedded digits demo runs end to end."""
from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")


@pytest.fixture
def one_torch_thread():
    """The same training figures on any machine: torch on one thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_digits_demo(tmp_path, capsys, one_torch_thread):
    from onnxprune.demo.story import main
    from onnxprune.runtime import preferred_channel_multiple
    assert main(["--dataset", "digits", "--epochs", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()
            if line.startswith(("original", "pruned + refit", "pruned + fine-tuned"))}
    acc = {k: float(v.split("%")[0].split()[-1]) for k, v in rows.items()}
    assert acc["original"] > 90
    assert acc["pruned + fine-tuned"] > acc["pruned + refit"] and acc["pruned + fine-tuned"] > 90
    for name in ("digits.onnx", "digits-pruned.onnx", "digits-pruned.plan.json", "digits-finetuned.onnx",
                 "bench.md", "bench.json"):
        assert (tmp_path / name).exists()
    # pruned to the channel multiple this machine's onnxruntime CPU kernels run fast, and says so
    multiple, _ = preferred_channel_multiple("cpu")
    assert f"multiples of {multiple} (--round-to {multiple}" in out
    plan = json.loads((tmp_path / "digits-pruned.plan.json").read_text())
    assert plan["settings"]["round_to"] == multiple
    kept = [g["kept_count"] for g in plan["groups"] if g["prunable"]]
    assert all(k % multiple == 0 for k in kept), kept
    # before/after figures, and the latency ratio taken from the interleaved bench it wrote
    m = re.search(r"MACs ratio ([\d.]+)x, latency ratio ([\d.]+)x \(batch 256", out)
    assert m, out
    assert float(m.group(1)) > 1.9
    bench = json.loads((tmp_path / "bench.json").read_text())
    pair = next(p for p in bench["pairs"] if p["model"] == "digits-finetuned.onnx" and p["batch"] == 256)
    assert f"latency ratio {pair['speedup_rounds']:.2f}x" in out
    assert re.search(r"before -> after \(pruned \+ fine-tuned\): top-1 [\d.]+% -> [\d.]+%, MACs .* params ", out)


def test_demo_without_torch_is_one_line(monkeypatch, capsys):
    import importlib.util
    from onnxprune.demo import story
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert story.main(["--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "onnxprune[torch,demo]" in err
