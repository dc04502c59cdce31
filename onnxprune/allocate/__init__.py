"""Stage 4: keep-ratios per channel group under posynomial budgets, rounded to channel counts.

* :mod:`.problem`: Posynomial, Budget, AllocationProblem, Allocation, feasibility checks.
* :mod:`.methods`: the allocation methods (uniform, convex, linear, global) and their registry.
* :mod:`.solvers`: the geometric-program solvers (cvxpy, scipy fallback).
* :mod:`.repair`: the one rounding / budget-repair loop (posynomial or exact costs).
* :mod:`.budget`: the problem of an analysed model; :mod:`.candidates`: choosing among allocations.

NumPy/SciPy only at import; cvxpy is imported when the convex method runs.
"""
from onnxprune.allocate.budget import budget_problem, group_multiples, ratio_counts
from onnxprune.allocate.methods import METHODS, REGISTRY, allocate, allocate_convex, allocate_global, \
    allocate_linear, allocate_uniform
from onnxprune.allocate.problem import Allocation, AllocationProblem, Budget, Posynomial, check_feasible, \
    max_reduction
from onnxprune.allocate.repair import ExactCosts, PosynomialCosts, repair, resolve_multiples, round_counts

__all__ = ["Posynomial", "Budget", "AllocationProblem", "Allocation", "METHODS", "REGISTRY",
           "max_reduction", "check_feasible", "round_counts", "repair", "ExactCosts", "PosynomialCosts",
           "resolve_multiples", "allocate_uniform", "allocate_convex", "allocate_linear", "allocate_global",
           "allocate", "budget_problem", "group_multiples", "ratio_counts"]
