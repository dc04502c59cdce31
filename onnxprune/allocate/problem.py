"""The allocation problem: posynomial costs, budgets, per-group rounding rules and feasibility.

A group ``g`` with ``C_g`` channels keeps ``n_g`` of them; its keep-ratio is ``x_g = n_g / C_g``.
The graph analysis describes each budgeted quantity (MACs, parameters) as a **posynomial** in x:
``cost(x) = constant + sum_t coef_t * prod_{g in groups_t} x_g`` with ``coef_t >= 0`` (a conv
between groups a and b costs ``c * x_a * x_b``; a group listed twice in a term means ``x_g**2``).
Groups that a term names but the problem does not prune count as ``x = 1``.

NumPy only (scipy.sparse is imported lazily for the exponent matrix).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from onnxprune.errors import BudgetError

__all__ = ["Posynomial", "Budget", "AllocationProblem", "Allocation", "max_reduction",
           "check_feasible", "check_budgets", "check_weights", "costs_at", "floor_counts", "REL_TOL"]

REL_TOL = 1e-12        # budget slack tolerated by the rounding repair, relative to the full cost
_DISPLAY = {"macs": "MACs", "params": "parameters", "flops": "FLOPs"}


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


class CompiledCost:
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
        object.__setattr__(self, "_costs", tuple(CompiledCost(b.cost, index, len(index)) for b in budgets))

    @property
    def compiled(self) -> tuple["CompiledCost", ...]:
        """The budgets' costs compiled against the group order (same order as ``budgets``)."""
        return self._costs

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
    def arrays(self):
        """(channels, multiples, minimum counts) as int arrays in group order."""
        gs = self.groups
        return (np.array([self.channels[g] for g in gs], dtype=np.int64),
                np.array([self.multiple_of(g) for g in gs], dtype=np.int64),
                np.array([self.min_count(g) for g in gs], dtype=np.int64))

    def as_dict(self, arr) -> dict:
        """{group id: value} from an array in group order."""
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
def costs_at(problem: AllocationProblem, x: np.ndarray) -> list[float]:
    return [c.value(x) for c in problem.compiled]


def max_reduction(problem: AllocationProblem) -> dict[str, float]:
    """Cost of every budget with every group at its minimum count: the largest reachable cut."""
    ch, _, lo = problem.arrays()
    x = lo / ch
    return {b.name: v for b, v in zip(problem.budgets, costs_at(problem, x))}


def _floor_text(problem: AllocationProblem, floors: np.ndarray | None) -> str:
    if floors is not None:
        return "with the requested keep-ratio floor x_min"
    mins = {problem.min_count(g) for g in problem.groups}
    if len(mins) == 1:
        k = mins.pop()
        return f"with at least {k} channel{'s' if k != 1 else ''} per group"
    return "with every group at its smallest allowed count (min_channels, multiples)"


def check_budgets(problem: AllocationProblem, floors: np.ndarray | None = None) -> None:
    ch, _, lo = problem.arrays()
    x_lo = (lo if floors is None else floors) / ch
    for b, cost in zip(problem.budgets, problem.compiled):
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
    check_budgets(problem)


def check_weights(problem: AllocationProblem, weights: Mapping[int, float] | None, *, positive: bool,
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


def floor_counts(problem: AllocationProblem, x_min) -> np.ndarray:
    """Smallest allowed count per group honouring both min_channels and an optional ratio floor."""
    ch, mult, lo = problem.arrays()
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


