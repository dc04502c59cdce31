"""Calibration and evaluation data for image models.

Sources that :func:`load_dataset` reads:

* ``.npy`` -- an array of images only (memory-mapped);
* ``.npz`` -- images under ``x`` (labels under ``y``), or ``images``/``labels``, or ``data``/``labels``;
* an ImageFolder directory -- one sub-folder per class, classes sorted by name give the label index,
  image files ``.jpg``/``.jpeg``/``.png``/``.bmp``; a folder of images without class folders gives
  unlabelled data;
* a ``.tar``/``.tar.gz``/``.tgz`` (also bz2/xz) of such a folder, read in place (never extracted); the
  class folders are found below any top-level folder (``train/<class>/x.jpg``);
* the CIFAR-10/100 "python version" batches: the ``cifar-10-batches-py`` directory, a single batch file
  (``data_batch_1`` ... ``test_batch``) or the ``cifar-10-python.tar.gz`` archive itself.

Images from folders and tars are decoded lazily, batch by batch; only the list of members is kept.
Arrays (npz, CIFAR) are small and loaded. Everything is preprocessed by a :class:`Preprocess`:
geometry with Pillow (bilinear), then ``/255``, channel order, mean/std and layout with numpy.

This module deliberately imports neither onnx, onnxruntime nor torch.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import tarfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from onnxprune.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "NORM_PRESETS",
    "Preprocess",
    "Dataset",
    "LazyImages",
    "ImageSource",
    "ArraySource",
    "FolderSource",
    "TarSource",
    "load_dataset",
    "check_against_input",
    "parse_size",
    "parse_floats",
    "parse_norm",
    "preprocess_from_args",
    "add_preprocess_arguments",
    "preprocess_from_namespace",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: Named mean/std presets, in 0..1 units (the units of the data after ``scale``).
NORM_PRESETS: dict[str, tuple[tuple[float, ...] | None, tuple[float, ...] | None]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "none": (None, None),
}

_LAYOUTS = ("NCHW", "NHWC")
_CHANNEL_ORDERS = ("RGB", "BGR", "L")
_DTYPES = ("float32", "float16", "float64")

#: A compressed tar cannot be read at random cheaply (each backward seek decompresses from the start),
#: so up to this many bytes of *encoded* members are read in one forward pass and kept; decoding stays
#: lazy. Past it, each batch is read in offset order (bounded memory, slower when shuffled).
TAR_ENCODED_CACHE_BYTES = 512 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# CLI-like string parsing (pure)
# --------------------------------------------------------------------------------------------------


def parse_size(text: str | int | Sequence[int]) -> tuple[int, int]:
    """``"32"`` -> (32, 32); ``"32x40"`` / ``"32,40"`` / ``[32, 40]`` -> (32, 40) as (H, W)."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        parts: list[Any] = [int(text)]
    elif isinstance(text, str):
        s = text.strip().lower().replace("×", "x")
        for sep in ("x", ",", " "):
            if sep in s:
                parts = s.split(sep)
                break
        else:
            parts = [s]
    elif isinstance(text, Sequence):
        parts = list(text)
    else:
        raise DataError(f"size {text!r}: expected N or HxW")
    try:
        vals = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise DataError(f"size {text!r}: expected N or HxW, e.g. 32 or 224x224") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise DataError(f"size {text!r}: expected N or HxW with positive integers")
    return (vals[0], vals[1])


def parse_floats(text: str | float | Sequence[float], name: str = "value") -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> (0.485, 0.456, 0.406); a single number gives a 1-tuple."""
    if isinstance(text, (int, float, np.number)) and not isinstance(text, bool):
        parts: list[Any] = [text]
    elif isinstance(text, str):
        parts = [p for p in text.replace(" ", ",").split(",") if p.strip()]
    elif isinstance(text, Sequence):
        parts = list(text)
    else:
        raise DataError(f"{name} {text!r}: expected comma-separated numbers")
    try:
        vals = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise DataError(f"{name} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None
    if not vals:
        raise DataError(f"{name} {text!r}: no numbers given")
    if not all(np.isfinite(vals)):
        raise DataError(f"{name} {text!r}: numbers must be finite")
    return vals


def parse_norm(text: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """A preset name (``imagenet``, ``cifar10``, ``none``) -> (mean, std) in 0..1 units."""
    key = str(text).strip().lower()
    if key not in NORM_PRESETS:
        raise DataError(f"normalisation preset {text!r} unknown; known: {', '.join(sorted(NORM_PRESETS))}")
    return NORM_PRESETS[key]


def _is_preset(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in NORM_PRESETS


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
    raise DataError(f"{name} {value!r}: expected true or false")


def _parse_positive_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = int(str(value).strip()) if isinstance(value, str) else int(value)
        if isinstance(value, float) and value != v:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"{name} {value!r}: expected a positive integer") from None
    if v <= 0:
        raise DataError(f"{name} {value!r}: expected a positive integer")
    return v


# --------------------------------------------------------------------------------------------------
# Preprocess
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model input.

    Steps, in order: ``resize`` the shorter side (keeping the aspect ratio, torchvision's rounding);
    ``center_crop`` to (H, W); resize to ``size`` if the image is not that size yet (bilinear, Pillow);
    divide uint8 data by 255 when ``scale``; reorder channels (``RGB``, ``BGR`` or ``L`` for one grey
    channel); subtract ``mean`` and divide by ``std`` per channel; lay out as ``NCHW`` or ``NHWC``;
    cast to ``dtype``.

    ``mean``/``std`` apply to the data after ``scale``: in 0..1 units with the default ``scale=True``.
    (Presets given by name to :meth:`from_dict`/:func:`preprocess_from_args` are multiplied by 255 when
    ``scale`` is false.) With ``size`` unset and no resize/crop the images keep their own size.
    ``center_crop=True`` means "crop to ``size``".
    """

    size: tuple[int, int] | None = None
    resize: int | None = None
    center_crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    channel_order: str = "RGB"
    scale: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        if self.size is not None:
            set_("size", parse_size(self.size))
        if self.resize is not None:
            set_("resize", _parse_positive_int(self.resize, "resize"))
        crop = self.center_crop
        if crop is True:
            if self.size is None:
                raise DataError("center_crop=True needs size (the crop size)")
            crop = self.size
        elif crop is False:
            crop = None
        if crop is not None:
            crop = parse_size(crop)
            if self.size is None:
                set_("size", crop)
        set_("center_crop", crop)
        for key in ("mean", "std"):
            val = getattr(self, key)
            if val is not None:
                if _is_preset(val):
                    raise DataError(f"{key} {val!r} is a preset name; use Preprocess.from_dict or from_strings")
                set_(key, parse_floats(val, key))
        if self.std is not None and any(s == 0 for s in self.std):
            raise DataError(f"std {self.std}: a zero std would divide by zero")
        layout = str(self.layout).strip().upper()
        if layout not in _LAYOUTS:
            raise DataError(f"layout {self.layout!r}: expected NCHW or NHWC")
        set_("layout", layout)
        order = str(self.channel_order).strip().upper()
        if order in ("GRAY", "GREY", "GRAYSCALE"):
            order = "L"
        if order not in _CHANNEL_ORDERS:
            raise DataError(f"channel order {self.channel_order!r}: expected RGB, BGR or L")
        set_("channel_order", order)
        set_("scale", _parse_bool(self.scale, "scale"))
        dt = str(np.dtype(self.dtype)) if _valid_dtype(self.dtype) else str(self.dtype)
        if dt not in _DTYPES:
            raise DataError(f"dtype {self.dtype!r}: expected one of {', '.join(_DTYPES)}")
        set_("dtype", dt)
        n = self.channels
        for key in ("mean", "std"):
            val = getattr(self, key)
            if val is not None and len(val) not in (1, n):
                raise DataError(f"{key} has {len(val)} values but channel order {self.channel_order} gives {n} channel(s)")

    # ---- construction helpers -------------------------------------------------------------------

    @property
    def channels(self) -> int:
        """Channels produced from decoded image files: 1 for ``L``, else 3."""
        return 1 if self.channel_order == "L" else 3

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Preprocess":
        """Build from a small JSON/TOML-style dict; values may be numbers, lists or CLI-like strings.

        Keys: ``size``, ``resize``, ``center_crop`` (alias ``crop``), ``mean``, ``std``, ``norm``
        (alias ``preset``: a name from :data:`NORM_PRESETS`), ``layout``, ``channel_order``, ``scale``,
        ``dtype``. ``mean``/``std`` may also be a preset name.
        """
        if not isinstance(config, Mapping):
            raise DataError(f"preprocess config must be a table/dict, got {type(config).__name__}")
        known = {f.name for f in fields(cls)} | {"crop", "norm", "preset"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise DataError(f"preprocess config: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        cfg = dict(config)
        if "crop" in cfg:
            if "center_crop" in cfg:
                raise DataError("preprocess config: give crop or center_crop, not both")
            cfg["center_crop"] = cfg.pop("crop")
        if "preset" in cfg:
            if "norm" in cfg:
                raise DataError("preprocess config: give norm or preset, not both")
            cfg["norm"] = cfg.pop("preset")
        return preprocess_from_args(**{k: v for k, v in cfg.items() if v is not None})

    @classmethod
    def from_strings(cls, **kwargs: Any) -> "Preprocess":
        """Same as :func:`preprocess_from_args` (CLI strings such as ``size="32x32"``)."""
        return preprocess_from_args(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict that :meth:`from_dict` reads back to an equal object."""
        d = asdict(self)
        for k in ("size", "center_crop", "mean", "std"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def describe(self) -> str:
        """One line for logs, e.g. ``resize 256, crop 224x224, /255, mean (...), std (...), RGB NCHW float32``."""
        parts = []
        if self.resize:
            parts.append(f"resize {self.resize}")
        if self.center_crop:
            parts.append(f"crop {self.center_crop[0]}x{self.center_crop[1]}")
        if self.size and self.size != self.center_crop:
            parts.append(f"size {self.size[0]}x{self.size[1]}")
        if self.scale:
            parts.append("/255")
        if self.mean is not None:
            parts.append("mean " + ",".join(f"{v:g}" for v in self.mean))
        if self.std is not None:
            parts.append("std " + ",".join(f"{v:g}" for v in self.std))
        parts.append(f"{self.channel_order} {self.layout} {self.dtype}")
        return ", ".join(parts)

    # ---- application ----------------------------------------------------------------------------

    def geometry(self, image: np.ndarray) -> np.ndarray:
        """Resize / crop one HWC image (uint8 or float) as configured; returns HWC."""
        img = image
        if self.resize is not None:
            h, w = img.shape[:2]
            short, long_ = (h, w) if h <= w else (w, h)
            if short != self.resize:
                new_long = int(self.resize * long_ / short)
                new_hw = (self.resize, new_long) if h <= w else (new_long, self.resize)
                img = _resize_hwc(img, new_hw)
        if self.center_crop is not None:
            ch, cw = self.center_crop
            h, w = img.shape[:2]
            if ch > h or cw > w:
                raise DataError(f"center crop {ch}x{cw} is larger than the image {h}x{w}; pass a larger --resize")
            top = int(round((h - ch) / 2.0))
            left = int(round((w - cw) / 2.0))
            img = img[top : top + ch, left : left + cw]
        if self.size is not None and tuple(img.shape[:2]) != self.size:
            img = _resize_hwc(img, self.size)
        return img

    def apply(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess a batch of raw images (NHWC array or a list of HWC arrays) into model input."""
        items = [self.geometry(_as_hwc(im)) for im in images]
        if not items:
            shape = (0,) + ((self.channels,) + tuple(self.size or (0, 0)) if self.layout == "NCHW" else tuple(self.size or (0, 0)) + (self.channels,))
            return np.zeros(shape, dtype=self.dtype)
        return self.finish(_stack(items, "images"))

    def finish(self, batch: np.ndarray) -> np.ndarray:
        """The per-pixel steps on an NHWC batch of the right size: scale, channels, mean/std, layout, dtype."""
        was_uint8 = batch.dtype == np.uint8
        x = batch.astype(np.float32 if self.dtype != "float64" else np.float64, copy=True)
        if was_uint8 and self.scale:
            x /= 255.0
        c = x.shape[-1]
        if self.channel_order == "L":
            if c == 3:
                x = x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114
            elif c != 1:
                raise DataError(f"channel order L needs 1 or 3 channels, the data has {c}")
        elif self.channel_order == "BGR":
            if c not in (3, 4):
                raise DataError(f"channel order BGR needs 3 or 4 channels, the data has {c}")
            x = np.concatenate([x[..., 2::-1], x[..., 3:]], axis=-1)
        c = x.shape[-1]
        for key in ("mean", "std"):
            val = getattr(self, key)
            if val is not None and len(val) not in (1, c):
                raise DataError(f"{key} has {len(val)} values but the data has {c} channels")
        if self.mean is not None:
            x -= np.asarray(self.mean, dtype=x.dtype)
        if self.std is not None:
            x /= np.asarray(self.std, dtype=x.dtype)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def output_shape(self, raw_hwc_shape: Sequence[int]) -> tuple[int, int, int]:
        """Item shape (without batch) that a raw HWC image of this shape becomes."""
        h, w = raw_hwc_shape[0], raw_hwc_shape[1]
        c = raw_hwc_shape[2] if len(raw_hwc_shape) > 2 else 1
        if self.resize is not None:
            if h <= w:
                h, w = self.resize, int(self.resize * w / h)
            else:
                h, w = int(self.resize * h / w), self.resize
        if self.center_crop is not None:
            h, w = self.center_crop
        if self.size is not None:
            h, w = self.size
        if self.channel_order == "L":
            c = 1
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)


def _valid_dtype(value: Any) -> bool:
    try:
        np.dtype(value)
        return True
    except TypeError:
        return False


def preprocess_from_args(
    *,
    size: Any = None,
    resize: Any = None,
    crop: Any = None,
    center_crop: Any = None,
    mean: Any = None,
    std: Any = None,
    norm: Any = None,
    layout: Any = None,
    channel_order: Any = None,
    scale: Any = None,
    dtype: Any = None,
) -> Preprocess:
    """Build a :class:`Preprocess` from CLI-like values (strings, numbers or lists; None = default).

    ``size="32"`` or ``"32x32"``; ``resize="256"``; ``crop="224"``; ``mean="0.485,0.456,0.406"`` or a
    preset name (which then also sets ``std`` unless given); ``norm="imagenet"`` sets both;
    ``layout="NHWC"``; ``channel_order="BGR"``; ``scale="false"``; ``dtype="float32"``.
    """
    if crop is not None and center_crop is not None:
        raise DataError("give crop or center_crop, not both")
    crop = crop if crop is not None else center_crop
    scale_b = True if scale is None else _parse_bool(scale, "scale")
    factor = 1.0 if scale_b else 255.0

    def preset(name: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        m, s = parse_norm(name)
        scale_ = (lambda t: None if t is None else tuple(v * factor for v in t))
        return scale_(m), scale_(s)

    mean_v: tuple[float, ...] | None = None
    std_v: tuple[float, ...] | None = None
    if norm is not None:
        mean_v, std_v = preset(norm)
    if mean is not None:
        if _is_preset(mean):
            pm, ps = preset(mean)
            mean_v = pm
            if std is None and norm is None:
                std_v = ps
        else:
            mean_v = parse_floats(mean, "mean")
    if std is not None:
        std_v = preset(std)[1] if _is_preset(std) else parse_floats(std, "std")
    if crop is not None and not isinstance(crop, bool):
        crop = parse_size(crop)
    kwargs: dict[str, Any] = dict(
        size=None if size is None else parse_size(size),
        resize=None if resize is None else _parse_positive_int(resize, "resize"),
        center_crop=crop,
        mean=mean_v,
        std=std_v,
        scale=scale_b,
    )
    if layout is not None:
        kwargs["layout"] = layout
    if channel_order is not None:
        kwargs["channel_order"] = channel_order
    if dtype is not None:
        kwargs["dtype"] = dtype
    return Preprocess(**kwargs)


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--size --resize --crop --mean --std --norm --layout --channel-order --no-scale`` to a parser."""
    g = parser.add_argument_group("preprocessing")
    g.add_argument("--size", help="model input size, N or HxW (e.g. 32 or 224x224)")
    g.add_argument("--resize", help="resize the shorter side to N first (e.g. 256)")
    g.add_argument("--crop", help="center crop, N or HxW, after --resize (e.g. 224)")
    g.add_argument("--mean", help="per-channel mean in 0..1 units (e.g. 0.485,0.456,0.406) or a preset name")
    g.add_argument("--std", help="per-channel std in 0..1 units (e.g. 0.229,0.224,0.225) or a preset name")
    g.add_argument("--norm", help=f"mean/std preset: {', '.join(sorted(NORM_PRESETS))}")
    g.add_argument("--layout", choices=_LAYOUTS, type=str.upper, help="model input layout (default NCHW)")
    g.add_argument("--channel-order", dest="channel_order", choices=_CHANNEL_ORDERS, type=str.upper, help="default RGB")
    g.add_argument("--no-scale", dest="scale", action="store_const", const=False, default=None,
                   help="keep uint8 pixel values in 0..255 (no division by 255)")
    g.add_argument("--input-dtype", dest="dtype", choices=_DTYPES, help="default float32")


def preprocess_from_namespace(ns: argparse.Namespace) -> Preprocess:
    """The :class:`Preprocess` described by arguments added with :func:`add_preprocess_arguments`."""
    keys = ("size", "resize", "crop", "mean", "std", "norm", "layout", "channel_order", "scale", "dtype")
    return preprocess_from_args(**{k: getattr(ns, k, None) for k in keys})


# --------------------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------------------


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading or resizing images needs Pillow (pip install pillow)") from None
    return Image


def _as_hwc(im: np.ndarray) -> np.ndarray:
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise DataError(f"an image must be HxW or HxWxC, got shape {a.shape}")
    return a


def _resize_hwc(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
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


def _stack(items: list[np.ndarray], where: str, positions: Sequence[int] | None = None) -> np.ndarray:
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


def _decode(data: bytes, where: str, name: str, channel_order: str = "RGB") -> np.ndarray:
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if channel_order == "L" else "RGB")
            arr = np.asarray(im)
    except Exception as exc:  # Pillow raises many kinds
        raise DataError(f"{where}: cannot decode image {name!r}: {type(exc).__name__}: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


# --------------------------------------------------------------------------------------------------
# Lazy image sources
# --------------------------------------------------------------------------------------------------


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
            out.append(_decode(data, self.path, name, self.decode_mode))
        return out


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
            out.append(_decode(data, self.path, self.members[p].name, self.decode_mode))
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


# --------------------------------------------------------------------------------------------------
# Index building: ImageFolder layout in a directory or a tar
# --------------------------------------------------------------------------------------------------


def _skip_part(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _folder_layout(where: str, files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], split: str | None
                   ) -> tuple[tuple[str, ...], list[int], list[str] | None, list[int] | None]:
    """Choose the class root among image files (given as path parts).

    Returns (prefix, indices of the chosen files, classes or None, label per chosen file or None).
    Files directly in the root with no class folders give unlabelled data; files beside class
    folders are ignored (as torchvision's ImageFolder does).
    """
    if not files:
        raise DataError(f"{where}: no images ({'/'.join(IMAGE_EXTENSIONS)}) found")
    idx = list(range(len(files)))
    if split is not None:
        nested = [i for i in idx if split in files[i][:-2]]  # .../<split>/<class>/x.jpg
        flat = [i for i in idx if files[i][-2:-1] == (split,)]  # .../<split>/x.jpg
        if nested:
            idx = nested
        elif flat:
            parents = sorted({files[i][:-1] for i in flat})
            if len(parents) > 1:
                shown = ", ".join("/".join(q) for q in parents[:6])
                raise DataError(f"{where}: several folders named {split!r} hold images ({shown})")
            return parents[0], flat, None, None
        else:
            raise DataError(f"{where}: no folder named {split!r} holds images")
    parents = [files[i][:-1] for i in idx]
    if all(len(p) == 0 for p in parents):
        return (), idx, None, None
    labelled = [(i, p) for i, p in zip(idx, parents) if p]
    prefixes = sorted({p[:-1] for _, p in labelled})
    if split is not None and len(prefixes) > 1:
        ends = [q for q in prefixes if q and q[-1] == split]
        if ends:
            prefixes = ends
    if len(prefixes) > 1:
        shown = ", ".join("/".join(q) or "." for q in prefixes[:6])
        more = "" if len(prefixes) <= 6 else f" and {len(prefixes) - 6} more"
        raise DataError(f"{where}: class folders found under several roots ({shown}{more}); "
                        "pass split=NAME (--split) to choose one")
    prefix = prefixes[0]
    n = len(prefix)
    class_set = {p[n] for _, p in labelled if p[:-1] == prefix}
    class_set |= {d[n] for d in dirs if len(d) == n + 1 and d[:n] == prefix and not _skip_part(d[n])}
    classes = sorted(class_set)
    lookup = {c: k for k, c in enumerate(classes)}
    chosen = [(i, lookup[p[n]]) for i, p in labelled if p[:-1] == prefix]
    return prefix, [i for i, _ in chosen], classes, [c for _, c in chosen]


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _load_folder(path: Path, split: str | None, decode_mode: str) -> FolderSource:
    where = str(path)
    files: list[tuple[str, ...]] = []
    dirs: set[tuple[str, ...]] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _skip_part(d))
        rel = Path(dirpath).relative_to(path).parts
        for d in dirnames:
            dirs.add(rel + (d,))
        for fn in filenames:
            if not _skip_part(fn) and _is_image_name(fn):
                files.append(rel + (fn,))
    files.sort()
    _, chosen, classes, labels = _folder_layout(where, files, dirs, split)
    names = ["/".join(files[i]) for i in chosen]
    return FolderSource(where, path, names, None if labels is None else np.asarray(labels, dtype=np.int64),
                        classes, decode_mode)


def _norm_member(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name).parts if p not in (".", "/", ""))


_CIFAR_BATCH_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "train", "test")


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
        if not parts or any(_skip_part(p) for p in parts):
            continue
        if m.isdir():
            dirs.add(parts)
        elif m.isfile():
            for k in range(1, len(parts)):
                dirs.add(parts[:k])
            if _is_image_name(parts[-1]):
                images.append(m)
                files.append(parts)
            elif parts[-1] in _CIFAR_BATCH_NAMES or parts[-1] == "batches.meta" or parts[-1] == "meta":
                batches[parts[-1]] = m
    if not images and batches:
        try:
            return _cifar_from_tar(where, tar, batches, split)
        finally:
            tar.close()
    order = sorted(range(len(files)), key=lambda i: files[i])
    files = [files[i] for i in order]
    images = [images[i] for i in order]
    try:
        _, chosen, classes, labels = _folder_layout(where, files, dirs, split)
    except DataError:
        tar.close()
        raise
    return TarSource(where, tar, [images[i] for i in chosen],
                     None if labels is None else np.asarray(labels, dtype=np.int64),
                     classes, _tar_compression(path) is not None, decode_mode)


# --------------------------------------------------------------------------------------------------
# CIFAR python batches
# --------------------------------------------------------------------------------------------------


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
        want = [n for n in _CIFAR_BATCH_NAMES[:5] if n in available] or [n for n in ("train",) if n in available]
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
    available = [n for n in _CIFAR_BATCH_NAMES + ("batches.meta", "meta") if (path / n).is_file()]
    want = _cifar_split_files(split, available, str(path))
    parts = [_cifar_batch_arrays(_unpickle((path / n).read_bytes(), str(path / n)), str(path / n)) for n in want]
    meta_name = "batches.meta" if "batches.meta" in available else ("meta" if "meta" in available else None)
    names = _cifar_names(_unpickle((path / meta_name).read_bytes(), str(path / meta_name))) if meta_name else None
    return _cifar_concat(parts, str(path), names)


def _cifar_from_tar(where: str, tar: tarfile.TarFile, batches: dict[str, tarfile.TarInfo], split: str | None) -> ArraySource:
    want = _cifar_split_files(split, list(batches), where)

    def load(name: str) -> Any:
        f = tar.extractfile(batches[name])
        return _unpickle(f.read() if f else b"", f"{where}:{batches[name].name}")

    parts = [_cifar_batch_arrays(load(n), f"{where}:{batches[n].name}") for n in want]
    meta_name = "batches.meta" if "batches.meta" in batches else ("meta" if "meta" in batches else None)
    names = _cifar_names(load(meta_name)) if meta_name else None
    return _cifar_concat(parts, where, names)


# --------------------------------------------------------------------------------------------------
# npy / npz
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


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
        items = [pp.geometry(_as_hwc(im)) for im in raw]
        return pp.finish(_stack(items, self.path, pos))

    def batches(self, batch_size: int = 64, *, drop_last: bool = False, check_finite: bool = True
                ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(x, y)``: ``x`` a preprocessed batch, ``y`` its labels (int64) or None.

        Images are decoded batch by batch. With ``check_finite`` a batch holding NaN/Inf raises
        :class:`DataError` naming the source and the item.
        """
        batch_size = _parse_positive_int(batch_size, "batch size")
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
    if source_layout is not None and str(source_layout).upper() not in _LAYOUTS:
        raise DataError(f"source layout {source_layout!r}: expected NCHW or NHWC")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    decode_mode = "L" if preprocess.channel_order == "L" else "RGB"
    name = path.name.lower()
    src: ImageSource
    if path.is_dir():
        if any((path / n).is_file() for n in ("data_batch_1", "test_batch")):
            src = _load_cifar_dir(path, split)
        else:
            src = _load_folder(path, split, decode_mode)
    elif name.endswith(".npy"):
        src = _load_npy(path, source_layout)
    elif name.endswith(".npz"):
        src = _load_npz(path, source_layout)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        src = _load_tar(path, split, decode_mode)
    elif path.name in _CIFAR_BATCH_NAMES:
        src = _cifar_concat([_cifar_batch_arrays(_unpickle(path.read_bytes(), str(path)), str(path))], str(path), None)
    elif tarfile.is_tarfile(path):
        src = _load_tar(path, split, decode_mode)
    else:
        raise DataError(f"{path}: unsupported data source; expected .npy, .npz, a folder of class folders, "
                        ".tar/.tar.gz of one, or CIFAR python batches")
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


# --------------------------------------------------------------------------------------------------
# Validation against a model input
# --------------------------------------------------------------------------------------------------


def _dim(v: Any) -> int | None:
    """A concrete positive dimension, or None for a dynamic one (None, str, 0, -1)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
        return int(v)
    return None


def _match(a: Sequence[Any], b: Sequence[int | None]) -> bool:
    return len(a) == len(b) and all(y is None or x == y for x, y in zip(a, b))


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if v is None else str(v) for v in shape) + ")"


def check_against_input(data: "Dataset | np.ndarray | Sequence[int]", input_shape: Sequence[Any],
                        input_name: str, *, layout: str | None = None, source: str | None = None
                        ) -> tuple[int, ...]:
    """Check that data fits a model input; returns the item shape (without batch) on success.

    ``data``: a :class:`Dataset`, a batch array, or a batch shape ``(N, ...)``. ``input_shape``: the
    model input's shape, dynamic dims as None/str/0/-1 (the batch dim is not checked). ``layout`` is
    the data's layout (default: the dataset's ``preprocess.layout``, else NCHW); ``source`` names the
    data in messages. Raises :class:`DataError` for a non-numeric dtype, a wrong rank, a channel count
    that does not match (with a hint when NHWC and NCHW look swapped), a wrong spatial size (with a
    ``--size`` hint), or NaN/Inf in the data (naming the first bad image).
    """
    name = f"input {input_name!r}"
    array: np.ndarray | None = None
    dt: np.dtype | None = None
    if isinstance(data, Dataset):
        where = source or data.path
        layout = layout or data.preprocess.layout
        bad = data.first_nonfinite()
        if bad is not None:
            raw = getattr(data.source, "raw_shape", None)
            raise DataError(f"{where}: image {bad[0]} contains {bad[1]}" + (f" (images {raw})" if raw else ""))
        batch = data.shape
    elif isinstance(data, np.ndarray):
        where = source or "data"
        array, dt, batch = data, data.dtype, tuple(data.shape)
    else:
        where = source or "data"
        try:
            batch = tuple(int(v) for v in data)
        except (TypeError, ValueError):
            raise DataError(f"{where}: expected a Dataset, an array or a batch shape, got {type(data).__name__}") from None
    layout = (layout or "NCHW").upper()
    if layout not in _LAYOUTS:
        raise DataError(f"layout {layout!r}: expected NCHW or NHWC")
    if dt is not None and (dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating))):
        raise DataError(f"{where}: data dtype {dt} is not numeric (shape {batch}); {name} needs numbers")
    want_full = [_dim(v) for v in input_shape]
    want = want_full[1:]
    want_s = _fmt(want_full)
    item = tuple(batch[1:])
    got_s = str(tuple(batch))
    if len(batch) != len(want_full):
        raise DataError(f"{where}: data {got_s} has rank {len(batch)} but {name} {want_s} has rank {len(want_full)}")
    if len(item) == 3 and not _match(item, want):
        other = "NHWC" if layout == "NCHW" else "NCHW"
        c_ax, sp_ax = (0, (1, 2)) if layout == "NCHW" else (2, (0, 1))
        as_other = tuple(item[k] for k in ((1, 2, 0) if layout == "NCHW" else (2, 0, 1)))
        if _match(as_other, want):  # the data is right for the other layout
            raise DataError(f"{where}: data {got_s} is {layout} but {name} is {want_s}: "
                            f"channel order looks like {other}; pass --layout {other}")
        from_other = tuple(item[k] for k in ((2, 0, 1) if layout == "NCHW" else (1, 2, 0)))
        if _match(from_other, want):  # the data itself is in the other layout
            raise DataError(f"{where}: data {got_s} looks like {other} but {name} {want_s} is {layout}; "
                            f"transpose the data (for arrays pass source_layout {other})")
        want_c = want[c_ax]
        if want_c is not None and item[c_ax] != want_c:
            hint = ""
            if want_c == 1 and item[c_ax] == 3:
                hint = "; pass --channel-order L for grey input"
            elif want_c == 3 and item[c_ax] == 1:
                hint = "; the data is grey but the model wants 3 channels"
            elif want[(2 if layout == "NCHW" else 0)] in (1, 3, 4):
                hint = f"; channel order looks like {other}; pass --layout {other}"
            raise DataError(f"{where}: data {got_s} has {item[c_ax]} channels but {name} {want_s} expects {want_c}{hint}")
        got_hw = tuple(item[k] for k in sp_ax)
        want_hw = tuple(want[k] for k in sp_ax)
        if not _match(got_hw, want_hw):
            h, w = (want_hw[0] or got_hw[0]), (want_hw[1] or got_hw[1])
            hw = str(h) if h == w else f"{h}x{w}"
            extra = f" (or --resize {int(round(max(h, w) / 0.875))} --crop {hw})" if max(h, w) >= 64 else ""
            raise DataError(f"{where}: images are {got_hw[0]}x{got_hw[1]} {got_s} but {name} {want_s} "
                            f"expects {h}x{w}; pass --size {hw}{extra}")
    elif not _match(item, want):
        raise DataError(f"{where}: data {got_s} does not fit {name} {want_s}")
    if array is not None and np.issubdtype(array.dtype, np.floating) and array.size:
        flat = array.reshape(len(array), -1)
        ok = np.isfinite(flat).all(axis=1)
        if not ok.all():
            k = int(np.argmin(ok))
            kind = "NaN" if np.isnan(flat[k]).any() else "Inf"
            raise DataError(f"{where}: image {k} contains {kind} (batch shape {array.shape})")
    return item
