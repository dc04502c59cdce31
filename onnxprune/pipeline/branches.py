"""Branch removal: candidates that empty whole residual branches, timed on the latency engine.

On engines whose convolutions run in channel blocks, a block-internal width cut below a block buys
little time while a branch removed whole frees its layers' time and all its MACs. After the
channels-only candidates are judged, :func:`with_branch_candidates` ranks the emptiable groups
(``analysis.emptiable``) by harm per time saved, proposes candidates that empty the k least harmful
(the budget's remainder allocated over the other groups, ``allocate.emptied``), judges them like the
others, times them and the channels-only choice, and keeps the fastest within the distance tolerance
(timings within a few per cent of the fastest count as equally fast: the closest of those wins).
Under a latency budget, a removal that would overshoot the request by far is judged at the lower
internal budget where it is expected to land (:func:`at_landing_budgets`). Each function takes the
fitted :class:`~onnxprune.pipeline.pruner.Pruner`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from onnxprune.allocate import AllocationProblem
from onnxprune.allocate.candidates import Candidate, Choice, choose_candidate
from onnxprune.allocate import emptied       # its LATENCY_SLACK is read at call time (noiseless tests set 0)
from onnxprune.allocate.emptied import (BRANCH_TIMING_S, overshoots, pick_closest_not_slower, pick_fastest_within,
                                        removal_sizes)
from onnxprune.errors import BudgetError
from onnxprune.log import get_logger

__all__ = ["with_branch_candidates", "at_landing_budgets", "branch_candidates", "branch_time_saved",
           "measured_latencies"]

log = get_logger(__name__)

BRANCH_MAX_ROUNDS = 1000    # short rounds (PAIR_ROUND_S), as many as fit BRANCH_TIMING_S


def with_branch_candidates(pruner, problem, alloc, choice: Choice, judge, images, reference,
                           output_names, after, target=None) -> Choice:
    """Judge the branch-removal candidates like the others; time them and the channels-only choice
    on the latency engine; keep the fastest whose output distance is within the tolerance of
    that choice's, the closest among those timed within the slack of the fastest. (The quick
    refit on a few images favours candidates with fewer kept channels, i.e. without removed branches: on ResNet-56 at -45.5 % MACs the candidate that
    removed 6 branches judged 0.40 against 0.28 and refitted on all images scored 89.6 % top-1
    against 88.4 %.) ``target`` (ChoiceRule.target): candidates it finds too fast are
    judged at the budget where each should land (:func:`at_landing_budgets`), and the closest of
    those not slower than the channels-only choice wins (equal latency)."""
    extra = branch_candidates(pruner, problem, alloc, choice.candidate, images, reference)
    if not extra:
        return choice
    base = choice.candidate.name          # the channels-only choice: the reference
    timed = [choice.candidate] + extra
    latency = measured_latencies(pruner, timed)
    if target is not None:          # under a latency budget: compared at equal latency
        timed, latency = at_landing_budgets(pruner, alloc, timed, latency, target)
        extra = timed[1:]
        if not extra:
            return choice
    log.info("branch removal: judging %d candidate(s) %s", len(extra), f"after {after}" if after else "")
    more = choose_candidate(extra, judge, reference, output_names, after=after)
    scores = {**choice.scores, **more.scores}
    names = [c.name for c in timed]
    for c in timed:
        log.info("  %s%s: distance %.4f, %.2f ms per batch of %d", c.name, "" if c.budget is None else
                 f" (internal budget {100 * c.budget:.1f} %)", scores[c.name][1], 1e3 * latency[c.name],
                 pruner.latency_.batch)
    tol, slack = pruner.config.branch_tolerance, emptied.LATENCY_SLACK
    distance = {n: scores[n][1] for n in names}
    if target is None:
        pick = pick_fastest_within(names, distance, latency, base, tol, slack)
        how = (f"the measured fastest within {100 * tol:.0f} % of that choice's distance (the closest of those "
               f"within {100 * slack:.0f} % of the fastest time)")
        why = f"tolerance {100 * tol:.0f} %"
    else:       # each expected to land near the request: the closest of those not slower than channels only
        pick = pick_closest_not_slower(names, distance, latency, base, slack)
        how = (f"at the internal budget where each is expected to land on the latency request, the closest "
               f"of those timed within {100 * slack:.0f} % of that choice or faster")
        why = "equal latency"
    pruner.notes.append(f"branch removal: {pick} chosen, measured {latency[base] / latency[pick]:.2f}x the "
                        f"speed of the channels-only choice ({base}), output distance "
                        f"{distance[pick]:.4f} vs {distance[base]:.4f} ({why})")
    log.info("%s", pruner.notes[-1])
    return Choice(next(c for c in timed if c.name == pick),
                  choice.criterion + f"; then, with branches removed, {how}", scores)


def at_landing_budgets(pruner, alloc: str, timed: list[Candidate], latency: dict[str, float], target
                       ) -> tuple[list[Candidate], dict[str, float]]:
    """The channels-only choice (first) and the branch removals, each removal the ``target``
    (measured_latency.LatencyTarget) finds too fast rebuilt at the lower internal budget where it is
    expected to land (more channels kept), and then all timed again; a removal that cannot be
    rebuilt there (the removal alone cuts more) is left out."""
    base = timed[0]
    out: list[Candidate] = [base]
    moved = []
    fast = False
    for c in timed[1:]:
        ratio = latency[c.name] / latency[base.name]
        if not target.too_fast(ratio):
            out.append(c)
            continue
        fast = True
        budget = target.landing_budget(ratio)
        try:
            problem = pruner._problem(macs_budget=budget)
            if overshoots(problem, c.emptied):
                continue
            out += [replace(x, budget=budget) for x in pruner._candidates(problem, alloc, only=c.recipe,
                                                                          emptied=c.emptied, suffix=c.suffix)]
            moved.append(f"{c.name} at {100 * budget:.1f} %")
        except BudgetError:
            continue
    if not fast:
        return timed, latency
    log.info("branch removal: faster than the latency budget asks at the internal budget %.1f %%, judged where "
             "each is expected to land instead: %s", 100 * target.budget, ", ".join(moved) or "none could be")
    return out, measured_latencies(pruner, out) if moved else latency


def branch_candidates(pruner, problem: AllocationProblem, alloc: str, best: Candidate,
                       images: np.ndarray, reference: list[np.ndarray]) -> list[Candidate]:
    """Candidates that empty the k emptiable groups (analysis.emptiable; each with its upstream
    groups) of least harm per time saved (harm: output distance of the model with that branch
    alone removed, one-shot; time: measured, see branch_time_saved), with ``best``'s recipe
    for the rest of the budget."""
    from onnxprune.allocate.candidates import output_distance
    from onnxprune.analysis.emptiable import Emptying, emptiable_groups
    members = {g: e.groups for g, e in emptiable_groups(pruner.analysis_).items()
               if isinstance(e, Emptying) and set(e.groups) <= set(problem.channels)}
    if not members:
        return []
    if set(pruner._branch_ranking) != set(members):     # measured once per fit: the budget does not change it
        harm = {g: output_distance(reference, pruner._pruned_outputs(dict.fromkeys(m, 0), images))
                for g, m in members.items()}
        saved = branch_time_saved(pruner, members)      # a branch with no timed layer saves ~nothing
        pruner._branch_ranking = {g: (harm[g], saved.get(g, 1e-6)) for g in members}
    harm = {g: h for g, (h, _) in pruner._branch_ranking.items()}
    saved = {g: t for g, (_, t) in pruner._branch_ranking.items()}
    order = sorted(members, key=lambda g: (harm[g] / saved[g], g))
    log.info("branch removal: %d emptiable group(s); least harm per time saved: %s", len(members),
             ", ".join(f"{g} ({harm[g]:.4f}, {100 * saved[g]:.1f} %)" for g in order[:8]))
    recipe = best.name.split(",")[0]
    out = []
    for k in removal_sizes(len(order), pruner.config.max_branches):
        gone = tuple(h for g in order[:k] for h in members[g])
        if overshoots(problem, gone):
            log.info("branch removal: removing %d branches alone would cut more than the budget asks", k)
            break
        try:
            out += pruner._candidates(problem, alloc, only=recipe, emptied=gone, suffix=f", {k} branch(es) removed")
        except BudgetError:
            break
    return out


def branch_time_saved(pruner, members: Mapping[int, tuple[int, ...]]) -> dict[int, float]:
    """Share of the model's time one removed branch saves, measured in the network: each class of
    like groups (same width and layer shapes) is emptied together and timed against the
    unpruned model, interleaved; the class's saving is split evenly over its groups."""
    from onnxprune.latency.model import counts_model
    from onnxprune.latency.steps import like_groups
    by_id = {g.id: g for g in pruner.analysis_.groups}
    classes = like_groups(pruner.latency_, [by_id[g] for g in members])
    models = [pruner.model_] + [counts_model(pruner.analysis_, {h: 0 for g in like for h in members[g.id]})
                              for like in classes]
    times = _timed(pruner, models)
    out = {}
    for like, t in zip(classes, times[1:]):
        share = max(times[0] - t, 0.0) / times[0] / len(like)
        out.update(dict.fromkeys((g.id for g in like), max(share, 1e-6)))
    return out


def measured_latencies(pruner, candidates: list[Candidate]) -> dict[str, float]:
    """Seconds per batch of each candidate's pruned model on the latency engine, interleaved."""
    times = _timed(pruner, [pruner._pruned_model(c.counts)[1] for c in candidates])
    return {c.name: t for c, t in zip(candidates, times)}


def _timed(pruner, models: list) -> list[float]:
    """Seconds per batch of each model on the latency engine: short interleaved rounds, as many as
    fit BRANCH_TIMING_S, each model paired with the first (see latency.measure.measure_models)."""
    from onnxprune.latency.measure import PAIR_ROUND_S, measure_models
    return measure_models(models, pruner.latency_.engine, pruner.latency_.batch, rounds=3, runs=2,
                          budget_s=BRANCH_TIMING_S, min_round_s=PAIR_ROUND_S, max_rounds=BRANCH_MAX_ROUNDS)

