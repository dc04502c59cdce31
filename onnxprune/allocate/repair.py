"""The one rounding-and-repair loop: integer channel counts that meet every budget.

:func:`repair` starts from counts on the allowed grid (multiples of each group's channel multiple,
or the full width) and

1. **shrinks** while a budget is exceeded: one step down (to the next lower multiple) for the group
   with the best budget reduction (summed over the exceeded budgets, each relative to its full cost)
   per unit of lost weighted log-ratio ``w_g log(n_g / n_g')``; ties go to the lowest group id;
2. **fills** the slack back, one multiple at a time, while every budget holds. Two orders:
   ``"best-ratio"`` (the group with the best weighted log-gain per unit of added relative cost, until
   nothing fits) and ``"smallest-first"`` (sweeps over the groups, smallest first, while more than
   0.3 % of a budget is unused);
3. optionally **trades** one multiple between two groups while that brings the cost closer to the
   target (at most 64 groups, when more than 1 % is unused).

What the costs are comes from a cost oracle: :class:`PosynomialCosts` (the analysis' posynomials,
vectorised; used by :func:`round_counts` after every allocation method) or :class:`ExactCosts`
(a callback giving the exact cost of a count vector, e.g. of the channels a selection really
keeps; the pipeline runs it after allocation).

Channel multiples: ``round_to`` is an int (every group) or a mapping group id -> multiple; the
effective multiple of a group is the lcm with the problem's own multiple (e.g. grouped-convolution
blocks). ``round_to=1`` leaves the problem's multiples unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from onnxprune.allocate.problem import REL_TOL, AllocationProblem, check_budgets, check_weights
from onnxprune.errors import BudgetError

__all__ = ["PosynomialCosts", "ExactCosts", "repair", "round_counts", "snap_counts",
           "resolve_multiples", "FILL_ORDERS"]

FILL_ORDERS = ("best-ratio", "smallest-first")
_SWEEP_SLACK = 0.003     # smallest-first fill: stop once at most this fraction of a budget is unused
_TRADE_SLACK = 0.01      # trade only while more than this fraction is unused
_TRADE_MAX_GROUPS = 64   # trades test every pair of groups: small problems only


# ----------------------------------------------------------------------------- multiples
def resolve_multiples(round_to: int | Mapping[int, int], groups, base: Mapping[int, int] | None = None
                      ) -> dict[int, int]:
    """Per-group channel multiple: lcm(``round_to`` for the group, ``base[g]``).

    ``round_to`` is one positive int for every group or a mapping group id -> positive int (groups
    it does not name use 1). ``base`` (default 1) holds multiples the graph imposes.
    """
    base = base or {}
    out = {}
    for g in groups:
        r = round_to.get(g, 1) if isinstance(round_to, Mapping) else round_to
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise BudgetError(f"group {g}: channel multiple (round_to) must be a positive integer, got {r!r}")
        b = int(base.get(g, 1))
        out[g] = int(r) * b // math.gcd(int(r), b)
    return out


# ----------------------------------------------------------------------------- cost oracles
class PosynomialCosts:
    """Budget values from the problem's posynomials (expected counts), vectorised over groups."""

    def __init__(self, problem: AllocationProblem) -> None:
        self.problem = problem
        ch, _, _ = problem.arrays()
        self.channels = ch
        self.targets = np.array([b.target for b in problem.budgets], dtype=float)
        self.fulls = np.array([max(b.cost.full(), 1e-300) for b in problem.budgets])
        self.limits = self.targets + REL_TOL * self.fulls    # shrink until within float noise
        self.fill_limits = self.targets                          # fill never crosses the target

    def values(self, n: np.ndarray) -> np.ndarray:
        x = n / self.channels
        return np.array([c.value(x) for c in self.problem.compiled])

    def step_deltas(self, n: np.ndarray, n_new: np.ndarray, movable: np.ndarray) -> np.ndarray:
        """(budgets, groups): change of every budget when group g alone moves to ``n_new[g]``."""
        if not self.problem.compiled:
            return np.zeros((0, len(n)))
        x, xn = n / self.channels, np.where(movable, n_new, n) / self.channels
        return np.array([c.deltas(x, xn) for c in self.problem.compiled])

    def out_of_reach(self, n: np.ndarray) -> BudgetError:
        return BudgetError("rounding cannot meet the budget: no group can shrink further")


class ExactCosts:
    """Budget values from a callback ``cost_fn(counts: {group: n}) -> {budget name: value}``.

    The callback sees the whole count vector (e.g. selects the channels and counts the exact MACs);
    targets come from the problem's budgets, met up to a relative ``rtol`` of the target.
    """

    def __init__(self, problem: AllocationProblem, cost_fn: Callable[[dict[int, int]], Mapping[str, float]],
                 rtol: float = 1e-9) -> None:
        self.problem, self.cost_fn = problem, cost_fn
        self.names = [b.name for b in problem.budgets]
        self.targets = np.array([b.target for b in problem.budgets], dtype=float)
        self.fulls = np.array([max(b.cost.full(), 1e-300) for b in problem.budgets])
        self.limits = self.fill_limits = self.targets * (1 + rtol)

    def values(self, n: np.ndarray) -> np.ndarray:
        got = self.cost_fn(self.problem.as_dict(n))
        return np.array([float(got[k]) for k in self.names])

    def step_deltas(self, n: np.ndarray, n_new: np.ndarray, movable: np.ndarray) -> np.ndarray:
        """(budgets, groups): exact change when group g alone moves (NaN where it does not)."""
        base = self.values(n)
        out = np.full((len(self.names), len(n)), np.nan)
        for i in np.flatnonzero(movable):
            trial = n.copy()
            trial[i] = n_new[i]
            out[:, i] = self.values(trial) - base
        return out

    def out_of_reach(self, n: np.ndarray) -> BudgetError:
        v = self.values(n)
        reached = ", ".join(f"{k} -{100 * (1 - v[i] / self.fulls[i]):.2f} %" for i, k in enumerate(self.names))
        wanted = ", ".join(f"{k} -{100 * (1 - self.targets[i] / self.fulls[i]):.2f} %"
                           for i, k in enumerate(self.names))
        return BudgetError(f"the budget ({wanted}) is out of reach with the kept channels every tensor "
                           f"needs; at most {reached}")


# ----------------------------------------------------------------------------- the loop
def _steps(n, ch, mult, floors):
    """(lower, can_lower, higher, can_raise): one multiple down / up from n (C_g always allowed)."""
    lower = (n - 1) // mult * mult
    higher = np.minimum((n // mult + 1) * mult, ch)
    return lower, lower >= floors, higher, n < ch


_MAX_JUMP = 8            # shrink: when no single step lowers an exceeded cost, try up to this many


def _shrink_scores(n, costs, w, mult, floors, violated, jump):
    """(lower, score) for lowering every group by ``jump`` multiples."""
    lower = (n - 1) // mult * mult - (jump - 1) * mult
    ok = lower >= floors
    d = costs.step_deltas(n, lower, ok)
    red = sum(-d[b] / costs.fulls[b] for b in violated)
    loss = w * np.log(n / np.where(ok, lower, n))
    return lower, np.where(ok & (red > 0), red / loss, -np.inf)    # loss 0 (weight 0) -> inf


def _shrink(n, costs, w, ch, mult, floors):
    """One step down at a time; a cost that is a staircase (measured latency: a count off the
    engine's block grid can run slower than the grid count above it) may need several steps at
    once, up to ``_MAX_JUMP``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            vals = costs.values(n)
            violated = np.flatnonzero(vals > costs.limits)
            if violated.size == 0:
                return n
            for jump in range(1, _MAX_JUMP + 1):
                lower, score = _shrink_scores(n, costs, w, mult, floors, violated, jump)
                if (score > -np.inf).any():
                    break
            else:
                raise costs.out_of_reach(n)
            i = int(np.argmax(score))                                # first maximum: lowest group id
            n = n.copy()
            n[i] = lower[i]


def _fill_best_ratio(n, costs, w, ch, mult):
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            _, _, higher, ok = _steps(n, ch, mult, np.zeros_like(n))
            if not ok.any():
                return n
            vals = costs.values(n)
            d = costs.step_deltas(n, higher, ok)
            fits = ok & np.all(vals[:, None] + d <= costs.fill_limits[:, None], axis=0)
            if not fits.any():
                return n
            gain = w * np.log(np.where(ok, higher, n) / n)
            inc = (d / costs.fulls[:, None]).sum(axis=0)
            score = np.where(inc > 0, gain / inc, np.inf)
            score = np.where(fits, score, -np.inf)
            i = int(np.argmax(score))
            n = n.copy()
            n[i] = higher[i]


def _slack(costs, vals) -> float:
    return float(np.min((costs.targets - vals) / costs.fulls)) if len(vals) else math.inf


def _fill_smallest_first(n, costs, ch, mult):
    vals = costs.values(n)
    order = sorted(range(len(n)), key=lambda i: (ch[i], i))      # group order is by id
    changed = True
    while changed and _slack(costs, vals) > _SWEEP_SLACK:
        changed = False
        for i in order:
            higher = min((n[i] // mult[i] + 1) * mult[i], ch[i])
            if n[i] >= ch[i] or _slack(costs, vals) <= _SWEEP_SLACK:
                continue
            trial = n.copy()
            trial[i] = higher
            v = costs.values(trial)
            if np.all(v <= costs.limits):
                n, vals, changed = trial, v, True
    return n


def _trade(n, costs, ch, mult, floors):
    """Move one multiple from one group to another while that uses the budget more fully."""
    vals = costs.values(n)
    for _ in range(20):
        s = _slack(costs, vals)
        if s <= _TRADE_SLACK or len(n) > _TRADE_MAX_GROUPS:
            break
        lower, can_lower, higher, can_raise = _steps(n, ch, mult, floors)
        best = None
        for up in np.flatnonzero(can_raise):
            for down in np.flatnonzero(can_lower):
                if down == up:
                    continue
                trial = n.copy()
                trial[up], trial[down] = higher[up], lower[down]
                v = costs.values(trial)
                sv = _slack(costs, v)
                if np.all(v <= costs.limits) and sv < s and (best is None or sv < best[0]):
                    best = (sv, trial, v)
        if best is None:
            break
        _, n, vals = best
    return n


def repair(problem: AllocationProblem, counts: Mapping[int, int] | np.ndarray, costs=None, *,
           weights: Mapping[int, float] | np.ndarray | None = None, floors: np.ndarray | None = None,
           round_to: int | Mapping[int, int] = 1, fill: str = "best-ratio", trade: bool = False
           ) -> dict[int, int]:
    """Counts on the allowed grid that meet every budget under ``costs`` (see the module docstring).

    ``counts``: a mapping (groups missing count as full width) or an int array in group order;
    ``costs``: :class:`PosynomialCosts` (default) or :class:`ExactCosts`; ``weights`` (>= 0, default
    1) weigh the lost log-ratio; ``floors``: smallest counts (default the problem's minimum counts);
    ``round_to``: extra channel multiple(s), int or {group: multiple}.
    """
    if fill not in FILL_ORDERS:
        raise BudgetError(f"fill must be one of {', '.join(FILL_ORDERS)}, got {fill!r}")
    n = _as_array(problem, counts)
    ch, mult, lo = problem.arrays()
    if not (isinstance(round_to, int) and round_to == 1):
        mult = np.array([m for m in resolve_multiples(round_to, problem.groups, problem.as_dict(mult)).values()])
        lo = np.minimum(ch, -(-lo // mult) * mult)
    floors = lo if floors is None else np.maximum(floors, lo)
    costs = PosynomialCosts(problem) if costs is None else costs
    w = _normalised(problem, weights)
    n = _shrink(n, costs, w, ch, mult, floors)
    n = _fill_best_ratio(n, costs, w, ch, mult) if fill == "best-ratio" else \
        _fill_smallest_first(n, costs, ch, mult)
    if trade and np.all(costs.values(n) <= costs.limits):
        n = _trade(n, costs, ch, mult, floors)
    return problem.as_dict(n)


def _as_array(problem, counts) -> np.ndarray:
    if isinstance(counts, Mapping):
        return np.array([int(counts.get(g, problem.channels[g])) for g in problem.groups], dtype=np.int64)
    return np.asarray(counts, dtype=np.int64).copy()


def _normalised(problem, weights) -> np.ndarray:
    if weights is None:
        return np.ones(len(problem.groups))
    w = weights if isinstance(weights, np.ndarray) else check_weights(problem, weights, positive=False)
    return w / w.max() if w.max() > 0 else np.ones_like(w)


# ----------------------------------------------------------------------------- rounding
def _nearest(t: np.ndarray, ch, mult, lo) -> np.ndarray:
    """Nearest allowed count to t (ties to the larger); allowed = multiples in [lo, C] and C."""
    t = np.clip(t, lo, ch)
    down = np.maximum((np.floor(t / mult) * mult).astype(np.int64), lo)
    up = np.minimum(down + mult, ch)
    up = np.where(down >= ch, ch, up)
    return np.where(t - down < up - t, down, up)


def snap_counts(problem: AllocationProblem, x: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Nearest allowed counts to ratios ``x`` (group order), >= floors; groups that no budget
    prices stay at full width."""
    ch, mult, _ = problem.arrays()
    n = _nearest(x * ch, ch, mult, floors)
    priced = np.zeros(len(n), dtype=bool)
    for c in problem.compiled:
        priced[c.inc_g] = True
    return np.where(priced, n, ch)


def round_to_budget(problem: AllocationProblem, x: np.ndarray, w: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Snap ratios to allowed counts >= floors, then :func:`repair` against the posynomial costs."""
    n = snap_counts(problem, x, floors)
    return np.array(list(repair(problem, n, weights=w, floors=floors).values()), dtype=np.int64)


def round_counts(problem: AllocationProblem, ratios: Mapping[int, float],
                 weights: Mapping[int, float] | None = None) -> dict[int, int]:
    """Integer kept counts close to ``ratios`` that meet every budget.

    Groups missing from ``ratios`` count as 1.0; ``weights`` (>= 0, default 1) weigh the lost
    log-ratio in the repair. Deterministic: ties go to the lowest group id.
    """
    check_budgets(problem)
    x = np.array([float(ratios.get(g, 1.0)) for g in problem.groups])
    if not np.isfinite(x).all():
        raise BudgetError("ratios must be finite")
    w = check_weights(problem, weights, positive=False)
    _, _, lo = problem.arrays()
    return problem.as_dict(round_to_budget(problem, x, w, lo))
