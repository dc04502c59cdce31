"""tools.evaluate.latency and the benchmark share one latency-statistics helper."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_builders import Net
from onnxprune.tools import evaluate
from onnxprune.tools.bench import latency_stats, timing


def _net():
    n = Net(seed=0)
    x = n.input("x", ["N", 3, 8, 8])
    n.output(n.relu(n.conv(x, 3, 4)))
    return n.model()


def test_evaluate_latency_is_the_bench_statistics(monkeypatch):
    samples = [0.001 * k for k in range(1, 101)]   # 1 .. 100 ms
    seen = {}

    def fake_time_runs(fn, warmup, runs):
        fn()                                        # the session really runs the batch
        seen.update(warmup=warmup, runs=runs)
        return samples
    monkeypatch.setattr(timing, "time_runs", fake_time_runs)
    x = np.zeros((4, 3, 8, 8), np.float32)
    got = evaluate.latency(_net(), x, warmup=2, runs=100)
    assert seen == {"warmup": 2, "runs": 100}
    assert got == latency_stats(samples, batch=4)
    assert got["p50_ms"] == pytest.approx(50.5) and got["iqr_ms"] == pytest.approx(49.5)
    assert got["images_per_s"] == pytest.approx(4 / 0.0505)


def test_time_runs_warms_up_then_times_each_call():
    calls = []
    out = timing.time_runs(lambda: calls.append(1), warmup=3, runs=5)
    assert len(calls) == 8 and len(out) == 5 and all(t >= 0 for t in out)


def test_evaluate_latency_measures_a_real_session():
    got = evaluate.latency(_net(), np.zeros((2, 3, 8, 8), np.float32), warmup=1, runs=5)
    assert {"p50_ms", "mean_ms", "p90_ms", "p99_ms", "iqr_ms", "min_ms", "images_per_s"} <= set(got)
    assert 0 < got["min_ms"] <= got["p50_ms"] <= got["p90_ms"] <= got["p99_ms"]
