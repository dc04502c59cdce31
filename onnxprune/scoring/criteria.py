"""Channel-score baselines (DESIGN.md §5): one score per channel, higher = more important.

Weight-based criteria take ``filters`` [C, ...]: the producer's weight rows of the channels
(when a group has several producers, the caller sums their scores). NumPy and SciPy only.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from scipy.spatial.distance import cdist

from onnxprune.errors import DataError

__all__ = [
    "l1_norm",
    "l2_norm",
    "fpgm",
    "ChipAccumulator",
    "chip",
    "hrank",
    "random_scores",
    "CRITERIA",
    "score_filters",
]


def _check_filters(filters: Any) -> np.ndarray:
    """Finite real [C, ...] with C >= 1, flattened to [C, k] float64."""
    w = np.asarray(filters)
    if w.ndim < 1 or w.shape[0] == 0 or w.dtype.kind not in "biuf":
        raise DataError(f"filters have shape {list(w.shape)} and dtype {w.dtype}; "
                        "expected real [C, ...] with C >= 1")
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise DataError(f"filters of shape {list(np.shape(filters))} hold NaN/inf")
    return w


def l1_norm(filters: np.ndarray) -> np.ndarray:
    """s_c = Σ |W_c| (Li et al. 2017)."""
    return np.abs(_check_filters(filters)).sum(axis=1)


def l2_norm(filters: np.ndarray) -> np.ndarray:
    """s_c = ‖W_c‖₂."""
    return np.linalg.norm(_check_filters(filters), axis=1)


def fpgm(filters: np.ndarray) -> np.ndarray:
    """FPGM (He et al. 2019): s_c = Σ_j ‖W_c − W_j‖₂, as the paper's code approximates the
    distance to the geometric median; the filter nearest the median scores lowest. O(C²·k)."""
    w = _check_filters(filters)
    return cdist(w, w, "euclidean").sum(axis=1)


# --------------------------------------------------------------------------- CHIP

def _nuclear_from_gram(m: np.ndarray) -> np.ndarray:
    """‖A‖_* = Σ √λ(AAᵀ) for a stack of Gram matrices [..., k, k] (negative rounding clipped)."""
    return np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum(axis=-1)


def _leave_one_out(m: np.ndarray) -> np.ndarray:
    """Principal submatrices without row/column c, for each c: [..., C, C−1, C−1]."""
    c = m.shape[-1]
    keep = np.array([np.delete(np.arange(c), i) for i in range(c)])  # [C, C−1]
    return m[..., keep[:, :, None], keep[:, None, :]]


def _chip_from_gram(m: np.ndarray) -> np.ndarray:
    """CI_c = ‖A‖_* − ‖A without row c‖_* from the Gram M = AAᵀ [..., C, C]."""
    if m.shape[-1] == 1:
        return _nuclear_from_gram(m)[..., None]
    return _nuclear_from_gram(m)[..., None] - _nuclear_from_gram(_leave_one_out(m))


class ChipAccumulator:
    """CHIP channel independence (Sui et al. 2021), streamed over batches [N, C, H, W].

    Removing row c of the feature matrix A leaves the principal submatrix of the Gram AAᵀ, so
    ‖A_{−c}‖_* = Σ √λ(M_{−c,−c}): C eigen-decompositions of (C−1)² matrices, no SVD of A.
    ``per_image=True`` (the paper): A = [C, H·W] per image, CI averaged over images,
    O(N·C⁴) time. ``per_image=False``: A = [C, N·H·W] pooled; its Gram is a sum over batches,
    so streaming is exact and costs O(C²) memory. Singular values from a float64 Gram are
    accurate to about 1e−8·σ_max.
    """

    def __init__(self, per_image: bool = True) -> None:
        self.per_image = per_image
        self._channels: int | None = None
        self._sum: np.ndarray | None = None
        self._count = 0

    def update(self, batch: np.ndarray) -> None:
        """Reduce a batch [N, C, H, W] (or [N, C])."""
        x = np.asarray(batch)
        if x.ndim not in (2, 4) or 0 in x.shape or x.dtype.kind not in "biuf":
            raise DataError(f"CHIP batch has shape {list(x.shape)} and dtype {x.dtype}; "
                            "expected real [N, C, H, W] or [N, C]")
        if self._channels not in (None, x.shape[1]):
            raise DataError(f"CHIP batch has C={x.shape[1]} ({list(x.shape)}), but the first "
                            f"batch had C={self._channels}")
        a = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise DataError(f"CHIP batch of shape {list(x.shape)} holds NaN/inf")
        self._channels = x.shape[1]
        grams = np.einsum("nck,ndk->ncd", a, a)
        part = self._per_image_sum(grams) if self.per_image else grams.sum(axis=0)
        self._sum = part if self._sum is None else self._sum + part
        self._count += x.shape[0]

    @staticmethod
    def _per_image_sum(grams: np.ndarray) -> np.ndarray:
        """Σ over images of CI, in chunks that keep the [n, C, C−1, C−1] stack near 2^24 floats."""
        chunk = max(1, 2 ** 24 // grams.shape[-1] ** 3)
        return sum(_chip_from_gram(grams[i:i + chunk]).sum(axis=0)
                   for i in range(0, grams.shape[0], chunk))

    def result(self) -> np.ndarray:
        """CI per channel [C]: mean over images (per_image) or of the pooled matrix."""
        if self._sum is None:
            raise DataError("ChipAccumulator: result() before any batch")
        return self._sum / self._count if self.per_image else _chip_from_gram(self._sum)


def chip(acts: np.ndarray | Iterable[np.ndarray], per_image: bool = True) -> np.ndarray:
    """CHIP scores from one batch [N, C, H, W] or an iterable of batches (see ChipAccumulator)."""
    acc = ChipAccumulator(per_image)
    for batch in ([acts] if isinstance(acts, np.ndarray) else acts):
        acc.update(batch)
    return acc.result()


# --------------------------------------------------------------------------- others

def hrank(channel_rank: np.ndarray) -> np.ndarray:
    """HRank (Lin et al. 2020): the per-channel mean feature-map rank, as is."""
    r = np.asarray(channel_rank, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)):
        raise DataError(f"channel ranks have shape {list(r.shape)}; expected finite [C]")
    return r.copy()


def random_scores(num_channels: int, seed: int) -> np.ndarray:
    """Uniform [0, 1) scores from np.random.default_rng(seed)."""
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    return np.random.default_rng(seed).random(num_channels)


def _random_for_filters(filters: np.ndarray, seed: int) -> np.ndarray:
    """random_scores with C taken from filters [C, ...]."""
    return random_scores(_check_filters(filters).shape[0], seed)


def _deterministic(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """Adapt a seed-free criterion to the registry signature (filters, seed)."""
    def score(filters: np.ndarray, seed: int) -> np.ndarray:
        return fn(filters)
    score.__name__ = score.__qualname__ = fn.__name__
    score.__doc__ = fn.__doc__
    return score


CRITERIA: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "l1": _deterministic(l1_norm),
    "l2": _deterministic(l2_norm),
    "fpgm": _deterministic(fpgm),
    "random": _random_for_filters,
}
"""Weight-based criteria, each called as ``CRITERIA[name](filters, seed) -> scores [C]``."""


def score_filters(name: str, filters: np.ndarray, seed: int = 0) -> np.ndarray:
    """Look a weight-based criterion up by name and score ``filters`` [C, ...]."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; known: {sorted(CRITERIA)}")
    return CRITERIA[name](filters, seed)
