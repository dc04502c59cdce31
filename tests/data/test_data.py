"""Tests of onnxprune.data: sources, preprocessing, sampling and validation against a model input."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="Pillow is needed to read image files (pip install pillow)")
from PIL import Image  # noqa: E402

import onnxprune.data as D  # noqa: E402
import onnxprune.data.sources.folder as folder_source  # noqa: E402
import onnxprune.data.sources.tar as tar_source  # noqa: E402
from onnxprune.data import (  # noqa: E402
    Preprocess,
    check_against_input,
    load_dataset,
    parse_floats,
    parse_size,
    preprocess_from_args,
)
from onnxprune.errors import DataError, OnnxPruneError  # noqa: E402

ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS") or Path(__file__).resolve().parents[2].parent / "shared" / "assets")
CIFAR_TAR = ASSETS / "cifar10-jpeg" / "test.tar.gz"
CIFAR_NPZ = ASSETS / "cifar10-lossless-test-first1017.npz"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# ------------------------------------------------------------------------------------------------
# generated data
# ------------------------------------------------------------------------------------------------

CLASSES = ["cat", "ant", "bird"]  # created in this (unsorted) order; labels must follow sorted order
PER_CLASS = {"cat": 3, "ant": 2, "bird": 4}
H, W = 6, 8


def _pixels(cls: str, k: int, h: int = H, w: int = W) -> np.ndarray:
    """A distinct, deterministic uint8 image per (class, index)."""
    rng = np.random.default_rng(CLASSES.index(cls) * 100 + k)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _make_folder(root: Path) -> dict[str, list[np.ndarray]]:
    made: dict[str, list[np.ndarray]] = {}
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        made[cls] = []
        for k in range(PER_CLASS[cls]):
            arr = _pixels(cls, k)
            Image.fromarray(arr).save(root / cls / f"{k:04d}.png")
            made[cls].append(arr)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.fromarray(_pixels("cat", 99)).save(root / ".hidden" / "x.png")
    return made


def _expected_order(made: dict[str, list[np.ndarray]]) -> tuple[list[np.ndarray], list[int]]:
    xs, ys = [], []
    for label, cls in enumerate(sorted(CLASSES)):
        xs.extend(made[cls])
        ys.extend([label] * len(made[cls]))
    return xs, ys


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[int]]:
    root = tmp_path / "imgs"
    made = _make_folder(root)
    xs, ys = _expected_order(made)
    return root, xs, ys


def _tar_of(root: Path, out: Path, arcname: str, mode: str = "w:gz") -> Path:
    with tarfile.open(out, mode) as tf:
        tf.add(root, arcname=arcname)
    return out


def _nchw_u8(xs: list[np.ndarray]) -> np.ndarray:
    return np.stack(xs).transpose(0, 3, 1, 2)


RAW = Preprocess(scale=False)  # keeps 0..255 values (as float32) for exact comparisons


# ------------------------------------------------------------------------------------------------
# image folders and tars
# ------------------------------------------------------------------------------------------------


def test_image_folder_labels_follow_sorted_classes(folder):
    root, xs, ys = folder
    ds = load_dataset(root, RAW, shuffle=False)
    assert ds.classes == sorted(CLASSES) == ["ant", "bird", "cat"]
    assert len(ds) == sum(PER_CLASS.values()) == len(ds.images)
    np.testing.assert_array_equal(ds.labels, ys)
    x, y = ds.arrays()
    assert x.dtype == np.float32 and x.shape == (len(xs), 3, H, W)
    np.testing.assert_array_equal(x, _nchw_u8(xs).astype(np.float32))
    np.testing.assert_array_equal(y, ys)
    np.testing.assert_array_equal(ds.images[0], xs[0])  # raw, HWC uint8


def test_folder_decodes_lazily_per_batch(folder, monkeypatch):
    root, xs, _ = folder
    calls = []
    real = folder_source.decode_image
    monkeypatch.setattr(folder_source, "decode_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    ds = load_dataset(root, RAW)
    assert calls == []
    it = ds.batches(4)
    x, y = next(it)
    assert len(calls) == 4 and x.shape == (4, 3, H, W) and y.shape == (4,)
    rest = list(it)
    assert len(calls) == len(xs) and [len(b[0]) for b in rest] == [4, 1]


def test_tar_gz_with_top_level_folder_matches_folder(folder, tmp_path):
    root, xs, ys = folder
    tgz = _tar_of(root, tmp_path / "imgs.tar.gz", "train")
    before = sorted(p.name for p in tmp_path.iterdir())
    ds = load_dataset(tgz, RAW, shuffle=False)
    assert isinstance(ds.source, D.TarSource) and ds.source.compressed
    assert all(isinstance(m, tarfile.TarInfo) for m in ds.source.members)
    assert ds.classes == ["ant", "bird", "cat"]
    x, y = ds.arrays(batch_size=3)
    np.testing.assert_array_equal(x, _nchw_u8(xs).astype(np.float32))
    np.testing.assert_array_equal(y, ys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    ds.close()


@pytest.mark.parametrize("name,mode", [("imgs.tar", "w"), ("imgs.tgz", "w:gz")])
def test_tar_shuffled_batches_match_folder(folder, tmp_path, name, mode):
    root, _, _ = folder
    tar = _tar_of(root, tmp_path / name, "data", mode)
    a = load_dataset(root, RAW, seed=3)
    b = load_dataset(tar, RAW, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    for (xa, ya), (xb, yb) in zip(a.batches(2), b.batches(2)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert b.source.compressed == (mode != "w")
    c = load_dataset(tar, RAW, seed=3)
    c.source.cache_bytes = 0  # compressed tar past the cache budget: read per batch in offset order
    np.testing.assert_array_equal(c.arrays(batch_size=3)[0], a.arrays()[0])
    assert c.source._cache == {}


def test_tar_decodes_lazily_per_batch(folder, tmp_path, monkeypatch):
    root, xs, _ = folder
    tgz = _tar_of(root, tmp_path / "imgs.tar.gz", "train")
    calls = []
    real = tar_source.decode_image
    monkeypatch.setattr(tar_source, "decode_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    ds = load_dataset(tgz, RAW)
    assert calls == []
    x, _ = next(ds.batches(2))
    assert len(calls) == 2 and calls[0].startswith(f"{tgz}: member 'train/")
    assert sum(len(v) for v in ds.source._cache.values()) <= sum(m.size for m in ds.source.members)


def test_tar_with_two_splits_needs_split(folder, tmp_path):
    root, xs, ys = folder
    tgz = tmp_path / "both.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(root, arcname="ds/train")
        tf.add(root / "ant", arcname="ds/val/ant")
        tf.add(root / "cat", arcname="ds/val/cat")
    with pytest.raises(DataError, match=r"several roots.*ds/train.*split"):
        load_dataset(tgz, RAW)
    val = load_dataset(tgz, RAW, split="val", shuffle=False)
    assert val.classes == ["ant", "cat"]
    assert len(val) == PER_CLASS["ant"] + PER_CLASS["cat"]
    np.testing.assert_array_equal(val.labels, [0] * PER_CLASS["ant"] + [1] * PER_CLASS["cat"])
    assert len(load_dataset(tgz, RAW, split="train")) == len(xs)


def test_flat_folder_is_unlabelled(tmp_path):
    for k in range(3):
        Image.fromarray(_pixels("ant", k)).save(tmp_path / f"{k}.bmp")
    ds = load_dataset(tmp_path, RAW, shuffle=False)
    assert ds.labels is None and ds.classes is None and len(ds) == 3
    (x, y), = list(ds.batches(8))
    assert y is None
    np.testing.assert_array_equal(x[2], _pixels("ant", 2).transpose(2, 0, 1))


def test_jpeg_and_grey_png_and_channel_order_L(tmp_path):
    (tmp_path / "a").mkdir()
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 3
    Image.fromarray(grey, "L").save(tmp_path / "a" / "g.png")
    Image.fromarray(_pixels("ant", 0)).save(tmp_path / "a" / "c.jpeg", quality=95)
    rgb = load_dataset(tmp_path, RAW, shuffle=False)
    assert rgb.shape == (2, 3, H, W)
    x, _ = rgb.arrays()
    np.testing.assert_array_equal(x[1], np.stack([grey] * 3).astype(np.float32))  # c.jpeg sorts first
    gray = load_dataset(tmp_path, Preprocess(scale=False, channel_order="L"), shuffle=False)
    xg, _ = gray.arrays()
    assert xg.shape == (2, 1, H, W)
    np.testing.assert_array_equal(xg[1, 0], grey.astype(np.float32))


def test_images_of_different_sizes_need_size(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(_pixels("ant", 0)).save(tmp_path / "c" / "a.png")
    Image.fromarray(_pixels("ant", 1, 10, 12)).save(tmp_path / "c" / "b.png")
    ds = load_dataset(tmp_path, shuffle=False)
    with pytest.raises(DataError, match=r"differ in size \(6x8x3 at item 0, 10x12x3 at item 1\).*--size"):
        ds.arrays()
    x, _ = load_dataset(tmp_path, Preprocess(size=(5, 7)), shuffle=False).arrays()
    assert x.shape == (2, 3, 5, 7)


# ------------------------------------------------------------------------------------------------
# CIFAR python batches
# ------------------------------------------------------------------------------------------------


def _cifar_dir(root: Path, n: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    root.mkdir(parents=True, exist_ok=True)
    made = {}
    rng = np.random.default_rng(7)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        made[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072, b"num_cases_per_batch": n}, f)
    return made


def test_cifar_batches_directory(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    made = _cifar_dir(root)
    test = load_dataset(root, RAW, shuffle=False)
    assert len(test) == 4 and test.classes[0] == "airplane" and test.classes[9] == "truck"
    data, labels = made["test_batch"]
    x, y = test.arrays()
    np.testing.assert_array_equal(x, data.reshape(4, 3, 32, 32).astype(np.float32))  # rows are CHW planes
    np.testing.assert_array_equal(y, labels)
    # raw images are HWC: pixel (r=5, c=7) of image 2 channel G is data[2, 1024 + 5*32 + 7]
    assert test.images[2][5, 7, 1] == data[2, 1024 + 5 * 32 + 7]
    train = load_dataset(root, RAW, shuffle=False, split="train")
    assert len(train) == 20
    np.testing.assert_array_equal(train.labels[4:8], made["data_batch_2"][1])
    nhwc = load_dataset(root / "test_batch", Preprocess(scale=False, layout="NHWC"), shuffle=False)
    np.testing.assert_array_equal(nhwc.arrays()[0], data.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar_python_tar_and_refuses_foreign_pickles(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    _cifar_dir(root, n=2)
    tgz = _tar_of(root, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    ds = load_dataset(tgz, RAW, split="train")
    assert len(ds) == 10 and ds.classes[3] == "cat"
    # protocol 2 as written by numpy 1.x (numpy.core) and Python 3 (_codecs.encode for bytes)
    data = np.arange(2 * 3072, dtype=np.uint64).reshape(2, 3072).astype(np.uint8)
    old = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    (tmp_path / "py2").mkdir()
    (tmp_path / "py2" / "test_batch").write_bytes(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_dataset(tmp_path / "py2", RAW, shuffle=False)
    np.testing.assert_array_equal(got.arrays()[0], data.reshape(2, 3, 32, 32))
    evil = tmp_path / "evil" / "test_batch"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps({b"data": os.getcwd}))  # a global other than numpy's
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR python batch.*refusing"):
        load_dataset(evil.parent)


# ------------------------------------------------------------------------------------------------
# npy / npz, layouts, mean/std
# ------------------------------------------------------------------------------------------------


def _nhwc(n=5, h=4, w=6, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_nhwc_npy_becomes_nchw_pixel_for_pixel(tmp_path):
    x = _nhwc()
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(tmp_path / "x.npy", Preprocess(), shuffle=False)
    assert ds.labels is None and ds.shape == (5, 3, 4, 6)
    out, _ = ds.arrays()
    assert out.dtype == np.float32
    assert out[3, 2, 1, 5] == pytest.approx(x[3, 1, 5, 2] / 255.0)  # n, c, h, w  <-  n, h, w, c
    np.testing.assert_allclose(out, x.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    kept, _ = load_dataset(tmp_path / "x.npy", Preprocess(layout="NHWC"), shuffle=False).arrays()
    np.testing.assert_allclose(kept, x / 255.0, rtol=1e-6)


def test_nchw_npy_is_detected_and_source_layout_overrides(tmp_path):
    x = _nhwc(h=8, w=8)
    np.save(tmp_path / "c.npy", x.transpose(0, 3, 1, 2))
    out, _ = load_dataset(tmp_path / "c.npy", RAW, shuffle=False).arrays()
    np.testing.assert_array_equal(out, x.transpose(0, 3, 1, 2))
    sq = np.random.default_rng(1).integers(0, 256, size=(2, 3, 5, 3), dtype=np.uint8)  # ambiguous
    np.save(tmp_path / "sq.npy", sq)
    guess, _ = load_dataset(tmp_path / "sq.npy", RAW, shuffle=False).arrays()
    assert guess.shape == (2, 3, 3, 5)  # taken as NHWC
    told, _ = load_dataset(tmp_path / "sq.npy", RAW, shuffle=False, source_layout="NCHW").arrays()
    np.testing.assert_array_equal(told, sq)


def test_mean_std_scale_and_bgr(tmp_path):
    x = _nhwc(n=3)
    np.save(tmp_path / "x.npy", x)
    pp = Preprocess.from_dict({"norm": "imagenet"})
    out, _ = load_dataset(tmp_path / "x.npy", pp, shuffle=False).arrays()
    want = ((x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    bgr, _ = load_dataset(tmp_path / "x.npy", Preprocess(channel_order="BGR", layout="NHWC"), shuffle=False).arrays()
    np.testing.assert_allclose(bgr[1, 2, 3], x[1, 2, 3, ::-1] / 255.0, rtol=1e-6)
    # scale off: a named preset is multiplied by 255 (caffe-style 0..255 inputs)
    raw = preprocess_from_args(norm="imagenet", scale="false")
    assert raw.mean == pytest.approx(tuple(255 * IMAGENET_MEAN))
    out255, _ = load_dataset(tmp_path / "x.npy", raw, shuffle=False).arrays()
    np.testing.assert_allclose(out255, want, rtol=1e-4, atol=1e-5)
    f16, _ = load_dataset(tmp_path / "x.npy", Preprocess(dtype="float16"), shuffle=False).arrays()
    assert f16.dtype == np.float16


@pytest.mark.parametrize("xk,yk", [("x", "y"), ("images", "labels"), ("data", "labels"), ("x", None), ("arr_0", None)])
def test_npz_keys(tmp_path, xk, yk):
    x = _nhwc(n=4)
    y = np.array([3, 1, 4, 1], dtype=np.uint8)
    arrays = {xk: x} | ({yk: y} if yk else {})
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_dataset(tmp_path / "d.npz", shuffle=False)
    assert len(ds) == 4
    if yk:
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.labels, y)
    else:
        assert ds.labels is None


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "k.npz", a=_nhwc(), b=_nhwc())
    with pytest.raises(DataError, match=r"k\.npz: no images array; expected key x .* found a, b"):
        load_dataset(tmp_path / "k.npz")
    np.savez(tmp_path / "n.npz", x=_nhwc(n=5), y=np.arange(4))
    with pytest.raises(DataError, match=r"n\.npz \('y'\): 5 images but 4 labels \(shape \(4,\)\)"):
        load_dataset(tmp_path / "n.npz")
    np.savez(tmp_path / "r.npz", x=np.zeros((5, 7)))
    with pytest.raises(DataError, match=r"r\.npz \('x'\): images array has shape \(5, 7\) \(rank 2\)"):
        load_dataset(tmp_path / "r.npz")


def test_resize_and_center_crop_match_pillow(tmp_path):
    img = np.random.default_rng(3).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)  # H=30, W=40
    (tmp_path / "k").mkdir()
    Image.fromarray(img).save(tmp_path / "k" / "a.png")
    pp = preprocess_from_args(resize="16", crop="12", scale="false", layout="NHWC")
    assert pp.size == (12, 12) and pp.center_crop == (12, 12)
    out, _ = load_dataset(tmp_path, pp).arrays()
    resized = np.asarray(Image.fromarray(img).resize((21, 16), Image.BILINEAR))  # shorter side 30 -> 16
    top, left = int(round((16 - 12) / 2)), int(round((21 - 12) / 2))
    np.testing.assert_array_equal(out[0], resized[top:top + 12, left:left + 12])
    assert pp.output_shape((30, 40, 3)) == (12, 12, 3)
    with pytest.raises(DataError, match=r"center crop 20x20 is larger than the image 16x21; pass a larger --resize"):
        load_dataset(tmp_path, preprocess_from_args(resize=16, crop=20)).arrays()


def test_float_arrays_resize(tmp_path):
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    out, _ = load_dataset(tmp_path / "f.npy", Preprocess(size=4), shuffle=False).arrays()
    assert out.shape == (2, 3, 4, 4) and np.isfinite(out).all()
    same, _ = load_dataset(tmp_path / "f.npy", Preprocess(), shuffle=False).arrays()
    np.testing.assert_array_equal(same, x.transpose(0, 3, 1, 2))  # floats are not divided by 255


# ------------------------------------------------------------------------------------------------
# order, limit, sampling
# ------------------------------------------------------------------------------------------------


def test_shuffle_and_sample_are_seeded(tmp_path):
    x = _nhwc(n=50, h=2, w=2)
    y = np.arange(50)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    a = load_dataset(tmp_path / "s.npz", seed=1)
    b = load_dataset(tmp_path / "s.npz", seed=1)
    c = load_dataset(tmp_path / "s.npz", seed=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert sorted(a.labels) == list(range(50))
    np.testing.assert_array_equal(load_dataset(tmp_path / "s.npz", shuffle=False).labels, y)
    s1, s2 = a.sample(10, seed=5), c.sample(10, seed=5)
    np.testing.assert_array_equal(s1.labels, s2.labels)  # same subset whatever the load order
    assert not np.array_equal(s1.labels, a.sample(10, seed=6).labels)
    xs, ys = s1.arrays()
    np.testing.assert_allclose(xs, x[ys].transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)  # images follow labels
    lim = load_dataset(tmp_path / "s.npz", limit=7, seed=1)
    np.testing.assert_array_equal(lim.labels, a.labels[:7])
    assert len(lim.take(3)) == 3
    with pytest.raises(DataError, match=r"^asked for 8 images, .*s\.npz has 7$"):
        lim.sample(8)


def test_limit_more_than_available(tmp_path, folder):
    x = _nhwc(n=500, h=1, w=1)
    np.save(tmp_path / "five.npy", x)
    with pytest.raises(DataError, match=r"^asked for 1024 images, .*five\.npy has 500$"):
        load_dataset(tmp_path / "five.npy", limit=1024)
    root, xs, _ = folder
    with pytest.raises(DataError, match=rf"asked for 100 images, .*imgs has {len(xs)}"):
        load_dataset(root, limit=100)


# ------------------------------------------------------------------------------------------------
# check_against_input
# ------------------------------------------------------------------------------------------------


def test_check_against_input_accepts_fitting_data(tmp_path):
    np.save(tmp_path / "x.npy", _nhwc(n=4, h=32, w=32))
    ds = load_dataset(tmp_path / "x.npy")
    assert check_against_input(ds, [1, 3, 32, 32], "input") == (3, 32, 32)
    assert check_against_input(ds, ["batch", 3, None, -1], "input") == (3, 32, 32)
    nhwc = load_dataset(tmp_path / "x.npy", Preprocess(layout="NHWC"))
    assert check_against_input(nhwc, [1, 32, 32, 3], "x") == (32, 32, 3)
    assert check_against_input((8, 3, 32, 32), [0, 3, 32, 32], "x") == (3, 32, 32)
    assert check_against_input(np.zeros((2, 3, 32, 32), np.float32), [2, 3, 32, 32], "x") == (3, 32, 32)


def test_check_layout_swap_hints(tmp_path):
    np.save(tmp_path / "x.npy", _nhwc(n=2, h=32, w=32))
    ds = load_dataset(tmp_path / "x.npy")
    with pytest.raises(DataError, match=r"x\.npy: .*\(2, 3, 32, 32\) is NCHW but input 'in' is \(1, 32, 32, 3\): "
                                        r"channel order looks like NHWC; pass --layout NHWC$"):
        check_against_input(ds, [1, 32, 32, 3], "in")
    with pytest.raises(DataError, match=r"looks like NCHW; pass --layout NCHW"):
        check_against_input(load_dataset(tmp_path / "x.npy", Preprocess(layout="NHWC")), [1, 3, 32, 32], "in")
    with pytest.raises(DataError, match=r"batch.npy: data \(4, 32, 32, 3\) looks like NHWC but input 'in' .* is NCHW"):
        check_against_input(np.zeros((4, 32, 32, 3), np.float32), [1, 3, 32, 32], "in", source="batch.npy")
    with pytest.raises(DataError, match=r"has 3 channels but input 'in' \(1, 1, 32, 32\) expects 1; pass --channel-order L"):
        check_against_input(ds, [1, 1, 32, 32], "in")
    with pytest.raises(DataError, match=r"has 3 channels but input 'in' \(1, 4, 28, 28\) expects 4"):
        check_against_input(ds, [1, 4, 28, 28], "in")


def test_check_rank_and_size(tmp_path):
    np.save(tmp_path / "x.npy", _nhwc(n=2, h=32, w=32))
    ds = load_dataset(tmp_path / "x.npy")
    with pytest.raises(DataError, match=r"x\.npy: data \(2, 3, 32, 32\) has rank 4 but input 'in' \(1, 3072\) has rank 2"):
        check_against_input(ds, [1, 3072], "in")
    with pytest.raises(DataError, match=r"x\.npy: images are 32x32 \(2, 3, 32, 32\) but input 'in' \(\?, 3, 224, 224\) "
                                        r"expects 224x224; pass --size 224 \(or --resize 256 --crop 224\)"):
        check_against_input(ds, ["N", 3, 224, 224], "in")
    with pytest.raises(DataError, match=r"expects 28x30; pass --size 28x30$"):
        check_against_input(ds, [1, 3, 28, 30], "in")
    with pytest.raises(DataError, match=r"expected a Dataset, an array or a batch shape"):
        check_against_input("nonsense", [1, 3, 32, 32], "in")


def test_nan_and_inf_name_source_and_first_bad_index(tmp_path):
    x = np.zeros((6, 8, 8, 3), np.float32)
    x[4, 1, 1, 0] = np.nan
    x[5, 0, 0, 0] = np.inf
    np.save(tmp_path / "nan.npy", x)
    ds = load_dataset(tmp_path / "nan.npy", shuffle=False)
    with pytest.raises(DataError, match=r"nan\.npy: image 4 contains NaN \(images \(6, 8, 8, 3\)\)"):
        check_against_input(ds, [1, 3, 8, 8], "in")
    with pytest.raises(DataError, match=r"nan\.npy: image 4 \(item 4 of the dataset\) contains NaN"):
        ds.arrays()
    y = np.zeros((3, 3, 8, 8), np.float32)
    y[2, 0, 0, 0] = -np.inf
    with pytest.raises(DataError, match=r"feed: image 2 contains Inf \(batch shape \(3, 3, 8, 8\)\)"):
        check_against_input(y, [1, 3, 8, 8], "in", source="feed")


def test_non_numeric_dtypes(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match=r"s\.npy: images have non-numeric dtype <U1 \(shape \(2, 2\)\)"):
        load_dataset(tmp_path / "s.npy")
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"o\.npy: images have non-numeric dtype object"):
        load_dataset(tmp_path / "o.npy")
    np.save(tmp_path / "b.npy", np.zeros((2, 4, 4, 3), bool))
    with pytest.raises(DataError, match=r"b\.npy: images have non-numeric dtype bool"):
        load_dataset(tmp_path / "b.npy")
    with pytest.raises(DataError, match=r"arr: data dtype <U1 is not numeric \(shape \(2, 3, 1, 1\)\)"):
        check_against_input(np.full((2, 3, 1, 1), "x"), [1, 3, 1, 1], "in", source="arr")


# ------------------------------------------------------------------------------------------------
# bad sources
# ------------------------------------------------------------------------------------------------


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match=r"missing\.npz: no such file or directory"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"x\.csv: unsupported data source"):
        load_dataset(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images \(\.jpg/\.jpeg/\.png/\.bmp\) found"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "a.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset(tmp_path / "bad")
    with pytest.raises(DataError, match=r"bad/c/a\.jpg: not a readable image \(UnidentifiedImageError"):
        next(ds.batches(1))
    (tmp_path / "t.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"t\.tar\.gz: not a readable tar archive"):
        load_dataset(tmp_path / "t.tar.gz")
    (tmp_path / "z.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"z\.npz: not a readable \.npz file"):
        load_dataset(tmp_path / "z.npz")
    assert issubclass(DataError, OnnxPruneError)


def _corrupt_among_good(root: Path) -> None:
    (root / "c").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(_pixels("ant", k)).save(root / "c" / f"{k}.png")
    (root / "c" / "1.png").write_bytes(b"\x89PNG truncated")


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    _corrupt_among_good(tmp_path / "imgs")
    ds = load_dataset(tmp_path / "imgs", RAW, shuffle=False)
    with pytest.raises(DataError) as info:
        ds.arrays(batch_size=2)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'imgs' / 'c' / '1.png'}: not a readable image")
    assert "BytesIO" not in msg and "0x" not in msg and "\n" not in msg


def test_corrupt_image_in_tar_names_archive_and_member(tmp_path):
    _corrupt_among_good(tmp_path / "imgs")
    tgz = _tar_of(tmp_path / "imgs", tmp_path / "imgs.tar.gz", "train")
    ds = load_dataset(tgz, RAW, shuffle=False)
    with pytest.raises(DataError) as info:
        list(ds.batches(2))
    msg = str(info.value)
    assert msg.startswith(f"{tgz}: member 'train/c/1.png': not a readable image")
    assert "BytesIO" not in msg and "0x" not in msg


def test_messages_are_one_line(tmp_path):
    np.save(tmp_path / "x.npy", _nhwc(n=2, h=32, w=32))
    ds = load_dataset(tmp_path / "x.npy")
    for shape in ([1, 32, 32, 3], [1, 3, 224, 224], [1, 3], [1, 1, 32, 32]):
        with pytest.raises(DataError) as info:
            check_against_input(ds, shape, "in")
        assert "\n" not in str(info.value) and "x.npy" in str(info.value)


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------


def test_parse_size_and_floats():
    assert parse_size("32") == (32, 32)
    assert parse_size("32x40") == (32, 40) == parse_size("32,40") == parse_size([32, 40])
    assert parse_size(224) == (224, 224)
    for bad in ("0", "32x", "axb", "1x2x3", "-4"):
        with pytest.raises(DataError, match="size"):
            parse_size(bad)
    assert parse_floats("0.485,0.456,0.406") == (0.485, 0.456, 0.406)
    assert parse_floats("0.5") == (0.5,)
    with pytest.raises(DataError, match=r"mean '0\.4,x': expected comma-separated numbers"):
        parse_floats("0.4,x", "mean")


def test_preprocess_from_strings_and_dict():
    pp = Preprocess.from_strings(size="32", mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    assert pp.size == (32, 32) and pp.layout == "NCHW" and pp.scale and pp.dtype == "float32"
    assert pp.mean == (0.485, 0.456, 0.406)
    assert preprocess_from_args(mean="imagenet").std == (0.229, 0.224, 0.225)  # a preset mean brings its std
    assert preprocess_from_args(norm="none").mean is None
    big = preprocess_from_args(resize="256", crop="224")
    assert big.size == (224, 224) and big.center_crop == (224, 224) and big.resize == 256
    cfg = {"size": [32, 32], "mean": "imagenet", "std": [0.229, 0.224, 0.225], "layout": "nhwc",
           "channel_order": "bgr", "scale": True, "dtype": "float32"}
    d = Preprocess.from_dict(cfg)
    assert d.layout == "NHWC" and d.channel_order == "BGR" and d.mean == (0.485, 0.456, 0.406)
    assert Preprocess.from_dict(d.to_dict()) == d
    assert Preprocess.from_dict({"size": "224x224", "center_crop": True, "resize": 256}).center_crop == (224, 224)
    assert Preprocess.from_dict({"crop": 224, "preset": "cifar10"}).std[0] == pytest.approx(0.2470)
    assert "resize 256" in big.describe()
    with pytest.raises(DataError, match=r"unknown key\(s\) 'sise'"):
        Preprocess.from_dict({"sise": 32})
    with pytest.raises(DataError, match=r"layout 'CHW': expected NCHW or NHWC"):
        Preprocess(layout="CHW")
    with pytest.raises(DataError, match=r"zero std"):
        Preprocess(std=(0.2, 0.0, 0.2))
    with pytest.raises(DataError, match=r"mean has 2 values but channel order RGB gives 3"):
        Preprocess(mean=(0.1, 0.2))
    with pytest.raises(DataError, match=r"normalisation preset 'imagenette' unknown"):
        preprocess_from_args(norm="imagenette")
    with pytest.raises(DataError, match=r"scale 'maybe': expected true or false"):
        preprocess_from_args(scale="maybe")
    with pytest.raises(DataError, match=r"dtype 'int8'"):
        Preprocess(dtype="int8")


def test_argparse_helpers():
    parser = argparse.ArgumentParser()
    D.add_preprocess_arguments(parser)
    ns = parser.parse_args(["--size", "32x32", "--mean", "0.5,0.5,0.5", "--std", "0.25", "--layout", "nhwc", "--no-scale"])
    pp = D.preprocess_from_namespace(ns)
    assert pp == Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25,), layout="NHWC", scale=False)
    assert D.preprocess_from_namespace(parser.parse_args([])) == Preprocess()


DATA_MODULES = ("args", "dataset", "images", "model_input", "preprocess", "sources", "sources.arrays",
                "sources.base", "sources.cifar", "sources.folder", "sources.layout", "sources.tar")


def test_module_imports_no_onnx_runtime_or_torch():
    modules = ", ".join(["onnxprune.data"] + [f"onnxprune.data.{m}" for m in DATA_MODULES])
    code = (f"import sys, {modules}; bad = [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------------
# real data (shared assets)
# ------------------------------------------------------------------------------------------------

needs_tar = pytest.mark.skipif(not CIFAR_TAR.is_file(), reason=f"real CIFAR-10 JPEG tar not found at {CIFAR_TAR} (set ONNXPRUNE_ASSETS)")
needs_npz = pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason=f"real CIFAR-10 npz not found at {CIFAR_NPZ} (set ONNXPRUNE_ASSETS)")


@needs_npz
def test_real_cifar_npz():
    ds = load_dataset(CIFAR_NPZ, Preprocess.from_dict({"norm": "imagenet"}), shuffle=False)
    assert len(ds) == 1017 and ds.shape == (1017, 3, 32, 32)
    assert check_against_input(ds, ["N", 3, 32, 32], "input") == (3, 32, 32)
    raw = np.load(CIFAR_NPZ)
    x, y = next(ds.batches(16))
    np.testing.assert_array_equal(y, raw["y"][:16])
    np.testing.assert_allclose(x[7, 1, 3, 9], (raw["x"][7, 3, 9, 1] / 255.0 - 0.456) / 0.224, rtol=1e-5)
    with pytest.raises(DataError, match=r"^asked for 1024 images, .*cifar10-lossless-test-first1017\.npz has 1017$"):
        load_dataset(CIFAR_NPZ, limit=1024)
    with pytest.raises(DataError, match=r"pass --layout NHWC"):
        check_against_input(ds, [1, 32, 32, 3], "input")


@needs_tar
def test_real_cifar_jpeg_tar_all_10000():
    ds = load_dataset(CIFAR_TAR, Preprocess.from_dict({"norm": "imagenet"}), seed=0)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert len(ds) == 10000 and np.bincount(ds.labels).tolist() == [1000] * 10
    n = 0
    seen = []
    for x, y in ds.batches(500):
        assert x.shape[1:] == (3, 32, 32) and x.dtype == np.float32 and len(y) == len(x)
        n += len(x)
        seen.append(y)
    assert n == 10000
    np.testing.assert_array_equal(np.concatenate(seen), ds.labels)
    assert check_against_input(ds, [1, 3, 32, 32], "input") == (3, 32, 32)
    ds.close()


@needs_tar
@needs_npz
def test_real_jpeg_tar_matches_lossless_npz():
    """test/<class>/NNNN.jpg is the NNNN-th test image of that class: compare with the lossless npz."""
    tar = load_dataset(CIFAR_TAR, RAW, shuffle=False)
    ref = np.load(CIFAR_NPZ)
    xs, ys = ref["x"][:60], ref["y"][:60]
    seen = np.zeros(10, int)
    rows = []
    for label in ys:  # classes hold 1000 images each, sorted by name then file
        rows.append(int(label) * 1000 + seen[label])
        seen[label] += 1
    sub = tar._subset(tar.indices[rows])
    x, y = sub.arrays()
    np.testing.assert_array_equal(y, ys)
    jpeg = x.transpose(0, 2, 3, 1)
    err_rgb = np.abs(jpeg - xs).mean()
    err_bgr = np.abs(jpeg[..., ::-1] - xs).mean()
    assert err_rgb < 10 < err_bgr, (err_rgb, err_bgr)  # quality-75 JPEG: ~6/255 mean error
    s1 = tar.sample(32, seed=11)
    s2 = load_dataset(CIFAR_TAR, RAW, seed=4).sample(32, seed=11)
    np.testing.assert_array_equal(s1.arrays()[0], s2.arrays()[0])
