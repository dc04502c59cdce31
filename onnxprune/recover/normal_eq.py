"""Streaming ridge least squares: accumulate ``X^T X``, ``X^T Y`` and ``Σ y²`` batch by batch.

Memory is that of the sums (``groups x K x K`` and ``groups x K x M``), whatever the number of
rows. The solve is anchored at the current weights ``W0``::

    min ‖X W − Y‖² + λ ‖W − W0‖²   ⇒   (XᵀX + λ I) W = XᵀY + λ W0,

with λ relative to the mean diagonal of ``XᵀX``, so it never solves a singular system and a
layer with too few rows stays near its pruned weights instead of overfitting.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyrk

__all__ = ["NormalEquations"]


class NormalEquations:
    """Sums for ``groups`` independent problems with ``unknowns`` inputs (the ones column
    included when ``bias``) and ``outputs`` targets each."""

    def __init__(self, groups: int, inputs: int, outputs: int, bias: bool) -> None:
        self.bias = bias
        k = inputs + int(bias)
        self.xtx = np.zeros((groups, k, k), np.float64)
        self.xty = np.zeros((groups, k, outputs), np.float64)
        self.yy = np.zeros(groups, np.float64)
        self.rows = 0

    @property
    def unknowns(self) -> int:
        return self.xtx.shape[1]

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x`` [R, groups, inputs] with targets ``y`` [R, groups, outputs]."""
        if self.bias:
            x = np.concatenate([x, np.ones(x.shape[:2] + (1,), x.dtype)], axis=2)
        for g in range(x.shape[1]):
            xg, yg = np.asfortranarray(x[:, g], np.float64), y[:, g].astype(np.float64)
            self.xtx[g] += dsyrk(1.0, xg, trans=1)      # upper triangle of xgᵀ xg (half the work)
            self.xty[g] += xg.T @ yg
            self.yy[g] += float(np.einsum("ij,ij->", yg, yg, dtype=np.float64))
        self.rows += len(x)

    def gram(self) -> np.ndarray:
        """The full symmetric ``XᵀX`` per group (only the upper triangle is accumulated)."""
        return self.xtx + np.triu(self.xtx, 1).transpose(0, 2, 1)

    def squared_error(self, w: np.ndarray) -> float:
        """Σ‖X W_g − Y_g‖² over the groups, from the sums (``w`` [groups, unknowns, outputs])."""
        w = w.astype(np.float64)
        quad = np.einsum("gkm,gkl,glm->", w, self.gram(), w, optimize=True)
        cross = np.einsum("gkm,gkm->", w, self.xty)
        return float(max(quad - 2 * cross + self.yy.sum(), 0.0))

    def relative_error(self, w: np.ndarray) -> float:
        """Squared error relative to ‖Y‖² (the relative MSE on the accumulated rows)."""
        return self.squared_error(w) / max(float(self.yy.sum()), 1e-30)

    def solve(self, w0: np.ndarray, ridge: float) -> np.ndarray:
        """Ridge solution anchored at ``w0`` [groups, unknowns, outputs], λ = ridge · mean diag."""
        out = np.empty_like(self.xty)
        eye = np.eye(self.unknowns)
        gram = self.gram()
        for g in range(len(gram)):
            a = gram[g]
            lam = ridge * max(float(np.mean(np.diag(a))), 1e-12)
            lhs, rhs = a + lam * eye, self.xty[g] + lam * w0[g]
            try:
                out[g] = scipy.linalg.solve(lhs, rhs, assume_a="pos", check_finite=False)
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
                out[g] = scipy.linalg.lstsq(lhs, rhs, check_finite=False)[0]
        return out
