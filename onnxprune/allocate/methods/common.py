"""Helpers the allocation methods share: binding budgets, the uniform ratio and the result record."""
from __future__ import annotations

import numpy as np

from onnxprune.allocate.problem import Allocation, AllocationProblem

__all__ = ["binding_budgets", "uniform_ratio", "allocation_result"]


def binding_budgets(problem: AllocationProblem):
    """(compiled cost, target) of the budgets that bind somewhere below full width."""
    return [(c, b.target) for b, c in zip(problem.budgets, problem.compiled)
            if c.coef.size and b.target < c.value(np.ones(c.n))]


def uniform_ratio(problem: AllocationProblem, lo_x: np.ndarray) -> float:
    """Largest r in [0, 1] with every budget met at x = max(r, lo_x); bisection (monotone)."""
    def ok(r):
        x = np.maximum(r, lo_x)
        return all(c.value(x) <= b.target for b, c in zip(problem.budgets, problem.compiled))
    if ok(1.0):
        return 1.0
    a, z = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (a + z)
        if ok(mid):
            a = mid
        else:
            z = mid
        if z - a < 1e-13:
            break
    return a


def allocation_result(problem, method, x, counts, notes) -> Allocation:
    counts_d = problem.as_dict(counts)
    ratios_x = {g: counts_d[g] / problem.channels[g] for g in problem.groups}
    return Allocation(counts=counts_d,
                      ratios={g: float(v) for g, v in problem.as_dict(np.asarray(x, float)).items()},
                      achieved={b.name: b.cost.value(ratios_x) for b in problem.budgets},
                      requested={b.name: float(b.target) for b in problem.budgets},
                      method=method, notes=tuple(notes))
