"""Arrays handed to the Python API and feeds for one model run, checked against the model input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is needed to read image files (pip install pillow)")
from PIL import Image  # noqa: E402

from onnxprune.data import as_model_batch, load_feeds  # noqa: E402
from onnxprune.errors import DataError  # noqa: E402

NCHW = [None, 3, 32, 32]


def _u8(n=4, h=32, w=32, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def test_raw_uint8_nhwc_images_name_the_input_and_every_problem():
    with pytest.raises(DataError) as info:
        as_model_batch(_u8(), NCHW, "input.1", source="images")
    msg = str(info.value)
    assert msg.startswith("images (4, 32, 32, 3) uint8 does not fit input 'input.1' (?, 3, 32, 32) float32")
    assert "looks like raw pixels" in msg
    assert "the data is NHWC but the input is NCHW (images.transpose(0, 3, 1, 2))" in msg
    assert "preprocess_from_args(size='32x32', layout='NCHW'" in msg and "\n" not in msg


@pytest.mark.parametrize("array,want,expect", [
    (np.zeros((2, 32, 32, 3), np.float32), NCHW, r"data is NHWC but the input is NCHW"),
    (np.zeros((2, 3, 32, 32), np.float32), [None, 32, 32, 3], r"data is NCHW but the input is NHWC"),
    (np.zeros((2, 1, 32, 32), np.float32), NCHW, r"it has 1 channels but the input expects 3"),
    (np.zeros((2, 3, 28, 28), np.float32), NCHW, r"images are 28x28 but the input expects 32x32"),
    (np.zeros((3, 32, 32), np.float32), NCHW, r"rank 3 but the input has rank 4; a single item: add a batch axis"),
    (np.zeros((5, 28, 28), np.float32), [None, 1, 28, 28], r"grey images without a channel axis: .*images\[:, None\]"),
    (np.zeros((5, 28, 28), np.float32), [None, 28, 28, 1], r"grey images without a channel axis: .*images\[\.\.\., None\]"),
    (np.array([["a"]]), [None, 1], r"dtype <U1 is not numeric"),
])
def test_each_problem_is_named(array, want, expect):
    with pytest.raises(DataError, match=expect):
        as_model_batch(array, want, "x")


def test_fitting_float_batches_pass_and_are_cast():
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32))
    out = as_model_batch(x, [1, 3, 32, 32], "x")
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, x.astype(np.float32))
    nhwc = np.zeros((2, 32, 32, 3), np.float32)
    assert as_model_batch(nhwc, [None, 32, 32, 3], "x").shape == (2, 32, 32, 3)
    assert as_model_batch(np.zeros((2, 7), np.float32), ["batch", 7], "x").shape == (2, 7)
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"image 1 contains NaN .*input 'x'"):
        as_model_batch(x, NCHW, "x")


def test_feeds_from_an_image_folder_like_prune_data(tmp_path):
    """verify --data accepts what prune --data accepts: a folder gives preprocessed model inputs."""
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(_u8(1, 40, 36, seed=k + (cls == "b") * 10)[0]).save(tmp_path / "imgs" / cls / f"{k}.png")
    feeds = load_feeds(tmp_path / "imgs", [("x", NCHW)], limit=4)
    assert list(feeds) == ["x"] and feeds["x"].shape == (4, 3, 32, 32) and feeds["x"].dtype == np.float32
    assert 0.0 <= feeds["x"].min() and feeds["x"].max() <= 1.0
    fixed = load_feeds(tmp_path / "imgs", [("x", [1, 3, 32, 32])])
    assert fixed["x"].shape == (1, 3, 32, 32)


def test_feeds_from_arrays_keep_their_meaning(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_feeds(tmp_path / "x.npy", [("in", NCHW)])["in"], x)  # used as it is
    np.savez(tmp_path / "named.npz", a=x, b=x[:, :1])
    named = load_feeds(tmp_path / "named.npz", [("a", NCHW), ("b", [None, 1, 32, 32])])
    assert set(named) == {"a", "b"} and named["b"].shape == (2, 1, 32, 32)
    np.save(tmp_path / "pixels.npy", _u8(n=5))  # raw uint8 NHWC images: preprocessed like a dataset
    px = load_feeds(tmp_path / "pixels.npy", [("in", NCHW)], limit=3)["in"]
    assert px.shape == (3, 3, 32, 32) and px.dtype == np.float32 and px.max() <= 1.0
    np.savez(tmp_path / "ds.npz", x=_u8(n=5), y=np.arange(5))  # a dataset .npz: images, labels dropped
    assert load_feeds(tmp_path / "ds.npz", [("in", NCHW)], limit=2)["in"].shape == (2, 3, 32, 32)


def test_feeds_errors_name_the_source(tmp_path):
    with pytest.raises(DataError, match=r"missing: no such file or directory"):
        load_feeds(tmp_path / "missing", [("x", NCHW)])
    (tmp_path / "z.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"z\.npy: cannot read inputs"):
        load_feeds(tmp_path / "z.npy", [("x", NCHW)])
    np.save(tmp_path / "small.npy", _u8(n=2, h=8, w=8))
    feeds = load_feeds(tmp_path / "small.npy", [("x", NCHW)])  # resized to the input's size
    assert feeds["x"].shape == (2, 3, 32, 32)


def test_feeds_for_a_non_image_input_from_arrays(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(load_feeds(tmp_path / "v.npy", [("v", [None, 4])])["v"],
                                  np.arange(12, dtype=np.float32).reshape(3, 4))


def test_feeds_for_an_nhwc_input(tmp_path):
    np.save(tmp_path / "pixels.npy", _u8(n=3, h=20, w=20))
    x = load_feeds(tmp_path / "pixels.npy", [("in", [None, 16, 16, 3])])["in"]
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.float32
