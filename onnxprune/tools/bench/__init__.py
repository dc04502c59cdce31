"""Latency benchmark: original vs pruned models on the same engine, batch and session (DESIGN §8, B2).

``bench_models([A, B, …])`` measures every model × engine × batch: a warm-up, then short
interleaved rounds (A, B, …, then …, B, A) until each model has at least ``min_runs`` runs and
``min_time_s`` of measured time, then on until every speed-up over the baseline is ``precision``
precise (or a model has run ``max_time_s``; capped at ``max_runs``). It reports mean, p50, p90, p99
and IQR in milliseconds and images/s (batch / p50), plus MACs per image (FLOPs = 2 × MACs),
parameters and file size, and for every model after the first (the baseline) the paired latency
speed-up (median of per-round ratios, as the prune's latency budgets measure it, with its standard
error) next to the MACs ratio, so a gap between the two is visible. On noisy shared machines quote
the medians and ratios, not single times.

Engines: ``ort-cpu``, ``ort-cuda`` (IO binding, inputs and outputs on the GPU), ``torch-cpu``,
``torch-cuda``, ``torch-compile`` (on the GPU when torch sees one, else on the CPU) and
``torch-cudagraph``. An engine that is not available here is skipped with a one-line reason recorded
in the report; so is a model × engine × batch that fails to load or run (for instance a graph that
bakes its batch size in and cannot be made dynamic).

Modules: :mod:`.records` (report records, JSON), :mod:`.markdown`, :mod:`.engines`, :mod:`.timing`
(the interleaved loop and :func:`latency_stats`, also used by ``tools.evaluate.latency``),
:mod:`.machine`, :mod:`.models` (a model under benchmark), :mod:`.parsing`, :mod:`.run`
(:func:`bench_models`) and :mod:`.args` (the ``onnxprune bench`` arguments).
"""
from onnxprune.tools.bench.args import add_bench_arguments, run_bench_from_args
from onnxprune.tools.bench.engines import ENGINES
from onnxprune.tools.bench.machine import machine_info
from onnxprune.tools.bench.parsing import parse_batches, parse_engines
from onnxprune.tools.bench.records import SCHEMA, BenchReport, BenchResult, ModelInfo, Pair, Skipped
from onnxprune.tools.bench.run import bench_models
from onnxprune.tools.bench.timing import latency_stats

__all__ = ["ENGINES", "SCHEMA", "BenchReport", "BenchResult", "ModelInfo", "Pair", "Skipped",
           "bench_models", "parse_batches", "parse_engines", "machine_info", "latency_stats",
           "add_bench_arguments", "run_bench_from_args"]
