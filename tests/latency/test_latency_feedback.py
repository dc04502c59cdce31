"""The measured latency loop: synthetic engines whose real cut differs from the tables' prediction."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import BudgetError
from onnxprune.latency.feedback import TOLERANCE, meet_measured_latency
from tests.latency.test_latency_tables import fake_engine  # noqa: F401  (fixture)
from tests.onnx_builders import small_resnet


def _linear_engine(gain: float, reach: float = 0.95):
    """attempt(b) -> b (refused above ``reach``); measure -> (gain * b, 1 / (1 - gain * b))."""
    def attempt(b):
        if b > reach:
            raise BudgetError(f"at most {100 * reach:.0f} %")
        return b

    def measure(b):
        return gain * b, 1 / (1 - gain * b)
    return attempt, measure


@pytest.mark.parametrize("gain", [0.45, 0.8, 1.0, 1.6])
def test_converges_when_the_tables_are_off_by_a_factor(gain):
    best, rounds = meet_measured_latency(0.4, *_linear_engine(gain), rounds=4)
    assert abs(best.measured - 0.4) <= TOLERANCE
    assert len(rounds) <= 4 and rounds[0].budget == 0.4


def test_out_of_reach_internal_budget_keeps_the_closest_round():
    best, rounds = meet_measured_latency(0.4, *_linear_engine(0.5, reach=0.6), rounds=5)
    assert any(r.measured is None for r in rounds)            # the refused internal budget is recorded
    assert best.measured == max(r.measured for r in rounds if r.measured is not None)
    assert best.budget <= 0.6


def test_first_budget_out_of_reach_raises():
    with pytest.raises(BudgetError):
        meet_measured_latency(0.4, *_linear_engine(1.0, reach=0.3))


@pytest.mark.parametrize("shape", ["macs", "tables"])
def test_pipeline_meets_the_measured_cut(fake_engine, monkeypatch, shape):  # noqa: F811
    """The engine's real cut is 0.4 of what the MACs say: the loop raises the internal budget
    (a MACs cut, or a cut of the tables' latency)."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    from onnxprune.pipeline import PruneConfig, Pruner

    def fake_pair(original, pruned, engine, batch, **kw):
        full, small = (CostModel(analyze(m)).macs() for m in (original, pruned))
        pruned_s = 1.0 - 0.4 * (1 - small / full)
        return {"original_s": 1.0, "pruned_s": pruned_s, "speedup": 1 / pruned_s, "reduction": 1 - pruned_s}
    monkeypatch.setattr("onnxprune.latency.measure.measure_pair", fake_pair)
    pruner = Pruner(PruneConfig(latency_reduction=0.2, batch=2, verify=False, latency_shape=shape)).fit(small_resnet())
    rec = pruner.plan().budget["latency"]
    rounds = rec["feedback"]
    best = min((r for r in rounds if r["measured_reduction"] is not None),
               key=lambda r: abs(r["measured_reduction"] - 0.2))
    assert abs(best["measured_reduction"] - 0.2) <= TOLERANCE + 0.02     # channel granularity
    assert rounds[0]["budget"] == 0.2 and len(rounds) >= 2
    macs_cut = 1 - pruner.cost_.macs(pruner.kept_) / pruner.full_["macs"]
    assert macs_cut == pytest.approx(2.5 * best["measured_reduction"], abs=3e-4)   # the record keeps 4 digits
    assert any("measured" in n and ("MACs" if shape == "macs" else "table latency") in n for n in pruner.notes)


def test_unknown_latency_shape_is_refused():
    from onnxprune.pipeline import PruneConfig
    with pytest.raises(BudgetError, match="latency shape 'flops'"):
        PruneConfig(latency_reduction=0.2, latency_shape="flops").validate()


def _slope_engine(monkeypatch, slope):
    """measure_pair on a fake engine whose measured cut is ``slope`` x the MACs cut."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel

    def fake_pair(original, pruned, engine, batch, **kw):
        full, small = (CostModel(analyze(m)).macs() for m in (original, pruned))
        pruned_s = 1.0 - slope * (1 - small / full)
        return {"original_s": 1.0, "pruned_s": pruned_s, "speedup": 1 / pruned_s, "reduction": 1 - pruned_s}
    monkeypatch.setattr("onnxprune.latency.measure.measure_pair", fake_pair)


def _refits(monkeypatch) -> list:
    """One entry per quick refit (reconstruct call) from now on."""
    import importlib
    rec = importlib.import_module("onnxprune.recover.reconstruct")
    calls: list = []
    real = rec.reconstruct
    monkeypatch.setattr(rec, "reconstruct", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def _judged_fit():
    import numpy as np

    from onnxprune.pipeline import PruneConfig, Pruner
    data = np.random.default_rng(0).standard_normal((24, 3, 16, 16)).astype(np.float32)
    return Pruner(PruneConfig(latency_reduction=0.2, batch=2, verify=False, method="infoconc", select_images=8),
                  rank_images=8, hsic_images=8, shapley_images=8).fit(small_resnet(), data)


@pytest.mark.parametrize("slope, located", [(0.8, False), (0.4, False), (0.4, True)])
def test_later_rounds_keep_the_candidate_until_the_budget_moves_far(fake_engine, monkeypatch,  # noqa: F811
                                                                    slope, located):
    """Candidates are judged (each after a quick refit) in the first round, and again when the
    internal budget has moved more than RECHOOSE_AFTER from where they were judged: all of them
    when the first choice was made at the request (until two choices agree on the recipe), only
    the chosen recipe (with its branch removals) when it was made at a located budget."""
    from onnxprune.pipeline import measured_latency
    from onnxprune.pipeline.measured_latency import RECHOOSE_AFTER, Located
    monkeypatch.setattr(measured_latency, "_locate", lambda pruner, data, shape, start, notes: Located(
        start, [], None, located))
    calls = _refits(monkeypatch)
    _slope_engine(monkeypatch, slope)
    pruner = _judged_fit()
    plan = pruner.plan()
    rounds = plan.budget["latency"]["feedback"]
    chosen = [rounds[0]["budget"]]              # where the candidate was chosen: round 1, then each
    for r in rounds[1:]:                        # round whose budget moved past RECHOOSE_AFTER from there
        if abs(r["budget"] - chosen[-1]) > RECHOOSE_AFTER:
            chosen.append(r["budget"])
    assert [r["budget"] for r in rounds if r["allocation_chosen"]] == chosen      # as the plan records it
    assert sum(r["kept"] for r in rounds) == 1
    if slope == 0.8:                            # 0.2 (16 %) -> 0.25 (20 %): one choice, kept
        assert len(rounds) >= 2 and len(chosen) == 1
    else:                                       # 0.2 (8 %) -> 0.35 (a step of at most 0.15) -> ~0.5
        assert len(chosen) >= 2
    recipes = [r["candidate"].split(",")[0] for r in rounds if r["allocation_chosen"]]
    judged = [5] + [1 if located or (k >= 2 and recipes[k - 1] == recipes[k - 2]) else 5
                    for k in range(1, len(recipes))]        # candidates judged at each choice
    kept = max(i for i, r in enumerate(rounds[:next(i for i, r in enumerate(rounds) if r["kept"]) + 1])
               if r["allocation_chosen"])                   # the choice the kept round allocated with
    assert len(plan.budget["allocation_choice"]["candidates"]) == judged[[i for i, r in enumerate(rounds)
                                                                          if r["allocation_chosen"]].index(kept)]
    assert len(calls) == sum(judged)


def test_the_budget_is_located_before_the_allocation_is_chosen(fake_engine, monkeypatch):  # noqa: F811
    """Brief channels-only rounds with one recipe (no quick refit) locate the internal budget; the
    candidates are judged once, there, and the measured rounds start from it."""
    calls = _refits(monkeypatch)
    _slope_engine(monkeypatch, 0.4)             # 0.2 asks for a MACs cut of about 0.5
    pruner = _judged_fit()
    rec = pruner.plan().budget["latency"]
    located, rounds = rec["located"], rec["feedback"]
    assert located[0]["budget"] == 0.2 and len(located) >= 2
    assert abs(rounds[0]["budget"] - 0.5) <= 0.06          # the choice is made near where the cut lands
    assert [r["allocation_chosen"] for r in rounds] == [True] + [False] * (len(rounds) - 1)
    assert len(calls) == 5                      # the five candidates judged once, nothing while locating
    assert any("brief channels-only round(s) timed before choosing" in n for n in pruner.notes)


def test_a_model_too_fast_for_brief_timings_is_not_located(fake_engine, monkeypatch):  # noqa: F811
    """Under LOCATE_MIN_MODEL_S per batch no locating round runs: the choice is made at the request."""
    from onnxprune.pipeline import measured_latency
    monkeypatch.setattr(measured_latency, "LOCATE_MIN_MODEL_S", 1e9)
    _slope_engine(monkeypatch, 0.4)
    rec = _judged_fit().plan().budget["latency"]
    assert "located" not in rec and rec["feedback"][0]["budget"] == 0.2


def test_a_branch_removal_that_overshoots_the_latency_budget_is_judged_where_it_lands():
    """After locating: the channels-only choice at an internal budget of 50 % is expected to measure
    30 % against a 30 % request, at 0.6 points of cut per point of budget; a candidate 10 % faster
    would cut 37 %, 11.7 points of budget too much (the feedback would choose again): it is judged
    at 38.3 % instead; 3 % faster is fine where it is."""
    from onnxprune.pipeline.measured_latency import LatencyTarget
    target = LatencyTarget(requested=0.30, channels_only=0.30, slope=0.6, budget=0.5)
    assert target.too_fast(0.90) and not target.too_fast(0.97) and not target.too_fast(1.0)
    assert target.landing_budget(0.90) == pytest.approx(0.5 - 0.07 / 0.6)
    assert target.landing_budget(1.0) == pytest.approx(0.5)
    assert LatencyTarget(0.3, 0.3, 0.1, 0.05).landing_budget(0.5) == 0.0      # never below no cut


def test_noisy_rounds_stay_inside_the_bracket():
    """A secant through two noisy timings would jump far: the step is capped and kept between the
    largest budget measured short of the request and the smallest measured beyond it."""
    from onnxprune.latency.feedback import MAX_STEP, FeedbackRound, _next_budget
    flat = [FeedbackRound(0.40, 0.275), FeedbackRound(0.58, 0.32)]        # secant 0.25: +0.3 wanted
    assert _next_budget(flat, 0.4) == pytest.approx(0.58 + MAX_STEP)
    # 0.5 measured beyond the request; the last two short and nearly flat would step past 0.5
    bracketed = [FeedbackRound(0.50, 0.45), FeedbackRound(0.30, 0.20), FeedbackRound(0.35, 0.21)]
    assert _next_budget(bracketed, 0.4) == pytest.approx((0.35 + 0.50) / 2)


def test_interleaved_timing_runs_fast_models_long_enough(monkeypatch):
    """Each round runs a model at least min_round_s (more runs for fast models), the run after a
    switch of model is not timed, and the rounds alternate their order."""
    import time as _time
    from onnxprune.latency import measure
    calls: list[str] = []

    def runner(model, engine, batch):
        def fn():
            calls.append(model)
            _time.sleep(model == "slow" and 0.004 or 0.001)
        return fn
    monkeypatch.setattr(measure, "_runner", runner)
    fast, slow = measure.measure_models(["fast", "slow"], None, 1, rounds=2, runs=1, min_round_s=0.02)
    assert fast < slow
    runs = len(calls[2:]) // 4 - 1           # after one untimed call each: 2 rounds x 2 models x (1 + runs)
    assert runs >= 5                         # ~20, from the faster model's first run (~1 ms); 1 asked
    assert calls[2:][:runs + 1] == ["fast"] * (runs + 1) and calls[-(runs + 1):] == ["fast"] * (runs + 1)


def test_a_speedup_measurement_times_each_model_long_enough(monkeypatch):
    """min_model_s adds rounds (up to max_rounds) until the faster model is timed about that long."""
    import time as _time
    from onnxprune.latency import measure
    calls: list[str] = []

    def runner(model, engine, batch):
        def fn():
            calls.append(model)
            _time.sleep(0.002)
        return fn
    monkeypatch.setattr(measure, "_runner", runner)
    measure.measure_models(["a", "b"], None, 1, rounds=2, runs=2, min_round_s=0.0, min_model_s=0.08)
    rounds = (len(calls) - 2) // 6              # after one call each; a round: 2 x (1 untimed + 2 timed)
    assert rounds >= 10                         # ~0.08 s / (2 runs x ~2 ms) = ~20 rounds, not the 2 asked
    calls.clear()
    measure.measure_models(["a", "b"], None, 1, rounds=2, runs=2, min_round_s=0.0, min_model_s=10.0, max_rounds=6)
    assert len(calls) == 2 + 6 * 2 * 3          # capped at max_rounds


def test_a_landing_round_is_timed_again_before_the_loop_stops():
    """A noisy timing that lands once within the tolerance is checked by a second timing; the
    round's cut is the second timing (the first was selected for landing), and the loop goes on
    when it misses."""
    timings = iter([0.40, 0.20, 0.30, 0.41, 0.39])     # round 1 lucky, round 2 short, round 3 lands twice

    def attempt(b):
        return b

    def measure(b):
        cut = next(timings)
        return cut, 1 / (1 - cut)
    best, rounds = meet_measured_latency(0.4, attempt, measure, rounds=4)
    assert [round(r.measured, 4) for r in rounds] == [0.20, 0.30, 0.39]
    assert best is rounds[-1] and best.speedup == pytest.approx(1 / 0.61)


def test_a_latency_cut_beyond_the_largest_allocation_is_refused():
    """The allocator meets internal budgets up to 0.7; the model at 0.7 measures a 35 % cut: a 60 %
    request is out of reach and the error names the largest cut measured (the search gets within
    2 points of 0.7, so a little under 35 %)."""
    from onnxprune.errors import BudgetError

    def attempt(b):
        if b > 0.7:
            raise BudgetError("no allocation")
        return b

    def measure(b):
        cut = b / 2
        return cut, 1 / (1 - cut)
    with pytest.raises(BudgetError, match=r"60\.0 % is out of reach: the largest cut measured was 3[45]\.\d %"):
        meet_measured_latency(0.6, attempt, measure, rounds=8)


def test_rounds_that_run_out_keep_the_closest_round():
    """Short of the request after the last round, but the largest budget was never tried: no error."""
    best, rounds = meet_measured_latency(0.6, lambda b: b, lambda b: (b / 3, 1 / (1 - b / 3)), rounds=2)
    assert len(rounds) == 2 and best is max(rounds, key=lambda r: r.measured)


def _fake_clock(monkeypatch, base: dict, factor):
    """Runners that advance a fake clock by base[model] x factor(clock, run index)."""
    from types import SimpleNamespace
    from onnxprune.latency import measure
    clock, count = [0.0], [0]

    def runner(model, engine, batch):
        def fn():
            count[0] += 1
            clock[0] += base[model] * factor(clock[0], count[0])
        return fn
    monkeypatch.setattr(measure, "_runner", runner)
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    return measure


def test_a_speedup_is_the_median_of_per_round_ratios(monkeypatch):
    """Slow spells that last several rounds slow both models of a round alike: the speed-up comes
    from per-round ratios, exact here, while pooled medians would mix spells."""
    spell = lambda t, n: 3.0 if int(t / 0.05) % 3 == 0 else 1.0      # noqa: E731
    measure = _fake_clock(monkeypatch, {"orig": 2e-3, "pruned": 1e-3}, spell)
    got = measure.measure_pair("orig", "pruned", SimpleEngine(), 1, min_model_s=0.5, max_model_s=0.5)
    assert got["speedup"] == pytest.approx(2.0, rel=1e-9)
    assert got["reduction"] == pytest.approx(0.5, rel=1e-9)
    assert got["rounds"] >= 10 and got["reduction_se"] is not None


def test_a_speedup_measurement_runs_until_precise_or_out_of_time(monkeypatch):
    """After the minimum, rounds go on while the cut's standard error exceeds the precision, up to
    max_model_s per model; a precise pair stops at the minimum."""
    rng = np.random.default_rng(0)
    noisy = lambda t, n: float(rng.uniform(0.5, 1.5))                # noqa: E731
    measure = _fake_clock(monkeypatch, {"orig": 2e-3, "pruned": 1e-3}, noisy)
    long = measure.measure_pair("orig", "pruned", SimpleEngine(), 1, min_model_s=0.2, max_model_s=1.0,
                                precision=1e-6, min_round_s=0.0)
    short = measure.measure_pair("orig", "pruned", SimpleEngine(), 1, min_model_s=0.2, max_model_s=1.0,
                                 precision=0.5, min_round_s=0.0)
    per_round = 3 * 1e-3                 # the pruned model's timed seconds per round (3 runs of ~1 ms)
    assert long["rounds"] * per_round > 0.8          # timed up to ~1 s
    assert short["rounds"] * per_round < 0.4         # stopped after ~0.2 s
    assert long["reduction_se"] < short["reduction_se"]
    assert 0.3 < long["reduction"] < 0.7


class SimpleEngine:
    target, provider, threads = "cpu", "CPUExecutionProvider", 1


def test_the_first_choice_after_locating_starts_the_rounds_where_its_candidate_was_allocated(monkeypatch):
    """After locating, the first choice is made at the located budget with the latency target; a
    branch removal it rebuilt at a lower budget (Candidate.budget) moves the first measured round
    there, and the rounds keep that candidate, with the notes of that choice."""
    import types

    from onnxprune.allocate.candidates import Candidate, Choice
    from onnxprune.latency.feedback import FeedbackRound
    from onnxprune.pipeline import measured_latency
    from onnxprune.pipeline.measured_latency import LatencyTarget, Located

    located = [FeedbackRound(0.3, 0.10), FeedbackRound(0.5, 0.30)]
    monkeypatch.setattr(measured_latency, "_locate", lambda *a: Located(0.5, located, 1.0, True))
    monkeypatch.setattr(measured_latency, "select_all", lambda analysis, allocation, scores: allocation)
    monkeypatch.setattr(measured_latency, "_measure", lambda pruner: lambda result: (0.30, 1 / 0.70))
    moved = Candidate("r, 6 branch(es) removed", {0: 5}, (), (3,), "r", budget=0.42)
    calls: list = []

    def allocate(data, rule, macs_budget=None, latency_budget=None):
        calls.append((rule, macs_budget))
        if rule.keep is None:                   # the choice: made once, with its note
            pruner.choice_ = Choice(moved, "closest", {})
            pruner.notes.append("branch removal: r, 6 branch(es) removed chosen")
        return {0: 5}

    config = types.SimpleNamespace(latency_shape="macs", latency_reduction=0.3, flops_reduction=None,
                                   latency_rounds=4)
    pruner = types.SimpleNamespace(config=config, notes=["before"], choice_=None, analysis_=None, scores_=None,
                                   _allocate=allocate)
    measured_latency.allocate_measured(pruner, data=object())
    (first, at), (second, again) = calls[0], calls[1]
    assert at == 0.5 and first.target == LatencyTarget(0.3, 0.30, 1.0, 0.5) and first.keep is None
    assert again == 0.42 and second.keep is moved and len(calls) == 2      # landed: one round, kept candidate
    rounds = pruner.latency_feedback_
    assert [(r["budget"], r["allocation_chosen"], r["kept"]) for r in rounds] == [(0.42, True, True)]
    assert pruner.notes[:2] == ["before", "branch removal: r, 6 branch(es) removed chosen"]
