"""Indexed raw images of one file or folder: the :class:`ImageSource` interface and in-memory arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from onnxprune.errors import DataError

__all__ = ["ImageSource", "ArraySource", "SourceOptions"]


@dataclass(frozen=True)
class SourceOptions:
    """What a source needs to know besides its path: ``split`` (a sub-folder or CIFAR split),
    ``decode_mode`` ("RGB" or "L" for image files) and ``layout`` (NHWC/NCHW of npy/npz arrays, None: guess)."""

    split: str | None = None
    decode_mode: str = "RGB"
    layout: str | None = None


class ImageSource:
    """Indexed raw images (HWC, uint8 for files) of one file or folder; ``len`` and ``read``."""

    path: str
    labels: np.ndarray | None
    classes: list[str] | None
    #: channel order used when decoding image files ("RGB" or "L"); arrays ignore it.
    decode_mode: str = "RGB"

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, positions: Sequence[int]) -> list[np.ndarray]:
        """Raw HWC images at these positions, in that order."""
        raise NotImplementedError

    def read_batch(self, positions: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        """Like :meth:`read`; array sources return one NHWC array (no copy per image)."""
        return self.read(positions)

    def prefetch(self, positions: Sequence[int]) -> None:
        """Hint that these positions will be read (a compressed tar reads them in one pass)."""

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(position, 'NaN'|'Inf') of the first image holding a non-finite value, or None."""
        return None

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.path


class ArraySource(ImageSource):
    """Images from an in-memory (or memory-mapped) array, viewed as NHWC."""

    def __init__(self, array: np.ndarray, path: str, labels: np.ndarray | None = None,
                 classes: list[str] | None = None, layout: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        self.raw_shape = tuple(array.shape)
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or array.dtype == np.bool_:
            raise DataError(f"{path}: images{self._k()} have non-numeric dtype {array.dtype} (shape {array.shape})")
        self.array = _to_nhwc(array, path + self._k(), layout)
        self.labels = labels
        self.classes = classes
        if labels is not None and len(labels) != len(self.array):
            raise DataError(f"{path}: {len(self.array)} images {self.raw_shape} but {len(labels)} labels {tuple(labels.shape)}")

    def _k(self) -> str:
        return f" ({self.key!r})" if self.key else ""

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, positions: Sequence[int]) -> list[np.ndarray]:
        return list(self.read_batch(positions))

    def read_batch(self, positions: Sequence[int]) -> np.ndarray:
        idx = np.asarray(positions, dtype=np.int64)
        if len(idx) and np.all(np.diff(idx) == 1):
            return np.asarray(self.array[idx[0] : idx[-1] + 1])
        return np.asarray(self.array[idx])

    def first_nonfinite(self) -> tuple[int, str] | None:
        if not np.issubdtype(self.array.dtype, np.floating):
            return None
        step = 4096
        for start in range(0, len(self.array), step):
            chunk = np.asarray(self.array[start : start + step])
            bad = ~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
            if bad.any():
                k = int(np.argmax(bad))
                kind = "NaN" if np.isnan(chunk[k]).any() else "Inf"
                return start + k, kind
        return None

    def describe(self) -> str:
        return f"{self.path}{self._k()}"


def _to_nhwc(array: np.ndarray, where: str, layout: str | None) -> np.ndarray:
    a = array
    if a.ndim == 3:  # N, H, W grey
        return a[:, :, :, None]
    if a.ndim != 4:
        raise DataError(f"{where}: images array has shape {a.shape} (rank {a.ndim}); expected (N,H,W,C), (N,C,H,W) or (N,H,W)")
    if layout is None:
        if a.shape[-1] in (1, 3, 4):
            layout = "NHWC"
        elif a.shape[1] in (1, 3, 4):
            layout = "NCHW"
        else:
            raise DataError(f"{where}: cannot tell the channel axis of images {a.shape}; pass source_layout NHWC or NCHW")
    layout = layout.upper()
    if layout == "NCHW":
        return a.transpose(0, 2, 3, 1)
    if layout == "NHWC":
        return a
    raise DataError(f"source layout {layout!r}: expected NCHW or NHWC")

