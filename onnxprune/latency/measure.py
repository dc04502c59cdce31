"""Measured speed-up of a pruned model over its original: both sessions, interleaved rounds.

Timing a ~1 ms model on a small shared machine is noisy in time: the same model's median over a
0.1 s window moves by +-25 % from one window to the next, and with onnxruntime's spinning worker
threads on 2 cores any interference stalls a whole run. Two models timed in interleaved rounds see
the same conditions round by round, so :func:`measure_pair` compares them round by round (the
median of the per-round ratios; a slow spell slows both sides of a round alike) and keeps timing
until that ratio's standard error is small or a time limit is reached. Its rounds are short
(``PAIR_ROUND_S``): slow spells last longer than a round and hit the two models unequally. On this
project's 2-core machine, one pair of ResNet-56 models at batch 1 (about 1 ms) measured 5 times
for 6 s per model gave cuts with a standard deviation of 9.7 points from rounds of 0.1 s, 2.9
points from rounds of 0.02 s (pooled medians of all runs instead of per-round ratios: 8.8 points
over 12 s measurements, against 3.6).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import onnx

from onnxprune.latency.table import Engine

__all__ = ["measure_pair", "measure_models", "median_se", "MIN_ROUND_S", "PAIR_ROUND_S", "MIN_MODEL_S",
           "MAX_MODEL_S", "PRECISION"]

MIN_ROUND_S = 0.1      # each model runs at least this long per interleaved round (measure_models)
PAIR_ROUND_S = 0.02    # ... in a speed-up measurement's rounds (measure_pair: short rounds, many of them)
MIN_MODEL_S = 3.0      # a speed-up measurement times each model at least this long in all (more rounds)
MAX_MODEL_S = 10.0     # ... and at most about this long while its cut is still imprecise
PRECISION = 0.015      # ... stopping once the standard error of the measured cut is at most this

Samples = list[list[list[float]]]     # [model][round] -> seconds of each timed run


def _runner(model: onnx.ModelProto, engine: Engine, batch: int):
    from onnxprune.runtime import make_session, random_inputs, with_dynamic_batch
    m = with_dynamic_batch(model)
    providers = ["CPUExecutionProvider"] if engine.provider == "CPUExecutionProvider" else \
        [engine.provider, "CPUExecutionProvider"]
    sess = make_session(m, providers, threads=engine.threads, quiet=True)
    feeds = random_inputs(m, batch=batch)
    sess.run(None, feeds)
    return lambda: sess.run(None, feeds)


def _prepared(models: list[onnx.ModelProto], engine: Engine, batch: int, runs: int,
              min_round_s: float) -> tuple[list[Callable[[], object]], list[float], int]:
    """(one runner per model, the seconds of one run of each, the runs a round times: at least
    ``runs``, more for fast models so that a round lasts ``min_round_s``)."""
    fns = [_runner(m, engine, batch) for m in models]
    once = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        once.append(time.perf_counter() - t0)
    return fns, once, max(runs, math.ceil(min_round_s / max(min(once), 1e-6)))


def _interleaved(fns: list[Callable[[], object]], runs: int, more: Callable[[Samples], bool]) -> Samples:
    """Time rounds while ``more(samples)``: each round runs every model ``runs`` times (the order
    reversed every other round, so drift and load spread over all models alike). The first run
    after a switch of model is not timed: on onnxruntime CPU it runs up to 2x slower (its threads
    wake, its buffers come back into cache), which made medians of 2-3 runs bimodal."""
    samples: Samples = [[] for _ in fns]
    order = list(range(len(fns)))
    while more(samples):
        for i in (order if len(samples[0]) % 2 == 0 else order[::-1]):
            fns[i]()
            block = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fns[i]()
                block.append(time.perf_counter() - t0)
            samples[i].append(block)
    return samples


def measure_models(models: list[onnx.ModelProto], engine: Engine, batch: int, rounds: int = 5,
                   runs: int = 3, budget_s: float | None = None, max_rounds: int = 15,
                   min_round_s: float = MIN_ROUND_S, min_model_s: float | None = None) -> list[float]:
    """Seconds per batch of each model, timed in interleaved rounds (see :func:`_interleaved`) of
    ``runs`` runs each, more for fast models (a round runs each model at least ``min_round_s``:
    21 runs of a 1 ms model measured cuts 25 points apart on a shared machine): the first model's
    median, the others' as the first's times the median of their per-round ratios to it (paired,
    as in :func:`measure_pair`).
    ``budget_s``: run more rounds, up to ``max_rounds``, while they fit in about that many seconds.
    ``min_model_s``: run more rounds, up to ``max_rounds``, until each model is timed about that
    many seconds in all."""
    fns, once, runs = _prepared(models, engine, batch, runs, min_round_s)
    if budget_s is not None:        # as many rounds (``rounds`` .. ``max_rounds``) as fit the time budget
        per_round = sum(once) * (runs + 1)
        rounds = int(min(max_rounds, max(rounds, budget_s // max(per_round, 1e-9))))
    if min_model_s is not None:     # enough rounds that the fastest model is timed ``min_model_s`` in all
        rounds = int(min(max_rounds, max(rounds, math.ceil(min_model_s / max(runs * min(once), 1e-9)))))
    samples = _interleaved(fns, runs, lambda s: len(s[0]) < rounds)
    first = float(np.median(np.concatenate(samples[0])))
    return [first] + [first * float(np.median(_round_ratios([samples[0], s]))) for s in samples[1:]]


def _round_ratio(first: list[float], second: list[float]) -> float:
    """One round: the second model's median time over the first's."""
    return float(np.median(second) / np.median(first))


def _round_ratios(samples: Samples) -> np.ndarray:
    """Per round: the second model's median time over the first's."""
    return np.array([_round_ratio(a, b) for a, b in zip(samples[0], samples[1])])


def median_se(ratios) -> float:
    """Standard error of the median of ``ratios`` (normal approximation: 1.25 sd / sqrt(n); inf
    under 3 values)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    return float("inf") if len(ratios) < 3 else float(1.2533 * np.std(ratios, ddof=1) / math.sqrt(len(ratios)))


def measure_pair(original: onnx.ModelProto, pruned: onnx.ModelProto, engine: Engine, batch: int,
                 rounds: int = 7, runs: int = 3, min_model_s: float | None = None,
                 max_model_s: float | None = None, precision: float | None = None,
                 max_rounds: int = 2000, min_round_s: float = PAIR_ROUND_S) -> dict:
    """Speed-up of ``pruned`` over ``original`` timed in interleaved rounds: 1 / the median of the
    per-round ratios pruned / original (see the module docstring). At least ``rounds`` rounds and
    ``min_model_s`` seconds per model (default ``MIN_MODEL_S``); then more rounds while the cut's
    standard error exceeds ``precision`` (default ``PRECISION``), until a model has been timed
    ``max_model_s`` (default ``MAX_MODEL_S``) or ``max_rounds`` ran. Returns the pooled median
    seconds per batch of both, the speed-up, the cut (1 - 1 / speed-up) and its standard error, and
    the rounds run."""
    min_s = MIN_MODEL_S if min_model_s is None else min_model_s
    max_s = max(MAX_MODEL_S if max_model_s is None else max_model_s, min_s)
    want = PRECISION if precision is None else precision
    fns, _, runs = _prepared([original, pruned], engine, batch, runs, min_round_s)

    ratios: list[float] = []        # per finished round, kept as rounds finish
    timed = [0.0, 0.0]

    def more(samples: Samples) -> bool:
        done = len(samples[0])
        for a, b in zip(samples[0][len(ratios):], samples[1][len(ratios):]):
            ratios.append(_round_ratio(a, b))
            timed[0], timed[1] = timed[0] + sum(a), timed[1] + sum(b)
        if done >= max_rounds:
            return False
        if done < rounds or min(timed) < min_s:
            return True
        return min(timed) < max_s and median_se(ratios) > want

    samples = _interleaved(fns, runs, more)       # ``more`` has taken the ratio of every round run
    ratio, se = float(np.median(ratios)), median_se(ratios)
    a, b = (float(np.median(np.concatenate(s))) for s in samples)
    return {"original_s": a, "pruned_s": b, "speedup": 1 / ratio if ratio > 0 else float("nan"),
            "reduction": 1 - ratio, "reduction_se": se if math.isfinite(se) else None, "batch": batch,
            "rounds": len(ratios), "runs_per_round": runs, "target": engine.target}
