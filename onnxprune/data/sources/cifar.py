"""CIFAR-10/100 "python version" batches: the directory, a single batch file, or inside the archive."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from onnxprune.data.sources.base import ArraySource, SourceOptions
from onnxprune.errors import DataError

__all__ = ["BATCH_NAMES", "matches", "open_source", "from_tar"]

BATCH_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "train", "test")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (CIFAR batches); refuses any other global."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core."):  # pickles written by numpy 1.x
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) in self._ALLOWED:
            if module.startswith("numpy._core.") and not hasattr(np, "_core"):  # numpy 1.x
                module = "numpy.core." + module[len("numpy._core."):]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes | Any, where: str) -> Any:
    try:
        f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{where}: not a CIFAR python batch: {type(exc).__name__}: {exc}") from None


def _get(d: Mapping, *keys: str) -> Any:
    for k in keys:
        for kk in (k.encode(), k):
            if kk in d:
                return d[kk]
    return None


def _cifar_batch_arrays(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: not a CIFAR python batch (a {type(obj).__name__}, not a dict)")
    data = _get(obj, "data")
    if data is None:
        raise DataError(f"{where}: CIFAR batch has no b'data' entry")
    data = np.asarray(data)
    labels = _get(obj, "labels", "fine_labels")
    if data.ndim == 2:
        if data.shape[1] % 3 != 0:
            raise DataError(f"{where}: CIFAR data has shape {data.shape}; rows must be 3*H*W")
        side = int(round((data.shape[1] // 3) ** 0.5))
        if 3 * side * side != data.shape[1]:
            raise DataError(f"{where}: CIFAR data has shape {data.shape}; rows are not 3 square planes")
        data = data.reshape(len(data), 3, side, side).transpose(0, 2, 3, 1)
    elif data.ndim != 4:
        raise DataError(f"{where}: CIFAR data has shape {data.shape}; expected (N, 3072)")
    y = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if y is not None and len(y) != len(data):
        raise DataError(f"{where}: CIFAR batch has {len(data)} images {data.shape} but {len(y)} labels")
    return np.ascontiguousarray(data), y


def _cifar_names(meta: Any) -> list[str] | None:
    if not isinstance(meta, Mapping):
        return None
    names = _get(meta, "label_names", "fine_label_names")
    if names is None:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _cifar_split_files(split: str | None, available: Sequence[str], where: str) -> list[str]:
    split = (split or "test").lower()
    if split == "test":
        want = [n for n in ("test_batch", "test") if n in available]
    elif split == "train":
        want = [n for n in BATCH_NAMES[:5] if n in available] or [n for n in ("train",) if n in available]
    elif split in available:
        want = [split]
    else:
        raise DataError(f"{where}: CIFAR split {split!r} unknown; use train, test or a batch name")
    if not want:
        raise DataError(f"{where}: no CIFAR {split} batch found (have {', '.join(sorted(available)) or 'none'})")
    return want


def _cifar_concat(parts: list[tuple[np.ndarray, np.ndarray | None]], where: str, names: list[str] | None) -> ArraySource:
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    ys = [p[1] for p in parts]
    y = None if any(v is None for v in ys) else np.concatenate(ys)
    return ArraySource(x, where, y, names, layout="NHWC")


def _load_cifar_dir(path: Path, split: str | None) -> ArraySource:
    available = [n for n in BATCH_NAMES + ("batches.meta", "meta") if (path / n).is_file()]
    want = _cifar_split_files(split, available, str(path))
    parts = [_cifar_batch_arrays(_unpickle((path / n).read_bytes(), str(path / n)), str(path / n)) for n in want]
    meta_name = "batches.meta" if "batches.meta" in available else ("meta" if "meta" in available else None)
    names = _cifar_names(_unpickle((path / meta_name).read_bytes(), str(path / meta_name))) if meta_name else None
    return _cifar_concat(parts, str(path), names)


def from_tar(where: str, tar: tarfile.TarFile, batches: dict[str, tarfile.TarInfo], split: str | None) -> ArraySource:
    want = _cifar_split_files(split, list(batches), where)

    def load(name: str) -> Any:
        f = tar.extractfile(batches[name])
        return _unpickle(f.read() if f else b"", f"{where}:{batches[name].name}")

    parts = [_cifar_batch_arrays(load(n), f"{where}:{batches[n].name}") for n in want]
    meta_name = "batches.meta" if "batches.meta" in batches else ("meta" if "meta" in batches else None)
    names = _cifar_names(load(meta_name)) if meta_name else None
    return _cifar_concat(parts, where, names)




def matches(path: Path) -> bool:
    """A directory holding ``data_batch_1`` or ``test_batch``, or a single batch file by its name."""
    if path.is_dir():
        return any((path / n).is_file() for n in ("data_batch_1", "test_batch"))
    return path.name in BATCH_NAMES


def open_source(path: Path, options: SourceOptions) -> ArraySource:
    if path.is_dir():
        return _load_cifar_dir(path, options.split)
    return _cifar_concat([_cifar_batch_arrays(_unpickle(path.read_bytes(), str(path)), str(path))], str(path), None)
