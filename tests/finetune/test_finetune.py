"""Fine-tuning through the torch bridge: learning, export, resume, DDP equivalence, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnxprune.data import load_dataset  # noqa: E402
from onnxprune.errors import DataError, OnnxPruneError  # noqa: E402
from onnxprune.tools.evaluate import top1_accuracy  # noqa: E402
from onnxprune.finetune import FinetuneConfig, finetune  # noqa: E402
from onnx_builders import Net  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def bn_free_net(classes: int = 3) -> onnx.ModelProto:
    n = Net(13, 0)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8))
    y = n.relu(n.conv(y, 8, 8))
    n.head(y, 8, classes=classes)
    return n.model()


def toy_data(path: Path, n: int = 96, classes: int = 3, seed: int = 0) -> Path:
    """Images whose class is the brightest colour channel: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 120, (n, 8, 8, 3)).astype(np.uint8)
    x[np.arange(n), :, :, y] += 120
    np.savez(path, x=x, y=y.astype(np.uint8))
    return path


CFG = dict(epochs=3, batch_size=32, lr=0.05, crop_padding=0, flip=False, reinsert_bn=False, seed=0)


def test_finetune_learns_and_exports(tmp_path):
    data = load_dataset(toy_data(tmp_path / "d.npz"), shuffle=False)
    x, y = data.arrays()
    model = bn_free_net()
    before = top1_accuracy(model, x, y)
    summary = finetune(model, data, (x, y), FinetuneConfig(**CFG), tmp_path / "out.onnx",
                       checkpoint=tmp_path / "ck.pt")
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    after = top1_accuracy(out, x, y)
    assert after > max(before, 0.6), (before, after)
    assert after == pytest.approx(summary["best"]["acc"], abs=1e-9)     # export equals the module
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]


def test_resume_equals_straight_run(tmp_path):
    """Interrupt after epoch 1's checkpoint, resume: the result equals an uninterrupted run."""
    data = load_dataset(toy_data(tmp_path / "d.npz"), shuffle=False)
    val = data.arrays()
    cfg = FinetuneConfig(**CFG)
    finetune(bn_free_net(), data, val, cfg, tmp_path / "a.onnx", checkpoint=tmp_path / "a.pt", log=lambda m: None)

    class Interrupted(Exception):
        pass

    def interrupt_in_epoch_2(msg):   # epoch 1's checkpoint is on disk when epoch 2 reports
        if "epoch 2/3" in msg:
            raise Interrupted
    with pytest.raises(Interrupted):
        finetune(bn_free_net(), data, val, cfg, tmp_path / "b.onnx", checkpoint=tmp_path / "b.pt",
                 log=interrupt_in_epoch_2)
    assert (tmp_path / "b.pt").exists()
    finetune(bn_free_net(), data, val, cfg, tmp_path / "b.onnx", checkpoint=tmp_path / "b.pt", resume=True,
             log=lambda m: None)
    a, b = onnx.load(tmp_path / "a.onnx"), onnx.load(tmp_path / "b.onnx")
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_allclose(onnx.numpy_helper.to_array(ta), onnx.numpy_helper.to_array(tb),
                                   rtol=1e-5, atol=1e-6)


def test_labels_beyond_outputs_and_missing_labels(tmp_path):
    data = load_dataset(toy_data(tmp_path / "d.npz", classes=3), shuffle=False)
    with pytest.raises(DataError, match="outputs"):
        finetune(bn_free_net(classes=2), data, None, FinetuneConfig(**CFG), tmp_path / "o.onnx")
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="labels"):
        finetune(bn_free_net(), load_dataset(tmp_path / "x.npy"), None, FinetuneConfig(**CFG), tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(OnnxPruneError, match="checkpoint"):
        finetune(bn_free_net(), data, None, FinetuneConfig(**CFG), tmp_path / "o.onnx",
                 checkpoint=tmp_path / "none.pt", resume=True)


DDP_SCRIPT = textwrap.dedent("""
    import sys, onnx
    sys.path[:0] = [{tests!r}, {tests_root!r}]
    from test_finetune import bn_free_net, CFG
    from onnxprune.data import load_dataset
    from onnxprune.finetune import FinetuneConfig, finetune
    data = load_dataset({data!r}, shuffle=False)
    finetune(bn_free_net(), data, None, FinetuneConfig(**{{**CFG, "epochs": 2}}), {out!r})
""")


def test_ddp_two_processes_equal_one(tmp_path):
    """DDP over 2 gloo processes on the same global batch gives the same weights as 1 process."""
    data_path = toy_data(tmp_path / "d.npz")
    finetune(bn_free_net(), load_dataset(data_path, shuffle=False), None,
             FinetuneConfig(**{**CFG, "epochs": 2}), tmp_path / "single.onnx", log=lambda m: None)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests" / "finetune"), tests_root=str(ROOT / "tests"), data=str(data_path), out=str(tmp_path / "ddp.onnx")))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_addr=127.0.0.1", "--master_port=29517", str(script)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = onnx.load(tmp_path / "single.onnx"), onnx.load(tmp_path / "ddp.onnx")
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_allclose(onnx.numpy_helper.to_array(ta), onnx.numpy_helper.to_array(tb),
                                   rtol=1e-5, atol=1e-6)
