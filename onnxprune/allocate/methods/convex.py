"""``convex`` (default): maximise ``sum_g w_g log x_g`` subject to the budgets and ``x_min <= x <= 1``.

In ``y = log x`` this is a geometric program (convex; unique optimum whenever the budget is strictly
log-convex along every tie of the objective, as in real networks where each group feeds and is fed
by several layers). At the optimum ``x_g * d cost / d x_g`` is proportional to ``w_g`` for every
group strictly inside its bounds: a group's share of the budget grows with its weight. Solved by
cvxpy (``solve(gp=True)``); scipy SLSQP in log variables is the fallback (:mod:`..solvers`)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from onnxprune.allocate import solvers
from onnxprune.allocate.methods.common import allocation_result, binding_budgets, uniform_ratio
from onnxprune.allocate.problem import (Allocation, AllocationProblem, check_budgets, check_weights,
                                        floor_counts)
from onnxprune.allocate.repair import round_to_budget
from onnxprune.errors import BudgetError, SolverError

__all__ = ["allocate_convex"]


def allocate_convex(problem: AllocationProblem, weights: Mapping[int, float],
                    x_min: float | Mapping[int, float] | None = None, *,
                    backend: str = "auto") -> Allocation:
    """Maximise sum w_g log x_g under every budget and x_min <= x <= 1 (geometric program).

    ``weights`` must be finite and > 0 for every group (only their ratios matter; they are
    normalised to mean 1). ``x_min`` (a number or a per-group mapping) raises the floor above each
    group's minimum count. ``backend``: "auto" (cvxpy, scipy SLSQP in log variables on failure),
    "cvxpy" or "scipy". Raises SolverError when no backend succeeds.
    """
    if backend not in ("auto", "cvxpy", "scipy"):
        raise BudgetError(f"backend must be 'auto', 'cvxpy' or 'scipy', got {backend!r}")
    w = check_weights(problem, weights, positive=True)
    w = w / w.mean()
    floors = floor_counts(problem, x_min)
    check_budgets(problem, None if x_min is None else floors)
    ch, _, _ = problem.arrays()
    lo_x = floors / ch
    active = binding_budgets(problem)
    notes = []
    if np.ptp(w) == 0:
        notes.append("all weights equal: the allocation follows the cost structure alone")
    if not active:
        x = np.ones(len(ch))
        notes.append("every budget is met at full width")
    else:
        x, err = None, None
        if backend in ("auto", "cvxpy"):
            try:
                x, how = solvers.gp_cvxpy(active, w, lo_x)
                notes.append(f"solved by {how}")
            except Exception as exc:  # cvxpy raises many types (SolverError, DGPError, ...)
                err = f"{type(exc).__name__}: {exc}"
                if backend == "cvxpy":
                    raise SolverError(f"cvxpy geometric program failed ({err})") from None
        if x is None:
            x0 = np.maximum(uniform_ratio(problem, lo_x), lo_x)
            x, how = solvers.gp_scipy(active, w, lo_x, x0)
            notes.append(f"solved by {how}" if err is None else
                         f"cvxpy failed ({err}); solver fell back to {how}")
    return allocation_result(problem, "convex", x, round_to_budget(problem, x, w, floors), notes)
