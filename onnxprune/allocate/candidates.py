"""Choosing among candidate allocations by how close the pruned model stays to the original.

The allocation stage proposes several count vectors (one per weight sharpness, plus the uniform
cut); the caller supplies ``evaluate(counts) -> outputs``, the pruned model's outputs on a few
calibration images (every graph output, in order), and the original model's outputs. When the prune
refits its layers, the caller judges each candidate *after* a quick refit on other calibration
images: the allocation that is best one-shot is often not the one that refits best. The
candidate with the smallest **output distance** wins; label-free and valid for any model:

* a 2-D output ``(batch, classes)`` is read as class scores: mean KL(original ‖ pruned) of their
  softmax over the batch;
* any other output (boxes, feature maps, 3-D scores, ...): relative squared error
  ``||y' - y||² / ||y||²``;
* the distance is the mean over outputs.

Candidates are ranked by (top-1 disagreement with the original, distance): the disagreement is the
mean over class-score outputs of the fraction of images whose arg-max changes, and 0 for a model
without class-score outputs (a detector is ranked by the distance alone). Ties go to the earlier
candidate.

NumPy only: running the pruned model is the caller's business.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["Candidate", "ChoiceRule", "Choice", "recipe_name", "output_distance", "top1_disagreement",
           "criterion_name", "choose_candidate"]


def recipe_name(alloc: str, sharpness: float) -> str:
    """The name of the allocation recipe with weights w^t (e.g. "convex t=2")."""
    return f"{alloc} t={sharpness:g}"


@dataclass(frozen=True)
class Candidate:
    """One proposed allocation: a name (e.g. "convex t=2, 4 branch(es) removed"), kept counts per
    group, solver notes, the groups it empties whole, the recipe that spent the rest of the
    budget (e.g. "convex t=2"; empty: the name) and the internal budget it was allocated at when
    that is not the one asked of the choice (None: that one)."""

    name: str
    counts: dict[int, int]
    notes: tuple[str, ...] = ()
    emptied: tuple[int, ...] = ()
    recipe: str = ""
    budget: float | None = None

    @property
    def suffix(self) -> str:
        """What the name adds to the recipe (the branches removed)."""
        return self.name[len(self.recipe):] if self.recipe and self.name.startswith(self.recipe) else ""


@dataclass(frozen=True)
class ChoiceRule:
    """How an allocation is picked. Default: every recipe judged (with branch removals where they
    apply). ``keep``: allocate as this candidate did (its recipe, its removed branches), nothing
    judged; ``recipe``: judge only this recipe's candidates; ``target``: a latency target
    (onnxprune.pipeline.measured_latency.LatencyTarget) under which branch removals are compared
    at equal latency (onnxprune.pipeline.branches.at_landing_budgets)."""

    keep: Candidate | None = None
    recipe: str | None = None
    target: object = None

    @classmethod
    def fixed_recipe(cls, recipe: str) -> "ChoiceRule":
        """Allocate with ``recipe``, channels only, nothing judged."""
        return cls(keep=Candidate(recipe, {}, recipe=recipe))


@dataclass(frozen=True)
class Choice:
    """The chosen candidate, the criterion used, and every candidate's (disagreement, distance)."""

    candidate: Candidate
    criterion: str
    scores: dict[str, tuple[float, float]]

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "chosen": self.candidate.name,
                "candidates": {k: {"top1_disagreement": float(a), "distance": float(d)}
                               for k, (a, d) in self.scores.items()}}


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _is_class_scores(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] > 1


def _kl(ref: np.ndarray, out: np.ndarray) -> float:
    ref_logp, logp = _log_softmax(ref.astype(np.float64)), _log_softmax(out.astype(np.float64))
    return float((np.exp(ref_logp) * (ref_logp - logp)).sum(axis=1).mean())


def _relative_squared_error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    den = float(np.sum(ref * ref))
    num = float(np.sum((out - ref) ** 2))
    return num / den if den > 0 else num


def output_distance(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean over outputs of KL (2-D class scores) or relative squared error (any other output)."""
    if len(reference) != len(outputs) or not reference:
        raise ValueError(f"expected {len(reference)} outputs, got {len(outputs)}")
    parts = []
    for ref, out in zip(reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            raise ValueError(f"output shape {list(out.shape)} differs from the original's {list(ref.shape)}")
        parts.append(_kl(ref, out) if _is_class_scores(ref) else _relative_squared_error(ref, out))
    return float(np.mean(parts))


def top1_disagreement(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean over class-score (2-D) outputs of the fraction of changed arg-max; 0 when there is none."""
    parts = [float(np.mean(np.argmax(out, 1) != np.argmax(ref, 1)))
             for ref, out in zip(reference, outputs) if _is_class_scores(np.asarray(ref))]
    return float(np.mean(parts)) if parts else 0.0


def criterion_name(reference: Sequence[np.ndarray], output_names: Sequence[str] | None = None,
                   after: str | None = None) -> str:
    """A line naming the distance used for each output (``after``: what each candidate went through
    before it was judged, e.g. "a refit on 256 images")."""
    names = output_names or [f"output {i}" for i in range(len(reference))]
    classes = any(_is_class_scores(np.asarray(r)) for r in reference)
    kinds = [f"{n}: {'KL of softmax' if _is_class_scores(np.asarray(r)) else 'relative squared error'}"
             for n, r in zip(names, reference)]
    first = "top-1 disagreement with the unpruned model, then " if classes else ""
    line = first + "mean output distance to the unpruned model (" + "; ".join(kinds) + ")"
    return line + (f", each candidate judged after {after}" if after else "")


def choose_candidate(candidates: Sequence[Candidate],
                     evaluate: Callable[[Mapping[int, int]], Sequence[np.ndarray]],
                     reference: Sequence[np.ndarray],
                     output_names: Sequence[str] | None = None, after: str | None = None) -> Choice:
    """The candidate whose pruned outputs (``evaluate(counts)``) are closest to ``reference``
    (lowest top-1 disagreement, then lowest output distance)."""
    if not candidates:
        raise ValueError("no candidate allocation to choose from")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")
    scores = {}
    for c in candidates:
        outputs = evaluate(c.counts)
        scores[c.name] = (top1_disagreement(reference, outputs), output_distance(reference, outputs))
    best = min(range(len(candidates)), key=lambda i: scores[names[i]])
    return Choice(candidates[best], criterion_name(reference, output_names, after), scores)
