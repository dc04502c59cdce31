"""Data sources: each module has ``matches(path)`` and ``open_source(path, options) -> ImageSource``.

Adding a source is one small module plus one line in :data:`SOURCES` (the first match wins, so a more
specific source comes before a more general one: CIFAR batch folders before plain image folders).
"""

from __future__ import annotations

from pathlib import Path

from onnxprune.data.sources import arrays, cifar, folder, tar
from onnxprune.data.sources.base import ArraySource, ImageSource, SourceOptions
from onnxprune.data.sources.folder import FolderSource
from onnxprune.data.sources.tar import TAR_ENCODED_CACHE_BYTES, TarSource
from onnxprune.errors import DataError

__all__ = ["SOURCES", "open_source", "ImageSource", "ArraySource", "FolderSource", "TarSource", "SourceOptions",
           "TAR_ENCODED_CACHE_BYTES"]

#: (name, module) in the order they are tried.
SOURCES = (
    ("cifar", cifar),  # CIFAR python batches: a directory of them or one batch file
    ("folder", folder),  # an ImageFolder directory (class folders, or images directly inside)
    ("arrays", arrays),  # .npy / .npz
    ("tar", tar),  # a tar(.gz/.bz2/.xz) of an image folder (or of CIFAR batches)
)

SUPPORTED = (".npy, .npz, an image folder (class sub-folders, or images directly inside), "
             "a .tar/.tar.gz of one, or CIFAR python batches")


def open_source(path: Path, options: SourceOptions) -> ImageSource:
    """The raw images at ``path`` from the first source that recognises it."""
    for _, module in SOURCES:
        if module.matches(path):
            return module.open_source(path, options)
    raise DataError(f"{path}: unsupported data source; expected {SUPPORTED}")
