"""The :class:`Dataset` (lazy images, labels, preprocessing, seeded sampling) and :func:`load_dataset`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from onnxprune.data.images import as_hwc, stack_images
from onnxprune.data.preprocess import LAYOUTS, Preprocess, parse_positive_int
from onnxprune.data.sources import open_source
from onnxprune.data.sources.base import ImageSource, SourceOptions
from onnxprune.errors import DataError

__all__ = ["Dataset", "LazyImages", "load_dataset"]


class LazyImages:
    """Raw (not preprocessed) images of a :class:`Dataset`, in its order, decoded on access."""

    def __init__(self, source: ImageSource, indices: np.ndarray):
        self.source = source
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return self.source.read([int(p) for p in self.indices[i]])
        n = len(self.indices)
        if not -n <= int(i) < n:
            raise IndexError(f"image {i} out of range for {n} images")
        return self.source.read([int(self.indices[int(i)])])[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), 256):
            yield from self.source.read([int(p) for p in self.indices[start : start + 256]])


class Dataset:
    """Images (lazy), optional labels and a :class:`Preprocess`, in a fixed order.

    ``images`` gives raw decoded images in dataset order; ``labels`` is an int64 array in the same
    order or None; :meth:`batches` yields ``(x, y)`` with ``x`` preprocessed (``preprocess.dtype``,
    ``preprocess.layout``) and ``y`` the labels of that batch or None.
    """

    def __init__(self, source: ImageSource, preprocess: Preprocess, indices: np.ndarray | None = None):
        self.source = source
        self.preprocess = preprocess
        self.indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self.images = LazyImages(source, self.indices)
        self.labels = None if source.labels is None else np.asarray(source.labels)[self.indices]
        self._item_shape: tuple[int, ...] | None = None

    # ---- basics ---------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The file or folder the data comes from (used in messages)."""
        return self.source.path

    @property
    def classes(self) -> list[str] | None:
        return self.source.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        lab = "labelled" if self.labels is not None else "unlabelled"
        return f"Dataset({self.path!r}, {len(self)} images, {lab}, {self.preprocess.describe()})"

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed item (decodes the first image once)."""
        if self._item_shape is None:
            if len(self) == 0:
                raise DataError(f"{self.path}: the dataset is empty")
            self._item_shape = tuple(self._preprocess_positions([0]).shape[1:])
        return self._item_shape

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, *item_shape)."""
        return (len(self),) + self.item_shape

    def close(self) -> None:
        """Close the underlying file (a tar); datasets made by :meth:`sample` share it."""
        self.source.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- subsets --------------------------------------------------------------------------------

    def _subset(self, indices: np.ndarray) -> "Dataset":
        return Dataset(self.source, self.preprocess, indices)

    def sample(self, n: int, seed: int = 0) -> "Dataset":
        """A fixed, seeded subset of ``n`` items (same ``n``/``seed`` on the same data -> same items,
        whatever order this dataset was loaded in)."""
        n = _check_count(n, len(self), self.path)
        pool = np.sort(self.indices)
        pick = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
        return self._subset(pool[pick])

    def take(self, n: int) -> "Dataset":
        """The first ``n`` items in this dataset's order."""
        n = _check_count(n, len(self), self.path)
        return self._subset(self.indices[:n])

    def with_preprocess(self, preprocess: Preprocess) -> "Dataset":
        """Same items, other preprocessing."""
        return Dataset(self.source, preprocess, self.indices)

    # ---- reading --------------------------------------------------------------------------------

    def _preprocess_positions(self, rows: Sequence[int]) -> np.ndarray:
        """Preprocess dataset rows (positions in this dataset)."""
        pos = [int(self.indices[r]) for r in rows]
        raw = self.source.read_batch(pos)
        pp = self.preprocess
        if isinstance(raw, np.ndarray) and (pp.size is None or tuple(raw.shape[1:3]) == pp.size) \
                and pp.resize is None and pp.center_crop is None:
            return pp.finish(raw)
        items = [pp.geometry(as_hwc(im)) for im in raw]
        return pp.finish(stack_images(items, self.path, pos))

    def batches(self, batch_size: int = 64, *, drop_last: bool = False, check_finite: bool = True
                ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(x, y)``: ``x`` a preprocessed batch, ``y`` its labels (int64) or None.

        Images are decoded batch by batch. With ``check_finite`` a batch holding NaN/Inf raises
        :class:`DataError` naming the source and the item.
        """
        batch_size = parse_positive_int(batch_size, "batch size")
        self.source.prefetch([int(p) for p in self.indices])
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            rows = list(range(start, min(start + batch_size, stop)))
            x = self._preprocess_positions(rows)
            if check_finite:
                _raise_nonfinite(x, self.path, [int(self.indices[r]) for r in rows], start)
            y = None if self.labels is None else self.labels[start : start + len(rows)]
            yield x, y

    def arrays(self, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
        """Everything preprocessed in memory: ``(x, y)``. Meant for calibration-sized sets."""
        xs = [x for x, _ in self.batches(batch_size)]
        if not xs:
            raise DataError(f"{self.path}: the dataset is empty")
        return np.concatenate(xs), (None if self.labels is None else self.labels.copy())

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(position in the source file, 'NaN'|'Inf') of the first raw image with a non-finite value."""
        return self.source.first_nonfinite()


def _raise_nonfinite(x: np.ndarray, where: str, positions: Sequence[int], start: int) -> None:
    flat = x.reshape(len(x), -1)
    ok = np.isfinite(flat).all(axis=1)
    if ok.all():
        return
    k = int(np.argmin(ok))
    kind = "NaN" if np.isnan(flat[k]).any() else "Inf"
    raise DataError(f"{where}: image {positions[k]} (item {start + k} of the dataset) contains {kind} after preprocessing; batch shape {x.shape}")


def _check_count(n: Any, available: int, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"{where}: image count {n!r} must be a non-negative integer")
    if n > available:
        raise DataError(f"asked for {int(n)} images, {where} has {available}")
    return int(n)


def load_dataset(source: str | os.PathLike, preprocess: Preprocess | Mapping[str, Any] | None = None,
                 limit: int | None = None, seed: int = 0, shuffle: bool = True, *,
                 split: str | None = None, source_layout: str | None = None) -> Dataset:
    """Open images for calibration or evaluation.

    ``source``: a ``.npy``, ``.npz``, ImageFolder directory, tar(.gz) of one, CIFAR python batches
    (directory, single batch or the archive). ``shuffle`` orders the items by a permutation seeded
    with ``seed``; ``limit`` then keeps the first ``limit`` (a :class:`DataError` if there are fewer).
    ``split`` picks CIFAR ``train``/``test`` (default ``test``) or one folder (``train``, ``val``...)
    when an archive/folder holds several. ``source_layout`` (``NHWC``/``NCHW``) overrides the guess
    of the channel axis of npy/npz arrays.
    """
    if preprocess is None:
        preprocess = Preprocess()
    elif isinstance(preprocess, Mapping):
        preprocess = Preprocess.from_dict(preprocess)
    elif not isinstance(preprocess, Preprocess):
        raise DataError(f"preprocess must be a Preprocess or a dict, got {type(preprocess).__name__}")
    if source_layout is not None and str(source_layout).upper() not in LAYOUTS:
        raise DataError(f"source layout {source_layout!r}: expected NCHW or NHWC")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    options = SourceOptions(split=split, decode_mode="L" if preprocess.channel_order == "L" else "RGB",
                            layout=source_layout)
    src = open_source(path, options)
    n = len(src)
    if n == 0:
        src.close()
        raise DataError(f"{path}: holds no images")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if limit is not None:
        try:
            limit = _check_count(limit, n, str(path))
        except DataError:
            src.close()
            raise
        order = order[:limit]
    return Dataset(src, preprocess, order.astype(np.int64))


