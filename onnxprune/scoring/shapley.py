"""Shapley values of channels: exact, Monte-Carlo permutation sampling, and a closed form.

Players are a group's channels; a coalition is a boolean keep-mask; the value of a coalition
is the network's quality with only those channels kept (DESIGN.md §5). NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from math import comb
from typing import Any, Callable

import numpy as np

from onnxprune.errors import DataError

__all__ = [
    "ShapleyEstimate",
    "exact_shapley",
    "permutation_shapley",
    "quadratic_game_shapley",
    "reconstruction_gram",
    "pointwise_reconstruction_gram",
    "reconstruction_game",
]

ValueFn = Callable[[np.ndarray], float]
BatchValueFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class ShapleyEstimate:
    """φ̂ (mean of per-permutation marginals), its standard error std/√P, P, and the number of
    coalitions evaluated (v(∅) and v(all) included)."""

    values: np.ndarray
    stderr: np.ndarray
    num_permutations: int
    num_evaluations: int

    def __post_init__(self) -> None:
        for name in ("values", "stderr"):
            a = np.array(getattr(self, name), dtype=np.float64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists; NaN stderr, when P = 1, as None)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["values"] = self.values.tolist()
        d["stderr"] = [None if np.isnan(e) else float(e) for e in self.stderr]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ShapleyEstimate":
        """Inverse of to_dict."""
        stderr = [np.nan if e is None else e for e in d["stderr"]]
        return cls(np.asarray(d["values"], np.float64), np.asarray(stderr, np.float64),
                   int(d["num_permutations"]), int(d["num_evaluations"]))


# --------------------------------------------------------------------------- exact

def _all_masks(n: int) -> np.ndarray:
    """Every coalition as a bool mask [2^n, n]; row r holds the players of the bits of r."""
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)


def exact_shapley(value_fn: ValueFn, n: int, max_players: int = 16) -> np.ndarray:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S)), by brute force.

    ``value_fn`` maps a bool mask [n] (True = kept) to a number; 2^n calls, O(2^n · n) work.
    """
    if not 1 <= n <= max_players:
        raise ValueError(f"exact_shapley: n must be in [1, {max_players}], got {n}")
    masks = _all_masks(n)
    v = np.array([float(value_fn(m.copy())) for m in masks])
    if not np.all(np.isfinite(v)):
        raise DataError(f"exact_shapley: value_fn returned NaN/inf for {np.sum(~np.isfinite(v))} "
                        f"of {v.size} coalitions")
    weight = np.array([1.0 / (n * comb(n - 1, s)) for s in range(n)])
    size = masks.sum(axis=1)
    phi = np.empty(n)
    for i in range(n):
        without = np.flatnonzero(~masks[:, i])
        phi[i] = np.sum(weight[size[without]] * (v[without + (1 << i)] - v[without]))
    return phi


# --------------------------------------------------------------------------- permutation sampling

def _evaluate(batch_value_fn: BatchValueFn, masks: np.ndarray) -> np.ndarray:
    """v for each row of masks [B, n]; checks the answer is [B] and finite."""
    out = np.asarray(batch_value_fn(masks), dtype=np.float64)
    if out.shape != (masks.shape[0],):
        raise DataError(f"batch_value_fn returned shape {list(out.shape)} for masks of shape "
                        f"{list(masks.shape)}; expected [{masks.shape[0]}]")
    if not np.all(np.isfinite(out)):
        raise DataError(f"batch_value_fn returned NaN/inf for masks of shape {list(masks.shape)}")
    return out


def _prefix_masks(pos: np.ndarray, rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Masks [B, n]: the first sizes[b] players of permutation rows[b] (pos = player positions)."""
    return pos[rows] < sizes[:, None]


def _fill_all(fn: BatchValueFn, pos: np.ndarray, values: np.ndarray, batch_size: int) -> int:
    """values[p, k] = v(first k players of permutation p) for 0 < k < n; returns #evaluations."""
    num_perms, n = pos.shape
    rows = np.repeat(np.arange(num_perms), n - 1)
    sizes = np.tile(np.arange(1, n), num_perms)
    for start in range(0, rows.size, batch_size):
        r, k = rows[start:start + batch_size], sizes[start:start + batch_size]
        values[r, k] = _evaluate(fn, _prefix_masks(pos, r, k))
    return int(rows.size)


def _fill_truncated(fn: BatchValueFn, pos: np.ndarray, values: np.ndarray, batch_size: int,
                    threshold: float) -> int:
    """Like _fill_all, but a permutation stops once |v(all) − v(S_k)| < threshold; then
    v(S_j) = v(S_k) for j > k (its remaining marginals are 0). Permutations advance together,
    ⌊batch_size / #active⌋ ≥ 1 positions per round, so evaluations stay batched while few are
    wasted past a truncation point. Returns #evaluations (wasted ones included)."""
    num_perms, n = pos.shape
    v_full = values[0, n]
    next_k = np.ones(num_perms, dtype=np.int64)
    if abs(v_full - values[0, 0]) < threshold:  # only when truncation_tol > 1
        values[:, 1:] = values[:, :1]
        return 0
    evaluations = 0
    while (active := np.flatnonzero(next_k < n)).size:
        step = max(1, batch_size // active.size)
        stop = np.minimum(next_k[active] + step, n)
        rows = np.repeat(active, stop - next_k[active])
        sizes = np.concatenate([np.arange(a, b) for a, b in zip(next_k[active], stop)])
        for start in range(0, rows.size, batch_size):
            r, k = rows[start:start + batch_size], sizes[start:start + batch_size]
            values[r, k] = _evaluate(fn, _prefix_masks(pos, r, k))
        evaluations += rows.size
        for p, a, b in zip(active, next_k[active], stop):
            close = np.flatnonzero(np.abs(v_full - values[p, a:b]) < threshold)
            if close.size:
                k = a + close[0]
                values[p, k + 1:] = values[p, k]
                next_k[p] = n
            else:
                next_k[p] = b
    return evaluations


def permutation_shapley(batch_value_fn: BatchValueFn, n: int, num_permutations: int,
                        seed: int, truncation_tol: float = 0.0,
                        batch_size: int = 256) -> ShapleyEstimate:
    """Monte-Carlo Shapley values by permutation sampling (Castro et al. 2009).

    For each of P seeded random orders π, the marginal of player π_k is v(S_k) − v(S_{k−1})
    with S_k its first k players; φ̂ is the mean over orders and stderr = std(ddof=1) / √P.
    v(∅) and v(all) are evaluated once and shared, so without truncation every order's
    marginals sum exactly (up to rounding) to v(all) − v(∅). Truncation (Ghorbani & Zou 2019):
    once |v(all) − v(S_k)| < truncation_tol · |v(all) − v(∅)|, the rest of that order's
    marginals are 0 (efficiency then holds within that tolerance). ``batch_value_fn`` takes
    masks [B, n] (True = kept, one coalition per row, B <= batch_size) and returns values [B].
    Cost: at most 2 + P·(n − 1) coalitions.
    """
    if n < 1 or num_permutations < 1 or batch_size < 1 or not truncation_tol >= 0:
        raise ValueError(f"need n, num_permutations, batch_size >= 1 and truncation_tol >= 0; "
                         f"got {n}, {num_permutations}, {batch_size}, {truncation_tol}")
    rng = np.random.default_rng(seed)
    v_empty, v_full = _evaluate(batch_value_fn, np.array([[False] * n, [True] * n]))
    perms = rng.permuted(np.tile(np.arange(n), (num_permutations, 1)), axis=1)
    pos = np.argsort(perms, axis=1)
    values = np.empty((num_permutations, n + 1))
    values[:, 0], values[:, n] = v_empty, v_full
    if truncation_tol > 0:
        threshold = truncation_tol * abs(v_full - v_empty)
        evaluations = _fill_truncated(batch_value_fn, pos, values, batch_size, threshold)
    else:
        evaluations = _fill_all(batch_value_fn, pos, values, batch_size)
    marginals = np.empty((num_permutations, n))
    np.put_along_axis(marginals, perms, np.diff(values, axis=1), axis=1)
    stderr = (marginals.std(axis=0, ddof=1) / np.sqrt(num_permutations)
              if num_permutations > 1 else np.full(n, np.nan))
    return ShapleyEstimate(marginals.mean(axis=0), stderr, num_permutations, 2 + evaluations)


# --------------------------------------------------------------------------- local quadratic game

def _check_gram(g: Any) -> np.ndarray:
    """A finite square float64 matrix."""
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] == 0:
        raise DataError(f"Gram matrix has shape {list(g.shape)}, expected square [C, C]")
    if not np.all(np.isfinite(g)):
        raise DataError(f"Gram matrix of shape {list(g.shape)} holds NaN/inf")
    return g


def quadratic_game_shapley(gram: np.ndarray) -> np.ndarray:
    """Closed-form Shapley values of the local reconstruction game, O(C²).

    Game: v(S) = −‖Σ_{i∉S} A_i‖² = −Σ_{i,j∉S} G_ij (0 with every channel kept), where A_i is
    channel i's contribution to the next layer's pre-activation and G_ij = ⟨A_i, A_j⟩. The
    Shapley value is linear in the game, so split v into the terms −G_ii[i∉S] (only player i
    matters: it gains G_ii) and −(G_ij + G_ji)[i,j∉S] for i < j (two symmetric players share
    G_ij + G_ji equally). Hence φ_i = Σ_j (G_ij + G_ji) / 2 = ⟨A_i, Σ_j A_j⟩: the projection of a
    channel's contribution on the full output; Σ φ = ‖Σ A‖² = v(all) − v(∅).
    """
    g = _check_gram(gram)
    return (g.sum(axis=1) + g.sum(axis=0)) / 2


def reconstruction_gram(contributions: np.ndarray) -> np.ndarray:
    """G = A Aᵀ [C, C] of per-channel contributions [C, ...] (each flattened, float64).

    G is additive over images and positions: for batches b, G = Σ_b reconstruction_gram(A_b).
    """
    a = np.asarray(contributions)
    if a.ndim < 1 or a.shape[0] == 0 or a.dtype.kind not in "biuf":
        raise DataError(f"contributions have shape {list(a.shape)} and dtype {a.dtype}; "
                        "expected real [C, ...]")
    flat = a.reshape(a.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise DataError(f"contributions of shape {list(a.shape)} hold NaN/inf")
    return flat @ flat.T


def pointwise_reconstruction_gram(acts: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """G for a 1×1 Conv or Gemm consumer without forming the contributions, O(N·C²·HW + O·C²).

    With A_i[n, o, p] = W_oi x_i[n, p]: G_ij = (WᵀW)_ij · Σ_{n,p} x_i[n, p] x_j[n, p].
    acts: [N, C] or [N, C, H, W]; weight: [O, C] or [O, C, 1, 1].
    """
    x, w = np.asarray(acts, np.float64), np.asarray(weight, np.float64)
    w = w.reshape(w.shape[0], -1) if w.ndim == 4 and w.shape[2:] == (1, 1) else w
    if x.ndim not in (2, 4) or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise DataError(f"acts {list(x.shape)} and weight {list(np.shape(weight))} do not fit a "
                        "pointwise consumer: expected [N, C(, H, W)] and [O, C(, 1, 1)]")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise DataError(f"acts {list(x.shape)} or weight {list(w.shape)} hold NaN/inf")
    flat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    return (w.T @ w) * (flat @ flat.T)


def reconstruction_game(gram: np.ndarray) -> BatchValueFn:
    """The batched value function v(S) = −(1 − m)ᵀ G (1 − m) for masks [B, C]."""
    g = _check_gram(gram)

    def value(masks: np.ndarray) -> np.ndarray:
        off = 1.0 - np.asarray(masks, dtype=np.float64)
        return -np.einsum("bi,ij,bj->b", off, g, off)

    return value
