"""Measured speed-up of a pruned model over its original: both sessions, interleaved rounds."""
from __future__ import annotations

import math
import time

import numpy as np
import onnx

from onnxprune.latency.table import Engine

__all__ = ["measure_pair", "measure_models", "MIN_ROUND_S", "MIN_MODEL_S"]

MIN_ROUND_S = 0.1      # each model runs at least this long per interleaved round
MIN_MODEL_S = 3.0      # a speed-up measurement times each model at least this long in all (more rounds)


def _runner(model: onnx.ModelProto, engine: Engine, batch: int):
    from onnxprune.runtime import make_session, random_inputs, with_dynamic_batch
    m = with_dynamic_batch(model)
    providers = ["CPUExecutionProvider"] if engine.provider == "CPUExecutionProvider" else \
        [engine.provider, "CPUExecutionProvider"]
    sess = make_session(m, providers, threads=engine.threads, quiet=True)
    feeds = random_inputs(m, batch=batch)
    sess.run(None, feeds)
    return lambda: sess.run(None, feeds)


def measure_models(models: list[onnx.ModelProto], engine: Engine, batch: int, rounds: int = 5,
                   runs: int = 3, budget_s: float | None = None, max_rounds: int = 15,
                   min_round_s: float = MIN_ROUND_S, min_model_s: float | None = None) -> list[float]:
    """Seconds per batch of each model: the median over interleaved rounds of ``runs`` runs each
    (the order reversed every other round, so drift and load spread over all models alike). The
    first run after a switch of model is not timed: on onnxruntime CPU it runs up to 2x slower
    (its threads wake, its buffers come back into cache), which made medians of 2-3 runs bimodal.
    A round runs each model at least ``min_round_s`` seconds (more runs for fast models: 21 runs of
    a 1 ms model measured cuts 25 points apart on a shared machine).
    ``budget_s``: run more rounds, up to ``max_rounds``, while they fit in about that many seconds.
    ``min_model_s``: run more rounds, up to ``max_rounds``, until each model is timed about that
    many seconds in all (on a 2-core machine, cuts of a 1 ms model measured from 0.7 s per model
    spread with a standard deviation of 8-10 points, from 3 s per model 1-3 points)."""
    fns = [_runner(m, engine, batch) for m in models]
    once = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        once.append(time.perf_counter() - t0)
    runs = max(runs, math.ceil(min_round_s / max(min(once), 1e-6)))
    if budget_s is not None:        # as many rounds (``rounds`` .. ``max_rounds``) as fit the time budget
        per_round = sum(once) * (runs + 1)
        rounds = int(min(max_rounds, max(rounds, budget_s // max(per_round, 1e-9))))
    if min_model_s is not None:     # enough rounds that the fastest model is timed ``min_model_s`` in all
        rounds = int(min(max_rounds, max(rounds, math.ceil(min_model_s / max(runs * min(once), 1e-9)))))
    samples: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    for r in range(rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            fns[i]()
            for _ in range(runs):
                t0 = time.perf_counter()
                fns[i]()
                samples[i].append(time.perf_counter() - t0)
    return [float(np.median(s)) for s in samples]


def measure_pair(original: onnx.ModelProto, pruned: onnx.ModelProto, engine: Engine, batch: int,
                 rounds: int = 7, runs: int = 3, min_model_s: float | None = None, max_rounds: int = 40) -> dict:
    """Seconds per batch of both models (see :func:`measure_models`; at least ``rounds`` rounds,
    more while a model has been timed less than ``min_model_s``, default ``MIN_MODEL_S``) and the
    speed-up original / pruned."""
    min_model_s = MIN_MODEL_S if min_model_s is None else min_model_s
    a, b = measure_models([original, pruned], engine, batch, rounds, runs, max_rounds=max_rounds,
                          min_model_s=min_model_s)
    return {"original_s": a, "pruned_s": b, "speedup": a / b if b > 0 else float("nan"),
            "batch": batch, "rounds": rounds, "runs_per_round": runs, "target": engine.target}
