"""Allocation: budgets and bounds after rounding, the convex optimum, ITPruner's linear mode,
the global ranking, and the rounding repair."""
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import onnxprune.allocate.solvers as solvers
from onnxprune.allocate import (Allocation, AllocationProblem, Budget, Posynomial, allocate,
                                  allocate_convex, allocate_global, allocate_linear, allocate_uniform,
                                  check_feasible, max_reduction, round_counts)
from onnxprune.errors import BudgetError, SolverError

METHODS = ("uniform", "convex", "linear", "global")


def resnet_costs(widths=(64, 128, 256), blocks=2, hw=(32, 16, 8), classes=10):
    """MACs and params posynomials of a 3-stage CIFAR-style ResNet.

    Residual groups 0, 1, 2 (one per stage) are shared by the stem / block outputs / shortcuts;
    groups 10.. are the block-internal widths. Convs cost k*k*C_in*C_out*H*W * x_in * x_out, BN
    params are linear terms, the classifier is linear in the last residual group, and the
    constants stand for fixed layers (biases, the input).
    """
    ch = {0: widths[0], 1: widths[1], 2: widths[2]}
    macs = [(9 * 3 * widths[0] * hw[0] ** 2, (0,))]
    params = [(9 * 3 * widths[0], (0,)), (2 * widths[0], (0,))]
    gid = 10
    for s in range(3):
        h, r = hw[s], s
        for b in range(blocks):
            i, gid = gid, gid + 1
            ch[i] = widths[s]
            src = s - 1 if (b == 0 and s > 0) else r
            cin = ch[src]
            macs += [(9 * cin * ch[i] * h * h, (src, i)), (9 * ch[i] * ch[r] * h * h, (i, r))]
            params += [(9 * cin * ch[i], (src, i)), (9 * ch[i] * ch[r], (i, r)),
                       (2 * ch[i], (i,)), (2 * ch[r], (r,))]
            if b == 0 and s > 0:   # 1x1 projection shortcut
                macs.append((cin * ch[r] * h * h, (src, r)))
                params.append((cin * ch[r], (src, r)))
    macs.append((ch[2] * classes, (2,)))
    params.append((ch[2] * classes, (2,)))
    return ch, Posynomial(tuple(macs), 1000.0), Posynomial(tuple(params), float(classes))


def resnet_problem(macs_cut=0.45, params_cut=None, **kw):
    widths = kw.pop("widths", (64, 128, 256))
    ch, macs, params = resnet_costs(widths)
    budgets = [Budget.from_reduction("macs", macs, macs_cut)]
    if params_cut is not None:
        budgets.append(Budget.from_reduction("params", params, params_cut))
    return AllocationProblem(ch, tuple(budgets), **kw)


def weights_for(problem, seed=0, lo=0.5, hi=2.0):
    rng = np.random.default_rng(seed)
    return {g: float(rng.uniform(lo, hi)) for g in problem.groups}


def scores_for(problem, seed=0):
    rng = np.random.default_rng(seed)
    # very different scales per group: the global ranking must normalise them
    return {g: rng.random(c) * 10.0 ** (i % 4) for i, (g, c) in enumerate(problem.channels.items())}


def run(problem, method, seed=0):
    return allocate(problem, method, weights=weights_for(problem, seed), scores=scores_for(problem, seed))


def assert_valid(problem, alloc):
    """Budgets met at the integer counts, counts allowed, and the reported figures true."""
    assert set(alloc.counts) == set(problem.groups)
    for g, n in alloc.counts.items():
        c, m = problem.channels[g], problem.multiple_of(g)
        assert isinstance(n, int)
        assert problem.min_count(g) <= n <= c and n >= 1
        assert n % m == 0 or n == c, (g, n, m, c)
    ratios = {g: n / problem.channels[g] for g, n in alloc.counts.items()}
    for b in problem.budgets:
        assert alloc.achieved[b.name] == pytest.approx(b.cost.value(ratios), rel=1e-12)
        # float rounding only: the repair compares with the target itself
        assert alloc.achieved[b.name] <= b.target + 1e-9 * b.cost.full()
        assert alloc.requested[b.name] == b.target


# ----------------------------------------------------------------------------- cost model
def test_posynomial_value_full_and_squares():
    p = Posynomial(((2.0, (1, 2)), (3.0, (1,)), (4.0, (5, 5)), (1.0, ())), constant=7.0)
    assert p.full() == 17.0
    assert p.value({}) == 17.0                      # missing groups count as 1
    assert p.value({1: 0.5, 2: 0.5, 5: 0.5}) == pytest.approx(2 * 0.25 + 1.5 + 4 * 0.25 + 1 + 7)
    with pytest.raises(BudgetError):
        Posynomial(((-1.0, (1,)),))
    with pytest.raises(BudgetError):
        Posynomial(((float("nan"), (1,)),))


def test_problem_rules_multiples_and_minimum():
    p = Posynomial(((1.0, (1,)), (1.0, (2,)), (1.0, (3,))))
    prob = AllocationProblem({1: 20, 2: 4, 3: 64}, (Budget("macs", p, 3.0),),
                             multiple={1: 8, 2: 8, 3: 8}, min_channels={3: 10})
    assert prob.allowed_counts(1) == [8, 16, 20]          # C itself allowed, not a multiple
    assert prob.min_count(2) == 4 and prob.allowed_counts(2) == [4]   # C below the multiple
    assert prob.min_count(3) == 16                        # 10 raised to a multiple of 8
    assert prob.x_min(1) == 8 / 20
    assert AllocationProblem({1: 5}, (Budget("macs", p, 3.0),)).min_count(1) == 1
    with pytest.raises(BudgetError):
        AllocationProblem({1: 0}, (Budget("macs", p, 1.0),))
    with pytest.raises(BudgetError):
        AllocationProblem({1: 8}, (Budget("macs", p, 1.0), Budget("macs", p, 2.0)))
    with pytest.raises(BudgetError):
        AllocationProblem({1: 8}, (Budget("macs", p, 1.0),), multiple={1: 0})


# ----------------------------------------------------------------------------- feasibility
def test_impossible_budget_reports_the_reachable_maximum():
    ch, macs, _ = resnet_costs((16, 32, 64))
    # layers that are not pruned (a blocked group, the input side) add 10 % of the MACs as a constant
    macs = Posynomial(macs.terms, macs.constant + macs.full() / 9)
    prob = AllocationProblem(ch, (Budget.from_reduction("macs", macs, 0.95),))
    low = max_reduction(prob)["macs"]
    reach = 100 * (1 - low / macs.full())
    assert 85 < reach < 90
    msg = f"cannot remove 95.0 % of MACs: at most {reach:.1f} % is reachable with at least 1 channel per group"
    with pytest.raises(BudgetError, match=re.escape(msg)):
        check_feasible(prob)
    for method in METHODS:
        with pytest.raises(BudgetError, match="cannot remove 95.0 % of MACs"):
            run(prob, method)
    # the reachable maximum itself is feasible and reached by every group at its minimum
    at_min = AllocationProblem(ch, (Budget("macs", macs, low),))
    alloc = allocate_uniform(at_min)
    assert alloc.counts == {g: 1 for g in ch}


def test_invalid_targets():
    _, macs, _ = resnet_costs()
    ch = {0: 64, 1: 128, 2: 256}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(BudgetError):
            check_feasible(AllocationProblem(ch, (Budget("macs", macs, bad),)))
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(BudgetError, match="reduction"):
            Budget.from_reduction("macs", macs, bad)
    # a target above the full cost is already met: everything is kept
    prob = AllocationProblem(ch, (Budget("macs", macs, 2 * macs.full()),))
    for method in ("uniform", "convex"):
        assert run(prob, method).counts == ch


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("method", METHODS)
def test_every_method_meets_budget_and_bounds(method):
    prob = resnet_problem(0.45)
    alloc = run(prob, method)
    assert_valid(prob, alloc)
    assert alloc.method == method
    assert set(alloc.ratios) == set(prob.groups)
    assert all(prob.x_min(g) - 1e-9 <= r <= 1 + 1e-9 for g, r in alloc.ratios.items())


@pytest.mark.parametrize("method", METHODS)
def test_multiples_and_min_channels_respected(method):
    # 60 and 20 are not multiples of 8: the full width stays allowed, other counts are multiples
    widths = (24, 40, 60)
    ch, macs, _ = resnet_costs(widths)
    ch[11] = 20
    prob = AllocationProblem(ch, (Budget.from_reduction("macs", macs, 0.5),),
                             multiple={g: 8 for g in ch}, min_channels={0: 16, 1: 16, 2: 16})
    alloc = run(prob, method)
    assert_valid(prob, alloc)
    assert all(alloc.counts[g] >= 16 for g in (0, 1, 2))


@pytest.mark.parametrize("method", ("uniform", "convex"))
def test_achieved_within_one_percent_of_target(method):
    for cut in (0.3, 0.45, 0.6):
        prob = resnet_problem(cut)
        alloc = run(prob, method)
        full = prob.budgets[0].cost.full()
        assert 0 <= prob.budgets[0].target - alloc.achieved["macs"] <= 0.01 * full


@pytest.mark.parametrize("method", METHODS)
def test_two_budgets_at_once(method):
    prob = resnet_problem(macs_cut=0.3, params_cut=0.6)
    alloc = run(prob, method)
    assert_valid(prob, alloc)
    macs, params = prob.budgets
    only_macs = run(resnet_problem(macs_cut=0.3), method).counts
    over = params.cost.value({g: n / prob.channels[g] for g, n in only_macs.items()}) > params.target
    # the MACs budget alone leaves too many parameters, except in ITPruner's linear mode, whose
    # objective already strips the parameter-heavy last stage
    assert over == (method != "linear")
    if over:
        assert alloc.counts != only_macs
    if method == "convex":   # at the continuous optimum the params budget binds
        assert params.cost.value(alloc.ratios) == pytest.approx(params.target, rel=1e-6)
        assert macs.cost.value(alloc.ratios) <= macs.target


# ----------------------------------------------------------------------------- convex
def ring_problem(weights_c=10.0, cut=0.7):
    """Four groups in a ring, c * x_i * x_{i+1} + x_i: groups 0 and 2 (and 1 and 3) are twins."""
    terms = [(weights_c, (i, (i + 1) % 4)) for i in range(4)] + [(1.0, (i,)) for i in range(4)]
    cost = Posynomial(tuple(terms), 3.0)
    return AllocationProblem({i: 512 for i in range(4)}, (Budget.from_reduction("macs", cost, cut),))


def test_convex_larger_weight_gets_larger_ratio():
    prob = ring_problem()
    alloc = allocate_convex(prob, {0: 1.2, 1: 1.0, 2: 0.6, 3: 1.0})
    x = alloc.ratios
    assert x[0] > x[2] and max(x.values()) < 0.99       # every ratio strictly inside its bounds
    # KKT: twins have the same marginal cost, so their ratios are in the ratio of their weights
    assert x[0] / x[2] == pytest.approx(2.0, rel=1e-6)
    assert x[1] == pytest.approx(x[3], rel=1e-6)
    assert alloc.counts[0] > alloc.counts[2]
    assert_valid(prob, alloc)
    # on the ResNet, raising one group's weight raises its ratio
    rn = resnet_problem(0.5)
    w = {g: 1.0 for g in rn.groups}
    base = allocate_convex(rn, w).ratios
    inside = [g for g in rn.groups if base[g] < 0.99]
    assert len(inside) >= 3
    for g in inside:
        assert allocate_convex(rn, {**w, g: 2.0}).ratios[g] > base[g] + 1e-3


def test_convex_equal_weights_symmetric_costs_equal_ratios():
    prob = ring_problem()
    alloc = allocate_convex(prob, {i: 0.7 for i in range(4)})
    r = [alloc.ratios[i] for i in range(4)]
    assert max(r) - min(r) < 1e-6
    assert 0.3 < r[0] < 0.9
    assert len(set(alloc.counts.values())) <= 2      # rounding moves at most one step apart


def test_convex_cvxpy_matches_scipy_log_variables():
    prob = resnet_problem(macs_cut=0.45, params_cut=0.5)
    w = weights_for(prob, seed=3)
    a = allocate_convex(prob, w, backend="cvxpy")
    b = allocate_convex(prob, w, backend="scipy")
    assert any("cvxpy" in n for n in a.notes) and any("scipy" in n for n in b.notes)
    for g in prob.groups:
        assert a.ratios[g] == pytest.approx(b.ratios[g], abs=1e-6)

    def objective(r):
        return sum(w[g] * math.log(r[g]) for g in prob.groups)
    assert objective(a.ratios) == pytest.approx(objective(b.ratios), abs=1e-8)
    for x in (a.ratios, b.ratios):     # the continuous optimum meets both budgets (solver tolerance)
        for bud in prob.budgets:
            assert bud.cost.value(x) <= bud.target * (1 + 1e-6)
    # the optimum binds: no budget slack left at the continuous solution
    assert max(bud.cost.value(b.ratios) / bud.target for bud in prob.budgets) == pytest.approx(1, abs=1e-6)


def test_convex_weight_scale_does_not_matter():
    prob = resnet_problem(0.45)
    w = weights_for(prob, seed=1)
    a = allocate_convex(prob, w)
    b = allocate_convex(prob, {g: v * 1e-24 for g, v in w.items()})
    assert a.counts == b.counts
    for g in prob.groups:
        assert a.ratios[g] == pytest.approx(b.ratios[g], abs=1e-5)


def test_convex_falls_back_to_scipy(monkeypatch):
    prob = resnet_problem(0.45)
    w = weights_for(prob)
    ref = allocate_convex(prob, w, backend="scipy")

    def broken(*args, **kwargs):
        raise RuntimeError("solver crashed")
    monkeypatch.setattr(solvers, "gp_cvxpy", broken)
    alloc = allocate_convex(prob, w)
    assert any("solver fell back to scipy" in n and "solver crashed" in n for n in alloc.notes)
    assert alloc.counts == ref.counts
    with pytest.raises(SolverError):
        allocate_convex(prob, w, backend="cvxpy")

    import scipy.optimize
    from scipy.optimize import OptimizeResult

    def failing(fun, x0, **kwargs):
        return OptimizeResult(x=np.asarray(x0), status=9, success=False, message="Iteration limit reached")
    monkeypatch.setattr(scipy.optimize, "minimize", failing)
    with pytest.raises(SolverError, match="Iteration limit"):
        allocate_convex(prob, w)


def test_convex_validates_weights_and_floor():
    prob = resnet_problem(0.45)
    good = weights_for(prob)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(BudgetError, match="weights"):
            allocate_convex(prob, {**good, 0: bad})
    with pytest.raises(BudgetError, match="missing"):
        allocate_convex(prob, {g: 1.0 for g in prob.groups[1:]})
    alloc = allocate_convex(prob, good, x_min=0.5)
    assert all(alloc.counts[g] >= math.ceil(0.5 * prob.channels[g]) for g in prob.groups)
    assert all(r >= 0.5 - 1e-9 for r in alloc.ratios.values())
    assert_valid(prob, alloc)
    with pytest.raises(BudgetError, match="x_min"):
        allocate_convex(prob, good, x_min=0.9)


# ----------------------------------------------------------------------------- linear (ITPruner)
def test_linear_notes_when_importances_do_not_matter():
    prob = resnet_problem(0.45)
    rng = np.random.default_rng(0)
    # beta = 2000 regime: alpha = exp(-beta * s) ~ 1e-24
    tiny = {g: 1e-24 * (1 + rng.random()) for g in prob.groups}
    alloc = allocate_linear(prob, tiny)
    assert any(n.startswith("importances did not affect the allocation (weights span 1") for n in alloc.notes)
    assert_valid(prob, alloc)
    # importances that do matter: no such note, and the allocation changes with them
    spread = {g: float(np.exp(-5 * rng.random())) for g in prob.groups}
    other = allocate_linear(prob, spread)
    assert not any("did not affect" in n for n in other.notes)
    assert max(abs(other.ratios[g] - alloc.ratios[g]) for g in prob.groups) > 1e-2
    assert_valid(prob, other)


def test_linear_reports_groups_driven_to_the_floor():
    prob = resnet_problem(0.45)
    w = {g: 1.0 for g in prob.groups}
    w[2] = 0.01                       # the last residual width matters little
    alloc = allocate_linear(prob, w)
    assert alloc.ratios[2] == pytest.approx(prob.x_min(2), abs=1e-9)   # 1 of 256 channels
    assert alloc.counts[2] <= 4                                         # the fill may add a few
    assert any("at the floor x_min" in n for n in alloc.notes)
    assert_valid(prob, alloc)


# ----------------------------------------------------------------------------- global
def test_global_removes_lowest_scored_channels_first():
    prob = resnet_problem(0.45, min_channels={0: 8, 1: 8, 2: 8})
    scores = scores_for(prob, seed=5)
    alloc = allocate_global(prob, scores)
    assert_valid(prob, alloc)
    removed, kept = [], []
    for g in prob.groups:
        s = np.sort(scores[g] / np.abs(scores[g]).mean())
        n = round(alloc.ratios[g] * prob.channels[g])          # before rounding
        assert alloc.ratios[g] * prob.channels[g] == pytest.approx(n, abs=1e-9)
        cut = prob.channels[g] - n
        removed += list(s[:cut])
        if n > prob.min_count(g):                              # groups at the floor keep low ones
            kept += list(s[cut:])
    assert removed and kept
    assert max(removed) <= min(kept)
    # per-group scale does not matter after normalisation
    rescaled = {g: v * (1000.0 if g % 2 else 0.001) for g, v in scores.items()}
    assert allocate_global(prob, rescaled).counts == alloc.counts


def test_global_obvious_ranking():
    cost = Posynomial(((1.0, (1,)), (1.0, (2,))))
    prob = AllocationProblem({1: 4, 2: 4}, (Budget("macs", cost, 1.0),))
    scores = {1: np.array([1.0, 1.0, 1.0, 1.0]), 2: np.array([0.1, 3.7, 0.1, 0.1])}
    alloc = allocate_global(prob, scores)
    # 4 of 8 channels must go: group 2's three 0.1s first (it stops at its 1-channel minimum,
    # keeping the 3.7), then one of group 1's
    assert alloc.counts == {1: 3, 2: 1}
    # the same scores ten times larger in group 1 change nothing (each group is normalised)
    assert allocate_global(prob, {1: 10 * scores[1], 2: scores[2]}).counts == {1: 3, 2: 1}
    with pytest.raises(BudgetError, match="scores"):
        allocate_global(prob, {1: np.ones(4), 2: np.ones(3)})


def test_global_is_fast_on_a_large_model():
    import time
    g_count, c = 300, 2048
    cost = Posynomial(tuple((1.0, (g, g + 1)) for g in range(g_count - 1))
                      + tuple((5.0, (g,)) for g in range(g_count)), 10.0)
    prob = AllocationProblem({g: c for g in range(g_count)}, (Budget.from_reduction("macs", cost, 0.5),),
                             multiple={g: 8 for g in range(g_count)})
    rng = np.random.default_rng(0)
    scores = {g: rng.random(c) * (g + 1) for g in range(g_count)}
    t = time.perf_counter()
    alloc = allocate_global(prob, scores)
    assert time.perf_counter() - t < 5.0
    assert_valid(prob, alloc)
    assert prob.budgets[0].target - alloc.achieved["macs"] <= 0.01 * cost.full()


# ----------------------------------------------------------------------------- rounding
def test_round_counts_repair_tie_breaks_by_group_id():
    cost = Posynomial(((1.0, (3,)), (1.0, (5,))))
    prob = AllocationProblem({3: 16, 5: 16}, (Budget("macs", cost, 17 / 16),))
    assert round_counts(prob, {3: 9 / 16, 5: 9 / 16}) == {3: 8, 5: 9}
    # importance decides before the id does
    assert round_counts(prob, {3: 9 / 16, 5: 9 / 16}, weights={3: 10.0, 5: 1.0}) == {3: 9, 5: 8}


def test_round_counts_repair_prefers_large_reduction_per_loss():
    # group 1 is 4x more expensive per channel: one step there saves the budget
    cost = Posynomial(((4.0, (1,)), (1.0, (2,))))
    prob = AllocationProblem({1: 16, 2: 16}, (Budget("macs", cost, 4 * 8 / 16 + 8 / 16 + 0.1),))
    assert round_counts(prob, {1: 9 / 16, 2: 9 / 16}) == {1: 8, 2: 9}


def test_round_counts_multiples_and_fill():
    cost = Posynomial(((1.0, (1, 2)), (1.0, (2,))))
    prob = AllocationProblem({1: 20, 2: 64}, (Budget("macs", cost, 1.0),), multiple={1: 8, 2: 8})
    counts = round_counts(prob, {1: 0.95, 2: 0.2})
    assert counts[1] in (8, 16, 20) and counts[2] % 8 == 0
    assert counts[1] == 20               # 19 rounds to the full width, not to a multiple
    x = {g: n / prob.channels[g] for g, n in counts.items()}
    assert cost.value(x) <= 1.0
    # the greedy fill leaves less slack than any single step would take
    for g in prob.groups:
        if counts[g] < prob.channels[g]:
            up = min(counts[g] + 8, prob.channels[g])
            assert cost.value({**x, g: up / prob.channels[g]}) > 1.0
    # the repair never goes below the minimum
    tight = AllocationProblem({1: 20, 2: 64}, (Budget("macs", cost, cost.value({1: 0.4, 2: 0.125})),),
                              multiple={1: 8, 2: 8})
    assert round_counts(tight, {1: 0.5, 2: 0.5}) == {1: 8, 2: 8}


def test_round_counts_groups_outside_every_budget_stay_full():
    cost = Posynomial(((1.0, (1,)),))
    prob = AllocationProblem({1: 16, 2: 16}, (Budget.from_reduction("macs", cost, np.float32(0.5)),))
    assert round_counts(prob, {1: 0.3, 2: 0.3}) == {1: 8, 2: 16}


# ----------------------------------------------------------------------------- plumbing
def test_allocation_round_trip():
    prob = resnet_problem(0.45, params_cut=0.5)
    alloc = run(prob, "convex")
    again = Allocation.from_dict(json.loads(json.dumps(alloc.to_dict())))
    assert again == alloc
    assert isinstance(next(iter(again.counts)), int)


def test_dispatcher_errors_and_defaults():
    prob = resnet_problem(0.45)
    with pytest.raises(BudgetError, match="unknown allocation method"):
        allocate(prob, "magic")
    with pytest.raises(BudgetError, match="scores"):
        allocate(prob, "global")
    alloc = allocate(prob, "convex")
    assert alloc.notes[0] == "no weights given: every group weighs 1"
    assert_valid(prob, alloc)


def test_module_imports_no_heavy_dependencies():
    code = ("import sys, onnxprune.allocate; "
            "bad = [m for m in ('onnx', 'onnxruntime', 'torch', 'cvxpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
