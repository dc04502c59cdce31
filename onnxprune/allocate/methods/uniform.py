"""``uniform``: one keep-ratio r for every group (floored at each group's minimum), the largest r that
meets all budgets, found by bisection; then rounding."""
from __future__ import annotations

import numpy as np

from onnxprune.allocate.methods.common import allocation_result, uniform_ratio
from onnxprune.allocate.problem import Allocation, AllocationProblem, check_budgets
from onnxprune.allocate.repair import round_to_budget

__all__ = ["allocate_uniform"]


def allocate_uniform(problem: AllocationProblem) -> Allocation:
    """One keep-ratio for all groups (each floored at its minimum), then rounding."""
    check_budgets(problem)
    ch, _, lo = problem.arrays()
    lo_x = lo / ch
    r = uniform_ratio(problem, lo_x)
    x = np.maximum(r, lo_x)
    notes = [f"uniform keep-ratio {r:.6f}"]
    if (lo_x > r).any():
        notes.append(f"{int((lo_x > r).sum())} group(s) held at their minimum count above the ratio")
    return allocation_result(problem, "uniform", x, round_to_budget(problem, x, np.ones(len(ch)), lo), notes)
