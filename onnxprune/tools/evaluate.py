"""Accuracy and latency of a model through onnxruntime (used by the demo and benchmarks)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx

from onnxprune.errors import DataError
from onnxprune.runtime import AnyBatchSession

__all__ = ["top1_accuracy", "predict", "latency"]


def predict(model: onnx.ModelProto, batches: Iterable[np.ndarray], providers=None) -> np.ndarray:
    """Logits of the first output for every batch, concatenated."""
    sess = AnyBatchSession(model, providers)
    inp = sess.input
    want = [d if isinstance(d, int) else None for d in inp.shape]
    outs = []
    for x in batches:
        if len(want) != x.ndim or any(w is not None and w != s for w, s in zip(want[1:], x.shape[1:])):
            raise DataError(f"data batch of shape {list(x.shape)} does not fit input "
                            f"'{inp.name}' of shape {inp.shape}")
        outs.append(sess.run(x.astype(np.float32, copy=False))[0])
    return np.concatenate(outs)


def top1_accuracy(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray,
                  batch_size: int = 256, providers=None) -> float:
    """Share of images whose arg-max logit is the label."""
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    logits = predict(model, (images[i:i + batch_size] for i in range(0, len(images), batch_size)), providers)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def latency(model: onnx.ModelProto, x: np.ndarray, warmup: int = 5, runs: int = 30,
            threads: int | None = None, providers=None) -> dict[str, float]:
    """Wall-clock latency of one batch in milliseconds (median ``p50_ms``, ``mean_ms``, ``p90_ms``,
    ``p99_ms``, ``iqr_ms``, ``min_ms``) and ``images_per_s`` at the median; the statistics are the
    benchmark's (:func:`onnxprune.tools.bench.latency_stats`)."""
    from onnxprune.tools.bench.timing import latency_stats, time_runs
    sess = AnyBatchSession(model, providers, threads=threads)
    samples = time_runs(lambda: sess.run(x), warmup, runs)
    return latency_stats(samples, x.shape[0])
