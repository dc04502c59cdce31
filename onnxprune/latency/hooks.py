"""What the prune pipeline asks of the latency model: set-up, the latency budget, exact costs, the record."""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np

from onnxprune.allocate.problem import AllocationProblem, Budget, Posynomial
from onnxprune.latency.model import LatencyModel, build_latency_model
from onnxprune.latency.steps import channel_steps, network_steps
from onnxprune.latency.table import engine_for
from onnxprune.errors import OnnxPruneError
from onnxprune.log import get_logger

__all__ = ["latency_setup", "with_latency_budget", "exact_latency", "latency_record", "overshoot", "relaxed_steps"]

OVERSHOOT = 0.01     # a MACs/params cut more than this beyond the request: steps too coarse for the budget

log = get_logger(__name__)


def _static_input(model) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return bool(dims) and all(d.HasField("dim_value") for d in list(dims)[1:])


def latency_setup(model, analysis, config, timings: dict):
    """(latency model or None, config with per-group steps resolved, {group: StepChoice}).

    Per-group steps are a default: when the tables cannot be built (no static input shape, a
    layer onnxruntime refuses) the counts stay exact, with a log line. A latency budget needs them."""
    if config.latency_reduction is None and config.round_to != "latency":
        return None, config, {}
    t0 = time.perf_counter()
    engine = engine_for(config.target)
    try:
        if not _static_input(model):
            raise OnnxPruneError(f"input '{model.graph.input[0].name}' has no static shape; pass --input-shape")
        lm = build_latency_model(model, analysis, engine, config.batch)
    except Exception as exc:
        if config.latency_reduction is not None:
            raise OnnxPruneError(f"latency tables on {config.target}: {str(exc).splitlines()[0]}") from None
        log.info("latency tables unavailable (%s); keeping exact channel counts", str(exc).splitlines()[0])
        return None, dataclasses.replace(config, round_to=1), {}
    steps = {}
    if config.round_to == "latency":
        steps = network_steps(model, lm, channel_steps(lm))
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


def overshoot(config, full: dict, achieved: dict) -> float:
    """How far the achieved MACs/params cut goes beyond the requested one (0 when within)."""
    worst = 0.0
    for name, req in (("macs", config.flops_reduction), ("params", config.params_reduction)):
        if req is not None:
            worst = max(worst, (1 - achieved[name] / full[name]) - req)
    return worst


def relaxed_steps(steps: Mapping[int, int]) -> dict[int, int] | None:
    """The next finer per-group steps (16 -> 8 -> 1), or None when every step is already 1."""
    if all(s == 1 for s in steps.values()):
        return None
    return {g: (s // 2 if s > 8 else 1) for g, s in steps.items()}
