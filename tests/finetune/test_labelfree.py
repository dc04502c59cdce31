"""Label-free distillation on every output, the recipe's one-line errors, and its CLI options."""
from __future__ import annotations

import argparse
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
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.finetune import (FINETUNE_OPTIONS, FinetuneConfig, NoSupervisionError,  # noqa: E402
                                NotAClassifierError, TeacherMismatchError, add_finetune_arguments,
                                config_from_namespace, finetune)
from onnxprune.runtime import AnyBatchSession  # noqa: E402

CFG = dict(epochs=3, batch_size=32, lr=0.05, crop_padding=0, flip=False, reinsert_bn=False, seed=0)


def two_head_net(seed: int, classes: int = 3, input_name: str = "x") -> onnx.ModelProto:
    """Conv trunk with a class-score output (N, classes) and a regression map (N, 2, 8, 8)."""
    n = Net(13, seed)
    x = n.input(input_name, [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8))
    y = n.relu(n.conv(y, 8, 8))
    logits = n.gemm(n.flatten(n.gap(y)), 8, classes)
    n.output(n.node("Mul", [logits, n.const(np.float32(8.0))]))    # confident class scores
    n.output(n.conv(y, 8, 2, k=1))
    return n.model()


def one_head_net(seed: int = 1) -> onnx.ModelProto:
    n = Net(13, seed)
    y = n.relu(n.conv(n.input("x", [1, 3, 8, 8]), 3, 8))
    n.head(y, 8, classes=3)
    return n.model()


def unlabelled(path: Path, n: int = 96, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).integers(0, 255, (n, 8, 8, 3)).astype(np.uint8))
    return path


def labelled(path: Path, n: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 255, (n, 8, 8, 3)).astype(np.uint8), y=rng.integers(0, 3, n).astype(np.uint8))
    return path


def distances(student: onnx.ModelProto, teacher: onnx.ModelProto, x: np.ndarray) -> tuple[float, float]:
    """(KL of the class output at T=1, mean |diff| of the regression output), via onnxruntime."""
    (s_cls, s_map), (t_cls, t_map) = AnyBatchSession(student).run(x), AnyBatchSession(teacher).run(x)

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    kl = float((np.exp(log_softmax(t_cls)) * (log_softmax(t_cls) - log_softmax(s_cls))).sum(1).mean())
    return kl, float(np.abs(s_map - t_map).mean())


def test_label_free_distillation_reduces_distance_on_every_output(tmp_path, caplog):
    teacher, student = two_head_net(seed=1), two_head_net(seed=2)
    train = load_dataset(unlabelled(tmp_path / "train.npy"), shuffle=False)
    val_x = load_dataset(unlabelled(tmp_path / "val.npy", n=64, seed=5), shuffle=False).arrays()[0]
    kl0, mae0 = distances(student, teacher, val_x)
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        summary = finetune(student, train, (val_x, None), FinetuneConfig(**{**CFG, "epochs": 6, "lr": 0.01}),
                           tmp_path / "out.onnx", teacher=teacher)
    out = onnx.load(tmp_path / "out.onnx")
    kl1, mae1 = distances(out, teacher, val_x)
    assert kl1 < 0.5 * kl0 and mae1 < 0.7 * mae0, (kl0, kl1, mae0, mae1)
    assert summary["kd_weight"] == 1.0 and not summary["uses_labels"]
    assert summary["selection"] == "val_distance"
    assert summary["best"]["value"] < summary["before"]["val_distance"]
    text = caplog.text
    assert "before training: val distance to teacher" in text
    assert "lowest validation distance to the teacher" in text


def test_no_labels_and_no_teacher_is_one_line_error(tmp_path):
    train = load_dataset(unlabelled(tmp_path / "u.npy"), shuffle=False)
    with pytest.raises(NoSupervisionError, match="u.npy: unlabelled training data and no teacher") as err:
        finetune(one_head_net(), train, None, FinetuneConfig(**CFG), tmp_path / "o.onnx")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "o.onnx").exists()


def test_multi_output_with_labels_and_no_teacher_is_one_line_error(tmp_path):
    train = load_dataset(labelled(tmp_path / "l.npz"), shuffle=False)
    with pytest.raises(NotAClassifierError, match="2 output") as err:
        finetune(two_head_net(seed=2), train, None, FinetuneConfig(**CFG), tmp_path / "o.onnx")
    assert "\n" not in str(err.value) and "teacher" in str(err.value)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("teacher, words", [
    (lambda: one_head_net(), "1 outputs"),
    (lambda: two_head_net(seed=1, input_name="image"), "teacher input 'image'"),
    (lambda: two_head_net(seed=1, classes=4), "shape (2, 4) from the teacher"),
])
def test_teacher_that_does_not_match_the_student(tmp_path, teacher, words):
    train = load_dataset(unlabelled(tmp_path / "u.npy"), shuffle=False)
    with pytest.raises(TeacherMismatchError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        finetune(two_head_net(seed=2), train, None, FinetuneConfig(**CFG), tmp_path / "o.onnx",
                 teacher=teacher())
    assert "\n" not in str(err.value)
    assert not (tmp_path / "o.onnx").exists()


def test_teacher_without_weight_gets_the_default(tmp_path, caplog):
    data = load_dataset(labelled(tmp_path / "l.npz"), shuffle=False)
    val = data.arrays()
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        summary = finetune(one_head_net(2), data, val, FinetuneConfig(**{**CFG, "epochs": 1}),
                           tmp_path / "o.onnx", teacher=one_head_net(1))
    assert summary["kd_weight"] == 0.5 and summary["uses_labels"]
    assert "α = 0.5" in caplog.text and "before training: val acc" in caplog.text
    assert "best validation accuracy" in caplog.text
    explicit = finetune(one_head_net(2), data, val, FinetuneConfig(**{**CFG, "epochs": 1, "kd_weight": 0.25}),
                        tmp_path / "p.onnx", teacher=one_head_net(1))
    assert explicit["kd_weight"] == 0.25


def test_without_validation_the_rule_is_said(tmp_path, caplog):
    data = load_dataset(labelled(tmp_path / "l.npz"), shuffle=False)
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        summary = finetune(one_head_net(2), data, None, FinetuneConfig(**{**CFG, "epochs": 2}), tmp_path / "o.onnx")
    assert "no validation data: the epoch with the lowest training loss" in caplog.text
    losses = [r["loss"] for r in summary["history"]]
    assert summary["best"]["epoch"] == 1 + int(np.argmin(losses))


def test_interrupted_export_leaves_the_previous_model(tmp_path, monkeypatch):
    data = load_dataset(labelled(tmp_path / "l.npz"), shuffle=False)
    out = tmp_path / "o.onnx"
    finetune(one_head_net(2), data, None, FinetuneConfig(**{**CFG, "epochs": 1}), out)
    good = out.read_bytes()

    def half_write(model, path, *a, **k):
        Path(path).write_bytes(model.SerializeToString()[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(onnx, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        finetune(one_head_net(3), data, None, FinetuneConfig(**{**CFG, "epochs": 1}), out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.npz", "o.onnx"]


def test_cli_options_build_the_default_config():
    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    assert config_from_namespace(parser.parse_args([])) == FinetuneConfig()
    args = parser.parse_args(["--lr", "0.02", "--no-flip", "--kd-weight", "0.3", "--kd-regression-loss", "smooth_l1"])
    cfg = config_from_namespace(args)
    assert (cfg.lr, cfg.flip, cfg.kd_weight, cfg.kd_regression_loss) == (0.02, False, 0.3, "smooth_l1")
    assert all(kw.get("help") for kw in FINETUNE_OPTIONS.values())
    assert "default 0.001" in parser.format_help().replace("\n", " ").replace("  ", " ")
    with pytest.raises(OnnxPruneError, match="kd_weight"):
        FinetuneConfig(kd_weight=1.5)
