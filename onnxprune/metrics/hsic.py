"""Projected features, Gram matrices, linear CKA and nHSIC layer importance."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import scipy.sparse

from onnxprune.errors import DataError
from onnxprune.metrics.records import _as_real, _check_finite, _check_same, _to_json

__all__ = ['ProjectedFeatures', 'center_gram', 'linear_gram', 'linear_cka', 'rbf_gram', 'nhsic_matrix', 'NHSICImportance', 'nhsic_importance']


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
