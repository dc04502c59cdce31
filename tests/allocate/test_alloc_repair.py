"""The one rounding / repair loop: posynomial and exact cost oracles, per-group channel multiples."""
from __future__ import annotations

import pytest

from onnxprune.allocate import (AllocationProblem, Budget, ExactCosts, Posynomial, allocate, repair,
                                resolve_multiples, round_counts)
from onnxprune.errors import BudgetError


def chain_problem(cut=0.45, multiple=None):
    """Four groups in a chain of convs (stem, three layers, classifier), 16..64 channels."""
    ch = {0: 16, 1: 32, 2: 64, 3: 48}
    terms = [(27 * 16 * 1024, (0,)), (9 * 16 * 32 * 1024, (0, 1)), (9 * 32 * 64 * 256, (1, 2)),
             (9 * 64 * 48 * 64, (2, 3)), (48 * 10, (3,))]
    macs = Posynomial(tuple(terms), 500.0)
    return AllocationProblem(ch, (Budget.from_reduction("macs", macs, cut),), multiple=multiple or {})


def posy_cost(problem):
    def cost(counts):
        x = {g: n / problem.channels[g] for g, n in counts.items()}
        return {b.name: b.cost.value(x) for b in problem.budgets}
    return cost


def test_round_to_one_is_the_problem_rounding():
    prob = chain_problem()
    ratios = {0: 0.61, 1: 0.52, 2: 0.43, 3: 0.7}
    assert repair(prob, {g: round(r * prob.channels[g]) for g, r in ratios.items()}, round_to=1) == \
        repair(prob, {g: round(r * prob.channels[g]) for g, r in ratios.items()})
    got = round_counts(prob, ratios)
    x = {g: n / prob.channels[g] for g, n in got.items()}
    assert prob.budgets[0].cost.value(x) <= prob.budgets[0].target
    # one multiple more on any group breaks the budget: the fill used the slack
    for g in prob.groups:
        if got[g] < prob.channels[g]:
            up = {**x, g: (got[g] + 1) / prob.channels[g]}
            assert prob.budgets[0].cost.value(up) > prob.budgets[0].target


@pytest.mark.parametrize("round_to", [4, {0: 8, 2: 16}])
def test_round_to_int_or_per_group_mapping(round_to):
    prob = chain_problem()
    start = {0: 16, 1: 32, 2: 64, 3: 48}            # full width: the loop must shrink
    got = repair(prob, start, round_to=round_to)
    mult = resolve_multiples(round_to, prob.groups)
    for g, n in got.items():
        assert n % mult[g] == 0 or n == prob.channels[g], (g, n, mult[g])
        assert n >= mult[g]
    x = {g: n / prob.channels[g] for g, n in got.items()}
    assert prob.budgets[0].cost.value(x) <= prob.budgets[0].target * (1 + 1e-12)
    # a group's own multiple (e.g. grouped-conv blocks) combines with round_to by lcm
    assert resolve_multiples({0: 4}, [0, 1], {0: 6, 1: 3}) == {0: 12, 1: 3}
    with pytest.raises(BudgetError, match="positive integer"):
        resolve_multiples({0: 0}, [0])


def test_exact_oracle_equal_to_posynomial_gives_the_same_counts():
    prob = chain_problem(0.55)
    start = {0: 12, 1: 24, 2: 40, 3: 40}
    assert repair(prob, start, ExactCosts(prob, posy_cost(prob), rtol=1e-12)) == repair(prob, start)


def test_exact_oracle_shrinks_until_the_exact_cost_meets_the_target():
    prob = chain_problem(0.45)
    alloc = allocate(prob, "uniform")
    base = posy_cost(prob)

    def pricier(counts):        # the exact cost sees 2 % of the full cost more than the posynomial
        return {"macs": base(counts)["macs"] + 0.02 * prob.budgets[0].cost.full()}
    assert pricier(alloc.counts)["macs"] > prob.budgets[0].target     # the repair has work to do
    got = repair(prob, alloc.counts, ExactCosts(prob, pricier), fill="smallest-first", trade=True)
    assert pricier(got)["macs"] <= prob.budgets[0].target * (1 + 1e-9)
    # smallest-first fill + trades: no more than 0.3 % of the budget is left unused, or no single
    # group can grow
    slack = (prob.budgets[0].target - pricier(got)["macs"]) / prob.budgets[0].cost.full()
    grow = [g for g in prob.groups if got[g] < prob.channels[g]
            and pricier({**got, g: got[g] + 1})["macs"] <= prob.budgets[0].target]
    assert slack <= 0.003 or not grow


def test_exact_oracle_out_of_reach_names_the_budget():
    prob = chain_problem(0.45)

    def impossible(counts):
        return {"macs": prob.budgets[0].cost.full()}
    with pytest.raises(BudgetError, match=r"budget \(macs -45.00 %\) is out of reach"):
        repair(prob, {g: 8 for g in prob.groups}, ExactCosts(prob, impossible), fill="smallest-first")
    with pytest.raises(BudgetError, match="fill must be one of"):
        repair(prob, {}, fill="random")
