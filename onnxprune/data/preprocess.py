"""How raw images become model input: the :class:`Preprocess` config, its transforms and CLI-like parsing.

Geometry with Pillow (bilinear), then ``/255``, channel order, mean/std and layout with numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from onnxprune.data.images import as_hwc, resize_hwc, stack_images
from onnxprune.errors import DataError

__all__ = ["NORM_PRESETS", "LAYOUTS", "CHANNEL_ORDERS", "DTYPES", "Preprocess", "parse_size", "parse_floats",
           "parse_norm", "parse_positive_int", "preprocess_from_args"]

#: Named mean/std presets, in 0..1 units (the units of the data after ``scale``).
NORM_PRESETS: dict[str, tuple[tuple[float, ...] | None, tuple[float, ...] | None]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "none": (None, None),
}

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR", "L")
DTYPES = ("float32", "float16", "float64")


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


def parse_positive_int(value: Any, name: str) -> int:
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
            set_("resize", parse_positive_int(self.resize, "resize"))
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
        if layout not in LAYOUTS:
            raise DataError(f"layout {self.layout!r}: expected NCHW or NHWC")
        set_("layout", layout)
        order = str(self.channel_order).strip().upper()
        if order in ("GRAY", "GREY", "GRAYSCALE"):
            order = "L"
        if order not in CHANNEL_ORDERS:
            raise DataError(f"channel order {self.channel_order!r}: expected RGB, BGR or L")
        set_("channel_order", order)
        set_("scale", _parse_bool(self.scale, "scale"))
        dt = str(np.dtype(self.dtype)) if _valid_dtype(self.dtype) else str(self.dtype)
        if dt not in DTYPES:
            raise DataError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
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
                img = resize_hwc(img, new_hw)
        if self.center_crop is not None:
            ch, cw = self.center_crop
            h, w = img.shape[:2]
            if ch > h or cw > w:
                raise DataError(f"center crop {ch}x{cw} is larger than the image {h}x{w}; pass a larger --resize")
            top = int(round((h - ch) / 2.0))
            left = int(round((w - cw) / 2.0))
            img = img[top : top + ch, left : left + cw]
        if self.size is not None and tuple(img.shape[:2]) != self.size:
            img = resize_hwc(img, self.size)
        return img

    def apply(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess a batch of raw images (NHWC array or a list of HWC arrays) into model input."""
        items = [self.geometry(as_hwc(im)) for im in images]
        if not items:
            shape = (0,) + ((self.channels,) + tuple(self.size or (0, 0)) if self.layout == "NCHW" else tuple(self.size or (0, 0)) + (self.channels,))
            return np.zeros(shape, dtype=self.dtype)
        return self.finish(stack_images(items, "images"))

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
        resize=None if resize is None else parse_positive_int(resize, "resize"),
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
