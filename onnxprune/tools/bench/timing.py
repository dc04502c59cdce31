"""The timing loop (warm-up, then interleaved rounds) and the latency statistics of a list of samples."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from onnxprune.latency.measure import PAIR_ROUND_S, median_se
from onnxprune.tools.bench.records import one_line

if TYPE_CHECKING:
    from onnxprune.tools.bench.engines import Runner
    from onnxprune.tools.bench.models import BenchModel

__all__ = ["Slot", "measure_rounds", "paired_speedup", "latency_stats", "time_runs"]


@dataclass
class Slot:
    """One model's prepared runner and its timed samples in a measurement."""

    model: BenchModel
    runner: Runner | None = None
    samples: list = field(default_factory=list)       # seconds
    round_medians: dict = field(default_factory=dict)  # round -> median seconds
    est: float | None = None
    error: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.samples))


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_rounds(slots: list[Slot], warmup: int, min_runs: int, min_time_s: float,
                   max_runs: int, precision: float | None = None, max_time_s: float | None = None) -> int:
    """Warm up each slot, then time interleaved rounds; returns the number of rounds. With more
    than one model, each model's first run of a round is not timed: on onnxruntime CPU the run after
    a switch of session is up to 2x slower (threads wake, buffers come back into cache). Rounds are
    short (at most ``PAIR_ROUND_S`` per model, see onnxprune.latency.measure: slow spells outlast
    a round and hit the models of a long round unequally). Once every slot has ``min_runs`` runs
    and ``min_time_s`` of timed runs, ``precision`` (relative standard error of each speed-up over
    the first slot, see :func:`paired_speedup`) keeps timing until every speed-up is that precise,
    a slot reaches ``max_runs`` or ``max_time_s`` of timed runs (default ``min_time_s``)."""
    for s in slots:
        try:
            for _ in range(warmup):
                s.est = _timed(s.runner.fn)
        except Exception as exc:
            s.error = f"failed in warm-up ({one_line(exc)})"
    round_s = min(max(min_time_s / 10.0, 0.002), PAIR_ROUND_S)
    cap_s = max(min_time_s if max_time_s is None else max_time_s, min_time_s)

    def done(s: Slot) -> bool:
        n = len(s.samples)
        return n >= max_runs or (n >= min_runs and s.total >= min_time_s)

    def precise(live: list[Slot]) -> bool:
        if precision is None or len(live) < 2 or live[0] is not slots[0]:
            return True
        if any(len(s.samples) >= max_runs or s.total >= cap_s for s in live):
            return True
        for s in live[1:]:
            speedup, se = paired_speedup(live[0].round_medians, s.round_medians)
            if speedup is None or se is None or se > precision * speedup:
                return False
        return True

    rounds = 0
    while True:
        live = [s for s in slots if s.error is None]
        if not live or (all(done(s) for s in live) and precise(live)):
            break
        order = live if rounds % 2 == 0 else live[::-1]
        for s in order:
            if len(s.samples) >= max_runs:
                continue
            chunk = 1 if s.est is None else int(min(max(round_s / max(s.est, 1e-9), 1), 200))
            chunk = min(chunk, max_runs - len(s.samples))
            try:
                if len(live) > 1:
                    s.runner.fn()    # the run after a switch of model is not timed (see latency.measure)
                times = [_timed(s.runner.fn) for _ in range(chunk)]
            except Exception as exc:
                s.error = f"failed while timing ({one_line(exc)})"
                continue
            s.samples.extend(times)
            s.round_medians[rounds] = float(np.median(times))
            s.est = float(np.median(times))
        rounds += 1
    return rounds


def paired_speedup(base: dict[int, float], other: dict[int, float]) -> tuple[float | None, float | None]:
    """(speed-up of a model over the baseline: the median, over the rounds both were timed in, of
    the per-round ratio of their median times (``Slot.round_medians``), its standard error);
    (None, None) without a common round, SE None under 3 rounds."""
    ratios = [base[k] / other[k] for k in sorted(base.keys() & other.keys()) if other[k] > 0]
    if not ratios:
        return None, None
    se = median_se(ratios)
    return float(np.median(ratios)), (se if math.isfinite(se) else None)


def latency_stats(samples_s: Sequence[float], batch: int) -> dict:
    """mean, p50, p90, p99, IQR and min in ms, and images/s at the median, of samples in seconds."""
    t = np.asarray(samples_s, dtype=np.float64) * 1e3
    p25, p50, p75, p90, p99 = np.percentile(t, [25, 50, 75, 90, 99])
    return {"mean_ms": float(t.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "iqr_ms": float(p75 - p25), "min_ms": float(t.min()),
            "images_per_s": float(batch / (p50 / 1e3)) if p50 > 0 else float("inf")}


def time_runs(fn: Callable[[], None], warmup: int, runs: int) -> list[float]:
    """Seconds taken by each of ``runs`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [_timed(fn) for _ in range(runs)]
