"""Decoding and resizing single images (Pillow), and stacking them into a batch."""

from __future__ import annotations

import io
import re
from typing import Sequence

import numpy as np

from onnxprune.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_name", "as_hwc", "resize_hwc", "stack_images", "decode_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: Pillow's messages name the in-memory buffer (``<_io.BytesIO object at 0x...>``), not the file.
_BUFFER_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading or resizing images needs Pillow (pip install pillow)") from None
    return Image


def as_hwc(im: np.ndarray) -> np.ndarray:
    """One image as HWC (a 2-D grey image gets a channel axis)."""
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise DataError(f"an image must be HxW or HxWxC, got shape {a.shape}")
    return a


def resize_hwc(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (Pillow) of one HWC image to (H, W); uint8 stays uint8, others become float32."""
    Image = _pil()
    h, w = int(hw[0]), int(hw[1])
    if img.dtype == np.uint8 and img.shape[2] in (1, 3, 4):
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[img.shape[2]]
        src = img[:, :, 0] if img.shape[2] == 1 else img
        out = np.asarray(Image.fromarray(np.ascontiguousarray(src), mode).resize((w, h), Image.BILINEAR))
        return out[:, :, None] if out.ndim == 2 else out
    chans = []
    for c in range(img.shape[2]):
        plane = np.ascontiguousarray(img[:, :, c], dtype=np.float32)
        chans.append(np.asarray(Image.fromarray(plane, "F").resize((w, h), Image.BILINEAR)))
    return np.stack(chans, axis=-1)


def stack_images(items: list[np.ndarray], where: str, positions: Sequence[int] | None = None) -> np.ndarray:
    """Stack same-sized HWC images; images of different sizes raise a DataError with a --size hint."""
    first = items[0].shape
    for k, it in enumerate(items):
        if it.shape != first:
            at = positions[k] if positions is not None else k
            at0 = positions[0] if positions is not None else 0
            raise DataError(
                f"{where}: images differ in size ({_hw(first)} at item {at0}, {_hw(it.shape)} at item {at}); "
                "pass --size HxW (or --resize/--crop)"
            )
    return np.stack(items)


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}" + (f"x{shape[2]}" if len(shape) > 2 else "")


def decode_image(data: bytes, where: str, channel_order: str = "RGB") -> np.ndarray:
    """Decode one encoded image file to HWC uint8 (RGB, or one grey channel for ``L``).

    ``where`` names the file in messages (a path, or ``archive.tar: member 'a/b.jpg'``); a file Pillow
    cannot read raises :class:`DataError` naming it.
    """
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if channel_order == "L" else "RGB")
            arr = np.asarray(im)
    except Exception as exc:  # Pillow raises many kinds
        reason = _BUFFER_REPR.sub("", str(exc)).strip() or "unreadable"
        raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {reason}; "
                        f"{len(data)} bytes)") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
