"""Images without labels load as an unlabelled dataset (labels None) from every source kind."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is needed to read image files (pip install pillow)")
from PIL import Image  # noqa: E402

from onnxprune.data import Preprocess, load_dataset  # noqa: E402

RAW = Preprocess(scale=False)


def _images(n=4):
    return np.random.default_rng(0).integers(0, 256, size=(n, 8, 10, 3), dtype=np.uint8)


def _flat_folder(root, xs):
    root.mkdir()
    for k, x in enumerate(xs):
        Image.fromarray(x).save(root / f"img{k}.png")
    return root


def _check_unlabelled(ds, xs):
    assert ds.labels is None and ds.classes is None and len(ds) == len(xs)
    batches = list(ds.batches(3))
    assert [y for _, y in batches] == [None, None]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), xs.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("kind", ["npy", "npz-x", "npz-images", "npz-other-name"])
def test_arrays_without_labels(tmp_path, kind):
    xs = _images()
    path = tmp_path / ("x.npy" if kind == "npy" else "x.npz")
    if kind == "npy":
        np.save(path, xs)
    else:
        np.savez(path, **{{"npz-x": "x", "npz-images": "images", "npz-other-name": "pixels"}[kind]: xs})
    _check_unlabelled(load_dataset(path, RAW, shuffle=False), xs)


def test_folder_of_images_without_class_folders(tmp_path):
    xs = _images()
    _check_unlabelled(load_dataset(_flat_folder(tmp_path / "imgs", xs), RAW, shuffle=False), xs)


@pytest.mark.parametrize("arcname", ["imgs", "."])
def test_tar_of_a_folder_of_images(tmp_path, arcname):
    xs = _images()
    root = _flat_folder(tmp_path / "imgs", xs)
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tf:
        tf.add(root, arcname=arcname)
    with load_dataset(tmp_path / "imgs.tar.gz", RAW, shuffle=False) as ds:
        _check_unlabelled(ds, xs)


def test_sampling_unlabelled_data_keeps_labels_none(tmp_path):
    xs = _images(6)
    ds = load_dataset(_flat_folder(tmp_path / "imgs", xs), RAW, limit=5, seed=1)
    sub = ds.sample(3, seed=2)
    assert sub.labels is None and len(sub) == 3
    x, y = sub.arrays()
    assert y is None and x.shape == (3, 3, 8, 10)
