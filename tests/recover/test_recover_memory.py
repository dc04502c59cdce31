"""The refit's stored frontier stays under its memory cap; past the cap the other images are
recomputed from the input, with the same batches, weights and errors as without a cap."""
from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from recover_models import images, pruned, residual_net, resnet
from onnxprune.cli import main as cli_main
from onnxprune.errors import BudgetError
from onnxprune.pipeline import PruneConfig
from onnxprune.recover import check_refit, reconstruct
from onnxprune.recover.record import RefitRecord, refit_summary
from onnxprune.recover.stepper import Stepper
from onnxprune.runtime import available_providers


def _walk(model, x, max_bytes, batch_size=8):
    """Step through every Conv and Add output of ``model`` in graph order; the batches of each
    step, the most bytes the stepper stored at any time, and its final resident image count."""
    steps = [[n.output[0]] for n in model.graph.node if n.op_type in ("Conv", "Add")]
    stepper = Stepper(x, batch_size, available_providers("cpu"), max_bytes)
    seen, most = [], 0
    for wanted in steps:
        batches = []
        for out in stepper.step(model, wanted):
            batches.append({t: np.array(v) for t, v in out.items()})
            most = max(most, stepper.stored_bytes())
        seen.append(batches)
    return seen, most, stepper.resident


# a frontier tensor of 8 channels at 12x12 is 4.5 KiB an image: 24 images' worth, or 1 byte
@pytest.mark.parametrize("max_bytes", [24 * 8 * 12 * 12 * 4, 1])
def test_capped_stepper_yields_the_uncapped_batches(max_bytes):
    model, x = residual_net(), images(44, (3, 12, 12))
    free, free_most, free_resident = _walk(model, x, None)
    capped, most, got_resident = _walk(model, x, max_bytes)
    assert free_resident == 44 and free_most > max_bytes     # the cap does bite
    assert (0 < got_resident < 44 if max_bytes > 1 else got_resident == 0) and got_resident % 8 == 0
    assert most <= max_bytes
    assert len(capped) == len(free)
    for a, b in zip(free, capped):
        assert len(a) == len(b) == 6
        for u, v in zip(a, b):
            for t in u:
                np.testing.assert_array_equal(u[t], v[t], err_msg=t)


@pytest.mark.parametrize("cap_mb", [1, 1 / 64])     # 1 MB: a few images keep theirs; 16 KiB: none
def test_reconstruct_under_a_tiny_cap_gives_the_same_refit(cap_mb):
    model = resnet()
    analysis, plan, structural = pruned(model)
    calib = images(48)
    free, free_record = reconstruct(model, structural, analysis, plan, calib, batch_size=8, positions_per_image=None)
    capped, record = reconstruct(model, structural, analysis, plan, calib, batch_size=8, positions_per_image=None,
                                 max_memory_mb=cap_mb)
    assert free_record.resident_images == 48 and record.memory_mb == cap_mb
    assert (0 < record.resident_images < 48) if cap_mb == 1 else record.resident_images == 0
    assert record.layers and len(record.layers) == len(free_record.layers)
    # the recomputed images run the very sub-graphs the stored ones ran: bit-identical, no tolerance
    for t, u in zip(free.graph.initializer, capped.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(t), numpy_helper.to_array(u), err_msg=t.name)
    for a, b in zip(free_record.layers, record.layers):
        assert (a.error_before, a.error_after, a.rows) == (b.error_before, b.error_after, b.rows)
    plan.refit = record.to_dict()
    assert check_refit(model, capped, plan).ok
    assert "recomputed for the others" in refit_summary(plan.refit)
    old = {k: v for k, v in plan.refit.items() if k not in ("memory_mb", "resident_images")}
    assert RefitRecord.from_dict(old).resident_images is None      # plans written before the cap still load
    assert "recomputed" not in refit_summary(old)


def test_the_cap_is_logged_once_per_model(caplog):
    model = resnet()
    analysis, plan, structural = pruned(model)
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        reconstruct(model, structural, analysis, plan, images(32), batch_size=8, max_memory_mb=1 / 64)
    lines = [r.getMessage() for r in caplog.records if "--recover-memory" in r.getMessage()]
    assert len(lines) == 2 and "pruned model" in lines[0] and "original model" in lines[1]
    assert "for all 32 images" in lines[0] and "kept for 0 images" in lines[0]


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_recover_memory_must_be_a_positive_integer(bad):
    with pytest.raises(BudgetError, match="--recover-memory"):
        PruneConfig(ratio=0.5, recover_memory_mb=bad).validate()


def test_cli_recover_memory_reaches_the_plan_and_bad_values_are_refused(tmp_path, capsys):
    model_path, data_path, out = tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "small.onnx"
    onnx.save(resnet(), model_path)
    np.save(data_path, images(48))
    args = ["prune", str(model_path), "-o", str(out), "--ratio", "0.5", "--data", str(data_path),
            "--calib-images", "48"]
    assert cli_main(args + ["--recover-memory", "1"]) == 0
    assert "under the 1 MB cap, recomputed for the others" in capsys.readouterr().out
    refit = json.loads((tmp_path / "small.plan.json").read_text())["refit"]
    assert refit["memory_mb"] == 1 and refit["resident_images"] < 48
    assert cli_main(["verify", str(model_path), str(out), "--plan", str(tmp_path / "small.plan.json")]) == 0
    assert cli_main(args + ["--recover-memory", "0", "-o", str(tmp_path / "other.onnx")]) != 0
    assert "--recover-memory must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "other.onnx").exists()
