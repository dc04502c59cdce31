"""The prune job end to end: analysis → budget allocation → channel selection → rewrite → verify.

``prune(model, PruneConfig(...))`` returns a :class:`PruneResult` holding the pruned model, the
plan and the verification report; the CLI writes them to disk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, asdict
from typing import Callable

import numpy as np
import onnx

from .allocation import AllocationProblem, Budget, Posynomial, allocate, check_feasible
from .analysis import Analysis, analyze
from .cost import CostModel
from .errors import BudgetError, OnnxPruneError, VerificationError
from .plan import Plan
from .rewrite import apply_plan
from .selection import group_scores, select_all
from .verify import VerifyReport, compare

__all__ = ["PruneConfig", "PruneResult", "prune", "budget_problem"]


@dataclass(frozen=True)
class PruneConfig:
    """What to remove and how. Give exactly one of the three budgets."""
    flops_reduction: float | None = None     # fraction of MACs (= of FLOPs) to remove
    params_reduction: float | None = None    # fraction of parameters to remove
    ratio: float | None = None               # fraction of channels removed from every group
    allocation: str = "uniform"              # uniform | global
    criterion: str = "l1"                    # l1 | l2 | fpgm | random
    round_to: int = 1                        # kept channel counts are multiples of this
    seed: int = 0
    verify: bool = True
    rtol: float = 1e-5

    def validate(self) -> None:
        given = [x for x in (self.flops_reduction, self.params_reduction, self.ratio) if x is not None]
        if len(given) == 0:
            raise BudgetError("give a budget: --flops-reduction F, --params-reduction F or --ratio R")
        for name in ("flops_reduction", "params_reduction", "ratio"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v < 1.0):
                raise BudgetError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.ratio is not None and len(given) > 1:
            raise BudgetError("--ratio sets every group's ratio; it cannot be combined with a reduction budget")
        if self.round_to < 1:
            raise BudgetError(f"--round-to must be >= 1, got {self.round_to}")
        if self.allocation not in ("uniform", "global"):
            raise BudgetError(f"unknown allocation {self.allocation!r}: choose uniform or global")


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    analysis: Analysis
    report: VerifyReport | None
    timings: dict[str, float] = field(default_factory=dict)


def _posynomial(terms: dict[tuple[int, ...], float]) -> Posynomial:
    return Posynomial(terms=tuple((c, k) for k, c in terms.items() if k and c > 0),
                      constant=float(terms.get((), 0.0)))


def budget_problem(analysis: Analysis, cost: CostModel, config: PruneConfig) -> AllocationProblem:
    """The allocation problem for the prunable groups under the configured budgets."""
    prunable = {g.id for g in analysis.prunable}
    budgets = []
    if config.flops_reduction is not None:
        budgets.append(Budget("macs", _posynomial(cost.macs_terms(prunable)),
                              cost.macs() * (1 - config.flops_reduction)))
    if config.params_reduction is not None:
        budgets.append(Budget("params", _posynomial(cost.params_terms(prunable)),
                              cost.params() * (1 - config.params_reduction)))
    multiple = {}
    for g in analysis.prunable:
        m = config.round_to * g.equal_blocks // math.gcd(config.round_to, g.equal_blocks)
        multiple[g.id] = m
    channels = {g.id: g.channels for g in analysis.prunable}
    return AllocationProblem(channels=channels, budgets=tuple(budgets), multiple=multiple)


def _ratio_counts(analysis: Analysis, config: PruneConfig) -> dict[int, int]:
    counts = {}
    for g in analysis.prunable:
        m = config.round_to * g.equal_blocks // math.gcd(config.round_to, g.equal_blocks)
        n = int(round(g.channels * (1 - config.ratio) / m)) * m
        counts[g.id] = min(g.channels, max(m, n))
    return counts


def _exact_repair(analysis, cost, problem, counts, scores, targets, full):
    """The allocator works on expected counts; a group seen only in part by a tensor (e.g. a
    residual width that grows through channel Pad) can land a little off. Step counts by their
    multiple until the exact cost meets every target, then add back what still fits."""
    def exact(c):
        kept = select_all(analysis, c, scores)
        return {"macs": cost.macs(kept), "params": cost.params(kept)}

    def ok(values):
        return all(values[name] <= t * (1 + 1e-9) for name, t in targets.items())

    mult = problem.multiple
    mins = {g: max(mult.get(g, 1), 1) for g in counts}
    values = exact(counts)
    for _ in range(4 * len(counts) + 50):
        if ok(values):
            break
        best = None
        for g, n in counts.items():
            if n - mult[g] < mins[g]:
                continue
            trial = {**counts, g: n - mult[g]}
            v = exact(trial)
            gain = sum((values[k] - v[k]) / full[k] for k in targets)
            loss = math.log(n / (n - mult[g]))
            score = gain / loss if loss > 0 else gain
            if best is None or score > best[0]:
                best = (score, trial, v)
        if best is None:
            break
        _, counts, values = best
    # add back, one multiple at a time, what still fits (smallest groups first: cheapest)
    def slack(v):
        return min((targets[k] - v[k]) / full[k] for k in targets)

    changed = ok(values)
    while changed and slack(values) > 0.003:
        changed = False
        for g in sorted(counts, key=lambda g: (problem.channels[g], g)):
            n = counts[g]
            if n + mult[g] > problem.channels[g] or slack(values) <= 0.003:
                continue
            trial = {**counts, g: n + mult[g]}
            v = exact(trial)
            if ok(v):
                counts, values, changed = trial, v, True
    return counts, values


def prune(model: onnx.ModelProto, config: PruneConfig,
          progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune ``model`` under ``config``; raises an OnnxPruneError subclass on bad input."""
    config.validate()
    say = progress or (lambda msg: None)
    timings = {}
    t0 = time.perf_counter()
    analysis = analyze(model)
    cost = CostModel(analysis)
    timings["analysis_s"] = time.perf_counter() - t0
    say(f"analysis: {len(analysis.groups)} channel groups, {len(analysis.prunable)} prunable")
    if not analysis.prunable:
        raise BudgetError("no channel group can be pruned in this model (run `onnxprune analyze` to see why)")

    t0 = time.perf_counter()
    scores = {g.id: group_scores(analysis, g, config.criterion, config.seed) for g in analysis.groups}
    full = {"macs": cost.macs(), "params": cost.params()}
    problem = budget_problem(analysis, cost, config)
    notes: list[str] = []
    if config.ratio is not None:
        counts = _ratio_counts(analysis, config)
        method = "ratio"
    else:
        check_feasible(problem)
        method = config.allocation
        alloc = allocate(problem, config.allocation,
                         scores={g: scores[g] for g in problem.channels} if config.allocation == "global" else None)
        counts = dict(alloc.counts)
        notes.extend(alloc.notes)
        targets = {b.name: b.target for b in problem.budgets}
        counts, _ = _exact_repair(analysis, cost, problem, counts, scores, targets, full)
    kept = select_all(analysis, counts, scores)
    timings["allocation_s"] = time.perf_counter() - t0

    achieved = {"macs": cost.macs(kept), "params": cost.params(kept)}
    requested = {}
    if config.flops_reduction is not None:
        requested["macs_reduction"] = config.flops_reduction
    if config.params_reduction is not None:
        requested["params_reduction"] = config.params_reduction
    if config.ratio is not None:
        requested["channel_ratio"] = config.ratio
    plan = Plan.build(
        analysis, kept,
        settings={k: v for k, v in asdict(config).items() if k not in ("verify", "rtol")} | {"method": method},
        budget={"requested": requested,
                "achieved": {"macs_reduction": 1 - achieved["macs"] / full["macs"],
                             "params_reduction": 1 - achieved["params"] / full["params"]},
                "notes": notes},
        cost={"unit": "MACs per image; FLOPs = 2 x MACs",
              "macs": {"original": full["macs"], "pruned": achieved["macs"]},
              "params": {"original": full["params"], "pruned": achieved["params"]}})
    for gp in plan.groups:
        if gp.prunable:
            gp.scores = [float(s) for s in scores[gp.id]]

    t0 = time.perf_counter()
    pruned = apply_plan(analysis, plan)
    timings["rewrite_s"] = time.perf_counter() - t0
    report = None
    if config.verify:
        t0 = time.perf_counter()
        report = compare(model, pruned, plan, rtol=config.rtol, seed=config.seed)
        timings["verify_s"] = time.perf_counter() - t0
        if not report.ok:
            bad = [o for o in report.outputs if not o.ok]
            raise VerificationError(
                f"pruned model differs from the masked original at output '{bad[0].name}' "
                f"(max abs {bad[0].max_abs:.3g}, rel {bad[0].max_rel:.3g}); nothing written")
    return PruneResult(pruned, plan, analysis, report, timings)
