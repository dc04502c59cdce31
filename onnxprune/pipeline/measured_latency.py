"""A latency budget met by measurement: internal budgets allocated, pruned models timed, corrected
(the loop is onnxprune.latency.feedback; this wires it to the pruner's allocation).

Choosing the allocation (candidates judged after a quick refit, branch removals timed) costs tens
of seconds; allocating with a recipe already chosen costs about one. So the internal budget is
first *located* with one fixed recipe, channels only, and short timings (``LOCATE_ROUNDS`` rounds,
a few seconds each); the allocation is then chosen at the located budget, and the measured rounds
move the budget from there with that choice kept (chosen again, the recipe kept, only when the
budget moves more than ``RECHOOSE_AFTER``). On ResNet-56 at batch 64 the first choice had been made
at the request's MACs cut and chosen again 15 points further, which cost a minute. Locating is
skipped for models that run under ``LOCATE_MIN_MODEL_S`` per batch (brief timings of a 1 ms model
drift too far) and set aside where channels-only cuts barely move the latency
(``LOCATE_MIN_SLOPE``); the choice is then made at the request and made whole again when the
budget moves far, the recipe kept once two choices agree on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from onnxprune.allocate.candidates import ChoiceRule, recipe_name
from onnxprune.errors import BudgetError
from onnxprune.log import get_logger
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.scoring.selection import select_all

__all__ = ["allocate_measured", "LatencyTarget", "RECHOOSE_AFTER", "LOCATE_ROUNDS"]

log = get_logger(__name__)

RECHOOSE_AFTER = 0.10   # the candidate (recipe, branches removed) is chosen again when the internal
                        # budget moves further than this from where it was chosen (the branches
                        # chosen at a 50 % MACs cut, kept to 79 % by channels alone, cost ResNet-56
                        # 9 points of top-1 against a MACs budget landing at the same latency)
LOCATE_ROUNDS = 3       # rounds that locate the internal budget before the allocation is chosen
LOCATE_TOLERANCE = 0.03     # ... stopping within this of the request
LOCATE_TIMING = dict(min_model_s=1.0, max_model_s=2.0, precision=0.03)   # ... timed this briefly
LOCATE_MIN_MODEL_S = 0.01  # ... and only for models that run at least this long per batch: a brief
                            # timing of ResNet-56 at batch 1 (0.8 ms) drifted by up to 15 points
                            # (65 % of the MACs measured 14.5 %, 50 % 28.4 %) and put the choice at
                            # 75-81 % of the MACs for 40-50 % requests (67 / 56 % top-1, against
                            # 85.5 / 80.3 % choosing at the request); at batch 64 (45 ms) it
                            # located within 3 points (threshold set between the two, not tuned)
LOCATE_MIN_SLOPE = 0.3      # ... and used only where channels-only cuts buy time: measured cut per
                            # point of budget at least this (ResNet-56 at batch 64: 0.55-0.8; at
                            # batch 1, where removed branches set the latency, 0.15 -- locating
                            # there put the choice at a 75 % MACs cut for a 30 % request)


def allocate_measured(pruner, data) -> None:
    """Allocate at internal budgets until the pruned model's measured cut on the target lands
    within a tolerance of the request (see onnxprune.latency.feedback). The internal budget is a
    MACs cut (``latency_shape`` "macs") or a cut of the tables' latency ("tables")."""
    from onnxprune.latency.feedback import meet_measured_latency
    notes_before = list(pruner.notes)
    shape = "macs_budget" if pruner.config.latency_shape == "macs" else "latency_budget"
    requested = pruner.config.latency_reduction
    start = max(requested, pruner.config.flops_reduction or 0.0) if shape == "macs_budget" else requested
    found = _locate(pruner, data, shape, start, notes_before)
    start, located, slope, located_used = found.budget, found.rounds, found.slope, found.used
    target = None
    if slope is not None:       # the first choice weighs branch removals against the request
        near = min((r for r in located if r.measured is not None), key=lambda r: abs(r.budget - start))
        target = LatencyTarget(requested, near.measured + slope * (start - near.budget), slope, start)

    chosen_at: list[float] = []     # the internal budgets at which a candidate was chosen
    recipes: list[str] = []         # ... and the recipe chosen there
    kept = None                     # the candidate the rounds allocate with until chosen again
    kept_notes: list[str] = []      # ... and the notes of the choice that made it
    if target is not None:          # the first choice, at equal latency: its budget may move (LatencyTarget)
        pruner.notes = list(notes_before)
        pruner._allocate(data, rule=ChoiceRule(target=target), **{shape: start})
        if pruner.choice_ is not None:
            kept, kept_notes = pruner.choice_.candidate, pruner.notes[len(notes_before):]
            start = start if kept.budget is None else kept.budget
            chosen_at.append(start)
            recipes.append(kept.recipe or kept.name)

    def attempt(budget):
        # the first round chooses the candidate (weight sharpness, branches removed); later rounds
        # keep it and move only the budget (one allocation and one timing), until the budget has
        # moved more than RECHOOSE_AFTER from where it was chosen: then it is chosen again. Only
        # the branches removed are chosen again, the recipe kept, after locating (the recipe was
        # chosen near where the cut lands) or once two choices agreed on the recipe: judging every
        # recipe again cost ResNet-56 25 s a choice, and at batch 1 four choices of one prune all
        # chose the same recipe
        nonlocal kept, kept_notes
        pruner.notes = notes_before + kept_notes
        rule = ChoiceRule(keep=kept)
        if chosen_at and abs(budget - chosen_at[-1]) > RECHOOSE_AFTER:
            recipe = None
            if kept is not None and (located_used or _stable(recipes)):
                recipe = kept.recipe or kept.name
            rule = ChoiceRule(recipe=recipe)
            pruner.notes = list(notes_before)
            log.info("latency feedback: internal budget %.1f %% is %.1f points from where the allocation was "
                     "chosen (%.1f %%): choosing %s again", 100 * budget, 100 * abs(budget - chosen_at[-1]),
                     100 * chosen_at[-1], f"the branches removed ({recipe})" if recipe else "the allocation")
        if rule.keep is None:
            chosen_at.append(budget)
        allocation = pruner._allocate(data, rule=rule, **{shape: budget})
        kept = None if pruner.choice_ is None else pruner.choice_.candidate
        if rule.keep is None and kept is not None:
            recipes.append(kept.recipe or kept.name)
            kept_notes = pruner.notes[len(notes_before):]
        return allocation, select_all(pruner.analysis_, allocation, pruner.scores_), list(pruner.notes), pruner.choice_

    best, rounds = meet_measured_latency(requested, attempt, _measure(pruner), rounds=pruner.config.latency_rounds,
                                         start=start, slope_hint=slope)
    pruner.allocation_, pruner.kept_, pruner.notes, pruner.choice_ = best.result
    pruner.latency_located_ = [r.to_dict() for r in located]
    pruner.latency_feedback_ = [{**r.to_dict(), "allocation_chosen": r.budget in chosen_at, "kept": r is best,
                                 **_candidate_name(r.result)} for r in rounds]
    what = "MACs" if shape == "macs_budget" else "table latency"
    pruner.notes.append(f"latency budget met by measurement: internal {what} budget {100 * best.budget:.1f} % "
                      f"measured {100 * best.measured:.1f} % ({len(rounds)} round(s), the allocation chosen "
                      f"at {len(chosen_at)} of them" + (f"; {len(located)} brief channels-only "
                                                         "round(s) timed before choosing it)" if located else ")"))


@dataclass(frozen=True)
class LatencyTarget:
    """What the first choice after locating knows: the requested cut, the cut the channels-only
    allocation is expected to measure at the choice's internal budget, the measured cut per point
    of internal budget, and that budget. A branch removal that makes the model so much faster
    that the feedback would move the budget more than RECHOOSE_AFTER (and choose again) is judged
    at the lower budget where it is expected to land instead (onnxprune.pipeline.branches): at
    equal latency, not at equal MACs (left out instead, it had ResNet-56 at batch 64 keep channels
    only and cut 68 % of the MACs for a 40 % latency request: 78.4 % top-1)."""
    requested: float
    channels_only: float
    slope: float
    budget: float

    def _overshoot(self, time_ratio: float) -> float:
        """Points of internal budget by which a candidate timed ``time_ratio`` x the channels-only
        one is expected to overshoot the request."""
        cut = 1 - (1 - self.channels_only) * time_ratio
        return (cut - self.requested) / self.slope

    def too_fast(self, time_ratio: float) -> bool:
        """Whether such a candidate overshoots by more than RECHOOSE_AFTER."""
        return self._overshoot(time_ratio) > RECHOOSE_AFTER

    def landing_budget(self, time_ratio: float) -> float:
        """The internal budget at which such a candidate is expected to land on the request."""
        return max(self.budget - self._overshoot(time_ratio), 0.0)


def _candidate_name(result) -> dict:
    """{"candidate": the name of the candidate a round allocated with} (empty: none judged)."""
    choice = None if result is None else result[3]
    return {} if choice is None else {"candidate": choice.candidate.name}


def _stable(recipes: list[str]) -> bool:
    """Whether the last two choices of the allocation chose the same recipe."""
    return len(recipes) >= 2 and recipes[-1] == recipes[-2]


def _slope(rounds) -> float | None:
    """Measured cut per internal budget between the two most distant locating rounds (None: fewer
    than two, or too close to tell)."""
    ok = sorted((r for r in rounds if r.measured is not None), key=lambda r: r.budget)
    if len(ok) < 2 or ok[-1].budget - ok[0].budget < 0.05:
        return None
    return (ok[-1].measured - ok[0].measured) / (ok[-1].budget - ok[0].budget)


def _measure(pruner, **timing):
    """``measure(result)`` for the feedback loop: the pruned model timed against the original."""
    from onnxprune.latency.measure import measure_pair

    def measure(result):
        pruned = apply_plan(pruner.analysis_, Plan.build(pruner.analysis_, result[1]), check=False)
        got = measure_pair(pruner.model_, pruned, pruner.latency_.engine, pruner.latency_.batch, **timing)
        return got["reduction"], got["speedup"]
    return measure


class Located(NamedTuple):
    """The internal budget to choose the allocation at, the locating rounds, their measured cut
    per point of budget (None: unknown or not used), and whether they set the budget."""
    budget: float
    rounds: list
    slope: float | None = None
    used: bool = False


def _locate(pruner, data, shape: str, start: float, notes_before: list[str]) -> Located:
    """Where to choose the allocation (see :class:`Located`): a few rounds with one fixed recipe
    (the middle weight sharpness), channels only, briefly timed. Nothing to gain
    when one round is all the feedback may run, or when the allocation is not chosen by judging
    candidates (each round is then already as cheap)."""
    from onnxprune.latency.feedback import _next_budget, meet_measured_latency
    alloc, _, _ = pruner.config.resolved()
    requested = pruner.config.latency_reduction
    if LOCATE_ROUNDS <= 0 or pruner.config.latency_rounds <= 1 or data is None or \
            alloc not in ("convex", "linear") or pruner.config.ratio is not None:
        return Located(start, [])
    if pruner.latency_.measured_full < LOCATE_MIN_MODEL_S:
        log.info("latency feedback: the model runs %.2f ms per batch, too fast for brief timings to locate the "
                 "budget; the allocation is chosen at %.1f %%", 1e3 * pruner.latency_.measured_full, 100 * start)
        return Located(start, [])
    temps = pruner.config.temperatures
    recipe = recipe_name(alloc, 1.0 if 1.0 in temps else temps[len(temps) // 2])

    def attempt(budget):
        pruner.notes = list(notes_before)
        allocation = pruner._allocate(data, rule=ChoiceRule.fixed_recipe(recipe), **{shape: budget})
        return allocation, select_all(pruner.analysis_, allocation, pruner.scores_)

    log.info("latency feedback: locating the internal budget with %s, channels only, before choosing the "
             "allocation", recipe)
    try:
        best, rounds = meet_measured_latency(requested, attempt,
                                             _measure(pruner, **LOCATE_TIMING), rounds=LOCATE_ROUNDS,
                                             tolerance=LOCATE_TOLERANCE, start=start, confirm=False,
                                             name="locating")
    except BudgetError:         # the measured rounds say what is out of reach, with precise timings
        return Located(start, [])
    finally:
        pruner.notes = list(notes_before)
    slope = _slope(rounds)
    if abs(best.measured - requested) <= LOCATE_TOLERANCE and slope is None:
        return Located(best.budget, rounds, None, True)        # landed at once
    if slope is None or slope < LOCATE_MIN_SLOPE:
        log.info("latency feedback: channels-only cuts barely move the measured latency here (%s); the "
                 "allocation is chosen at %.1f %%", "one round" if slope is None else
                 f"{slope:.2f} points of cut per point of budget", 100 * start)
        return Located(start, rounds)
    if abs(best.measured - requested) > LOCATE_TOLERANCE:
        return Located(_next_budget(rounds, requested, slope), rounds, slope, True)
    return Located(best.budget, rounds, slope, True)
