"""Latency on the target engine: per-layer tables, whole-model prediction, per-group channel steps.

* :mod:`.layers`: the Conv/Gemm layers of an analysed model and their geometries.
* :mod:`.table`: engines, one-layer timing, the cached :class:`LayerTable` per geometry.
* :mod:`.model`: :class:`LatencyModel` (remainder + scale x table sum) and its posynomial.
* :mod:`.steps`: the channel multiple each group runs fast at (the CLI's default rounding).
* :mod:`.measure`: interleaved speed-up of a pruned model over its original.
"""
from onnxprune.latency.layers import Geometry, Layer, model_layers
from onnxprune.latency.model import LatencyModel, build_latency_model, measure_model
from onnxprune.latency.steps import StepChoice, channel_steps
from onnxprune.latency.table import Engine, LayerTable, TableBuilder, TargetError, cache_dir, engine_for

__all__ = ["Geometry", "Layer", "model_layers", "LatencyModel", "build_latency_model", "measure_model",
           "StepChoice", "channel_steps", "Engine", "LayerTable", "TableBuilder", "TargetError", "cache_dir",
           "engine_for"]
