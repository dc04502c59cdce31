"""Allocations that empty whole groups (residual branches removed) and spend the rest of the budget
on channels.

On engines whose convolutions run in channel blocks (onnxruntime CPU: NCHWc blocks of 8 or 16), a
block-internal width cut below a block buys little time, while a branch removed whole frees its
layers' time and all its MACs. The pipeline ranks the emptiable groups (``analysis.emptiable``) by
the output distance of the model with that group alone emptied, proposes candidates that empty the
``k`` least harmful ones and allocate the budget's remainder over the other groups (this module),
judges them like the other candidates, and keeps the fastest one whose output distance stays
within a tolerance of the channels-only choice's; candidates timed within a few per cent of the
fastest count as equally fast, and the closest of them is kept (:func:`pick_fastest_within`).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from onnxprune.allocate.problem import AllocationProblem, Budget, Posynomial

__all__ = ["without_groups", "overshoots", "removal_sizes", "pick_fastest_within", "pick_closest_not_slower",
           "DISTANCE_TOLERANCE", "LATENCY_SLACK", "BRANCH_TIMING_S"]

BRANCH_TIMING_S = 20.0       # seconds each interleaved timing of the branch candidates may take (3..15 rounds)
DISTANCE_TOLERANCE = 0.5     # a branch candidate may judge up to 50 % more output distance than the channels-only choice
LATENCY_SLACK = 0.03         # candidates timed within 3 % of the fastest count as equally fast (timing noise)


def without_groups(problem: AllocationProblem, emptied: Iterable[int]) -> AllocationProblem:
    """The problem with ``emptied`` groups at 0 channels: their terms vanish, the targets stay."""
    gone = set(emptied)
    budgets = tuple(Budget(b.name, Posynomial(tuple(t for t in b.cost.terms if not gone & set(t[1])),
                                              b.cost.constant), b.target) for b in problem.budgets)
    keep = {g: c for g, c in problem.channels.items() if g not in gone}
    return AllocationProblem(keep, budgets, {g: m for g, m in problem.multiple.items() if g in keep},
                             {g: m for g, m in problem.min_channels.items() if g in keep})


def overshoots(problem: AllocationProblem, emptied: Iterable[int]) -> bool:
    """Whether emptying ``emptied`` alone (every other group whole) already cuts more than some
    budget asks: no allocation of the other groups can then give the cut back."""
    return any(b.cost.full() < b.target * (1 - 1e-9) for b in without_groups(problem, emptied).budgets)


def removal_sizes(n_emptiable: int, most: int = 8) -> list[int]:
    """How many groups the candidates empty: 2, 4, 6, 8, 12, 16 (at most ``most`` and the count;
    1 when only one fits); each candidate costs a quick refit."""
    limit = min(n_emptiable, most)
    return [k for k in (2, 4, 6, 8, 12, 16) if k <= limit] or ([1] if limit >= 1 else [])


def pick_closest_not_slower(names: Sequence[str], distance: Mapping[str, float], latency: Mapping[str, float],
                            best: str, slack: float = LATENCY_SLACK) -> str:
    """Among candidates each allocated where it is expected to land on a latency request (equal
    latency), the closest of those timed at most ``slack`` slower than the reference candidate
    (``best``; ties keep order): a slower one would land short of the request."""
    ok = [n for n in names if latency[n] <= latency[best] * (1.0 + slack)] or [best]
    return min(ok, key=lambda n: (distance[n], names.index(n)))


def pick_fastest_within(names: Sequence[str], distance: Mapping[str, float], latency: Mapping[str, float],
                        best: str, tolerance: float = DISTANCE_TOLERANCE, slack: float = LATENCY_SLACK) -> str:
    """Among the candidates whose output distance is at most ``(1 + tolerance)`` times the reference
    candidate's (``best``), those timed within ``slack`` of the fastest; of these the closest (ties
    keep order). Without the slack a timing 1 % faster, inside the noise, chose a candidate with 28 %
    more output distance (ResNet-56, 4 branches removed against channels only)."""
    limit = distance[best] * (1.0 + tolerance)
    ok = [n for n in names if distance[n] <= limit]
    if not ok:
        return best
    fastest = min(latency[n] for n in ok)
    near = [n for n in ok if latency[n] <= fastest * (1.0 + slack)]
    return min(near, key=lambda n: (distance[n], names.index(n)))
