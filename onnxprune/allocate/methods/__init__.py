"""Allocation methods and their registry.

Each method lives in its own module and is registered in :data:`REGISTRY` with one line:
``name: (function, what it consumes)``. A method function takes the problem and the inputs it
consumes as keywords (``weights``, ``scores``, ``x_min``) and returns an
:class:`~onnxprune.allocate.problem.Allocation` whose counts meet every budget.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import numpy as np

from onnxprune.allocate.methods.convex import allocate_convex
from onnxprune.allocate.methods.global_rank import allocate_global
from onnxprune.allocate.methods.linear import allocate_linear
from onnxprune.allocate.methods.uniform import allocate_uniform
from onnxprune.allocate.problem import Allocation, AllocationProblem
from onnxprune.errors import BudgetError

__all__ = ["REGISTRY", "METHODS", "allocate", "allocate_uniform", "allocate_convex",
           "allocate_linear", "allocate_global"]


class Method(NamedTuple):
    run: Callable[..., Allocation]
    uses: frozenset            # subset of {"weights", "scores", "x_min"}


REGISTRY: dict[str, Method] = {
    "uniform": Method(allocate_uniform, frozenset()),
    "convex": Method(allocate_convex, frozenset({"weights", "x_min"})),
    "linear": Method(allocate_linear, frozenset({"weights", "x_min"})),
    "global": Method(allocate_global, frozenset({"scores"})),
}
METHODS = tuple(REGISTRY)


def allocate(problem: AllocationProblem, method: str, weights: Mapping[int, float] | None = None,
             scores: Mapping[int, np.ndarray] | None = None, *,
             x_min: float | Mapping[int, float] | None = None) -> Allocation:
    """Run one registered method and return its Allocation.

    ``weights`` feed methods that use them (default: 1 for every group, noted); ``scores`` (one
    array per group) feed 'global'; ``x_min`` applies to the methods that take a ratio floor.
    """
    if method not in REGISTRY:
        raise BudgetError(f"unknown allocation method {method!r}; choose one of {', '.join(METHODS)}")
    entry, kwargs, extra = REGISTRY[method], {}, []
    if "weights" in entry.uses:
        if weights is None:
            weights = {g: 1.0 for g in problem.groups}
            extra.append("no weights given: every group weighs 1")
        kwargs["weights"] = weights
    elif weights is not None and method == "uniform":
        extra.append("weights ignored by the uniform method")
    if "scores" in entry.uses:
        if scores is None:
            raise BudgetError(f"method {method!r} needs per-channel scores for every group")
        kwargs["scores"] = scores
    if "x_min" in entry.uses:
        kwargs["x_min"] = x_min
    alloc = entry.run(problem, **kwargs)
    if not extra:
        return alloc
    return Allocation(alloc.counts, alloc.ratios, alloc.achieved, alloc.requested, alloc.method,
                      tuple(extra) + alloc.notes)
