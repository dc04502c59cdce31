"""``.npy`` (images only, memory-mapped) and ``.npz`` (images with optional labels) arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxprune.data.sources.base import ArraySource, SourceOptions
from onnxprune.errors import DataError

__all__ = ["matches", "open_source"]


_NPZ_PAIRS = (("x", "y"), ("images", "labels"), ("data", "labels"))


def _labels_array(y: np.ndarray, where: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels (shape {y.shape})")
    return y.astype(np.int64)


def _load_npy(path: Path, layout: str | None) -> ArraySource:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(f"{path}: images have non-numeric dtype object (pickled); save a numeric array") from None
        raise DataError(f"{path}: not a readable .npy file: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable .npy file: {exc}") from None
    return ArraySource(arr, str(path), None, None, layout)


def _load_npz(path: Path, layout: str | None) -> ArraySource:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None
    if not hasattr(z, "files"):  # a .npz that is really a .npy
        return ArraySource(np.asarray(z), str(path), None, None, layout)
    with z:
        keys = list(z.files)
        xk = yk = None
        for a, b in _NPZ_PAIRS:
            if a in keys:
                xk, yk = a, (b if b in keys else None)
                break
        if xk is None and len(keys) == 1:
            xk = keys[0]
        if xk is None:
            raise DataError(f"{path}: no images array; expected key x (and y), images/labels or data/labels, found {', '.join(keys) or 'none'}")
        try:
            x = z[xk]
            y = z[yk] if yk else None
        except ValueError:
            raise DataError(f"{path}: array {xk!r} has non-numeric dtype object (pickled); save a numeric array") from None
    src = ArraySource(x, str(path), None, None, layout, key=xk)
    if y is not None:
        src.labels = _labels_array(y, f"{path} ({yk!r})", len(src))
    return src




def matches(path: Path) -> bool:
    """A ``.npy`` or ``.npz`` file."""
    return path.name.lower().endswith((".npy", ".npz"))


def open_source(path: Path, options: SourceOptions) -> ArraySource:
    if path.name.lower().endswith(".npy"):
        return _load_npy(path, options.layout)
    return _load_npz(path, options.layout)
