"""onnxprune: structured channel pruning of exported ONNX CNNs.

The public API, shaped like scikit-learn::

    import onnxprune
    model = onnxprune.load_model("resnet56.onnx")
    pruner = onnxprune.Pruner(onnxprune.PruneConfig(flops_reduction=0.455)).fit(model, images)
    result = pruner.transform()              # .model, .plan, .report (the masked-oracle check)
    onnxprune.save_model(result.model, "small.onnx")

Names are imported on first use, so ``import onnxprune`` stays light (no onnxruntime, cvxpy or torch).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "load_model": ("onnxprune.model_io", "load_model"),
    "save_model": ("onnxprune.model_io", "save_model"),
    "analyze": ("onnxprune.analysis", "analyze"),
    "Analysis": ("onnxprune.analysis", "Analysis"),
    "CostModel": ("onnxprune.analysis", "CostModel"),
    "PruneConfig": ("onnxprune.pipeline", "PruneConfig"),
    "PruneResult": ("onnxprune.pipeline", "PruneResult"),
    "Pruner": ("onnxprune.pipeline", "Pruner"),
    "prune": ("onnxprune.pipeline", "prune"),
    "METHODS": ("onnxprune.pipeline", "METHODS"),
    "Plan": ("onnxprune.rewrite.plan", "Plan"),
    "apply_plan": ("onnxprune.rewrite.apply", "apply_plan"),
    "verify_pruned": ("onnxprune.verify.oracle", "compare"),
    "masked_model": ("onnxprune.verify.oracle", "masked_model"),
    "VerifyReport": ("onnxprune.verify.oracle", "VerifyReport"),
    "load_dataset": ("onnxprune.data", "load_dataset"),
    "Preprocess": ("onnxprune.data", "Preprocess"),
    "FinetuneConfig": ("onnxprune.finetune", "FinetuneConfig"),
    "finetune_model": ("onnxprune.finetune", "finetune"),
    "OnnxPruneError": ("onnxprune.errors", "OnnxPruneError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'onnxprune' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
