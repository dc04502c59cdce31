"""Output files: the plan beside the model, no existing file replaced without --overwrite in any
command, and files created with the user's umask."""
from __future__ import annotations

import json
import os
import stat

import pytest

from cli_helpers import files, one_error_line


def test_plan_path_keeps_every_dot_of_the_output_name(cli, model_path, tmp_path):
    for name in ("slim.v1.onnx", "slim.v2.onnx"):
        rc, _, err = cli("prune", model_path, "-o", tmp_path / name, "--ratio", 0.5)
        assert rc == 0, err
    assert (tmp_path / "slim.v1.plan.json").is_file() and (tmp_path / "slim.v2.plan.json").is_file()
    assert not (tmp_path / "slim.plan.json").exists()


def test_plan_path_of_a_name_without_onnx_suffix(cli, model_path, tmp_path):
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "small.model", "--ratio", 0.5)
    assert rc == 0, err
    assert (tmp_path / "small.model.plan.json").is_file()


def test_plan_path_for():
    from onnxprune.cli.args import plan_path_for
    assert str(plan_path_for("a/slim.v1.onnx")) == os.path.join("a", "slim.v1.plan.json")
    assert str(plan_path_for("m.ONNX")) == "m.plan.json"
    assert str(plan_path_for("model")) == "model.plan.json"


@pytest.mark.parametrize("existing", ["small.onnx", "small.plan.json"])
def test_prune_refuses_to_replace_an_existing_output(cli, model_path, tmp_path, existing):
    (tmp_path / existing).write_text("keep me")
    before = files(tmp_path)
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "small.onnx", "--ratio", 0.5)
    assert rc == 2
    msg = one_error_line(err)
    assert existing in msg and "--overwrite" in msg
    assert files(tmp_path) == before
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "small.onnx", "--ratio", 0.5, "--overwrite")
    assert rc == 0, err
    assert (tmp_path / existing).read_bytes() != b"keep me"


def test_report_refuses_to_replace_markdown_or_png(cli, pruned, tmp_path):
    _, _, plan = pruned
    for flag, name in (("-o", "r.md"), ("--png", "r.png")):
        (tmp_path / name).write_text("keep me")
        before = files(tmp_path)
        rc, out, err = cli("report", plan, flag, tmp_path / name)
        assert rc == 2 and name in one_error_line(err) and out == ""
        assert files(tmp_path) == before
        rc, _, err = cli("report", plan, flag, tmp_path / name, "--overwrite")
        assert rc == 0, err
        assert (tmp_path / name).read_text(errors="replace") != "keep me"


@pytest.mark.parametrize("ext", [".json", ".md"])
def test_bench_refuses_to_replace_its_outputs(cli, model_path, tmp_path, ext):
    (tmp_path / f"bench{ext}").write_text("keep me")
    before = files(tmp_path)
    rc, out, err = cli("bench", model_path, "-o", tmp_path / "bench", "--batch", 1, "--min-time", 0,
                       "--min-runs", 1, "--warmup", 0)
    assert rc == 2 and f"bench{ext}" in one_error_line(err) and "--overwrite" in err
    assert files(tmp_path) == before and out == ""


def test_finetune_refuses_to_replace_its_output(cli, model_path, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "tuned.onnx").write_text("keep me")
    before = files(tmp_path)
    rc, _, err = cli("finetune", model_path, "--train", tmp_path / "none.npz", "-o", tmp_path / "tuned.onnx")
    assert rc == 2 and "tuned.onnx" in one_error_line(err) and "--overwrite" in err
    assert files(tmp_path) == before


def test_finetune_refuses_the_input_as_output_even_with_resume(cli, model_path, tmp_path):
    pytest.importorskip("torch")
    before = files(tmp_path)
    rc, _, err = cli("finetune", model_path, "--train", tmp_path / "none.npz", "-o", model_path, "--resume")
    assert rc == 2 and "input model" in one_error_line(err)
    assert files(tmp_path) == before


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_the_users_umask(cli, model_path, tmp_path, umask_022):
    pytest.importorskip("matplotlib")
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "small.onnx", "--ratio", 0.5)
    assert rc == 0, err
    rc, _, err = cli("report", tmp_path / "small.plan.json", "-o", tmp_path / "r.md", "--png", tmp_path / "r.png")
    assert rc == 0, err
    for name in ("small.onnx", "small.plan.json", "r.md", "r.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary left


def test_atomic_write_keeps_the_mode_of_a_replaced_file(tmp_path, umask_022):
    from onnxprune.model_io import write_text_atomic
    path = tmp_path / "notes.md"
    path.write_text("old")
    path.chmod(0o600)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_plan_records_both_models(cli, pruned):
    import hashlib
    original, out, plan = pruned
    d = json.loads(plan.read_text())
    assert d["model_sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    assert d["pruned_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
