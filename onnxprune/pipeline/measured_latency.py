"""A latency budget met by measurement: internal budgets allocated, pruned models timed, corrected
(the loop is onnxprune.latency.feedback; this wires it to the pruner's allocation)."""
from __future__ import annotations

from onnxprune.log import get_logger
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.scoring.selection import select_all

__all__ = ["allocate_measured"]

log = get_logger(__name__)

RECHOOSE_AFTER = 0.10   # the candidate (recipe, branches removed) is chosen again when the internal
                        # budget moves further than this from where it was chosen (the branches
                        # chosen at a 50 % MACs cut, kept to 79 % by channels alone, cost ResNet-56
                        # 9 points of top-1 against a MACs budget landing at the same latency)


def allocate_measured(pruner, data) -> None:
    """Allocate at internal budgets until the pruned model's measured cut on the target lands
    within a tolerance of the request (see onnxprune.latency.feedback). The internal budget is a
    MACs cut (``latency_shape`` "macs") or a cut of the tables' latency ("tables")."""
    from onnxprune.latency.feedback import meet_measured_latency
    from onnxprune.latency.measure import measure_pair
    notes_before = list(pruner.notes)
    shape = "macs_budget" if pruner.config.latency_shape == "macs" else "latency_budget"
    start = max(pruner.config.latency_reduction, pruner.config.flops_reduction or 0.0) \
        if shape == "macs_budget" else pruner.config.latency_reduction

    chosen_at: list[float] = []     # the internal budgets at which a candidate was chosen

    def attempt(budget):
        # the first round chooses the candidate (weight sharpness, branches removed); later rounds
        # keep it and move only the budget (one allocation and one timing), until the budget has
        # moved more than RECHOOSE_AFTER from where it was chosen: then it is chosen again
        pruner.notes = list(notes_before)
        if chosen_at and abs(budget - chosen_at[-1]) > RECHOOSE_AFTER:
            pruner._fixed_candidate = None
            log.info("latency feedback: internal budget %.1f %% is %.1f points from where the allocation was "
                     "chosen (%.1f %%): choosing again", 100 * budget, 100 * abs(budget - chosen_at[-1]),
                     100 * chosen_at[-1])
        if pruner._fixed_candidate is None:
            chosen_at.append(budget)
        allocation = pruner._allocate(data, **{shape: budget})
        pruner._fixed_candidate = None if pruner.choice_ is None else pruner.choice_.candidate
        return allocation, select_all(pruner.analysis_, allocation, pruner.scores_), list(pruner.notes), pruner.choice_

    def measure(result):
        pruned = apply_plan(pruner.analysis_, Plan.build(pruner.analysis_, result[1]), check=False)
        got = measure_pair(pruner.model_, pruned, pruner.latency_.engine, pruner.latency_.batch)
        return got["reduction"], got["speedup"]

    try:
        best, rounds = meet_measured_latency(pruner.config.latency_reduction, attempt, measure,
                                             rounds=pruner.config.latency_rounds, start=start)
    finally:
        pruner._fixed_candidate = None
    pruner.allocation_, pruner.kept_, pruner.notes, pruner.choice_ = best.result
    pruner.latency_feedback_ = [{**r.to_dict(), "allocation_chosen": r.budget in chosen_at, "kept": r is best}
                                for r in rounds]
    what = "MACs" if shape == "macs_budget" else "table latency"
    pruner.notes.append(f"latency budget met by measurement: internal {what} budget {100 * best.budget:.1f} % "
                      f"measured {100 * best.measured:.1f} % ({len(rounds)} round(s), the allocation chosen "
                      f"at {len(chosen_at)} of them)")

