"""``linear``: ITPruner as published: maximise ``sum_g a_g x_g`` from ``x = 1`` with SLSQP.

Not convex, and with ITPruner's large beta the weights (~1e-24) do not move the solver; the result
says so in ``notes``."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from onnxprune.allocate.methods.common import allocation_result
from onnxprune.allocate.problem import (Allocation, AllocationProblem, check_budgets, check_weights,
                                        floor_counts)
from onnxprune.allocate.repair import round_to_budget

__all__ = ["allocate_linear"]


_SAME = 1e-3            # solutions closer than this (max |dx|) are "identical"


def _slsqp_linear(problem: AllocationProblem, a: np.ndarray, lo_x: np.ndarray):
    """ITPruner's solve: minimise -a.x from x = 1 with SLSQP, scipy's default options."""
    from scipy.optimize import minimize
    cons = []
    for b, cost in zip(problem.budgets, problem.compiled):
        full = max(b.cost.full(), 1e-300)
        cons.append({"type": "ineq",
                     "fun": lambda x, c=cost, t=b.target, f=full: (t - c.value(x)) / f,
                     "jac": lambda x, c=cost, f=full: -c.grad(x) / f})
    res = minimize(lambda x: -float(a @ x), np.ones(len(a)), jac=lambda x: -a, method="SLSQP",
                   bounds=list(zip(lo_x, np.ones(len(a)))), constraints=cons)
    return np.clip(np.nan_to_num(res.x, nan=1.0), lo_x, 1.0), res


def allocate_linear(problem: AllocationProblem, weights: Mapping[int, float],
                    x_min: float | Mapping[int, float] | None = None) -> Allocation:
    """ITPruner as published: maximise sum a_g x_g s.t. budgets, x_min <= x <= 1; SLSQP from x = 1.

    Weights are used as given (finite, >= 0; not normalised, as in the released code). The problem
    is solved twice more, with every weight replaced by their mean and with the weights assigned in
    reversed rank order; when all three solutions agree within 1e-3 the notes say that the
    importances did not affect the allocation.
    """
    a = check_weights(problem, weights, positive=False)
    floors = floor_counts(problem, x_min)
    check_budgets(problem, None if x_min is None else floors)
    ch, _, _ = problem.arrays()
    lo_x = floors / ch
    x, res = _slsqp_linear(problem, a, lo_x)
    notes = []
    if not res.success:
        notes.append(f"SLSQP stopped: {res.message} (rounding restores the budget)")
    order = np.argsort(a, kind="stable")
    rev = np.empty_like(a)
    rev[order] = a[order[::-1]]
    x_const, _ = _slsqp_linear(problem, np.full_like(a, a.mean()), lo_x)
    x_rev, _ = _slsqp_linear(problem, rev, lo_x)
    if max(np.abs(x - x_const).max(), np.abs(x - x_rev).max()) <= _SAME:
        notes.append(f"importances did not affect the allocation (weights span {a.min():.3g}..{a.max():.3g})")
    at_floor = int(np.sum(x <= lo_x + 1e-6))
    if at_floor:
        notes.append(f"{at_floor} of {len(a)} group(s) at the floor x_min (the linear objective "
                     "drives ratios to their bounds)")
    return allocation_result(problem, "linear", x, round_to_budget(problem, x, a, floors), notes)
