"""The allocation problem of an analysed model: its prunable groups under MACs / parameter budgets.

Kept channel counts of a group are multiples of lcm(round_to, the group's equal blocks), where
``round_to`` is one int or a mapping group id -> multiple (see :func:`..repair.resolve_multiples`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from onnxprune.allocate.problem import AllocationProblem, Budget, Posynomial
from onnxprune.allocate.repair import resolve_multiples

if TYPE_CHECKING:   # the analysis imports onnx; this module stays NumPy-only
    from onnxprune.analysis.cost import CostModel
    from onnxprune.analysis import Analysis

__all__ = ["budget_problem", "ratio_counts", "group_multiples"]


def _posynomial(terms: dict[tuple[int, ...], float]) -> Posynomial:
    return Posynomial(terms=tuple((c, k) for k, c in terms.items() if k and c > 0),
                      constant=float(terms.get((), 0.0)))


def group_multiples(analysis: "Analysis", round_to: int | Mapping[int, int] = 1) -> dict[int, int]:
    """Channel multiple of every prunable group: lcm(round_to, the group's equal blocks)."""
    return resolve_multiples(round_to, [g.id for g in analysis.prunable],
                             {g.id: g.equal_blocks for g in analysis.prunable})


def budget_problem(analysis: "Analysis", cost: "CostModel", *, flops_reduction: float | None = None,
                   params_reduction: float | None = None,
                   round_to: int | Mapping[int, int] = 1,
                   min_channels: Mapping[int, int] | None = None) -> AllocationProblem:
    """The allocation problem for the prunable groups under the given reductions (fractions);
    ``min_channels``: the fewest channels a group may keep (e.g. one per tensor that sees only
    part of it, see ``scoring.selection.span_floors``)."""
    prunable = {g.id for g in analysis.prunable}
    budgets = []
    if flops_reduction is not None:
        budgets.append(Budget("macs", _posynomial(cost.macs_terms(prunable)),
                              cost.macs() * (1 - flops_reduction)))
    if params_reduction is not None:
        budgets.append(Budget("params", _posynomial(cost.params_terms(prunable)),
                              cost.params() * (1 - params_reduction)))
    channels = {g.id: g.channels for g in analysis.prunable}
    return AllocationProblem(channels=channels, budgets=tuple(budgets),
                             multiple=group_multiples(analysis, round_to),
                             min_channels={g: n for g, n in (min_channels or {}).items() if g in channels})


def ratio_counts(analysis: "Analysis", ratio: float, round_to: int | Mapping[int, int] = 1,
                 min_channels: Mapping[int, int] | None = None) -> dict[int, int]:
    """Remove the fraction ``ratio`` of every prunable group, rounded to its multiple, keeping at
    least ``min_channels[g]`` (rounded up to the multiple)."""
    multiple = group_multiples(analysis, round_to)
    min_channels = min_channels or {}
    counts = {}
    for g in analysis.prunable:
        m = multiple[g.id]
        n = int(round(g.channels * (1 - ratio) / m)) * m
        floor = -(-min_channels.get(g.id, 1) // m) * m
        counts[g.id] = min(g.channels, max(m, n, floor))
    return counts
