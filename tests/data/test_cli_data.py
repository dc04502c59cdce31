"""`prune --data` and `verify --data` read the same sources (folders, tars, arrays) and name bad files."""

from __future__ import annotations

import tarfile

import numpy as np
import onnx
import pytest

pytest.importorskip("PIL", reason="Pillow is needed to read image files (pip install pillow)")
from PIL import Image  # noqa: E402

from onnx_builders import small_resnet  # noqa: E402
from onnxprune.cli import main  # noqa: E402


@pytest.fixture
def pruned(tmp_path, capsys):
    """(original path, pruned path, plan path, image folder) for a 16x16 net with dynamic batch."""
    model = tmp_path / "net.onnx"
    onnx.save(small_resnet(shape=("N", 3, 16, 16)), model)
    imgs = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (imgs / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, size=(20, 18, 3), dtype=np.uint8)).save(imgs / cls / f"{k}.png")
    out, plan = tmp_path / "small.onnx", tmp_path / "small.plan.json"
    assert main(["prune", str(model), "-o", str(out), "--ratio", "0.3"]) == 0
    capsys.readouterr()
    return model, out, plan, imgs


def _verify(capsys, model, out, plan, data):
    rc = main(["verify", str(model), str(out), "--plan", str(plan), "--data", str(data)])
    stdout, err = capsys.readouterr()
    return rc, stdout, err


def test_verify_accepts_an_image_folder_like_prune(pruned, capsys, tmp_path):
    model, out, plan, imgs = pruned
    rc, stdout, err = _verify(capsys, model, out, plan, imgs)
    assert rc == 0, err
    assert stdout.rstrip().endswith("verify: OK")
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tf:
        tf.add(imgs, arcname="train")
    rc, stdout, err = _verify(capsys, model, out, plan, tmp_path / "imgs.tar.gz")
    assert rc == 0, err
    assert stdout.rstrip().endswith("verify: OK")


def test_verify_still_takes_model_ready_arrays(pruned, capsys, tmp_path):
    model, out, plan, _ = pruned
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32))
    rc, stdout, err = _verify(capsys, model, out, plan, tmp_path / "x.npy")
    assert rc == 0, err
    assert stdout.rstrip().endswith("verify: OK")


def test_verify_with_a_missing_data_path_is_one_line(pruned, capsys, tmp_path):
    model, out, plan, _ = pruned
    rc, stdout, err = _verify(capsys, model, out, plan, tmp_path / "nope")
    assert rc == 2
    assert err.strip().splitlines()[-1] == f"onnxprune: error: {tmp_path / 'nope'}: no such file or directory"


def test_prune_with_a_corrupt_image_names_the_file(tmp_path, capsys):
    """A corrupt file met while capturing activations: one error line naming it, nothing written."""
    model = tmp_path / "net.onnx"
    onnx.save(small_resnet(shape=("N", 3, 16, 16)), model)
    imgs = tmp_path / "imgs" / "a"
    imgs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(imgs / f"{k}.png")
    (imgs / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "small.onnx"
    rc = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--criterion", "hrank",
               "--data", str(tmp_path / "imgs"), "--calib-images", "6"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"onnxprune: error: {imgs / '3.png'}: not a readable image"), last
    assert "BytesIO" not in last
