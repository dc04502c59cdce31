"""Tracebacks where a one-line error is promised: no torch, a closed pipe, a closed stdout."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli_helpers import files, one_error_line

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_finetune_without_torch_is_one_line(cli, model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # `import torch` now raises ImportError
    before = files(tmp_path)
    rc, out, err = cli("finetune", model_path, "--train", tmp_path / "t.npz", "-o", tmp_path / "tuned.onnx")
    assert rc == 2 and out == ""
    msg = one_error_line(err)
    assert "torch" in msg and "install onnxprune[torch]" in msg
    assert files(tmp_path) == before


def test_models_export_without_torch_is_one_line(tmp_path):
    script = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None
        sys.argv = ["models.export", "resnet20", "-o", {str(tmp_path / "r.onnx")!r}]
        runpy.run_module("models.export", run_name="__main__", alter_sys=True)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=_env(), cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "install onnxprune[torch]" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r.onnx").exists()


def test_report_into_a_closed_pipe(pruned, tmp_path):
    """`onnxprune report plan.json --png k.png | head -0`: the PNG is written, no traceback."""
    pytest.importorskip("matplotlib")
    _, _, plan = pruned
    read, write = os.pipe()
    os.close(read)                                           # the reader is gone before anything is printed
    try:
        res = subprocess.run([sys.executable, "-m", "onnxprune.cli", "report", str(plan), "--png",
                              str(tmp_path / "k.png")], stdout=write, stderr=subprocess.PIPE, text=True,
                             timeout=120, env=_env())
    finally:
        os.close(write)
    assert "BrokenPipeError" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_piped_into_head(pruned):
    _, _, plan = pruned
    res = subprocess.run(f"{sys.executable} -m onnxprune.cli report {plan} | head -1", shell=True,
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0 and res.stdout.startswith("# Pruning report: small.plan.json")
    assert "Traceback" not in res.stderr, res.stderr


def test_closed_stdout(model_path, tmp_path):
    """`onnxprune prune … >&-`: the files are written, and no traceback."""
    res = subprocess.run(f"{sys.executable} -m onnxprune.cli prune {model_path} -o {tmp_path / 's.onnx'} "
                         "--ratio 0.5 >&-", shell=True, capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "s.onnx").is_file() and (tmp_path / "s.plan.json").is_file()


def test_malformed_input_shape_is_a_usage_error(cli, model_path):
    with pytest.raises(SystemExit) as exc:
        cli("analyze", model_path, "--input-shape", "input=1xthree")
    assert exc.value.code == 2


def test_quiet_and_verbose(cli, model_path, tmp_path):
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "a.onnx", "--ratio", 0.5)
    assert rc == 0 and "pruning" in err
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "b.onnx", "--ratio", 0.5, "-q")
    assert rc == 0 and err == ""


def test_entry_point_is_the_function_after_the_module_is_imported():
    import importlib
    importlib.import_module("onnxprune.cli.main")
    from onnxprune.cli import main
    assert callable(main) and main.__module__ == "onnxprune.cli.main"
