"""Branch removal in the allocation: the problem without emptied groups, the candidate sizes, the
fastest-within-tolerance pick, and the whole path through the pipeline on a fake engine."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.allocate.emptied import (overshoots, pick_closest_not_slower, pick_fastest_within, removal_sizes,
                                        without_groups)
from onnxprune.allocate.problem import AllocationProblem, Budget, Posynomial
from onnxprune.errors import BudgetError
from tests.latency.test_latency_tables import fake_engine  # noqa: F401 - the fixture


def _problem():
    # a residual width 0 (64 ch) and two branches 1, 2 (16 ch): MACs = 10 + 40 x0 x1 + 40 x1 x0 ...
    cost = Posynomial(((40.0, (0, 1)), (40.0, (1, 0)), (30.0, (0, 2)), (30.0, (2, 0)), (20.0, (0,))), 10.0)
    return AllocationProblem({0: 64, 1: 16, 2: 16}, (Budget.from_reduction("macs", cost, 0.4),),
                             {1: 8}, {2: 2})


def test_without_groups_drops_their_terms_and_keeps_the_target():
    p = _problem()
    q = without_groups(p, [1])
    assert q.groups == (0, 2)
    assert q.budgets[0].target == p.budgets[0].target
    assert q.budgets[0].cost.full() == pytest.approx(10 + 60 + 20)
    assert q.multiple == {} and q.min_channels == {2: 2}
    with pytest.raises(BudgetError):
        without_groups(p, [0, 1, 2])          # nothing left to prune


def test_overshoots_when_emptying_alone_cuts_more_than_asked():
    p = _problem()                     # full 170, the 40 % cut leaves 102
    assert overshoots(p, [1])          # without group 1: 90 left
    assert not overshoots(p, [2])      # without group 2: 110 left, channels still to cut
    assert not overshoots(p, [])


def test_removal_sizes():
    assert removal_sizes(0) == []
    assert removal_sizes(1) == [1]
    assert removal_sizes(3) == [2]
    assert removal_sizes(26) == [2, 4, 6, 8]
    assert removal_sizes(26, most=16) == [2, 4, 6, 8, 12, 16]
    assert removal_sizes(5, most=1) == [1]


def test_pick_fastest_within_tolerance():
    names = ["a", "b", "c", "d"]
    dist = {"a": 0.20, "b": 0.22, "c": 0.24, "d": 0.30}
    lat = {"a": 40.0, "b": 36.0, "c": 33.0, "d": 20.0}
    assert pick_fastest_within(names, dist, lat, "a", 0.0) == "a"
    assert pick_fastest_within(names, dist, lat, "a", 0.15) == "b"     # c is 20 % above the best
    assert pick_fastest_within(names, dist, lat, "a", 0.25) == "c"
    assert pick_fastest_within(names, dist, lat, "a", 1.0) == "d"
    lat["b"] = lat["a"]
    assert pick_fastest_within(names, dist, lat, "a", 0.15) == "a"     # ties keep the order


def test_timings_within_the_slack_count_as_equally_fast():
    """A candidate barely faster than a closer one (inside the timing noise) does not win."""
    names = ["a", "b", "c"]
    dist = {"a": 0.30, "b": 0.25, "c": 0.40}
    lat = {"a": 36.0, "b": 34.0, "c": 33.3}
    assert pick_fastest_within(names, dist, lat, "a", 0.5, slack=0.0) == "c"
    assert pick_fastest_within(names, dist, lat, "a", 0.5, slack=0.03) == "b"     # 34.0 within 3 % of 33.3
    assert pick_fastest_within(names, dist, lat, "a", 0.5, slack=0.10) == "b"     # a too, but b is closer
    lat["a"] = 33.5
    assert pick_fastest_within(names, dist, {**lat, "b": 40.0}, "a", 0.5) == "a"   # c barely faster, a closer


def test_at_equal_latency_the_closest_not_slower_wins():
    """Candidates each allocated where it should land on the latency request: the closest wins,
    unless it runs slower than the channels-only reference beyond the slack (it would land short)."""
    names = ["a", "b", "c", "d"]
    dist = {"a": 1.02, "b": 1.27, "c": 0.67, "d": 0.72}
    lat = {"a": 33.0, "b": 29.4, "c": 31.3, "d": 30.5}
    assert pick_closest_not_slower(names, dist, lat, "a") == "c"        # not the fastest (b)
    assert pick_closest_not_slower(names, dist, {**lat, "c": 34.5}, "a") == "d"    # c 4.5 % slower than a
    assert pick_closest_not_slower(names, dist, {**lat, "c": 33.9}, "a") == "c"    # within the 3 % slack
    assert pick_closest_not_slower(["a"], {"a": 1.0}, {"a": 1.0}, "a") == "a"


def test_branch_removals_too_fast_for_the_request_are_rebuilt_where_they_land(monkeypatch):
    """Under a latency target, a removal expected to overshoot far is allocated again at the lower
    internal budget where it should land (its recipe and branches kept), one that cannot be (the
    removal alone cuts more there) is left out, the others stay; all are timed again together."""
    from onnxprune.allocate.candidates import Candidate
    from onnxprune.pipeline import branches
    from onnxprune.pipeline.measured_latency import LatencyTarget

    class StubPruner:
        def _problem(self, macs_budget):
            return macs_budget

        def _candidates(self, problem, alloc, only=None, emptied=(), suffix=""):
            return [Candidate(only + suffix, {0: round(100 * (1 - problem))}, (), tuple(emptied), only)]

    monkeypatch.setattr(branches, "overshoots", lambda problem, gone: 8 in gone and problem < 0.47)
    timed_again: list = []
    monkeypatch.setattr(branches, "measured_latencies",
                        lambda pruner, cands: (timed_again.append([c.name for c in cands]),
                                               {c.name: 1.0 for c in cands})[1])
    base = Candidate("convex t=1", {0: 50}, recipe="convex t=1")
    cands = [base] + [Candidate(f"convex t=1, {k} branch(es) removed", {0: 50}, (), (k,), "convex t=1")
                      for k in (2, 6, 8)]
    latency = {c.name: t for c, t in zip(cands, (1.0, 0.97, 0.85, 0.80))}
    target = LatencyTarget(requested=0.40, channels_only=0.40, slope=0.8, budget=0.60)
    out, times = branches.at_landing_budgets(StubPruner(), "convex", cands, latency, target)
    assert [c.name for c in out] == [base.name, cands[1].name, cands[2].name]     # 8 branches left out
    assert out[1].budget is None and out[1].counts == {0: 50}                  # 3 % faster: kept where it was
    moved = out[2]
    cut = 1 - (1 - 0.40) * 0.85                                                 # expected 49 %: 11 points of budget
    assert moved.budget == pytest.approx(0.60 - (cut - 0.40) / 0.8)
    assert moved.emptied == (6,) and moved.recipe == "convex t=1"
    assert moved.counts == {0: round(100 * (1 - moved.budget))}
    assert timed_again == [[c.name for c in out]] and set(times) == {c.name for c in out}
    assert branches.at_landing_budgets(StubPruner(), "convex", cands[:2], latency, target) == (cands[:2], latency)
    dropped = [cands[0], cands[1], cands[3]]            # the one too fast cannot be rebuilt: nothing timed again
    assert branches.at_landing_budgets(StubPruner(), "convex", dropped, latency, target) == (cands[:2], latency)
    assert len(timed_again) == 1


@pytest.fixture
def noiseless_pick(monkeypatch):
    """The fake engine's timings have no noise: the pipeline's pick needs no timing slack."""
    monkeypatch.setattr("onnxprune.allocate.emptied.LATENCY_SLACK", 0.0)


def test_pipeline_removes_branches_when_they_are_fastest(fake_engine, assets, exported, noiseless_pick):
    """Fake engine (a model's time is the sum of its layers' table times), pretrained ResNet-20 and
    real images: the candidates that remove residual branches are the fastest; with a wide tolerance
    one is chosen, the oracle verifies it and the MACs budget holds; --remove-branches off keeps every
    group. One-shot (no refit) to stay quick."""
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, prune
    model = load_model(exported("resnet20", "legacy", "folded",
                                weights=assets / "pretrained" / "cifar10-resnet20-12fca82f.th"))
    x = np.load(assets / "cifar10-lossless-test-first1017.npz")["x"][:96].astype(np.float32)
    data = np.ascontiguousarray(((x / 255.0 - 0.45) / 0.25).transpose(0, 3, 1, 2))
    base = dict(flops_reduction=0.3, round_to="latency", select_images=32, recover="none", temperatures=(0.5, 1.0))
    wide = prune(model, PruneConfig(branch_tolerance=9.0, **base), data=data)
    assert wide.report.ok
    removed = [g.id for g in wide.plan.groups if g.channels and not g.kept]
    assert removed
    assert any("branch removal" in n for n in wide.plan.budget["notes"])
    assert [r["group"] for r in wide.plan.budget["removed_branches"]] == removed
    assert wide.plan.budget["achieved"]["macs_reduction"] >= 0.3 - 1e-9
    assert sum(n.op_type == "Conv" for n in wide.model.graph.node) == \
        sum(n.op_type == "Conv" for n in model.graph.node) - 2 * len(removed)
    off = prune(model, PruneConfig(remove_branches="off", **base), data=data)
    assert all(g.kept for g in off.plan.groups)


@pytest.mark.parametrize("field,bad", [("remove_branches", "always"), ("branch_tolerance", -0.1),
                                       ("branch_tolerance", True), ("max_branches", 0), ("max_branches", 2.5)])
def test_branch_options_are_checked(field, bad):
    from onnxprune.pipeline import PruneConfig
    with pytest.raises(BudgetError, match=field.replace("_", "-") if field != "remove_branches" else "branch removal"):
        PruneConfig(flops_reduction=0.3, **{field: bad}).validate()


def test_cli_branch_options_reach_the_config():
    import argparse
    from onnxprune.cli import prune as cli_prune
    from onnxprune.cli.args import config_from_namespace
    from onnxprune.pipeline import PruneConfig
    p = argparse.ArgumentParser()
    cli_prune.register(p.add_subparsers())
    args = p.parse_args(["prune", "m.onnx", "-o", "o.onnx", "--flops-reduction", "0.3", "--remove-branches", "off",
                         "--branch-tolerance", "0.2", "--max-branches", "3"])
    config = config_from_namespace(PruneConfig, args)
    assert (config.remove_branches, config.branch_tolerance, config.max_branches) == ("off", 0.2, 3)


def test_latency_budget_keeps_its_removed_branches_through_the_feedback(fake_engine, assets, exported, monkeypatch,
                                                                      noiseless_pick):
    """A latency budget judges branch removal too; the measured feedback rounds after the first keep
    the first round's candidate, its removed branches included, and move only the budget (channels
    only at a budget that removing those branches alone would overshoot); the best round lands on
    the request (the fake engine times the candidates as the sum of their layers; the feedback's
    network gains 0.8 of the MACs cut, so that rounds are needed, each moving the budget less than
    the distance after which the candidate is chosen again)."""
    from onnxprune.allocate.emptied import overshoots
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import Pruner, PruneConfig, prune
    model = load_model(exported("resnet20", "legacy", "folded",
                                weights=assets / "pretrained" / "cifar10-resnet20-12fca82f.th"))
    x = np.load(assets / "cifar10-lossless-test-first1017.npz")["x"][:96].astype(np.float32)
    data = np.ascontiguousarray(((x / 255.0 - 0.45) / 0.25).transpose(0, 3, 1, 2))
    later: list[tuple] = []
    candidates, select = Pruner._candidates, Pruner._select_allocation
    monkeypatch.setattr("onnxprune.pipeline.measured_latency.LOCATE_ROUNDS", 0)    # the choice in round 1
    keeping: list = []          # the candidate the current allocation keeps (None: judging)

    def spy_select(self, problem, data, alloc, rule):
        keeping[:] = [rule.keep]
        return select(self, problem, data, alloc, rule)

    def spy(self, problem, alloc, only=None, emptied=(), suffix=""):
        fixed = keeping[0] if keeping else None
        if fixed is not None:
            later.append((fixed, only, tuple(emptied), suffix, overshoots(problem, fixed.emptied)))
        return candidates(self, problem, alloc, only=only, emptied=emptied, suffix=suffix)
    monkeypatch.setattr(Pruner, "_candidates", spy)
    monkeypatch.setattr(Pruner, "_select_allocation", spy_select)

    def fake_pair(original, pruned, engine, batch, **kw):     # the network gains less than the MACs: rounds
        full, small = (CostModel(analyze(m)).macs() for m in (original, pruned))
        pruned_s = 1.0 - 0.8 * (1 - small / full)
        return {"original_s": 1.0, "pruned_s": pruned_s, "speedup": 1 / pruned_s, "reduction": 1 - pruned_s}
    monkeypatch.setattr("onnxprune.latency.measure.measure_pair", fake_pair)
    res = prune(model, PruneConfig(latency_reduction=0.3, round_to="latency", select_images=32, recover="none",
                                   temperatures=(0.5, 1.0), branch_tolerance=9.0), data=data)
    assert res.report.ok
    chosen = res.plan.budget["allocation_choice"]["chosen"]
    assert "branch(es) removed" in chosen
    rounds = res.plan.budget["latency"]["feedback"]
    assert len(rounds) >= 2 and len(later) == len(rounds) - 1
    for fixed, only, emptied, suffix, over in later:
        assert fixed.name == chosen and fixed.emptied and only == fixed.recipe == chosen.split(",")[0]
        assert (emptied, suffix) == (((), "") if over else (fixed.emptied, fixed.suffix))
    assert min(abs(r["measured_reduction"] - 0.3) for r in rounds if r["measured_reduction"] is not None) <= 0.03
    removed = sorted(g.id for g in res.plan.groups if g.channels and not g.kept)
    assert removed in ([], sorted(later[0][0].emptied))
    monkeypatch.setattr(Pruner, "_candidates", candidates)
    monkeypatch.setattr(Pruner, "_select_allocation", select)
    tables = prune(model, PruneConfig(latency_reduction=0.4, latency_shape="tables", round_to="latency",
                                      select_images=32, recover="none", temperatures=(0.5, 1.0), branch_tolerance=9.0,
                                      verify=False), data=data)
    assert all(g.kept for g in tables.plan.groups)          # the tables' shape prunes channels only


def test_choosing_again_reuses_the_branch_ranking(fake_engine, assets, exported, monkeypatch,  # noqa: F811
                                                 noiseless_pick):
    """When the feedback's budget moves far and the allocation is chosen again, the branches' harm
    and time saved (budget-independent) are not measured again."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, prune
    from onnxprune.pipeline import branches
    model = load_model(exported("resnet20", "legacy", "folded",
                                weights=assets / "pretrained" / "cifar10-resnet20-12fca82f.th"))
    x = np.load(assets / "cifar10-lossless-test-first1017.npz")["x"][:64].astype(np.float32)
    data = np.ascontiguousarray(((x / 255.0 - 0.45) / 0.25).transpose(0, 3, 1, 2))
    timed, real = [], branches.branch_time_saved
    monkeypatch.setattr("onnxprune.pipeline.measured_latency.LOCATE_ROUNDS", 0)    # the choice in round 1
    monkeypatch.setattr(branches, "branch_time_saved", lambda *a: (timed.append(1), real(*a))[1])

    def fake_pair(original, pruned, engine, batch, **kw):     # half the MACs cut: the budget moves far
        full, small = (CostModel(analyze(m)).macs() for m in (original, pruned))
        pruned_s = 1.0 - 0.5 * (1 - small / full)
        return {"original_s": 1.0, "pruned_s": pruned_s, "speedup": 1 / pruned_s, "reduction": 1 - pruned_s}
    monkeypatch.setattr("onnxprune.latency.measure.measure_pair", fake_pair)
    res = prune(model, PruneConfig(latency_reduction=0.2, round_to="latency", select_images=32, recover="none",
                                   temperatures=(1.0,), branch_tolerance=9.0, verify=False), data=data)
    rounds = res.plan.budget["latency"]["feedback"]
    assert rounds[0]["allocation_chosen"] and sum(r["allocation_chosen"] for r in rounds) >= 2
    assert len(timed) == 1
