"""Measured speed-up of a pruned model over its original: both sessions, interleaved rounds."""
from __future__ import annotations

import time

import numpy as np
import onnx

from onnxprune.latency.table import Engine

__all__ = ["measure_pair"]


def _runner(model: onnx.ModelProto, engine: Engine, batch: int):
    from onnxprune.runtime import make_session, random_inputs, with_dynamic_batch
    m = with_dynamic_batch(model)
    providers = ["CPUExecutionProvider"] if engine.provider == "CPUExecutionProvider" else \
        [engine.provider, "CPUExecutionProvider"]
    sess = make_session(m, providers, threads=engine.threads, quiet=True)
    feeds = random_inputs(m, batch=batch)
    sess.run(None, feeds)
    return lambda: sess.run(None, feeds)


def measure_pair(original: onnx.ModelProto, pruned: onnx.ModelProto, engine: Engine, batch: int,
                 rounds: int = 5, runs: int = 3) -> dict:
    """Seconds per batch of both models (median over interleaved rounds of ``runs`` runs each,
    alternating which goes first) and the speed-up original / pruned."""
    fns = [_runner(original, engine, batch), _runner(pruned, engine, batch)]
    samples: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            for _ in range(runs):
                t0 = time.perf_counter()
                fns[i]()
                samples[i].append(time.perf_counter() - t0)
    a, b = float(np.median(samples[0])), float(np.median(samples[1]))
    return {"original_s": a, "pruned_s": b, "speedup": a / b if b > 0 else float("nan"),
            "batch": batch, "rounds": rounds, "runs_per_round": runs, "target": engine.target}
