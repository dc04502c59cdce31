"""The refit record: it round-trips through the plan JSON, ``check_refit`` accepts exactly the
recorded changes, and the pipeline and CLI prove the structure on the rewrite before the refit."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from recover_models import images, pruned, resnet
from onnxprune.cli import main as cli_main
from onnxprune.pipeline import PruneConfig, prune
from onnxprune.recover import RefitRecord, check_refit, reconstruct
from onnxprune.rewrite.plan import Plan
from onnxprune.verify.oracle import compare


@pytest.fixture(scope="module")
def refitted():
    model = resnet()
    analysis, plan, structural = pruned(model)
    refit, record = reconstruct(model, structural, analysis, plan, images(48))
    plan.refit = record.to_dict()
    return model, plan, refit, record


def test_record_round_trips_through_plan_json(refitted):
    _, plan, _, record = refitted
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again.refit == plan.refit
    back = RefitRecord.from_dict(again.refit)
    assert back.initializers == record.initializers
    assert [(x.output, x.initializers, x.rows) for x in back.layers] == \
           [(x.output, x.initializers, x.rows) for x in record.layers]
    assert Plan.from_dict(json.loads(Plan(groups=plan.groups).to_json())).refit is None


def test_check_refit_accepts_recorded_changes_only(refitted):
    model, plan, refit, _ = refitted
    good = check_refit(model, refit, plan)
    assert good.ok and sorted(good.changed) == sorted(plan.refit["initializers"])
    assert compare(model, good.pre_refit, plan).ok
    tampered = onnx.ModelProto()
    tampered.CopyFrom(refit)
    name = sorted(plan.refit["initializers"])[0]
    t = next(t for t in tampered.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, name))
    bad = check_refit(model, tampered, plan)
    assert not bad.ok and "sha256" in bad.problems[0]
    unrecorded = dict(plan.refit, initializers={k: v for k, v in plan.refit["initializers"].items() if k != name})
    bad = check_refit(model, refit, Plan(groups=plan.groups, refit=unrecorded))
    assert not bad.ok and "not in the refit record" in " ".join(bad.problems)


def test_pipeline_refits_after_verifying_the_rewrite():
    model = resnet()
    calib = images(64)
    result = prune(model, PruneConfig(ratio=0.5, method="uniform-l1"), data=calib)
    assert result.report.ok and result.plan.refit is not None and result.plan.refit["layers"]
    check = check_refit(model, result.model, result.plan)
    assert check.ok and check.changed
    assert "reconstruct_s" in result.timings
    plain = prune(model, PruneConfig(ratio=0.5, method="uniform-l1", recover="none", channel_choice="reconstruction"),
                  data=calib)      # the same channels as the refitted prune, which chooses them by reconstruction
    assert plain.plan.refit is None
    assert all(np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
               for a, b in zip(plain.model.graph.initializer, check.pre_refit.graph.initializer))
    without_data = prune(model, PruneConfig(ratio=0.5, method="uniform-l1"))
    assert without_data.plan.refit is None


def test_cli_prune_then_verify_with_refit(tmp_path, capsys):
    model_path, data_path, out = tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "small.onnx"
    onnx.save(resnet(), model_path)
    np.save(data_path, images(48))
    assert cli_main(["prune", str(model_path), "-o", str(out), "--ratio", "0.5", "--data", str(data_path), "--calib-images", "48",
                     "--recover-images", "32"]) == 0
    assert "reconstruct:" in capsys.readouterr().out
    plan_path = tmp_path / "small.plan.json"
    assert json.loads(plan_path.read_text())["refit"]["images"] == 32
    assert cli_main(["verify", str(model_path), str(out), "--plan", str(plan_path)]) == 0
    assert "all recorded with matching sha256" in capsys.readouterr().out
    assert cli_main(["report", str(plan_path)]) == 0
    report = capsys.readouterr().out
    section = report[report.index("## Refit"):report.index("## Skipped")].splitlines()
    table = [line for line in section if line.startswith("|")]
    layers = json.loads(plan_path.read_text())["refit"]["layers"]
    assert table[0] == "| layer | op | initializers changed | error before | error after | note |"
    assert len(table) == 2 + len(layers) and all(line.endswith("|") for line in table)
    assert all(f"| {x['node']} | {x['op']} |" in report for x in layers)
    m = onnx.load(out)
    name = sorted(json.loads(plan_path.read_text())["refit"]["initializers"])[0]
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 0.5, name))
    onnx.save(m, out)
    # the plan's hash of the pruned file catches the change first (exit 2: plan and model do not fit)
    assert cli_main(["verify", str(model_path), str(out), "--plan", str(plan_path)]) == 2
    # without that hash (a plan from an older version) the refit record itself catches it (exit 1)
    plan = json.loads(plan_path.read_text())
    plan.pop("pruned_sha256")
    plan_path.write_text(json.dumps(plan))
    capsys.readouterr()
    assert cli_main(["verify", str(model_path), str(out), "--plan", str(plan_path)]) == 1
