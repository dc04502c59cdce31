"""A ``.tar``/``.tar.gz``/``.tgz`` (also bz2/xz) of an image folder, read in place (never extracted)."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from onnxprune.data.images import decode_image, is_image_name
from onnxprune.data.sources import cifar
from onnxprune.data.sources.base import ImageSource, SourceOptions
from onnxprune.data.sources.layout import folder_layout, skip_part
from onnxprune.errors import DataError

__all__ = ["TarSource", "TAR_ENCODED_CACHE_BYTES", "matches", "open_source"]

#: A compressed tar cannot be read at random cheaply (each backward seek decompresses from the start),
#: so up to this many bytes of *encoded* members are read in one forward pass and kept; decoding stays
#: lazy. Past it, each batch is read in offset order (bounded memory, slower when shuffled).
TAR_ENCODED_CACHE_BYTES = 512 * 1024 * 1024


def _tar_compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return "gz"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return None


class TarSource(ImageSource):
    """Image members of a tar, read in place through the open :class:`tarfile.TarFile` by ``TarInfo``."""

    def __init__(self, path: str, tar: tarfile.TarFile, members: list[tarfile.TarInfo],
                 labels: np.ndarray | None, classes: list[str] | None, compressed: bool,
                 decode_mode: str = "RGB", cache_bytes: int = TAR_ENCODED_CACHE_BYTES):
        self.path = path
        self.tar = tar
        self.members = members
        self.labels = labels
        self.classes = classes
        self.compressed = compressed
        self.decode_mode = decode_mode
        self.cache_bytes = cache_bytes
        self._cache: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.members)

    def _read_raw(self, positions: Sequence[int]) -> dict[int, bytes]:
        want = sorted({int(p) for p in positions if int(p) not in self._cache},
                      key=lambda p: self.members[p].offset_data)
        got: dict[int, bytes] = {}
        for p in want:  # forward order through the (possibly compressed) stream
            m = self.members[p]
            try:
                f = self.tar.extractfile(m)
                if f is None:
                    raise OSError("not a regular file")
                got[p] = f.read()
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise DataError(f"{self.path}: cannot read member {m.name!r}: {exc}") from None
        return got

    def prefetch(self, positions: Sequence[int]) -> None:
        if not self.compressed:
            return
        todo = [int(p) for p in positions if int(p) not in self._cache]
        cached = sum(len(b) for b in self._cache.values())
        if cached + sum(self.members[p].size for p in todo) > self.cache_bytes:
            return
        self._cache.update(self._read_raw(todo))

    def read(self, positions: Sequence[int]) -> list[np.ndarray]:
        raw = self._read_raw(positions)
        out = []
        for p in positions:
            p = int(p)
            data = self._cache.get(p)
            if data is None:
                data = raw[p]
            out.append(decode_image(data, f"{self.path}: member {self.members[p].name!r}", self.decode_mode))
        return out

    def close(self) -> None:
        self._cache.clear()
        try:
            self.tar.close()
        except Exception:  # pragma: no cover
            pass

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.tar.close()
        except Exception:
            pass


def _norm_member(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name).parts if p not in (".", "/", ""))


def _unwrap_flat_folder(files: list[tuple[str, ...]], dirs: set[tuple[str, ...]]
                        ) -> tuple[list[tuple[str, ...]], set[tuple[str, ...]]]:
    """A tar of one folder of images (``imgs/a.jpg``, ``imgs/b.jpg``, no class folders) is that folder:
    its images are unlabelled, as for the directory itself (not one class named after the folder)."""
    tops = {f[0] for f in files}
    if len(tops) == 1 and all(len(f) == 2 for f in files) and dirs <= {(next(iter(tops)),)}:
        return [f[1:] for f in files], set()
    return files, dirs


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable tar archive: {exc}") from None


def _load_tar(path: Path, split: str | None, decode_mode: str) -> ImageSource:
    where = str(path)
    tar = _open_tar(path)
    try:
        all_members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        tar.close()
        raise DataError(f"{where}: truncated or corrupt tar archive: {exc}") from None
    images: list[tarfile.TarInfo] = []
    files: list[tuple[str, ...]] = []
    dirs: set[tuple[str, ...]] = set()
    batches: dict[str, tarfile.TarInfo] = {}
    for m in all_members:
        parts = _norm_member(m.name)
        if not parts or any(skip_part(p) for p in parts):
            continue
        if m.isdir():
            dirs.add(parts)
        elif m.isfile():
            for k in range(1, len(parts)):
                dirs.add(parts[:k])
            if is_image_name(parts[-1]):
                images.append(m)
                files.append(parts)
            elif parts[-1] in cifar.BATCH_NAMES or parts[-1] == "batches.meta" or parts[-1] == "meta":
                batches[parts[-1]] = m
    if not images and batches:
        try:
            return cifar.from_tar(where, tar, batches, split)
        finally:
            tar.close()
    order = sorted(range(len(files)), key=lambda i: files[i])
    files = [files[i] for i in order]
    images = [images[i] for i in order]
    if split is None:
        files, dirs = _unwrap_flat_folder(files, dirs)
    try:
        _, chosen, classes, labels = folder_layout(where, files, dirs, split)
    except DataError:
        tar.close()
        raise
    return TarSource(where, tar, [images[i] for i in chosen],
                     None if labels is None else np.asarray(labels, dtype=np.int64),
                     classes, _tar_compression(path) is not None, decode_mode)




_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def matches(path: Path) -> bool:
    """A file with a tar suffix, or any other file that is a tar archive."""
    return path.name.lower().endswith(_SUFFIXES) or (path.is_file() and tarfile.is_tarfile(path))


def open_source(path: Path, options: SourceOptions) -> ImageSource:
    return _load_tar(path, options.split, options.decode_mode)
