"""Normalising layer values across layers and fusing rank and entropy into information concentration."""
from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.errors import DataError
from onnxprune.metrics.records import _as_real, _check_finite

__all__ = ['FUSIONS', 'normalize_across_layers', 'normalize_entropy', 'information_concentration']


FUSIONS = ("geometric", "harmonic", "convex")


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
