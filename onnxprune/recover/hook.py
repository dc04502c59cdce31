"""The pipeline's one call into recovery: after the structural rewrite has been verified."""
from __future__ import annotations

import time

import onnx

from onnxprune.recover.reconstruct import reconstruct

__all__ = ["refit_after_rewrite"]


def refit_after_rewrite(pruner, original: onnx.ModelProto, pruned: onnx.ModelProto, plan) -> onnx.ModelProto:
    """Refit ``pruned`` on the pruner's calibration data, store the record in ``plan.refit``
    and the time in ``pruner.timings['reconstruct_s']``; return the refitted model."""
    t0 = time.perf_counter()
    provider = getattr(pruner, "provider_used", None)
    model, record = reconstruct(original, pruned, pruner.analysis_, plan, pruner.data_,
                                images=pruner.config.recover_images, seed=pruner.config.seed,
                                max_memory_mb=pruner.config.recover_memory_mb,
                                provider="cuda" if provider == "CUDAExecutionProvider" else "cpu")
    plan.refit = record.to_dict()
    pruner.timings["reconstruct_s"] = time.perf_counter() - t0
    return model
