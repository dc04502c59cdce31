"""A latency budget met by measurement: internal budgets allocated, pruned models timed, corrected
(the loop is onnxprune.latency.feedback; this wires it to the pruner's allocation)."""
from __future__ import annotations

from onnxprune.log import get_logger
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.scoring.selection import select_all

__all__ = ["allocate_measured"]

log = get_logger(__name__)


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

    def attempt(budget):
        # the first round chooses the candidate (weight sharpness); later rounds keep it and move
        # only the budget, so a round costs one allocation and one timing
        pruner.notes = list(notes_before)
        allocation = pruner._allocate(data, **{shape: budget})
        pruner._fixed_candidate = None if pruner.choice_ is None else pruner.choice_.candidate
        return allocation, select_all(pruner.analysis_, allocation, pruner.scores_), list(pruner.notes), pruner.choice_

    def measure(result):
        pruned = apply_plan(pruner.analysis_, Plan.build(pruner.analysis_, result[1]), check=False)
        got = measure_pair(pruner.model_, pruned, pruner.latency_.engine, pruner.latency_.batch)
        return 1 - got["pruned_s"] / got["original_s"], got["speedup"]

    try:
        best, rounds = meet_measured_latency(pruner.config.latency_reduction, attempt, measure,
                                             rounds=pruner.config.latency_rounds, start=start)
    finally:
        pruner._fixed_candidate = None
    pruner.allocation_, pruner.kept_, pruner.notes, pruner.choice_ = best.result
    pruner.latency_feedback_ = [r.to_dict() for r in rounds]
    what = "MACs" if shape == "macs_budget" else "table latency"
    pruner.notes.append(f"latency budget met by measurement: internal {what} budget {100 * best.budget:.1f} % "
                      f"measured {100 * best.measured:.1f} % ({len(rounds)} round(s))")

