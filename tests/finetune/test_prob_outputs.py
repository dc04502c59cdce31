"""Probability outputs (softmax along an axis) distilled by KL on the distributions, and the
starting model kept when no epoch improves on it."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_builders import Net  # noqa: E402

from onnxprune.data import load_dataset  # noqa: E402
from onnxprune.finetune import FinetuneConfig, finetune  # noqa: E402
from onnxprune.finetune.losses import (distill_loss, output_specs, probability_axis,  # noqa: E402
                                       softmax_output_axes)
from onnxprune.runtime import AnyBatchSession  # noqa: E402

CFG = dict(epochs=3, batch_size=32, lr=0.05, crop_padding=0, flip=False, reinsert_bn=False, seed=0)


def detector_net(seed: int, opset: int = 13) -> onnx.ModelProto:
    """A tiny detector: per-position 2-class probabilities (N, 64, 2) from a Softmax, and boxes (N, 64, 4)."""
    n = Net(opset, seed)
    y = n.relu(n.conv(n.input("x", [1, 3, 8, 8]), 3, 8))
    y = n.relu(n.conv(y, 8, 8))

    def per_position(c: int) -> str:
        t = n.node("Transpose", [n.conv(y, 8, c, k=1)], perm=[0, 2, 3, 1])
        return n.node("Reshape", [t, n.ints([0, -1, c])])
    logits = n.node("Mul", [per_position(2), n.const(np.float32(4.0))])    # confident scores
    n.output(n.node("Softmax", [logits], axis=2), [1, 64, 2])
    n.output(per_position(4), [1, 64, 4])
    return n.model()


def unlabelled(path: Path, n: int = 96, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).integers(0, 255, (n, 8, 8, 3)).astype(np.uint8))
    return path


def softmax(z, axis):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_probabilities_are_recognised_by_values_or_by_their_softmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10, 3)).astype(np.float32)
    assert probability_axis(softmax(logits, -1)) == 2
    assert probability_axis(logits) is None
    assert probability_axis(softmax(logits, 1)) is None                  # the last axis does not sum to 1
    assert probability_axis(softmax(logits, 1), softmax_axis=1) == 1     # a Softmax on axis 1 says where
    assert probability_axis(np.full((4, 10, 1), 1.0, np.float32)) is None  # one class is no distribution
    specs = output_specs(["p", "z", "m", "q"], [softmax(logits[:, 0], -1), logits[:, 0], logits,
                                                  softmax(logits, -1)], prob_loss="kl")
    assert [(s.kind, s.axis, s.probs) for s in specs] == [("class", -1, True), ("class", -1, False),
                                                           ("regress", -1, False), ("prob", 2, False)]
    assert [s.kind for s in output_specs(["q"], [softmax(logits, -1)], prob_loss="regress")] == ["regress"]


def test_softmax_axes_follow_the_opset_semantics():
    assert softmax_output_axes(detector_net(1, opset=13)) == {detector_net(1).graph.output[0].name: 2}
    old = detector_net(1, opset=11)   # before opset 13 axis=2 of a rank-3 output is the last axis
    assert softmax_output_axes(old) == {old.graph.output[0].name: 2}
    for node in old.graph.node:
        if node.op_type == "Softmax":
            node.attribute[0].i = 1          # flattens (64, 2) into one distribution: not per axis
    assert softmax_output_axes(old) == {}


def test_kl_on_probabilities_equals_kl_on_the_logits_at_any_temperature():
    rng = np.random.default_rng(1)
    zs, zt = (torch.from_numpy(rng.standard_normal((3, 7, 4)).astype(np.float32) * 3) for _ in range(2))
    spec = output_specs(["p"], [softmax(zt.numpy(), -1)])
    for T in (1.0, 4.0):
        got = distill_loss([torch.softmax(zs, -1)], [torch.softmax(zt, -1)], spec, 9.0, prob_loss="kl",
                           prob_temperature=T)
        ls, lt = torch.log_softmax(zs / T, -1), torch.log_softmax(zt / T, -1)
        want = (lt.exp() * (lt - ls)).sum(-1).mean() * T * T
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    same = distill_loss([torch.softmax(zt, -1)], [torch.softmax(zt, -1)], spec, 1.0, prob_loss="kl")
    assert abs(float(same)) < 1e-6
    l1 = distill_loss([torch.softmax(zs, -1)], [torch.softmax(zt, -1)], spec, 1.0)    # the default
    assert float(l1) == pytest.approx(float((torch.softmax(zs, -1) - torch.softmax(zt, -1)).abs().mean()), rel=1e-6)
    rows = output_specs(["p"], [softmax(zt[:, 0].numpy(), -1)])   # (N, C) probabilities: class KL at T
    assert rows[0].kind == "class" and rows[0].probs
    got = distill_loss([torch.softmax(zs[:, 0], -1)], [torch.softmax(zt[:, 0], -1)], rows, 4.0)
    logits = distill_loss([zs[:, 0]], [zt[:, 0]], output_specs(["z"], [zt[:, 0].numpy()]), 4.0)
    assert float(got) == pytest.approx(float(logits), rel=1e-5)


@pytest.mark.parametrize("prob_loss, said", [("l1", "L1 on probabilities along axis 2"),
                                             ("kl", "KL (T 1) on probabilities along axis 2")])
def test_label_free_distillation_of_probability_maps_moves_the_score_map_to_the_teacher(
        tmp_path, caplog, prob_loss, said):
    teacher, student = detector_net(1), detector_net(2)
    train = load_dataset(unlabelled(tmp_path / "train.npy"), shuffle=False)
    val_x = load_dataset(unlabelled(tmp_path / "val.npy", n=64, seed=5), shuffle=False).arrays()[0]

    def score_mae(model):
        return float(np.abs(AnyBatchSession(model).run(val_x)[0] - AnyBatchSession(teacher).run(val_x)[0]).mean())
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        finetune(student, train, (val_x, None),
                 FinetuneConfig(**{**CFG, "epochs": 6, "lr": 0.01, "kd_prob_loss": prob_loss}),
                 tmp_path / "out.onnx", teacher=teacher)
    assert said in caplog.text
    before, after = score_mae(student), score_mae(onnx.load(tmp_path / "out.onnx"))
    assert after < 0.6 * before, (before, after)


def test_no_epoch_better_than_the_start_keeps_the_starting_model(tmp_path, caplog):
    teacher = detector_net(1)
    train = load_dataset(unlabelled(tmp_path / "train.npy"), shuffle=False)
    val_x = load_dataset(unlabelled(tmp_path / "val.npy", n=32, seed=5), shuffle=False).arrays()[0]
    out = tmp_path / "out.onnx"
    with caplog.at_level(logging.INFO, logger="onnxprune"):   # the student is the teacher: nothing to gain
        summary = finetune(teacher, train, (val_x, None), FinetuneConfig(**{**CFG, "epochs": 2, "lr": 1.0}),
                           out, teacher=teacher)
    assert summary["best"]["epoch"] == 0
    assert all(r["val_distance"] > summary["before"]["val_distance"] for r in summary["history"])
    assert out.read_bytes() == teacher.SerializeToString()
    lines = [r.getMessage() for r in caplog.records if "no epoch improved" in r.getMessage()]
    assert len(lines) == 1 and "exported the starting model unchanged" in lines[0] and "\n" not in lines[0]
    assert "exported epoch" not in caplog.text


def test_cli_says_in_one_line_that_the_start_was_kept(tmp_path, capsys):
    from onnxprune.cli import main
    model = tmp_path / "m.onnx"
    onnx.save(detector_net(1), model)
    unlabelled(tmp_path / "train.npy", n=64)
    unlabelled(tmp_path / "val.npy", n=32, seed=5)
    rc = main(["finetune", str(model), "--train", str(tmp_path / "train.npy"), "--val", str(tmp_path / "val.npy"),
               "--teacher", str(model), "-o", str(tmp_path / "out.onnx"), "--epochs", "1", "--lr", "1.0",
               "--batch-size", "32", "--crop-padding", "0", "--no-flip", "--no-reinsert-bn", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'out.onnx'} (the starting model unchanged: "
                                                  "no epoch improved on it, val_distance ")
    assert (tmp_path / "out.onnx").read_bytes() == model.read_bytes()


@pytest.mark.parametrize("bn_stats", ["auto", "frozen", "update"])
def test_frozen_bn_statistics_stay_while_the_rest_trains(tmp_path, bn_stats, caplog):
    from onnx import numpy_helper
    from onnx_builders import conv_chain
    student, teacher = conv_chain(seed=2), conv_chain(seed=1)
    train = load_dataset(unlabelled(tmp_path / "train.npy"), shuffle=False)
    cfg = FinetuneConfig(**{**CFG, "epochs": 1, "lr": 0.01, "bn_stats": bn_stats})
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        summary = finetune(student, train, None, cfg, tmp_path / "out.onnx", teacher=teacher)
    freeze = bn_stats != "update"                     # auto: frozen without labels
    assert summary["config"]["bn_stats"] == ("frozen" if freeze else "update")
    assert ("without labels: BatchNorm statistics frozen" in caplog.text) == (bn_stats == "auto")
    bn = next(n for n in student.graph.node if n.op_type == "BatchNormalization")
    conv = next(n for n in student.graph.node if n.op_type == "Conv")

    def values(model, name):
        return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
    out = onnx.load(tmp_path / "out.onnx")
    stats_kept = all(np.array_equal(values(out, n), values(student, n)) for n in bn.input[3:5])
    assert stats_kept == freeze
    assert not np.array_equal(values(out, conv.input[1]), values(student, conv.input[1]))
    assert not np.array_equal(values(out, bn.input[1]), values(student, bn.input[1]))   # the BN scale trains


def test_learning_rate_left_to_the_supervision(tmp_path):
    from onnxprune.finetune.config import DEFAULT_LR_LABEL_FREE, DEFAULT_LR_LABELLED
    from onnx_builders import conv_chain
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "l.npz", x=rng.integers(0, 255, (64, 8, 8, 3)).astype(np.uint8),
             y=rng.integers(0, 5, 64).astype(np.uint8))
    cfg = FinetuneConfig(**{**CFG, "epochs": 1, "lr": None})
    labelled = finetune(conv_chain(seed=2), load_dataset(tmp_path / "l.npz", shuffle=False), None, cfg,
                        tmp_path / "a.onnx")
    free = finetune(conv_chain(seed=2), load_dataset(unlabelled(tmp_path / "u.npy"), shuffle=False), None, cfg,
                    tmp_path / "b.onnx", teacher=conv_chain(seed=1))
    assert (labelled["config"]["lr"], labelled["config"]["bn_stats"]) == (DEFAULT_LR_LABELLED, "update")
    assert (free["config"]["lr"], free["config"]["bn_stats"]) == (DEFAULT_LR_LABEL_FREE, "frozen")
