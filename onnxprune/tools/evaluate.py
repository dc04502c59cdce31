"""Accuracy and latency of a model through onnxruntime (used by the demo and benchmarks)."""
from __future__ import annotations

import time
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
    """Wall-clock latency of one batch: median, mean, p90 and IQR in milliseconds."""
    sess = AnyBatchSession(model, providers, threads=threads)
    for _ in range(warmup):
        sess.run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(x)
        times.append(1e3 * (time.perf_counter() - t0))
    t = np.asarray(times)
    q1, q3 = np.percentile(t, [25, 75])
    return {"p50_ms": float(np.median(t)), "mean_ms": float(t.mean()), "p90_ms": float(np.percentile(t, 90)),
            "iqr_ms": float(q3 - q1), "images_per_s": float(x.shape[0] / (np.median(t) / 1e3))}
