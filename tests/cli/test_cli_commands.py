"""The command line: analyze / prune / verify on a small generated model, and every bad input
answered with exit status 2, one line naming the file, node or tensor, and no file written."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.cli import main

from onnx_builders import conv_chain, small_resnet


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
# the `cli` and `model_path` fixtures come from tests/cli/conftest.py


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def error_line(err: str) -> str:
    """The one error line of a failed run (progress lines may precede it)."""
    lines = [l for l in err.splitlines() if l.startswith("onnxprune: error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]), err           # nothing after it: one line
    return lines[0]


def refused(cli, folder: Path, *args, rc: int = 2) -> str:
    """Run, expect exit status ``rc`` and no new file in ``folder``; return the error line."""
    before = files(folder)
    code, out, err = cli(*args)
    assert code == rc, (code, out, err)
    assert files(folder) == before
    return error_line(err)


def count_macs(model: onnx.ModelProto) -> float:
    """MACs per image of every Conv and Gemm, counted independently of onnxprune:
    k_h·k_w·(C_in/g)·C_out·H_out·W_out for a Conv, K·N for a Gemm."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            total += float(np.prod(w)) * float(np.prod(shapes[node.output[0]][2:]))
        elif node.op_type == "Gemm":
            total += float(np.prod(inits[node.input[1]]))
    return total


def count_params(model: onnx.ModelProto) -> float:
    """Float initializer elements, without BatchNormalization running mean and variance."""
    buffers = {n.input[k] for n in model.graph.node if n.op_type == "BatchNormalization" for k in (3, 4)}
    return float(sum(np.prod(t.dims) for t in model.graph.initializer
                     if t.name not in buffers and t.data_type == onnx.TensorProto.FLOAT))


def prune_ok(cli, model_path, *args):
    """Prune into model_path's folder; return (pruned model, plan dict, pruned path, plan path)."""
    out = model_path.parent / "small.onnx"
    rc, stdout, err = cli("prune", model_path, "-o", out, *args)
    assert rc == 0, err
    plan_path = model_path.parent / "small.plan.json"
    assert out.is_file() and plan_path.is_file()
    assert f"wrote {out}" in stdout and "verify: OK" in stdout
    return onnx.load(out), json.loads(plan_path.read_text()), out, plan_path


# ------------------------------------------------------------------------------------------
# analyze
# ------------------------------------------------------------------------------------------
def test_console_help():
    res = subprocess.run([sys.executable, "-m", "onnxprune.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for word in ("analyze", "prune", "verify", "FLOPs = 2 x MACs"):
        assert word in res.stdout


def test_analyze_table(cli, model_path):
    rc, out, err = cli("analyze", model_path)
    assert rc == 0, err
    macs = count_macs(onnx.load(model_path))
    assert f"{macs / 1e6:.2f} M MACs ({2 * macs / 1e6:.2f} M FLOPs) per image" in out
    rows = [l.split() for l in out.splitlines() if re.match(r"\s+\d+\s+\d+\s", l)]
    assert [(r[1], r[3]) for r in rows] == [("16", "prunable"), ("16", "prunable"), ("32", "prunable"),
                                            ("32", "prunable"), ("10", "skipped"), ("8", "skipped")]
    assert "stem, b1_conv2 -> b1_conv1, b2_conv1" in out
    aux_out = onnx.load(model_path).graph.output[1].name
    assert f"why: reaches graph output '{aux_out}'" in out
    assert "total: 6 groups, 4 prunable, 2 skipped" in out


def test_analyze_json(cli, model_path):
    rc, out, err = cli("analyze", model_path, "--json")
    assert rc == 0, err
    report = json.loads(out)
    macs = count_macs(onnx.load(model_path))
    assert report["macs"] == pytest.approx(macs, rel=1e-12)
    assert report["flops"] == pytest.approx(2 * macs, rel=1e-12)
    assert report["params"] == count_params(onnx.load(model_path))
    assert "FLOPs = 2 x MACs" in report["unit"]
    groups = report["groups"]
    assert [(g["channels"], g["prunable"]) for g in groups] == \
        [(16, True), (16, True), (32, True), (32, True), (10, False), (8, False)]
    assert report["totals"] == {"groups": 6, "prunable": 4, "skipped": 2}
    assert sorted(groups[0]["producers"]) == ["b1_conv2", "stem"]
    assert groups[5]["producers"] == ["aux"] and groups[5]["skip_reasons"][0].startswith("reaches graph output")
    assert all(0 <= g["macs_share"] <= 1 for g in groups)


# ------------------------------------------------------------------------------------------
# prune and verify
# ------------------------------------------------------------------------------------------
def test_prune_flops_reduction_then_verify(cli, model_path):
    original = onnx.load(model_path)
    pruned, plan, out, plan_path = prune_ok(cli, model_path, "--flops-reduction", 0.3)
    achieved = plan["budget"]["achieved"]["macs_reduction"]
    assert abs(achieved - 0.3) <= 0.01
    assert plan["budget"]["requested"] == {"macs_reduction": 0.3}
    # the figures in the plan are those of the written model
    assert 1 - count_macs(pruned) / count_macs(original) == pytest.approx(achieved, abs=1e-9)
    assert plan["cost"]["macs"]["pruned"] == pytest.approx(count_macs(pruned))
    assert plan["cost"]["params"]["pruned"] == pytest.approx(count_params(pruned))
    onnx.checker.check_model(pruned, full_check=True)
    assert onnx.load(model_path) == original                 # input untouched
    rc, stdout, err = cli("verify", model_path, out, "--plan", plan_path)
    assert rc == 0, err
    assert stdout.rstrip().endswith("verify: OK")


@pytest.mark.parametrize("target", [
    0.3,
    0.4,
])
def test_prune_params_reduction(cli, model_path, target):
    original = onnx.load(model_path)
    pruned, plan, _, _ = prune_ok(cli, model_path, "--params-reduction", target)
    achieved = plan["budget"]["achieved"]["params_reduction"]
    assert 1 - count_params(pruned) / count_params(original) == pytest.approx(achieved, abs=1e-9)
    assert target <= achieved <= target + 0.01


def test_prune_ratio(cli, model_path):
    _, plan, _, _ = prune_ok(cli, model_path, "--ratio", 0.5)
    kept = [(g["channels"], g["kept_count"]) for g in plan["groups"]]
    assert kept == [(16, 8), (16, 8), (32, 16), (32, 16), (10, 10), (8, 8)]
    for g in plan["groups"]:
        assert sorted(g["kept"] + g["removed"]) == list(range(g["channels"]))


@pytest.mark.parametrize("budget", [["--flops-reduction", 0.3], ["--ratio", 0.3]])
def test_prune_round_to(cli, model_path, budget):
    _, plan, _, _ = prune_ok(cli, model_path, *budget, "--round-to", 4)
    counts = [(g["channels"], g["kept_count"]) for g in plan["groups"] if g["prunable"]]
    assert any(k < c for c, k in counts)
    for c, k in counts:
        assert k % 4 == 0 or k == c, counts
    if budget[0] == "--flops-reduction":
        assert abs(plan["budget"]["achieved"]["macs_reduction"] - 0.3) <= 0.03


def test_prune_round_to_auto(cli, model_path, monkeypatch):
    import onnxprune.runtime as runtime
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"sse2", "avx", "avx2"})
    _, plan, _, _ = prune_ok(cli, model_path, "--ratio", 0.3, "--round-to", "auto")
    assert plan["settings"]["round_to"] == 8
    for g in plan["groups"]:
        if g["prunable"]:
            assert g["kept_count"] % 8 == 0 or g["kept_count"] == g["channels"]


def test_preferred_channel_multiple():
    from onnxprune.runtime import preferred_channel_multiple
    assert preferred_channel_multiple("cpu", {"avx2", "avx512f"})[0] == 16
    assert preferred_channel_multiple("cpu", {"avx2"})[0] == 8
    assert preferred_channel_multiple("cuda", set())[0] == 8


def test_prune_round_to_rejects_words(cli, model_path, tmp_path):
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "o.onnx", "--ratio", 0.3, "--round-to", "fast")
    assert rc == 2 and "--round-to must be a positive integer or 'auto'" in err
    assert not (tmp_path / "o.onnx").exists()


def test_prune_global_allocation(cli, model_path):
    _, plan, _, _ = prune_ok(cli, model_path, "--flops-reduction", 0.3, "--allocation", "global")
    assert plan["settings"]["allocation"] == "global"
    assert abs(plan["budget"]["achieved"]["macs_reduction"] - 0.3) <= 0.01


@pytest.mark.parametrize("criterion", ["l1", "l2", "random", "fpgm"])
def test_prune_criteria(cli, model_path, criterion):
    original = onnx.load(model_path)
    _, plan, _, _ = prune_ok(cli, model_path, "--ratio", 0.5, "--criterion", criterion)
    assert plan["settings"]["criterion"] == criterion
    group = plan["groups"][1]                         # b1_conv1 alone produces it
    assert group["producers"] == ["b1_conv1"]
    if criterion in ("l1", "l2"):
        conv = next(n for n in original.graph.node if n.name == "b1_conv1")
        w = numpy_helper.to_array(next(t for t in original.graph.initializer if t.name == conv.input[1]))
        norms = np.abs(w).reshape(16, -1).sum(1) if criterion == "l1" else np.sqrt((w.reshape(16, -1) ** 2).sum(1))
        assert group["kept"] == sorted(np.argsort(-norms)[:8].tolist())


def _without_pruned_hash(plan_path: Path, dest: Path) -> Path:
    """A copy of the plan that does not record the pruned model's hash (as plans of older versions)."""
    d = json.loads(plan_path.read_text())
    d.pop("pruned_sha256")
    dest.write_text(json.dumps(d))
    return dest


def _tamper(out: Path, dest: Path) -> Path:
    bad = onnx.load(out)
    conv = next(n for n in bad.graph.node if n.name == "b2_conv2")
    t = next(t for t in bad.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(t).copy()
    w[0, 0, 1, 1] += 0.1
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save(bad, dest)
    return dest


def test_verify_exits_1_on_mismatch(cli, model_path, tmp_path):
    _, plan, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5)
    bad = _tamper(out, tmp_path / "bad.onnx")
    old_plan = _without_pruned_hash(plan_path, tmp_path / "old.plan.json")
    rc, stdout, err = cli("verify", model_path, bad, "--plan", old_plan)
    assert rc == 1, err
    assert "MISMATCH" in stdout and "FAILED" in stdout


def test_verify_refuses_a_changed_pruned_model(cli, model_path, tmp_path):
    _, plan, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5)
    assert plan["pruned_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert plan["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    bad = _tamper(out, tmp_path / "bad.onnx")
    msg = refused(cli, tmp_path, "verify", model_path, bad, "--plan", plan_path)
    assert "this plan does not fit this pruned model" in msg and "bad.onnx" in msg


def test_verify_with_a_plan_of_another_pruning(cli, model_path, tmp_path):
    _, _, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5, "--criterion", "l1")
    other = tmp_path / "other.plan.json"
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "other.onnx", "--plan", other,
                     "--ratio", 0.5, "--criterion", "random")
    assert rc == 0, err
    msg = refused(cli, tmp_path, "verify", model_path, out, "--plan", other)
    assert "this plan does not fit this pruned model" in msg
    # without the pruned model's hash, the oracle itself finds the other channels
    rc, stdout, err = cli("verify", model_path, out, "--plan", _without_pruned_hash(other, tmp_path / "o2.json"))
    assert rc == 1 and "MISMATCH" in stdout


def test_verify_plan_defaults_to_the_one_beside_the_pruned_model(cli, model_path, tmp_path):
    out = tmp_path / "slim.v1.onnx"
    rc, _, err = cli("prune", model_path, "-o", out, "--ratio", 0.5)
    assert rc == 0, err
    assert (tmp_path / "slim.v1.plan.json").is_file()
    rc, stdout, err = cli("verify", model_path, out)
    assert rc == 0, err
    assert stdout.rstrip().endswith("verify: OK")
    (tmp_path / "slim.v1.plan.json").unlink()
    msg = refused(cli, tmp_path, "verify", model_path, out)
    assert "slim.v1.plan.json" in msg


# ------------------------------------------------------------------------------------------
# bad input: exit 2, one line naming the culprit, nothing written
# ------------------------------------------------------------------------------------------
def test_missing_file(cli, tmp_path):
    msg = refused(cli, tmp_path, "prune", tmp_path / "nope.onnx", "-o", tmp_path / "o.onnx", "--ratio", 0.5)
    assert "nope.onnx" in msg and "no such file" in msg
    assert "nope.onnx" in refused(cli, tmp_path, "analyze", tmp_path / "nope.onnx")


def test_truncated_file(cli, model_path, tmp_path):
    data = model_path.read_bytes()
    half = tmp_path / "half.onnx"
    half.write_bytes(data[:len(data) // 2])
    msg = refused(cli, tmp_path, "prune", half, "-o", tmp_path / "o.onnx", "--ratio", 0.5)
    assert "half.onnx" in msg
    assert "half.onnx" in refused(cli, tmp_path, "analyze", half)


def test_text_file_named_onnx(cli, tmp_path):
    fake = tmp_path / "notes.onnx"
    fake.write_text("name,value\nlayer1,0.5\nthis is not a protobuf\n")
    msg = refused(cli, tmp_path, "prune", fake, "-o", tmp_path / "o.onnx", "--ratio", 0.5)
    assert "notes.onnx" in msg
    assert "notes.onnx" in refused(cli, tmp_path, "analyze", fake)


def test_output_equal_to_input_needs_overwrite(cli, model_path, tmp_path):
    original = model_path.read_bytes()
    msg = refused(cli, tmp_path, "prune", model_path, "-o", model_path, "--ratio", 0.5)
    assert "net.onnx" in msg and "--overwrite" in msg
    assert model_path.read_bytes() == original
    rc, _, err = cli("prune", model_path, "-o", model_path, "--ratio", 0.5, "--overwrite")
    assert rc == 0, err
    assert model_path.read_bytes() != original
    assert (tmp_path / "net.plan.json").is_file()
    assert count_macs(onnx.load(model_path)) < count_macs(onnx.ModelProto.FromString(original))


def test_impossible_budget_names_the_largest_reachable(cli, model_path, tmp_path):
    # every group at a single channel is the smallest model the pruner can reach
    rc, _, err = cli("prune", model_path, "-o", tmp_path / "min.onnx", "--ratio", 0.99, "--no-verify")
    assert rc == 0, err
    plan = json.loads((tmp_path / "min.plan.json").read_text())
    assert {g["kept_count"] for g in plan["groups"] if g["prunable"]} == {1}
    largest = plan["budget"]["achieved"]["macs_reduction"]
    assert 0.9 < largest < 0.99
    msg = refused(cli, tmp_path, "prune", model_path, "-o", tmp_path / "o.onnx", "--flops-reduction", 0.99)
    assert f"{100 * largest:.1f} %" in msg, msg


@pytest.mark.parametrize("flag", ["--flops-reduction", "--params-reduction", "--ratio"])
def test_budget_out_of_range(cli, model_path, tmp_path, flag):
    msg = refused(cli, tmp_path, "prune", model_path, "-o", tmp_path / "o.onnx", flag, 1.5)
    assert flag in msg and "1.5" in msg


def test_external_data_outside_the_model_folder_is_refused(cli, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    model = conv_chain()
    onnx.save(model, folder / "ok.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ok.bin", size_threshold=0)
    rc, _, err = cli("analyze", folder / "ok.onnx")          # data beside the model: fine
    assert rc == 0, err
    (tmp_path / "secret.bin").write_bytes((folder / "ok.bin").read_bytes())
    evil = onnx.load(folder / "ok.onnx", load_external_data=False)
    for t in evil.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save(evil, folder / "evil.onnx")
    msg = refused(cli, tmp_path, "prune", folder / "evil.onnx", "-o", folder / "o.onnx", "--ratio", 0.5)
    assert "evil.onnx" in msg and "../secret.bin" in msg and "outside" in msg
    assert "../secret.bin" in refused(cli, tmp_path, "analyze", folder / "evil.onnx")


def test_dynamic_spatial_dims_need_input_shape(cli, tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(small_resnet(shape=("N", 3, "H", "W")), path)
    msg = refused(cli, tmp_path, "analyze", path)
    assert "--input-shape" in msg and "stem" in msg
    msg = refused(cli, tmp_path, "prune", path, "-o", tmp_path / "o.onnx", "--ratio", 0.5)
    assert "--input-shape" in msg
    rc, out, err = cli("analyze", path, "--input-shape", "input=1x3x16x16", "--json")
    assert rc == 0, err
    assert json.loads(out)["macs"] == pytest.approx(count_macs(small_resnet()))
    rc, _, err = cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", 0.5, "--input-shape", "input=1x3x16x16")
    assert rc == 0, err


def test_dynamic_channel_dim_needs_input_shape(cli, tmp_path):
    path = tmp_path / "dync.onnx"
    onnx.save(small_resnet(shape=(1, "C", 16, 16)), path)
    msg = refused(cli, tmp_path, "prune", path, "-o", tmp_path / "o.onnx", "--ratio", 0.5)
    assert "--input-shape" in msg and "'input'" in msg
    rc, _, err = cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", 0.5, "--input-shape", "input=1x3x16x16")
    assert rc == 0, err
    rc, _, err = cli("verify", path, tmp_path / "o.onnx", "--plan", tmp_path / "o.plan.json",
                     "--input-shape", "input=1x3x16x16")
    assert rc == 0, err


def test_bad_input_shape_option(cli, model_path, tmp_path):
    msg = refused(cli, tmp_path, "analyze", model_path, "--input-shape", "image=1x3x16x16")
    assert "'image'" in msg and "input" in msg


def test_corrupted_plan_json(cli, model_path, tmp_path):
    _, _, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5)
    text = plan_path.read_text()
    plan_path.write_text(text[: len(text) // 2])
    msg = refused(cli, tmp_path, "verify", model_path, out, "--plan", plan_path)
    assert "small.plan.json" in msg and "JSON" in msg
    plan_path.write_text(json.dumps({"format": "onnxprune-plan/1", "groups": [{"id": 0}]}))
    assert "small.plan.json" in refused(cli, tmp_path, "verify", model_path, out, "--plan", plan_path)


@pytest.mark.parametrize("text", ["[1, 2]", '{"format": "something-else", "groups": []}'])
def test_plan_json_of_the_wrong_shape(cli, model_path, tmp_path, text):
    _, _, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5)
    plan_path.write_text(text)
    assert "small.plan.json" in refused(cli, tmp_path, "verify", model_path, out, "--plan", plan_path)


def test_verify_with_a_plan_from_another_model(cli, model_path, tmp_path):
    _, _, out, plan_path = prune_ok(cli, model_path, "--ratio", 0.5)
    other = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), other)
    rc, _, err = cli("prune", other, "-o", tmp_path / "chain_small.onnx", "--ratio", 0.5)
    assert rc == 0, err
    msg = refused(cli, tmp_path, "verify", model_path, out, "--plan", tmp_path / "chain_small.plan.json")
    assert re.search(r"another model|tensor|edge|group", msg), msg
    msg = refused(cli, tmp_path, "verify", other, tmp_path / "chain_small.onnx", "--plan", plan_path)
    assert re.search(r"another model|tensor|edge|group", msg), msg


def test_report_markdown_and_png(cli, model_path, tmp_path):
    _, _, out, plan_path = prune_ok(cli, model_path, "--flops-reduction", 0.3)
    rc, stdout, err = cli("report", plan_path, "-o", tmp_path / "r.md", "--png", tmp_path / "r.png")
    assert rc == 0, err
    text = (tmp_path / "r.md").read_text()
    assert "requested: macs_reduction 30.00 %" in text and "## Skipped groups" in text
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
