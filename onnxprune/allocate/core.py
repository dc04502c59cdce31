"""Stage 4: keep-ratios per channel group under posynomial budgets, and rounding to channel counts.

A group ``g`` with ``C_g`` channels keeps ``n_g`` of them; its keep-ratio is ``x_g = n_g / C_g``.
The graph analysis describes each budgeted quantity (MACs, parameters) as a **posynomial** in x:
``cost(x) = constant + sum_t coef_t * prod_{g in groups_t} x_g`` with ``coef_t >= 0`` (a conv
between groups a and b costs ``c * x_a * x_b``; a group listed twice in a term means ``x_g**2``).
Groups that a term names but the problem does not prune count as ``x = 1``.

Methods (each returns an :class:`Allocation` with integer counts that meet every budget):

* ``uniform``: one ratio r for every group (floored at each group's minimum), the largest r that
  meets all budgets, found by bisection.
* ``convex`` (default): maximise ``sum_g w_g log x_g`` subject to the budgets and
  ``x_min <= x <= 1``. In ``y = log x`` this is a geometric program (convex; unique optimum whenever
  the budget is strictly log-convex along every tie of the objective, as in real networks where each
  group feeds and is fed by several layers). At the optimum ``x_g * d cost / d x_g`` is proportional
  to ``w_g`` for every group strictly inside its bounds: a group's share of the budget grows with its
  weight. Solved by cvxpy (``solve(gp=True)``); scipy SLSQP in log variables is the fallback.
* ``linear``: ITPruner as published: maximise ``sum_g a_g x_g`` from ``x = 1`` with SLSQP. Not
  convex, and with ITPruner's large beta the weights (~1e-24) do not move the solver; the result
  says so in ``notes``.
* ``global``: one global ranking of channels (each group's scores divided by the group's mean
  absolute score), lowest first, until the budgets are met.

Rounding (:func:`round_counts`) snaps ``x_g * C_g`` to the group's multiple (``C_g`` itself is
always allowed), then repairs: while a budget is exceeded it removes one multiple from the group with
the best budget reduction per unit of lost weighted log-ratio, and then adds back multiples greedily
while every budget holds, so the achieved cost ends just under the target.

This module is NumPy/SciPy only; cvxpy is imported inside :func:`allocate_convex`.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from onnxprune.errors import BudgetError, SolverError

__all__ = [
    "Posynomial", "Budget", "AllocationProblem", "Allocation", "METHODS",
    "max_reduction", "check_feasible", "round_counts",
    "allocate_uniform", "allocate_convex", "allocate_linear", "allocate_global", "allocate",
]

METHODS = ("uniform", "convex", "linear", "global")
_DISPLAY = {"macs": "MACs", "params": "parameters", "flops": "FLOPs"}
_SAME = 1e-3            # linear mode: solutions closer than this (max |dx|) are "identical"
_REL_TOL = 1e-12        # budget slack tolerated by the repair, relative to the full cost


def _display(name: str) -> str:
    return _DISPLAY.get(name.lower(), name)


# ----------------------------------------------------------------------------- cost model
@dataclass(frozen=True)
class Posynomial:
    """``constant + sum(coef * prod(x[g] for g in groups))``; groups missing from x count as 1."""

    terms: tuple[tuple[float, tuple[int, ...]], ...]
    constant: float = 0.0

    def __post_init__(self):
        terms = []
        for i, term in enumerate(self.terms):
            try:
                coef, groups = term
                coef = float(coef)
                groups = tuple(int(g) for g in groups)
            except (TypeError, ValueError):
                raise BudgetError(f"posynomial term {i}: expected (coef, group ids), got {term!r}") from None
            if not math.isfinite(coef) or coef < 0:
                raise BudgetError(f"posynomial term {i}: coefficient {coef} must be finite and >= 0")
            terms.append((coef, groups))
        constant = float(self.constant)
        if not math.isfinite(constant) or constant < 0:
            raise BudgetError(f"posynomial constant {constant} must be finite and >= 0")
        object.__setattr__(self, "terms", tuple(terms))
        object.__setattr__(self, "constant", constant)

    def value(self, ratios: Mapping[int, float]) -> float:
        total = self.constant
        for coef, groups in self.terms:
            prod = coef
            for g in groups:
                prod *= ratios.get(g, 1.0)
            total += prod
        return float(total)

    def full(self) -> float:
        return float(self.constant + sum(coef for coef, _ in self.terms))

    def groups(self) -> frozenset[int]:
        return frozenset(g for _, groups in self.terms for g in groups)


@dataclass(frozen=True)
class Budget:
    """``cost.value(x) <= target``; ``name`` is "macs", "params" (or any other label)."""

    name: str
    cost: Posynomial
    target: float

    @classmethod
    def from_reduction(cls, name: str, cost: Posynomial, reduction: float) -> "Budget":
        """Budget that removes the fraction ``reduction`` (0 <= reduction < 1) of the full cost."""
        if isinstance(reduction, bool) or not isinstance(reduction, numbers.Real) \
                or not 0.0 <= reduction < 1.0:
            raise BudgetError(f"{_display(name)} reduction must be a fraction in [0, 1), got {reduction!r}")
        return cls(name, cost, (1.0 - float(reduction)) * cost.full())


class _Cost:
    """A posynomial compiled against the problem's group order, for vectorised evaluation.

    Terms whose groups are all fixed (not pruned) are folded into ``const``; zero terms dropped.
    ``idx`` is (T, K) with the sentinel index ``n`` (value 1.0) as padding; the incidence arrays
    list (term, group, multiplicity) once per distinct group of a term.
    """

    def __init__(self, posy: Posynomial, index: Mapping[int, int], n: int):
        const, coefs, rows = posy.constant, [], []
        for coef, groups in posy.terms:
            idx = [index[g] for g in groups if g in index]
            if coef == 0.0:
                continue
            if not idx:
                const += coef
                continue
            coefs.append(coef)
            rows.append(idx)
        k = max((len(r) for r in rows), default=1)
        self.n = n
        self.const = float(const)
        self.coef = np.asarray(coefs, dtype=float)
        self.idx = np.full((len(rows), k), n, dtype=np.int64)
        inc_t, inc_g, inc_m = [], [], []
        for t, r in enumerate(rows):
            self.idx[t, :len(r)] = r
            for g in sorted(set(r)):
                inc_t.append(t)
                inc_g.append(g)
                inc_m.append(r.count(g))
        self.inc_t = np.asarray(inc_t, dtype=np.int64)
        self.inc_g = np.asarray(inc_g, dtype=np.int64)
        self.inc_m = np.asarray(inc_m, dtype=float)

    def term_values(self, x: np.ndarray) -> np.ndarray:
        xe = np.append(x, 1.0)
        return self.coef * np.prod(xe[self.idx], axis=1)

    def value(self, x: np.ndarray) -> float:
        return self.const + float(self.term_values(x).sum())

    def grad(self, x: np.ndarray) -> np.ndarray:
        """d cost / d x (x > 0)."""
        tv = self.term_values(x)
        w = tv[self.inc_t] * self.inc_m / x[self.inc_g]
        return np.bincount(self.inc_g, weights=w, minlength=self.n)

    def deltas(self, x: np.ndarray, x_new: np.ndarray) -> np.ndarray:
        """Cost change when group g alone moves from x[g] to x_new[g], for every g at once."""
        tv = self.term_values(x)
        w = tv[self.inc_t] * ((x_new[self.inc_g] / x[self.inc_g]) ** self.inc_m - 1.0)
        return np.bincount(self.inc_g, weights=w, minlength=self.n)

    def exponents(self):
        """Sparse (T, n) exponent matrix: term t is ``coef[t] * prod_g x_g ** E[t, g]``."""
        import scipy.sparse as sp
        return sp.csr_matrix((self.inc_m, (self.inc_t, self.inc_g)), shape=(len(self.coef), self.n))


# ----------------------------------------------------------------------------- problem
@dataclass(frozen=True)
class AllocationProblem:
    """Groups to prune (``channels``: C_g), budgets, and the hardware rounding rules.

    ``multiple[g]`` (default 1): kept counts are multiples of it, except ``C_g`` itself, which is
    always allowed. ``min_channels[g]`` (default ``max(1, multiple)``): the smallest count, raised to
    the next allowed count and capped at ``C_g``; never 0. Entries for groups that are not in
    ``channels`` are ignored.
    """

    channels: Mapping[int, int]
    budgets: tuple[Budget, ...]
    multiple: Mapping[int, int] = field(default_factory=dict)
    min_channels: Mapping[int, int] = field(default_factory=dict)
    _costs: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        channels = {int(g): _positive_int(c, f"group {g}: channel count") for g, c in self.channels.items()}
        if not channels:
            raise BudgetError("allocation problem has no prunable groups")
        multiple = {int(g): _positive_int(m, f"group {g}: multiple") for g, m in self.multiple.items()}
        min_channels = {int(g): _positive_int(m, f"group {g}: min_channels")
                        for g, m in self.min_channels.items()}
        budgets = tuple(self.budgets)
        names = [b.name for b in budgets]
        for b in budgets:
            if not isinstance(b, Budget) or not isinstance(b.name, str) or not b.name:
                raise BudgetError(f"budgets must be Budget records with a name, got {b!r}")
        if len(set(names)) != len(names):
            raise BudgetError(f"budget names must be unique, got {names}")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "multiple", multiple)
        object.__setattr__(self, "min_channels", min_channels)
        object.__setattr__(self, "budgets", budgets)
        index = {g: i for i, g in enumerate(self.groups)}
        object.__setattr__(self, "_costs", tuple(_Cost(b.cost, index, len(index)) for b in budgets))

    # --- per-group rules
    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(sorted(self.channels))

    def multiple_of(self, g: int) -> int:
        return self.multiple.get(g, 1)

    def min_count(self, g: int) -> int:
        """Smallest allowed kept count: min_channels raised to a multiple, capped at C_g."""
        m, c = self.multiple_of(g), self.channels[g]
        mc = self.min_channels.get(g, max(1, m))
        return min(c, -(-mc // m) * m)

    def x_min(self, g: int) -> float:
        return self.min_count(g) / self.channels[g]

    def allowed_counts(self, g: int) -> list[int]:
        m, c, lo = self.multiple_of(g), self.channels[g], self.min_count(g)
        out = list(range(lo, c + 1, m)) if lo % m == 0 else []
        return out if out and out[-1] == c else out + [c]

    def budget(self, name: str) -> Budget:
        for b in self.budgets:
            if b.name == name:
                return b
        raise KeyError(name)

    # --- arrays in group order
    def _arrays(self):
        gs = self.groups
        return (np.array([self.channels[g] for g in gs], dtype=np.int64),
                np.array([self.multiple_of(g) for g in gs], dtype=np.int64),
                np.array([self.min_count(g) for g in gs], dtype=np.int64))

    def _as_dict(self, arr) -> dict:
        return {g: arr[i].item() for i, g in enumerate(self.groups)}


def _positive_int(v, what: str) -> int:
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise BudgetError(f"{what} must be a positive integer, got {v!r}") from None
    if iv != v or iv < 1:
        raise BudgetError(f"{what} must be a positive integer, got {v!r}")
    return iv


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Allocation:
    """Kept channels per group, the continuous ratios before rounding, and the budget figures."""

    counts: dict[int, int]
    ratios: dict[int, float]
    achieved: dict[str, float]
    requested: dict[str, float]
    method: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (group ids become string keys)."""
        return {"method": self.method,
                "counts": {str(g): int(n) for g, n in self.counts.items()},
                "ratios": {str(g): float(r) for g, r in self.ratios.items()},
                "achieved": {k: float(v) for k, v in self.achieved.items()},
                "requested": {k: float(v) for k, v in self.requested.items()},
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Allocation":
        return cls(counts={int(g): int(n) for g, n in d["counts"].items()},
                   ratios={int(g): float(r) for g, r in d["ratios"].items()},
                   achieved={str(k): float(v) for k, v in d["achieved"].items()},
                   requested={str(k): float(v) for k, v in d["requested"].items()},
                   method=str(d["method"]), notes=tuple(str(s) for s in d.get("notes", ())))


# ----------------------------------------------------------------------------- feasibility
def _costs_at(problem: AllocationProblem, x: np.ndarray) -> list[float]:
    return [c.value(x) for c in problem._costs]


def max_reduction(problem: AllocationProblem) -> dict[str, float]:
    """Cost of every budget with every group at its minimum count: the largest reachable cut."""
    ch, _, lo = problem._arrays()
    x = lo / ch
    return {b.name: v for b, v in zip(problem.budgets, _costs_at(problem, x))}


def _floor_text(problem: AllocationProblem, floors: np.ndarray | None) -> str:
    if floors is not None:
        return "with the requested keep-ratio floor x_min"
    mins = {problem.min_count(g) for g in problem.groups}
    if len(mins) == 1:
        k = mins.pop()
        return f"with at least {k} channel{'s' if k != 1 else ''} per group"
    return "with every group at its smallest allowed count (min_channels, multiples)"


def _check(problem: AllocationProblem, floors: np.ndarray | None = None) -> None:
    ch, _, lo = problem._arrays()
    x_lo = (lo if floors is None else floors) / ch
    for b, cost in zip(problem.budgets, problem._costs):
        t = b.target
        what = _display(b.name)
        if not isinstance(t, (int, float, np.floating, np.integer)) or not math.isfinite(t):
            raise BudgetError(f"{what} target must be a finite number, got {t!r}")
        if t < 0:
            raise BudgetError(f"{what} target {t:g} is negative")
        low, full = cost.value(x_lo), b.cost.full()
        if t >= low:
            continue
        if full <= 0:
            raise BudgetError(f"{what} target {t:g} is below the smallest reachable cost {low:g}")
        want, reach = 100 * (1 - t / full), 100 * (1 - low / full)
        digits = 1
        while f"{want:.{digits}f}" == f"{reach:.{digits}f}" and digits < 6:
            digits += 1
        raise BudgetError(
            f"cannot remove {want:.{digits}f} % of {what}: at most {reach:.{digits}f} % is reachable "
            f"{_floor_text(problem, floors)} (target {t:.6g}, smallest reachable {low:.6g} of {full:.6g})")


def check_feasible(problem: AllocationProblem) -> None:
    """Raise BudgetError when a target is not a finite non-negative number or below the minimum.

    Targets at or above the full cost are valid (that budget is already met). Use
    :meth:`Budget.from_reduction` to reject reductions outside [0, 1).
    """
    _check(problem)


# ----------------------------------------------------------------------------- rounding
def _weights(problem: AllocationProblem, weights: Mapping[int, float] | None, *, positive: bool,
             what: str = "weights") -> np.ndarray:
    if weights is None:
        return np.ones(len(problem.groups))
    missing = [g for g in problem.groups if g not in weights]
    if missing:
        raise BudgetError(f"{what} missing for group(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    w = np.array([float(weights[g]) for g in problem.groups])
    bad = [g for g, v in zip(problem.groups, w) if not math.isfinite(v) or v < 0 or (positive and v <= 0)]
    if bad:
        need = "> 0" if positive else ">= 0"
        raise BudgetError(f"{what} must be finite and {need}; group {bad[0]} has {weights[bad[0]]!r}")
    return w


def _nearest(t: np.ndarray, ch, mult, lo) -> np.ndarray:
    """Nearest allowed count to t (ties to the larger); allowed = multiples in [lo, C] and C."""
    t = np.clip(t, lo, ch)
    down = np.maximum((np.floor(t / mult) * mult).astype(np.int64), lo)
    up = np.minimum(down + mult, ch)
    up = np.where(down >= ch, ch, up)
    return np.where(t - down < up - t, down, up)


def _round(problem: AllocationProblem, x: np.ndarray, w: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Snap ratios to allowed counts >= floors, repair the budgets, then fill the slack greedily.

    Each step costs O(terms); the number of steps is the number of multiples between the snapped
    counts and the budget, a few per group when the ratios come from a solver.
    """
    ch, mult, _ = problem._arrays()
    w = w / w.max() if w.max() > 0 else np.ones_like(w)
    n = _nearest(x * ch, ch, mult, floors)
    costs = problem._costs
    priced = np.zeros(len(n), dtype=bool)
    for c in costs:
        priced[c.inc_g] = True
    n = np.where(priced, n, ch)                         # groups no budget counts stay full
    targets = np.array([b.target for b in problem.budgets], dtype=float)
    fulls = np.array([max(b.cost.full(), 1e-300) for b in problem.budgets])
    tol = _REL_TOL * fulls
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:                                     # repair: remove until every budget holds
            xc = n / ch
            vals = np.array([c.value(xc) for c in costs])
            violated = np.flatnonzero(vals > targets + tol)
            if violated.size == 0:
                break
            lower = (n - 1) // mult * mult
            ok = lower >= floors
            xn = np.where(ok, lower, n) / ch
            red = sum(-costs[b].deltas(xc, xn) / fulls[b] for b in violated)
            loss = w * np.log(n / np.where(ok, lower, n))
            score = np.where(ok & (red > 0), red / loss, -np.inf)   # loss 0 (weight 0) -> inf
            if not (score > -np.inf).any():
                raise BudgetError("rounding cannot meet the budget: no group can shrink further")
            n = n.copy()
            i = int(np.argmax(score))                   # first maximum: lowest group id
            n[i] = lower[i]
        while True:                                     # fill: add while every budget holds
            xc = n / ch
            vals = np.array([c.value(xc) for c in costs])
            higher = np.minimum((n // mult + 1) * mult, ch)
            ok = n < ch
            if not ok.any():
                break
            xn = np.where(ok, higher, n) / ch
            d = np.array([c.deltas(xc, xn) for c in costs]) if costs else np.zeros((0, len(n)))
            fits = ok & np.all(vals[:, None] + d <= targets[:, None], axis=0)
            if not fits.any():
                break
            gain = w * np.log(np.where(ok, higher, n) / n)
            inc = (d / fulls[:, None]).sum(axis=0)
            score = np.where(inc > 0, gain / inc, np.inf)
            score = np.where(fits, score, -np.inf)
            i = int(np.argmax(score))
            n = n.copy()
            n[i] = higher[i]
    return n


def round_counts(problem: AllocationProblem, ratios: Mapping[int, float],
                 weights: Mapping[int, float] | None = None) -> dict[int, int]:
    """Integer kept counts close to ``ratios`` that meet every budget (see module docstring).

    Groups missing from ``ratios`` count as 1.0; ``weights`` (>= 0, default 1) weigh the lost
    log-ratio in the repair. Deterministic: ties go to the lowest group id.
    """
    _check(problem)
    x = np.array([float(ratios.get(g, 1.0)) for g in problem.groups])
    if not np.isfinite(x).all():
        raise BudgetError("ratios must be finite")
    w = _weights(problem, weights, positive=False)
    _, _, lo = problem._arrays()
    return problem._as_dict(_round(problem, x, w, lo))


# ----------------------------------------------------------------------------- helpers
def _floors(problem: AllocationProblem, x_min) -> np.ndarray:
    """Smallest allowed count per group honouring both min_channels and an optional ratio floor."""
    ch, mult, lo = problem._arrays()
    if x_min is None:
        return lo
    if isinstance(x_min, Mapping):
        r = np.array([float(x_min.get(g, 0.0)) for g in problem.groups])
    else:
        r = np.full(len(ch), float(x_min))
    if not np.isfinite(r).all() or (r < 0).any() or (r > 1).any():
        raise BudgetError(f"x_min must lie in [0, 1], got {x_min!r}")
    need = np.maximum(lo, np.ceil(r * ch - 1e-9).astype(np.int64))
    return np.where(need >= ch, ch, np.minimum(-(-need // mult) * mult, ch))


def _active(problem: AllocationProblem):
    """(compiled cost, target) of the budgets that bind somewhere below full width."""
    return [(c, b.target) for b, c in zip(problem.budgets, problem._costs)
            if c.coef.size and b.target < c.value(np.ones(c.n))]


def _uniform_ratio(problem: AllocationProblem, lo_x: np.ndarray) -> float:
    """Largest r in [0, 1] with every budget met at x = max(r, lo_x); bisection (monotone)."""
    def ok(r):
        x = np.maximum(r, lo_x)
        return all(c.value(x) <= b.target for b, c in zip(problem.budgets, problem._costs))
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


def _result(problem, method, x, counts, notes) -> Allocation:
    counts_d = problem._as_dict(counts)
    ratios_x = {g: counts_d[g] / problem.channels[g] for g in problem.groups}
    return Allocation(counts=counts_d,
                      ratios={g: float(v) for g, v in problem._as_dict(np.asarray(x, float)).items()},
                      achieved={b.name: b.cost.value(ratios_x) for b in problem.budgets},
                      requested={b.name: float(b.target) for b in problem.budgets},
                      method=method, notes=tuple(notes))


# ----------------------------------------------------------------------------- methods
def allocate_uniform(problem: AllocationProblem) -> Allocation:
    """One keep-ratio for all groups (each floored at its minimum), then rounding."""
    _check(problem)
    ch, _, lo = problem._arrays()
    lo_x = lo / ch
    r = _uniform_ratio(problem, lo_x)
    x = np.maximum(r, lo_x)
    notes = [f"uniform keep-ratio {r:.6f}"]
    if (lo_x > r).any():
        notes.append(f"{int((lo_x > r).sum())} group(s) held at their minimum count above the ratio")
    return _result(problem, "uniform", x, _round(problem, x, np.ones(len(ch)), lo), notes)


def _gp_cvxpy(active, w: np.ndarray, lo_x: np.ndarray) -> tuple[np.ndarray, str]:
    import cvxpy as cp
    n = len(w)
    x = cp.Variable(n, pos=True)
    cons = [x >= lo_x, x <= 1]
    for cost, target in active:
        c = cost.coef / (target - cost.const)
        cons.append(cp.sum(cp.multiply(c, cp.gmatmul(cost.exponents(), x))) <= 1)
    prob = cp.Problem(cp.Maximize(cp.gmatmul(w[None, :], x)[0]), cons)
    # The objective is linear in log x and the budget's curvature can be small, so the ratios are
    # only as accurate as the square root of the duality gap: ask Clarabel for a tight one.
    opts = dict(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
                tol_ktratio=1e-10, max_iter=500) if "CLARABEL" in cp.installed_solvers() else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(gp=True, **opts)
    if prob.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise RuntimeError(f"status {prob.status}")
    val = np.asarray(x.value, dtype=float)
    if not np.isfinite(val).all():
        raise RuntimeError("non-finite solution")
    return np.clip(val, lo_x, 1.0), f"cvxpy {prob.solver_stats.solver_name} ({prob.status})"


def _gp_scipy(active, w: np.ndarray, lo_x: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, str]:
    """Same problem in y = log x: minimise -w.y s.t. log(sum c exp(E y)) <= log(target - const)."""
    from scipy.optimize import minimize
    n = len(w)
    ws = w / n
    cons = []
    for cost, target in active:
        rhs = math.log(target - cost.const)

        def fun(y, cost=cost, rhs=rhs):
            return rhs - math.log(cost.value(np.exp(y)) - cost.const)

        def jac(y, cost=cost):
            x = np.exp(y)
            return -x * cost.grad(x) / (cost.value(x) - cost.const)
        cons.append({"type": "ineq", "fun": fun, "jac": jac})
    ylo = np.log(lo_x)
    res = minimize(lambda y: -float(ws @ y), np.clip(np.log(x0), ylo, 0.0), jac=lambda y: -ws,
                   method="SLSQP", bounds=list(zip(ylo, np.zeros(n))), constraints=cons,
                   options={"maxiter": 2000, "ftol": 1e-14})
    y = np.clip(res.x, ylo, 0.0)
    worst = min((c["fun"](y) for c in cons), default=0.0)
    if not np.isfinite(y).all() or worst < -1e-7 or res.status not in (0, 8):
        raise SolverError(f"scipy SLSQP (log variables) failed: {res.message} "
                          f"(worst log-budget violation {-worst:.3g})")
    how = "scipy SLSQP in log variables"
    if res.status == 8:
        how += " (stopped at its line-search precision limit, budgets met)"
    return np.exp(y), how


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
    w = _weights(problem, weights, positive=True)
    w = w / w.mean()
    floors = _floors(problem, x_min)
    _check(problem, None if x_min is None else floors)
    ch, _, _ = problem._arrays()
    lo_x = floors / ch
    active = _active(problem)
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
                x, how = _gp_cvxpy(active, w, lo_x)
                notes.append(f"solved by {how}")
            except Exception as exc:  # cvxpy raises many types (SolverError, DGPError, ...)
                err = f"{type(exc).__name__}: {exc}"
                if backend == "cvxpy":
                    raise SolverError(f"cvxpy geometric program failed ({err})") from None
        if x is None:
            x0 = np.maximum(_uniform_ratio(problem, lo_x), lo_x)
            x, how = _gp_scipy(active, w, lo_x, x0)
            notes.append(f"solved by {how}" if err is None else
                         f"cvxpy failed ({err}); solver fell back to {how}")
    return _result(problem, "convex", x, _round(problem, x, w, floors), notes)


def _slsqp_linear(problem: AllocationProblem, a: np.ndarray, lo_x: np.ndarray):
    """ITPruner's solve: minimise -a.x from x = 1 with SLSQP, scipy's default options."""
    from scipy.optimize import minimize
    cons = []
    for b, cost in zip(problem.budgets, problem._costs):
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
    a = _weights(problem, weights, positive=False)
    floors = _floors(problem, x_min)
    _check(problem, None if x_min is None else floors)
    ch, _, _ = problem._arrays()
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
    return _result(problem, "linear", x, _round(problem, x, a, floors), notes)


def allocate_global(problem: AllocationProblem, scores: Mapping[int, np.ndarray]) -> Allocation:
    """Remove the globally lowest-scored channels until every budget is met, then round.

    Each group's scores are divided by the group's mean absolute score (its mean, for the
    non-negative criteria L1/L2/rank) so groups of different scale compare. Channels are removed
    lowest first (ties: group id, then channel index), never below a group's minimum count. The
    one-at-a-time removal is run as a binary search over the sorted removal sequence (costs only
    fall as channels go), O(N log N) for N channels in all.
    """
    _check(problem)
    ch, _, lo = problem._arrays()
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
        return all(c.value(x) <= t for c, t in zip(problem._costs, targets))
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
    return _result(problem, "global", x, _round(problem, x, np.ones(len(ch)), lo), notes)


def allocate(problem: AllocationProblem, method: str, weights: Mapping[int, float] | None = None,
             scores: Mapping[int, np.ndarray] | None = None, *,
             x_min: float | Mapping[int, float] | None = None) -> Allocation:
    """Run one method ('uniform' | 'convex' | 'linear' | 'global') and return its Allocation.

    ``weights`` feed 'convex' and 'linear' (default: 1 for every group, noted); ``scores`` (one
    array per group) feed 'global'; ``x_min`` applies to 'convex' and 'linear'.
    """
    if method == "uniform":
        alloc = allocate_uniform(problem)
        extra = ["weights ignored by the uniform method"] if weights is not None else []
    elif method in ("convex", "linear"):
        extra = []
        if weights is None:
            weights = {g: 1.0 for g in problem.groups}
            extra = ["no weights given: every group weighs 1"]
        fn = allocate_convex if method == "convex" else allocate_linear
        alloc = fn(problem, weights, x_min)
    elif method == "global":
        if scores is None:
            raise BudgetError("method 'global' needs per-channel scores for every group")
        alloc = allocate_global(problem, scores)
        extra = []
    else:
        raise BudgetError(f"unknown allocation method {method!r}; choose one of {', '.join(METHODS)}")
    if not extra:
        return alloc
    return Allocation(alloc.counts, alloc.ratios, alloc.achieved, alloc.requested, alloc.method,
                      tuple(extra) + alloc.notes)
