"""Closing the loop on a latency budget: allocate, build the pruned model, time it, correct.

The tables predict whole-model latency only up to what a sum of layers timed apart can say: fusions,
layout reorders the engine inserts between layers whose channel counts leave its blocks, memory
traffic and the ops between convolutions make the prediction drift (on onnxruntime CPU it
overestimated the cut by 10-20 points of latency on ResNet-56). So the *level* is set here by
measurement, whatever shapes the allocation across groups: an internal MACs budget (the pipeline's
default: the information-weighted allocation with per-group channel steps and branch removal) or an
internal cut of the tables' latency (``latency_shape="tables"``). Each round allocates at the internal budget, builds the pruned model (no
verification, no refit: latency depends on the shape only), times it against the original
interleaved on the target, and moves the internal budget by a secant step towards the requested
cut. A round that lands within the tolerance is timed a second time, and that second timing alone
decides and is recorded: the first was picked for landing, so it is biased towards the request
(the loop mostly approaches from below, and the first timing to land tends to be a high one: in B2
the benchmark's own re-timing of models whose first two timings averaged within 2-3 points came
out 3-6 points short; on a shared CPU one timing of a 1 ms model landed within 3 points where a
re-timing measured 10 points short). The round whose measured cut lands closest to the request is
kept; every round is recorded. When the largest internal budget the allocator can meet was timed
and still fell short of the request by more than the tolerance, the budget is out of reach: a
BudgetError names the largest cut measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from onnxprune.errors import BudgetError
from onnxprune.log import get_logger

__all__ = ["FeedbackRound", "meet_measured_latency", "TOLERANCE"]

log = get_logger(__name__)

TOLERANCE = 0.02        # stop once the measured cut is within this of the request (absolute)
MAX_INTERNAL = 0.95     # the internal budget never asks for more than this cut
MAX_STEP = 0.15         # one round moves the internal budget by at most this much


@dataclass
class FeedbackRound:
    """One round: the internal budget asked of the allocator and the cut measured on the target."""
    budget: float
    measured: float | None          # None: the allocator could not meet this internal budget
    speedup: float | None = None
    result: object = None           # whatever ``attempt`` returned (kept out of the record)

    def to_dict(self) -> dict:
        return {"budget": round(self.budget, 4),
                "measured_reduction": None if self.measured is None else round(self.measured, 4),
                "speedup": None if self.speedup is None else round(self.speedup, 4)}


def _bracket(rounds: list[FeedbackRound], requested: float) -> tuple[float, float]:
    """(largest internal budget measured short of the request, smallest measured beyond it)."""
    ok = [r for r in rounds if r.measured is not None]
    short = [r.budget for r in ok if r.measured < requested]
    beyond = [r.budget for r in ok if r.measured > requested] + [r.budget for r in rounds if r.measured is None]
    return max(short, default=0.0), min(beyond, default=MAX_INTERNAL)


def _next_budget(rounds: list[FeedbackRound], requested: float, slope_hint: float | None = None) -> float:
    """Secant step through the last two measured rounds (proportional from one round), kept inside
    the bracket the measurements so far set and at most ``MAX_STEP`` from the last budget: a timing
    is noisy (a few points of latency cut on a shared CPU), and a secant through two noisy points
    can jump far; outside the bracket, bisect. ``slope_hint`` (measured cut per internal budget,
    e.g. from rounds that located the budget) replaces the proportional step of a single round:
    a small cut often buys nothing, so measured / budget understates the slope."""
    ok = [r for r in rounds if r.measured is not None]
    last = ok[-1]
    slope = last.measured / last.budget if last.budget > 0 and last.measured > 0 else 1.0
    if slope_hint is not None and slope_hint > 0.05:
        slope = slope_hint
    if len(ok) >= 2 and abs(ok[-1].budget - ok[-2].budget) > 1e-4:
        secant = (ok[-1].measured - ok[-2].measured) / (ok[-1].budget - ok[-2].budget)
        if secant > 0.05:
            slope = secant
    slope = min(max(slope, 0.1), 10.0)
    move = min(max((requested - last.measured) / slope, -MAX_STEP), MAX_STEP)
    step = min(max(last.budget + move, 0.0), MAX_INTERNAL)
    lo, hi = _bracket(rounds, requested)
    if lo < hi and not lo < step < hi:
        step = (lo + hi) / 2
    return step


def meet_measured_latency(requested: float, attempt: Callable[[float], object],
                          measure: Callable[[object], tuple[float, float]], rounds: int = 4,
                          tolerance: float = TOLERANCE, start: float | None = None, confirm: bool = True,
                          name: str = "latency feedback", slope_hint: float | None = None
                          ) -> tuple[FeedbackRound, list[FeedbackRound]]:
    """(best round, every round). ``attempt(budget)`` allocates at an internal budget (raises
    BudgetError when out of reach), the first at ``start`` (default ``requested``);
    ``measure(result)`` returns (measured cut, speed-up). ``confirm``: a round that lands is timed
    a second time (see the module docstring). ``name`` starts the log lines; ``slope_hint``: see :func:`_next_budget`."""
    history: list[FeedbackRound] = []
    budget, ceiling = (requested if start is None else min(start, MAX_INTERNAL)), MAX_INTERNAL
    for k in range(max(rounds, 1)):
        try:
            result = attempt(budget)
        except BudgetError:
            if not any(r.measured is not None for r in history):
                raise
            history.append(FeedbackRound(budget, None))
            ceiling = budget
            best_ok = max((r.budget for r in history if r.measured is not None), default=requested)
            budget = (best_ok + ceiling) / 2
            log.info("%s %d: internal budget %.1f %% out of reach; trying %.1f %%", name, k + 1,
                     100 * history[-1].budget, 100 * budget)
            continue
        cut, speedup = measure(result)
        confirmed = ""
        if confirm and abs(cut - requested) <= tolerance:       # a lucky timing must not end the loop: time it again
            first = cut
            cut, speedup = measure(result)          # unbiased: not selected for landing
            confirmed = f", timed twice: {100 * first:.1f} % the first time"
        history.append(FeedbackRound(budget, cut, speedup, result))
        log.info("%s %d: internal budget %.1f %% -> measured cut %.1f %% (%.2fx; requested %.1f %%%s)",
                 name, k + 1, 100 * budget, 100 * cut, speedup, 100 * requested, confirmed)
        if abs(cut - requested) <= tolerance:
            break
        budget = min(_next_budget(history, requested, slope_hint), ceiling - 1e-3)
    best = min((r for r in history if r.measured is not None), key=lambda r: abs(r.measured - requested))
    _check_reachable(history, requested, tolerance)
    return best, history


def _check_reachable(history: list[FeedbackRound], requested: float, tolerance: float) -> None:
    """BudgetError when a round at (or within 2 points below) the largest internal budget the
    allocator meets was timed and every measured cut stays short of the request by more than the
    tolerance: no allocation reaches it. Rounds that merely ran out leave the closest round kept."""
    ok = [r for r in history if r.measured is not None]
    top = max(ok, key=lambda r: r.measured)
    ceiling = min([r.budget for r in history if r.measured is None] + [MAX_INTERNAL])
    largest = max(r.budget for r in ok)
    if top.measured < requested - tolerance and largest >= ceiling - 0.02:
        raise BudgetError(f"a measured latency cut of {100 * requested:.1f} % is out of reach: the largest "
                          f"cut measured was {100 * top.measured:.1f} % ({top.speedup:.2f}x), at the largest "
                          f"internal budget the allocation meets ({100 * largest:.1f} %)")
