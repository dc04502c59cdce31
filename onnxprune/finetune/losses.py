"""Training losses: cross-entropy on labels, and the distance to a teacher on every output.

Outputs of shape (N, C) are class scores: KL divergence at temperature T (times T², so gradients
keep their scale). Every other output (boxes, score maps, embeddings of rank != 2) is a regression
target: MSE or smooth-L1 after dividing student and teacher by the teacher output's standard
deviation, so that outputs of different scale weigh alike. The distance is the mean over outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OutputSpec", "output_specs", "distill_loss", "mix_losses", "as_list"]


@dataclass(frozen=True)
class OutputSpec:
    """How one model output is compared with the teacher's."""
    name: str
    kind: str          # "class" (rank 2, KL at temperature T) or "regress" (normalised MSE / smooth-L1)
    scale: float = 1.0  # the teacher output's standard deviation ("regress" only)


def as_list(out) -> list:
    """A module's output(s) as a list."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def output_specs(names: list[str], teacher_outputs: list[np.ndarray]) -> list[OutputSpec]:
    """One spec per output, its kind from its rank and its scale from the teacher's outputs."""
    specs = []
    for name, t in zip(names, teacher_outputs):
        if t.ndim == 2:
            specs.append(OutputSpec(name, "class"))
        else:
            std = float(np.std(t.astype(np.float64)))
            specs.append(OutputSpec(name, "regress", std if std > 1e-12 else 1.0))
    return specs


def _one_distance(s, t, spec: OutputSpec, temperature: float, regression: str):
    import torch.nn.functional as F
    if spec.kind == "class":
        T = temperature
        return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True,
                        reduction="batchmean") * T * T
    s, t = s / spec.scale, t / spec.scale
    if regression == "smooth_l1":
        return F.smooth_l1_loss(s, t)
    return F.mse_loss(s, t)


def distill_loss(student: list, teacher: list, specs: list[OutputSpec], temperature: float,
                 regression: str = "mse"):
    """Mean over outputs of each output's distance to the teacher (a torch scalar)."""
    parts = [_one_distance(s, t.to(s.dtype), spec, temperature, regression)
             for s, t, spec in zip(student, teacher, specs)]
    return sum(parts) / len(parts)


def mix_losses(ce, kd, kd_weight: float):
    """(1-α)·CE + α·KD; either term may be None (labels or teacher missing)."""
    if kd is None:
        return ce
    if ce is None:
        return kd
    return (1 - kd_weight) * ce + kd_weight * kd
