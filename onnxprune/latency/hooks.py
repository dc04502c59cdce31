"""What the prune pipeline asks of the latency model: set-up, the latency budget, exact costs, the record."""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np

from onnxprune.allocate.problem import AllocationProblem, Budget, Posynomial
from onnxprune.latency.model import LatencyModel, build_latency_model
from onnxprune.latency.steps import channel_steps
from onnxprune.latency.table import engine_for
from onnxprune.log import get_logger

__all__ = ["latency_setup", "with_latency_budget", "exact_latency", "latency_record"]

log = get_logger(__name__)


def latency_setup(model, analysis, config, timings: dict):
    """(latency model or None, config with per-group steps resolved, {group: StepChoice})."""
    if config.latency_reduction is None and config.round_to != "latency":
        return None, config, {}
    t0 = time.perf_counter()
    engine = engine_for(config.target)
    lm = build_latency_model(model, analysis, engine, config.batch)
    steps = {}
    if config.round_to == "latency":
        steps = channel_steps(lm)
        config = dataclasses.replace(config, round_to={g: c.step for g, c in steps.items()})
        by_step: dict[int, int] = {}
        for c in steps.values():
            by_step[c.step] = by_step.get(c.step, 0) + 1
        log.info("channel steps on %s (batch %d): %s", engine.target, config.batch,
                 ", ".join(f"{n} group(s) in steps of {s}" for s, n in sorted(by_step.items(), reverse=True)))
    timings["latency_model_s"] = time.perf_counter() - t0
    return lm, config, steps


def with_latency_budget(problem: AllocationProblem, lm: LatencyModel, reduction: float) -> AllocationProblem:
    """``problem`` with a "latency" budget: the tables' aligned fits as a posynomial, cut by ``reduction``."""
    terms = lm.posynomial_terms(set(problem.groups))
    posy = Posynomial(terms=tuple((c, k) for k, c in terms.items() if k and c > 0),
                      constant=float(terms.get((), 0.0)))
    budget = Budget("latency", posy, (1.0 - reduction) * posy.full())
    return dataclasses.replace(problem, budgets=tuple(problem.budgets) + (budget,))


def exact_latency(problem: AllocationProblem, lm: LatencyModel, counts: Mapping[int, int],
                  kept: Mapping[int, np.ndarray] | None = None) -> float:
    """The tables' prediction for ``counts`` (staircases included), in the latency budget's units."""
    full = problem.budget("latency").cost.full()
    return lm.predict(counts, kept) * full / lm.full


def latency_record(lm: LatencyModel, kept: Mapping[int, np.ndarray], config, steps: dict) -> dict:
    """The plan's latency entry: requested, predicted (measured is added by whoever measures)."""
    counts = {g: len(k) for g, k in kept.items()}
    full, pruned = lm.full, lm.predict(counts, kept)
    rec = {"target": lm.engine.target, "provider": lm.engine.provider, "batch": lm.batch,
           "threads": lm.engine.threads, "predicted": {"original_s": full, "pruned_s": pruned,
                                                        "reduction": 1 - pruned / full, "speedup": full / pruned},
           "model": lm.summary()}
    if config.latency_reduction is not None:
        rec["requested_reduction"] = config.latency_reduction
    if steps:
        rec["channel_steps"] = {str(g): c.step for g, c in steps.items()}
    return rec
