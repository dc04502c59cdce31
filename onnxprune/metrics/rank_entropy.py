"""Streaming per-channel rank (HRank-style) and entropy (histogram or Gaussian) of activations.

Every accumulator streams: ``update(batch)`` reduces a batch right away and ``result()`` reads
the reduction, so memory does not grow with the number of images (DESIGN.md §3)."""
from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.errors import DataError
from onnxprune.metrics.records import ChannelSummary, _check_nchw, _check_same

__all__ = ['RankAccumulator', 'EntropyAccumulator']


def _singular_values(maps: np.ndarray) -> np.ndarray:
    """Singular values of a stack [B, H, W] in one batched SVD (dtype kept)."""
    return np.linalg.svd(maps, compute_uv=False)


def _numerical_rank(s: np.ndarray, rtol: float) -> np.ndarray:
    """#{k : s_k > rtol · s_max}, as ``np.linalg.matrix_rank(M, rtol=rtol)`` computes it."""
    return np.count_nonzero(s > rtol * s.max(axis=-1, keepdims=True), axis=-1)


def _effective_rank(s: np.ndarray) -> np.ndarray:
    """exp(−Σ p_k log p_k) with p = s / Σ s (Roy & Vetterli 2007); 0 for an all-zero map."""
    s = s.astype(np.float64)
    total = s.sum(axis=-1, keepdims=True)
    p = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    erank = np.exp(-(p * logp).sum(axis=-1))
    return np.where(total[..., 0] > 0, erank, 0.0)


class RankAccumulator:
    """HRank-style average rank of each channel's H×W feature map, streamed over images.

    ``mode='rank'``: the numerical rank #{k : s_k > rtol · s_max}; ``rtol=None`` takes NumPy's
    default max(H, W) · eps(dtype), so float32 activations are judged at float32 precision.
    ``mode='effective'``: the effective rank exp(H(s / Σ s)), a smooth, tolerance-free variant.
    ``result()``: per-channel mean over images; layer value = mean over channels, and
    ``layer_norm`` = layer value / min(H, W) so layers of different resolution compare.
    Memory O(C); time O(N·C·H·W·min(H, W)) per batch (one batched SVD of [N·C, H, W]).
    """

    def __init__(self, mode: str = "rank", rtol: float | None = None,
                 chunk_maps: int = 8192) -> None:
        if mode not in ("rank", "effective"):
            raise ValueError(f"mode must be 'rank' or 'effective', got {mode!r}")
        if rtol is not None and not rtol >= 0:
            raise ValueError(f"rtol must be >= 0, got {rtol}")
        self.mode, self.rtol, self.chunk_maps = mode, rtol, int(chunk_maps)
        self._shape: tuple | None = None
        self._sum: np.ndarray | None = None
        self._count = 0

    def _map_ranks(self, maps: np.ndarray) -> np.ndarray:
        """Rank (or effective rank) of each map of a stack [B, H, W]."""
        s = _singular_values(maps)
        if self.mode == "effective":
            return _effective_rank(s)
        rtol = self.rtol if self.rtol is not None else max(maps.shape[1:]) * np.finfo(s.dtype).eps
        return _numerical_rank(s, rtol).astype(np.float64)

    def update(self, batch: np.ndarray) -> None:
        """Add the ranks of every map of a batch [N, C, H, W]."""
        x = _check_nchw(batch)
        n, c, h, w = x.shape
        self._shape = _check_same(self._shape, (c, h, w), "RankAccumulator", "[C, H, W]")
        maps = x.reshape(n * c, h, w)
        ranks = np.concatenate([self._map_ranks(maps[i:i + self.chunk_maps])
                                for i in range(0, n * c, self.chunk_maps)])
        batch_sum = ranks.reshape(n, c).sum(axis=0)
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum
        self._count += n

    def result(self) -> ChannelSummary:
        """Per-channel mean rank; layer mean and layer mean / min(H, W)."""
        if self._sum is None:
            raise DataError("RankAccumulator: result() before any batch")
        channel = self._sum / self._count
        layer = float(channel.mean())
        return ChannelSummary(channel, layer, layer / min(self._shape[1:]), self._count)


# --------------------------------------------------------------------------- entropy

def _batch_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, mean, M2 = Σ (x − mean)²) per channel of [N, C, H, W], in float64."""
    x = x.astype(np.float64, copy=False)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    m2 = np.square(x - mean[None, :, None, None]).sum(axis=(0, 2, 3))
    return count, mean, m2


def _merge_moments(a: tuple, b: tuple) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al. (1979) merge of moments: with δ = μ_b − μ_a and n = n_a + n_b,
    μ = μ_a + δ n_b / n and M2 = M2_a + M2_b + δ² n_a n_b / n."""
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + np.square(delta) * (na * nb / n)


def _initial_range(x: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel [min − margin·span, max + margin·span]; constant channel: v ± max(|v|, 1)/2."""
    lo, hi = x.min(axis=(0, 2, 3)).astype(np.float64), x.max(axis=(0, 2, 3)).astype(np.float64)
    span = hi - lo
    half = 0.5 * np.maximum(np.abs(lo), 1.0)
    return (np.where(span > 0, lo - margin * span, lo - half),
            np.where(span > 0, hi + margin * span, hi + half))


def _bin_counts(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """Counts [C, bins] of equal-width bins over [lo_c, hi_c]; values outside go to edge bins."""
    c = x.shape[1]
    scale = bins / (hi - lo)
    idx = np.floor((x.astype(np.float64) - lo[None, :, None, None]) * scale[None, :, None, None])
    idx = np.clip(idx, 0, bins - 1).astype(np.int64) + (np.arange(c) * bins)[None, :, None, None]
    return np.bincount(idx.ravel(), minlength=c * bins).reshape(c, bins)


def _discrete_entropy(counts: np.ndarray) -> np.ndarray:
    """H = −Σ p log p (nats) of each row of a count matrix."""
    p = counts / counts.sum(axis=-1, keepdims=True)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logp).sum(axis=-1)


class EntropyAccumulator:
    """Per-channel entropy of the activation distribution pooled over images and positions.

    ``mode='gaussian'``: differential entropy h = ½ log(2πe σ²) (nats) of a Gaussian with the
    channel's variance; mean and variance stream exactly (Chan's merge of per-batch moments),
    so the result equals the one-shot value up to rounding. σ² is floored at ``var_floor`` so a
    dead channel gets a large negative, finite entropy. No natural [0, 1] scale: normalise
    across layers with ``normalize_entropy(..., 'gaussian')``.
    ``mode='histogram'``: discrete entropy −Σ p log p (nats) of ``bins`` equal-width bins,
    in [0, log bins]. The per-channel range is ``value_range`` when given (scalars or [C]
    arrays), else fixed from the first batch as [min − margin·span, max + margin·span];
    later values outside it are clipped into the edge bins (counted, not dropped), so the
    result depends on which batch came first. ``layer_norm`` = layer mean / log(bins).
    Memory O(C) (gaussian) or O(C·bins) (histogram).
    """

    def __init__(self, mode: str = "gaussian", bins: int = 64, margin: float = 0.1,
                 value_range: tuple[Any, Any] | None = None, var_floor: float = 1e-12) -> None:
        if mode not in ("gaussian", "histogram"):
            raise ValueError(f"mode must be 'gaussian' or 'histogram', got {mode!r}")
        if int(bins) < 2 or margin < 0 or var_floor <= 0:
            raise ValueError(f"need bins >= 2, margin >= 0, var_floor > 0; got {bins}, "
                             f"{margin}, {var_floor}")
        self.mode, self.bins, self.margin, self.var_floor = mode, int(bins), margin, var_floor
        self.value_range = value_range
        self._shape: tuple | None = None
        self._moments: tuple | None = None
        self._counts: np.ndarray | None = None
        self._range: tuple[np.ndarray, np.ndarray] | None = None
        self._images = 0

    def _fixed_range(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-channel histogram range, set once."""
        if self._range is None:
            if self.value_range is None:
                self._range = _initial_range(x, self.margin)
            else:
                c = x.shape[1]
                lo, hi = (np.asarray(v, np.float64) for v in self.value_range)
                if lo.shape not in ((), (c,)) or hi.shape not in ((), (c,)):
                    raise DataError(f"EntropyAccumulator: value_range has shapes "
                                    f"{list(lo.shape)} and {list(hi.shape)}; expected scalars "
                                    f"or [{c}] for a batch of shape {list(x.shape)}")
                lo, hi = np.broadcast_to(lo, (c,)).copy(), np.broadcast_to(hi, (c,)).copy()
                if not np.all(hi > lo):
                    raise DataError(f"EntropyAccumulator: value_range needs hi > lo for all "
                                    f"{c} channels")
                self._range = (lo, hi)
        return self._range

    def update(self, batch: np.ndarray) -> None:
        """Reduce a batch [N, C, H, W] into moments (gaussian) or bin counts (histogram)."""
        x = _check_nchw(batch)
        self._shape = _check_same(self._shape, (x.shape[1],), "EntropyAccumulator", "[C]")
        self._images += x.shape[0]
        if self.mode == "gaussian":
            m = _batch_moments(x)
            self._moments = m if self._moments is None else _merge_moments(self._moments, m)
        else:
            counts = _bin_counts(x, *self._fixed_range(x), self.bins)
            self._counts = counts if self._counts is None else self._counts + counts

    def variance(self) -> np.ndarray:
        """Population variance M2 / n per channel (gaussian mode)."""
        if self._moments is None:
            raise DataError("EntropyAccumulator: no batch seen (or not in gaussian mode)")
        n, _, m2 = self._moments
        return m2 / n

    def counts(self) -> np.ndarray:
        """Bin counts [C, bins] (histogram mode)."""
        if self._counts is None:
            raise DataError("EntropyAccumulator: no batch seen (or not in histogram mode)")
        return self._counts.copy()

    def result(self) -> ChannelSummary:
        """Per-channel entropy (nats); layer mean; layer mean / log(bins) for histograms."""
        if self._images == 0:
            raise DataError("EntropyAccumulator: result() before any batch")
        if self.mode == "gaussian":
            var = np.maximum(self.variance(), self.var_floor)
            channel = 0.5 * np.log(2 * np.pi * np.e * var)
            return ChannelSummary(channel, float(channel.mean()), None, self._images)
        channel = _discrete_entropy(self._counts)
        layer = float(channel.mean())
        return ChannelSummary(channel, layer, layer / np.log(self.bins), self._images)
