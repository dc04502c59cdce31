"""Metric records (ChannelSummary, LayerMetrics) and the input checks every metric shares."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from onnxprune.errors import DataError

__all__ = ['ChannelSummary', 'LayerMetrics']


def _check_finite(x: np.ndarray, what: str) -> None:
    """Raise DataError when ``x`` holds NaN or infinity."""
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{what} of shape {list(np.shape(x))} holds {bad} NaN/inf value(s)")


def _as_real(x: Any, what: str) -> np.ndarray:
    """An ndarray of real numbers (bool and int promoted to float64)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} of shape {list(arr.shape)} has dtype {arr.dtype}, "
                        "expected real numbers")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    elif arr.dtype.itemsize < 4:  # float16: LAPACK and bincount paths want float32 or more
        arr = arr.astype(np.float32)
    return arr


def _check_nchw(batch: Any, what: str = "activation batch") -> np.ndarray:
    """Validate a [N, C, H, W] batch of finite real numbers."""
    arr = _as_real(batch, what)
    if arr.ndim != 4 or 0 in arr.shape:
        raise DataError(f"{what} has shape {list(arr.shape)}, expected non-empty [N, C, H, W]")
    _check_finite(arr, what)
    return arr


def _check_same(expected: tuple | None, got: tuple, what: str, names: str) -> tuple:
    """Fix the per-image shape on the first batch; later batches must match it."""
    if expected is not None and expected != got:
        raise DataError(f"{what}: batch has {names}={list(got)}, but the first batch had "
                        f"{names}={list(expected)}")
    return got


@dataclass(frozen=True, eq=False)
class ChannelSummary:
    """Per-channel values of one layer and their layer value.

    ``layer`` is the mean over channels; ``layer_norm`` is that value on a [0, 1] scale when
    the metric has a natural one (rank / min(H, W); histogram entropy / log(bins)), else None.
    """

    channel: np.ndarray
    layer: float
    layer_norm: float | None
    count: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", _frozen_array(self.channel))

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelSummary":
        """Inverse of to_dict."""
        norm = d.get("layer_norm")
        return cls(np.asarray(d["channel"], np.float64), float(d["layer"]),
                   None if norm is None else float(norm), int(d["count"]))


def _to_json(v: Any) -> Any:
    """Arrays as nested lists, NumPy scalars as Python numbers."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _frozen_array(v: Any) -> np.ndarray | None:
    """A read-only float64 copy (None stays None)."""
    if v is None:
        return None
    a = np.array(v, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class LayerMetrics:
    """Metrics of one channel group's layer.

    rank: layer rank / min(H, W); entropy: layer entropy (nats, or normalised — the caller
    says which); concentration: fused value; nhsic: s_i or α_i; channel_*: per-channel values.
    """

    group_id: int
    rank: float
    entropy: float
    concentration: float | None = None
    nhsic: float | None = None
    channel_rank: np.ndarray | None = None
    channel_entropy: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("channel_rank", "channel_entropy"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name)))

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerMetrics":
        """Inverse of to_dict."""
        opt = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
        return cls(group_id=int(d["group_id"]), rank=float(d["rank"]),
                   entropy=float(d["entropy"]), concentration=opt("concentration"),
                   nhsic=opt("nhsic"), channel_rank=d.get("channel_rank"),
                   channel_entropy=d.get("channel_entropy"))
