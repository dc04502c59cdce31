"""The prune job end to end: analysis → budget allocation → channel selection → rewrite → verify.

``prune(model, PruneConfig(...))`` returns a :class:`PruneResult` holding the pruned model, the
plan and the verification report; the CLI writes them to disk. Modules: ``config`` (what is asked),
``calibration`` (the data's batches and checks), ``pruner`` (the stages in order), ``branches``
(candidates that remove whole residual branches), ``measured_latency`` (a latency budget met by
timing pruned models).
"""
from onnxprune.pipeline.calibration import check_calibration
from onnxprune.pipeline.config import DEFAULT_DATA_METHOD, DEFAULT_METHOD, METHODS, PruneConfig
from onnxprune.pipeline.pruner import PruneResult, Pruner, prune

__all__ = ["PruneConfig", "PruneResult", "Pruner", "prune", "METHODS", "DEFAULT_METHOD",
           "DEFAULT_DATA_METHOD", "check_calibration"]
