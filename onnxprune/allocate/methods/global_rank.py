"""``global``: one global ranking of channels (each group's scores divided by the group's mean
absolute score), lowest first, until the budgets are met."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from onnxprune.allocate.methods.common import allocation_result
from onnxprune.allocate.problem import Allocation, AllocationProblem, check_budgets
from onnxprune.allocate.repair import round_to_budget
from onnxprune.errors import BudgetError

__all__ = ["allocate_global"]


def allocate_global(problem: AllocationProblem, scores: Mapping[int, np.ndarray]) -> Allocation:
    """Remove the globally lowest-scored channels until every budget is met, then round.

    Each group's scores are divided by the group's mean absolute score (its mean, for the
    non-negative criteria L1/L2/rank) so groups of different scale compare. Channels are removed
    lowest first (ties: group id, then channel index), never below a group's minimum count. The
    one-at-a-time removal is run as a binary search over the sorted removal sequence (costs only
    fall as channels go), O(N log N) for N channels in all.
    """
    check_budgets(problem)
    ch, _, lo = problem.arrays()
    vals, gids, ranks = [], [], []
    for i, g in enumerate(problem.groups):
        if g not in scores:
            raise BudgetError(f"scores missing for group {g}")
        s = np.asarray(scores[g], dtype=float).ravel()
        if s.size != ch[i]:
            raise BudgetError(f"group {g}: {s.size} scores for {ch[i]} channels")
        if not np.isfinite(s).all():
            raise BudgetError(f"group {g}: scores are not all finite")
        scale = np.abs(s).mean()
        s = s / scale if scale > 0 else np.zeros_like(s)
        k = int(ch[i] - lo[i])
        srt = np.sort(s, kind="stable")[:k]
        vals.append(srt)
        gids.append(np.full(k, i, dtype=np.int64))
        ranks.append(np.arange(k))
    vals, gids, ranks = (np.concatenate(v) for v in (vals, gids, ranks))
    seq = gids[np.lexsort((ranks, gids, vals))]
    targets = [b.target for b in problem.budgets]

    def counts_after(k: int) -> np.ndarray:
        return ch - np.bincount(seq[:k], minlength=len(ch))

    def ok(k: int) -> bool:
        x = counts_after(k) / ch
        return all(c.value(x) <= t for c, t in zip(problem.compiled, targets))
    a, z = 0, len(seq)
    if not ok(z):  # cannot happen after _check; kept as a guard
        raise BudgetError("the budget cannot be met even with every group at its minimum")
    while a < z:
        mid = (a + z) // 2
        if ok(mid):
            z = mid
        else:
            a = mid + 1
    counts = counts_after(a)
    x = counts / ch
    notes = [f"removed {a} channel(s) in global score order (scores divided by each group's "
             "mean |score|)"]
    return allocation_result(problem, "global", x, round_to_budget(problem, x, np.ones(len(ch)), lo), notes)
