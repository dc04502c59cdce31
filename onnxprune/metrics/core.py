"""Layer metrics from activations: rank, entropy, nHSIC (CKA) and their fusion.

Every accumulator streams: ``update(batch)`` reduces a batch right away and ``result()``
reads the reduction, so memory does not grow with the number of images (DESIGN.md §3).
NumPy and SciPy only; no onnx, onnxruntime or torch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import scipy.sparse

from onnxprune.errors import DataError

__all__ = [
    "ChannelSummary",
    "RankAccumulator",
    "EntropyAccumulator",
    "ProjectedFeatures",
    "center_gram",
    "linear_gram",
    "linear_cka",
    "rbf_gram",
    "nhsic_matrix",
    "NHSICImportance",
    "nhsic_importance",
    "normalize_across_layers",
    "normalize_entropy",
    "information_concentration",
    "LayerMetrics",
]

FUSIONS = ("geometric", "harmonic", "convex")


# --------------------------------------------------------------------------- validation

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


# --------------------------------------------------------------------------- results

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


# --------------------------------------------------------------------------- rank

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


# --------------------------------------------------------------------------- features and kernels

class ProjectedFeatures:
    """Flattened per-image features X ∈ R^{n×d}, stored through a seeded random projection.

    When d > ``dim`` each image's x ∈ R^d is stored as z = xP ∈ R^dim with a random P that has
    E[PPᵀ] = I, so E[⟨z_a, z_b⟩] = ⟨x_a, x_b⟩ with variance (‖x_a‖²‖x_b‖² + ⟨x_a, x_b⟩²)/dim:
    a Johnson–Lindenstrauss map preserves the Gram matrix X Xᵀ approximately. P is linear, so
    it commutes with centring, and the centred Gram's relative Frobenius error is
    ≈ √((r + 1)/dim), r = (Σλ)²/Σλ² ∈ [1, n] the effective rank of the centred features
    (exact in expectation for Gaussian P). Activations of real networks have small r; for
    n near-orthogonal images (r ≈ n) the error is √(n/dim) and CKA is biased low: take
    dim ≫ n there, or ``dim=None`` to store X exactly (memory O(n·d)).
    ``kind='sketch'`` (default): CountSketch (a sparse JL map; each feature goes to one seeded
    bucket with a seeded ±1 sign), memory O(d) and time O(N·d) per batch whatever d.
    ``kind='gaussian'``: dense P with N(0, 1/dim) entries, memory d·dim float32 (small d only).
    d <= dim: stored as is. Stored features: O(n·dim) float32. Same seed ⇒ same P.
    """

    def __init__(self, dim: int | None = 1024, seed: int = 0, kind: str = "sketch") -> None:
        if (dim is not None and int(dim) < 1) or kind not in ("sketch", "gaussian"):
            raise ValueError(f"need dim >= 1 (or None) and kind in ('sketch', 'gaussian'); "
                             f"got {dim}, {kind!r}")
        self.dim = None if dim is None else int(dim)
        self.seed, self.kind = seed, kind
        self._d: tuple | None = None
        self._proj: Any = None
        self._rows: list[np.ndarray] = []

    def _make_projection(self, d: int) -> Any:
        """The seeded d×dim map (None when d <= dim)."""
        if self.dim is None or d <= self.dim:
            return None
        rng = np.random.default_rng(self.seed)
        if self.kind == "gaussian":
            return (rng.standard_normal((d, self.dim), dtype=np.float32)
                    / np.float32(np.sqrt(self.dim)))
        bucket = rng.integers(0, self.dim, size=d)
        sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=d)
        return scipy.sparse.csr_array((sign, (np.arange(d), bucket)), shape=(d, self.dim))

    def update(self, batch: np.ndarray) -> None:
        """Flatten a batch [N, ...] to [N, d], project it and store it."""
        x = _as_real(batch, "feature batch")
        if x.ndim < 1 or x.shape[0] == 0:
            raise DataError(f"feature batch has shape {list(x.shape)}, "
                            "expected [N, ...] with N > 0")
        _check_finite(x, "feature batch")
        flat = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
        self._d = _check_same(self._d, flat.shape[1:], "ProjectedFeatures", "d")
        if self._proj is None:
            self._proj = self._make_projection(flat.shape[1])
        if self._proj is None:
            z = flat
        elif self.kind == "gaussian":
            z = flat @ self._proj
        else:
            z = np.asarray((self._proj.T @ flat.T).T)
        self._rows.append(np.asarray(z, dtype=np.float32))

    @property
    def num_images(self) -> int:
        """Images stored so far."""
        return sum(r.shape[0] for r in self._rows)

    def features(self) -> np.ndarray:
        """Stored features [n, min(d, dim)] in float64."""
        if not self._rows:
            raise DataError("ProjectedFeatures: no batch seen")
        return np.concatenate(self._rows).astype(np.float64)

    def gram(self) -> np.ndarray:
        """Linear Gram matrix K = Z Zᵀ [n, n] of the stored features (≈ X Xᵀ)."""
        return linear_gram(self.features())


def _check_gram(k: Any, what: str) -> np.ndarray:
    """Validate a finite square matrix."""
    arr = _as_real(k, what).astype(np.float64, copy=False)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise DataError(f"{what} has shape {list(arr.shape)}, expected a square [n, n] with n >= 2")
    _check_finite(arr, what)
    return arr


def center_gram(k: np.ndarray) -> np.ndarray:
    """K̃ = H K H with H = I − 11ᵀ/n, computed as K − row means − column means + grand mean."""
    k = _check_gram(k, "Gram matrix")
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def linear_gram(x: np.ndarray) -> np.ndarray:
    """K = X Xᵀ of features [n, ...] flattened per row, in float64."""
    x = _as_real(x, "features")
    if x.ndim < 2:
        raise DataError(f"features have shape {list(x.shape)}, expected [n, d, ...]")
    _check_finite(x, "features")
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return flat @ flat.T


def _unit_centered(k: np.ndarray) -> np.ndarray:
    """K̃ / ‖K̃‖_F; all zeros when K̃ = 0 (constant features)."""
    kc = center_gram(k)
    norm = np.linalg.norm(kc)
    return kc / norm if norm > 0 else np.zeros_like(kc)


def linear_cka(kx: np.ndarray, ky: np.ndarray) -> float:
    """nHSIC = ⟨K̃x, K̃y⟩_F / (‖K̃x‖_F ‖K̃y‖_F) with K̃ = HKH (biased HSIC, as ITPruner's code).

    Called with linear Grams X Xᵀ it is linear CKA; with RBF Grams, RBF CKA. A constant
    representation (K̃ = 0) shares no information: its value is defined as 0.
    """
    kx, ky = _check_gram(kx, "Gram matrix Kx"), _check_gram(ky, "Gram matrix Ky")
    if kx.shape != ky.shape:
        raise DataError(f"Gram matrices have shapes {list(kx.shape)} and {list(ky.shape)}; "
                        "they must come from the same n images")
    return float(np.sum(_unit_centered(kx) * _unit_centered(ky)))


def rbf_gram(x: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """K_ab = exp(−‖x_a − x_b‖² / (2σ²)); σ = ``bandwidth`` or the median pairwise distance.

    The median runs over the n(n−1)/2 distinct pairs (zero distances included); σ = 1 when
    all points coincide. O(n²·d).
    """
    k = linear_gram(x)
    sq = np.diag(k)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * k, 0.0)
    np.fill_diagonal(d2, 0.0)
    if bandwidth is None:
        med = np.median(d2[np.triu_indices_from(d2, 1)]) if len(d2) > 1 else 0.0
        sigma2 = med if med > 0 else 1.0
    elif bandwidth > 0:
        sigma2 = float(bandwidth) ** 2
    else:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return np.exp(-d2 / (2 * sigma2))


def nhsic_matrix(grams: Sequence[np.ndarray]) -> np.ndarray:
    """M_ij = nHSIC(X_i, X_j) for L Gram matrices of the same n images; [L, L], O(L²·n²)."""
    if len(grams) < 1:
        raise DataError("nhsic_matrix: no Gram matrices")
    units = [_unit_centered(g) for g in grams]
    shapes = {u.shape for u in units}
    if len(shapes) != 1:
        raise DataError(f"nhsic_matrix: Gram matrices have shapes {sorted(map(list, shapes))}; "
                        "they must come from the same n images")
    flat = np.stack([u.ravel() for u in units])
    m = flat @ flat.T
    return (m + m.T) / 2


@dataclass(frozen=True, eq=False)
class NHSICImportance:
    """ITPruner layer importance: s_i = Σ_{j≠i} M_ij, s̃ = s / Σ s, α = exp(−β s̃)."""

    matrix: np.ndarray
    s: np.ndarray
    s_norm: np.ndarray
    alpha: np.ndarray
    beta: float

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "NHSICImportance":
        """Inverse of to_dict."""
        return cls(*(np.asarray(d[k], np.float64) for k in ("matrix", "s", "s_norm", "alpha")),
                   beta=float(d["beta"]))


def nhsic_importance(grams: Sequence[np.ndarray], beta: float) -> NHSICImportance:
    """Layer importance from pairwise nHSIC; a layer that repeats the others gets a higher s
    and a smaller α (pruned more). β: 500 ResNet-56, 246 ResNet-20, 2000 ResNet-50 (ITPruner).
    """
    m = nhsic_matrix(grams)
    s = m.sum(axis=1) - np.diag(m)
    total = s.sum()
    s_norm = s / total if total != 0 else np.full_like(s, 1.0 / len(s))
    return NHSICImportance(m, s, s_norm, np.exp(-beta * s_norm), float(beta))


# --------------------------------------------------------------------------- normalise and fuse

def _check_vector(values: Any, what: str) -> np.ndarray:
    """A finite, non-empty 1-D float64 vector."""
    v = _as_real(values, what).astype(np.float64)
    if v.ndim != 1 or v.size == 0:
        raise DataError(f"{what} has shape {list(v.shape)}, expected a non-empty 1-D vector")
    _check_finite(v, what)
    return v


def normalize_across_layers(values: Any, floor: float = 1e-6) -> np.ndarray:
    """v / max(v), floored at ``floor`` so later logs and ratios stay finite: (0, 1].

    For non-negative values only (ranks, histogram entropies); Gaussian differential
    entropies can be negative: use ``normalize_entropy(h, 'gaussian')`` first.
    """
    v = _check_vector(values, "layer values")
    if v.min() < 0 or v.max() <= 0:
        raise DataError(f"normalize_across_layers: {v.size} values in [{v.min():.4g}, "
                        f"{v.max():.4g}]; need all >= 0 and max > 0")
    return np.maximum(v / v.max(), floor)


def normalize_entropy(values: Any, mode: str, bins: int | None = None) -> np.ndarray:
    """Layer (or channel) entropies on a (0, 1] scale.

    'histogram': h / log(bins) (entropy relative to the uniform distribution over the bins);
    'gaussian': exp(h − max h) = σ / σ_max — the ratio of entropy powers' square roots, which
    is invariant to a common shift of h (a common rescaling of the activations).
    """
    h = _check_vector(values, "entropies")
    if mode == "histogram":
        if bins is None or bins < 2:
            raise ValueError("normalize_entropy: histogram mode needs bins >= 2")
        return h / np.log(bins)
    if mode == "gaussian":
        return np.exp(h - h.max())
    raise ValueError(f"mode must be 'histogram' or 'gaussian', got {mode!r}")


def information_concentration(rank_norm: Any, entropy_norm: Any, fusion: str = "geometric",
                              lam: float = 0.5, floor: float = 1e-6) -> np.ndarray:
    """Per-layer information concentration from normalised rank R̂ and entropy Ê.

    Each input is first scaled across layers to (0, 1] by dividing by its max (floored at
    ``floor``; see normalize_across_layers), so neither term dominates by its units. Then
    'geometric': R̂^λ Ê^(1−λ) (default, λ = 0.5); 'harmonic': 1 / (λ/R̂ + (1−λ)/Ê) (weighted
    harmonic mean: low if either is low); 'convex': λR̂ + (1−λ)Ê. Higher ⇒ keep more.
    """
    r = normalize_across_layers(rank_norm, floor)
    e = normalize_across_layers(entropy_norm, floor)
    if r.shape != e.shape:
        raise DataError(f"rank has shape {list(r.shape)} but entropy has {list(e.shape)}; "
                        "one value per layer each")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if fusion == "geometric":
        return r ** lam * e ** (1 - lam)
    if fusion == "harmonic":
        return 1.0 / (lam / r + (1 - lam) / e)
    if fusion == "convex":
        return lam * r + (1 - lam) * e
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")


# --------------------------------------------------------------------------- record

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
