"""Checking data against a model input: shape, layout, channels, dtype and NaN/Inf, with hints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnxprune.data.dataset import Dataset, load_dataset
from onnxprune.data.preprocess import LAYOUTS, Preprocess
from onnxprune.errors import DataError

__all__ = ["check_against_input", "as_model_batch", "load_feeds"]


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
    where, layout, array, batch = _batch_of(data, layout, source)
    name = f"input {input_name!r}"
    layout = (layout or "NCHW").upper()
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r}: expected NCHW or NHWC")
    dt = None if array is None else array.dtype
    if dt is not None and (dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating))):
        raise DataError(f"{where}: data dtype {dt} is not numeric (shape {batch}); {name} needs numbers")
    want_full = [_dim(v) for v in input_shape]
    item = tuple(batch[1:])
    got_s = str(tuple(batch))
    if len(batch) != len(want_full):
        raise DataError(f"{where}: data {got_s} has rank {len(batch)} but {name} {_fmt(want_full)} "
                        f"has rank {len(want_full)}")
    if len(item) == 3 and not _match(item, want_full[1:]):
        _raise_image_mismatch(where, got_s, item, want_full, name, layout)
    elif not _match(item, want_full[1:]):
        raise DataError(f"{where}: data {got_s} does not fit {name} {_fmt(want_full)}")
    if array is not None and np.issubdtype(array.dtype, np.floating) and array.size:
        flat = array.reshape(len(array), -1)
        ok = np.isfinite(flat).all(axis=1)
        if not ok.all():
            k = int(np.argmin(ok))
            kind = "NaN" if np.isnan(flat[k]).any() else "Inf"
            raise DataError(f"{where}: image {k} contains {kind} (batch shape {array.shape})")
    return item


def _batch_of(data: Any, layout: str | None, source: str | None
              ) -> tuple[str, str | None, np.ndarray | None, tuple[int, ...]]:
    """(name in messages, layout, the array if any, batch shape) of a Dataset, an array or a shape.
    A dataset is first scanned for NaN/Inf in its raw images."""
    if isinstance(data, Dataset):
        where = source or data.path
        bad = data.first_nonfinite()
        if bad is not None:
            raw = getattr(data.source, "raw_shape", None)
            raise DataError(f"{where}: image {bad[0]} contains {bad[1]}" + (f" (images {raw})" if raw else ""))
        return where, layout or data.preprocess.layout, None, data.shape
    where = source or "data"
    if isinstance(data, np.ndarray):
        return where, layout, data, tuple(data.shape)
    try:
        return where, layout, None, tuple(int(v) for v in data)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a Dataset, an array or a batch shape, got {type(data).__name__}") from None


def _raise_image_mismatch(where: str, got_s: str, item: tuple[int, ...], want_full: list[int | None],
                          name: str, layout: str) -> None:
    """The DataError for a (C,H,W)/(H,W,C) item that does not fit: layout, channels or size, with a hint."""
    want, want_s = want_full[1:], _fmt(want_full)
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
    h, w = (want_hw[0] or got_hw[0]), (want_hw[1] or got_hw[1])
    hw = str(h) if h == w else f"{h}x{w}"
    extra = f" (or --resize {int(round(max(h, w) / 0.875))} --crop {hw})" if max(h, w) >= 64 else ""
    raise DataError(f"{where}: images are {got_hw[0]}x{got_hw[1]} {got_s} but {name} {want_s} "
                    f"expects {h}x{w}; pass --size {hw}{extra}")


# --------------------------------------------------------------------------------------------------
# Arrays given to the Python API
# --------------------------------------------------------------------------------------------------

def _how_to_preprocess(want: list[int | None]) -> str:
    """The hint closing an as_model_batch message, with the input's own size and layout filled in."""
    layout = (_model_layout(want) if len(want) == 4 else None) or "NCHW"
    size = ""
    if len(want) == 4:
        hw = (want[2], want[3]) if layout == "NCHW" else (want[1], want[2])
        size = f"size='{hw[0]}x{hw[1]}', " if None not in hw else ""
    return (f"preprocess them first, e.g. onnxprune.data.preprocess_from_args({size}layout='{layout}', "
            "norm='imagenet' or the model's own mean/std).apply(images), or pass a Dataset from "
            "onnxprune.data.load_dataset(path, preprocess)")


def _model_layout(want: Sequence[int | None]) -> str | None:
    """NCHW or NHWC for a rank-4 input whose channel axis is recognisable (1, 3 or 4 channels)."""
    if want[1] in (1, 3, 4) and want[3] not in (1, 3, 4):
        return "NCHW"
    if want[3] in (1, 3, 4) and want[1] not in (1, 3, 4):
        return "NHWC"
    return None


def _image_problems(got: tuple[int, ...], want: list[int | None]) -> list[str]:
    """What is wrong with a rank-4 batch shape for a rank-4 image input (layout, channels, size)."""
    if _match(got[1:], want[1:]):
        return []
    layout = _model_layout(want)
    if layout is None:
        return ["its item shape differs"]
    axes = {"NCHW": (1, (2, 3)), "NHWC": (3, (1, 2))}
    other = "NHWC" if layout == "NCHW" else "NCHW"
    data_layout = layout
    if got[axes[layout][0]] not in (1, 3, 4) and got[axes[other][0]] in (1, 3, 4):
        data_layout = other
    problems = []
    if data_layout != layout:
        back = "(0, 3, 1, 2)" if layout == "NCHW" else "(0, 2, 3, 1)"
        problems.append(f"the data is {other} but the input is {layout} (images.transpose{back})")
    c_ax, hw_ax = axes[data_layout]
    want_c, want_hw = want[axes[layout][0]], tuple(want[k] for k in axes[layout][1])
    if want_c is not None and got[c_ax] != want_c:
        problems.append(f"it has {got[c_ax]} channels but the input expects {want_c}")
    hw = tuple(got[k] for k in hw_ax)
    if not _match(hw, want_hw):
        problems.append(f"images are {hw[0]}x{hw[1]} but the input expects "
                        f"{want_hw[0] or hw[0]}x{want_hw[1] or hw[1]}")
    return problems


def _missing_axis_hint(got: tuple[int, ...], want: list[int | None]) -> str:
    """For data one axis short: a single item (add the batch axis) or grey images without a channel axis."""
    if len(got) != len(want) - 1:
        return ""
    if _match(got, want[1:]):
        return "; a single item: add a batch axis (images[None])"
    if len(want) == 4 and want[1] == 1 and _match(got[1:], want[2:]):
        return "; grey images without a channel axis: add one (images[:, None])"
    if len(want) == 4 and want[3] == 1 and _match(got[1:], want[1:3]):
        return "; grey images without a channel axis: add one (images[..., None])"
    return ""


def as_model_batch(array: Any, input_shape: Sequence[Any], input_name: str, *,
                   input_dtype: str = "float32", source: str = "data") -> np.ndarray:
    """A batch array checked against a model input, as a contiguous ``input_dtype`` array.

    For arrays handed to the Python API (``Pruner.fit(model, images)``): raises :class:`DataError`
    naming the input and every problem found -- integer pixels (raw uint8 images), a wrong rank, the
    other layout (NHWC vs NCHW), the channel count, the spatial size, NaN/Inf -- and how to preprocess.
    ``input_shape`` has dynamic dims as None/str/0/-1 (the batch dim is not checked). Float data of
    another precision is cast to ``input_dtype``.
    """
    arr = np.asarray(array)
    want = [_dim(v) for v in input_shape]
    got = tuple(int(v) for v in arr.shape)
    problems = []
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        problems.append(f"dtype {arr.dtype} is not numeric")
    elif np.issubdtype(arr.dtype, np.integer) and np.issubdtype(np.dtype(input_dtype), np.floating):
        problems.append(f"dtype {arr.dtype} looks like raw pixels, the input expects {input_dtype} "
                        "(scaled and normalised)")
    if len(got) != len(want):
        problems.append(f"rank {len(got)} but the input has rank {len(want)}{_missing_axis_hint(got, want)}")
    elif len(got) == 4:
        problems += _image_problems(got, want)
    elif not _match(got[1:], want[1:]):
        problems.append("its item shape differs")
    if problems:
        raise DataError(f"{source} {_fmt(got)} {arr.dtype} does not fit input {input_name!r} {_fmt(want)} "
                        f"{input_dtype}: " + "; ".join(problems) + f"; {_how_to_preprocess(want)}")
    out = np.ascontiguousarray(arr, dtype=input_dtype)
    if np.issubdtype(out.dtype, np.floating) and out.size:
        ok = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
        if not ok.all():
            k = int(np.argmin(ok))
            kind = "NaN" if np.isnan(out[k]).any() else "Inf"
            raise DataError(f"{source}: image {k} contains {kind} (batch shape {out.shape}, input {input_name!r})")
    return out


# --------------------------------------------------------------------------------------------------
# Feeds for one run of a model (verify)
# --------------------------------------------------------------------------------------------------


def _input_spec(inp: Any) -> tuple[str, list[Any]]:
    """(name, shape) from a ``(name, shape)`` pair or an ONNX ValueInfoProto (read without importing onnx)."""
    if isinstance(inp, tuple):
        return str(inp[0]), list(inp[1])
    dims = inp.type.tensor_type.shape.dim
    return inp.name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _raw_feeds(path: Path, specs: list[tuple[str, list[Any]]]) -> dict[str, np.ndarray] | None:
    """Arrays saved as model inputs: a .npy for the first input, or a .npz keyed by input names.
    None when the file rather holds images to preprocess (a dataset .npz, or integer pixels)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read inputs ({exc})") from None
    if hasattr(data, "files"):
        with data:
            arrays = {k: data[k] for k in data.files}
        return arrays if set(arrays) & {n for n, _ in specs} else None
    name, shape = specs[0]
    want = [_dim(v) for v in shape]
    if np.issubdtype(data.dtype, np.integer) and data.ndim == 4 == len(want) and not _match(data.shape[1:], want[1:]):
        return None
    return {name: data}


def _preprocess_for(want: list[int | None]) -> Preprocess:
    """Default preprocessing for an image input: its layout and (when fixed) its size, pixels in 0..1."""
    if len(want) != 4:
        return Preprocess()
    layout = _model_layout(want) or "NCHW"
    hw = (want[2], want[3]) if layout == "NCHW" else (want[1], want[2])
    return Preprocess(size=None if None in hw else hw, layout=layout)


def load_feeds(source: str | os.PathLike, inputs: Sequence[Any], *, preprocess: Preprocess | None = None,
               limit: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one run of a model, from any source :func:`load_dataset` reads.

    A ``.npy`` (the first input) or ``.npz`` (one array per input name) already shaped as model inputs
    is used as it is. Anything else -- an image folder, a tar, CIFAR batches, an array of images --
    is loaded as a dataset: a seeded sample of ``limit`` images (the input's batch size when fixed),
    preprocessed by ``preprocess`` (default: the input's size and layout, pixels scaled to 0..1) and
    checked against the first input. ``inputs``: ONNX ValueInfoProtos or ``(name, shape)`` pairs.
    """
    specs = [_input_spec(i) for i in inputs]
    if not specs:
        raise DataError(f"{source}: the model has no inputs to feed")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file() and path.name.lower().endswith((".npy", ".npz")):
        raw = _raw_feeds(path, specs)
        if raw is not None:
            return raw
    name, shape = specs[0]
    want = [_dim(v) for v in shape]
    if preprocess is None:
        preprocess = _preprocess_for(want)
    with load_dataset(path, preprocess) as ds:
        n = min(want[0] or limit, len(ds))
        sample = ds.sample(n, seed=seed)
        check_against_input(sample, shape, name, source=str(path))
        x, _ = sample.arrays()
    return {name: x}
