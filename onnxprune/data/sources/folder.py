"""An ImageFolder directory: one sub-folder per class, or images directly inside (unlabelled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from onnxprune.data.images import decode_image, is_image_name
from onnxprune.data.sources.base import ImageSource, SourceOptions
from onnxprune.data.sources.layout import folder_layout, skip_part
from onnxprune.errors import DataError

__all__ = ["FolderSource", "matches", "open_source"]


class FolderSource(ImageSource):
    """Image files below a directory, decoded on demand."""

    def __init__(self, path: str, root: Path, files: list[str], labels: np.ndarray | None,
                 classes: list[str] | None, decode_mode: str = "RGB"):
        self.path = path
        self.root = root
        self.files = files
        self.labels = labels
        self.classes = classes
        self.decode_mode = decode_mode

    def __len__(self) -> int:
        return len(self.files)

    def read(self, positions: Sequence[int]) -> list[np.ndarray]:
        out = []
        for p in positions:
            name = self.files[int(p)]
            try:
                data = (self.root / name).read_bytes()
            except OSError as exc:
                raise DataError(f"{self.path}: cannot read {name!r}: {exc.strerror or exc}") from None
            out.append(decode_image(data, str(self.root / name), self.decode_mode))
        return out


def _load_folder(path: Path, split: str | None, decode_mode: str) -> FolderSource:
    where = str(path)
    files: list[tuple[str, ...]] = []
    dirs: set[tuple[str, ...]] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not skip_part(d))
        rel = Path(dirpath).relative_to(path).parts
        for d in dirnames:
            dirs.add(rel + (d,))
        for fn in filenames:
            if not skip_part(fn) and is_image_name(fn):
                files.append(rel + (fn,))
    files.sort()
    _, chosen, classes, labels = folder_layout(where, files, dirs, split)
    names = ["/".join(files[i]) for i in chosen]
    return FolderSource(where, path, names, None if labels is None else np.asarray(labels, dtype=np.int64),
                        classes, decode_mode)



def matches(path: Path) -> bool:
    """Any directory (CIFAR batch directories are claimed first by the cifar source)."""
    return path.is_dir()


def open_source(path: Path, options: SourceOptions) -> FolderSource:
    return _load_folder(path, options.split, options.decode_mode)
