"""``bench_models``: every model × engine × batch measured, then the baseline pairs."""
from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.log import get_logger
from onnxprune.tools.bench.engines import SkipThis, Unavailable, make_engine
from onnxprune.tools.bench.machine import machine_info
from onnxprune.tools.bench.markdown import format_count, format_ms
from onnxprune.tools.bench.models import BenchModel, model_labels
from onnxprune.tools.bench.parsing import parse_batches, parse_engines, parse_input_shapes
from onnxprune.tools.bench.records import BenchReport, BenchResult, Pair, Skipped, one_line
from onnxprune.tools.bench.timing import Slot, latency_stats, measure_rounds, paired_speedup

__all__ = ["bench_models"]

log = get_logger(__name__)


def bench_models(paths: Sequence[str | os.PathLike], batches: str | Iterable[int] = (1, 64),
                 engines: str | Iterable[str] = ("ort-cpu",), warmup: int = 5, min_runs: int = 20,
                 min_time_s: float = 1.0, max_runs: int = 100_000, threads: int | None = None,
                 seed: int = 0, input_shapes: dict[str, list[int]] | Sequence[str] | None = None,
                 precision: float | None = 0.01, max_time_s: float = 10.0) -> BenchReport:
    """Measure every model × engine × batch; the first model is the baseline of the pairs.
    ``precision``: after ``min_runs`` and ``min_time_s``, keep timing until the standard error of
    every paired speed-up is at most this fraction of it, or a model has been timed ``max_time_s``
    (or ``max_runs`` times); None: stop at the minimums.

    Raises :class:`OnnxPruneError` (one line, naming the file) for a missing or invalid model, an
    unknown engine or a bad batch list; engines or runs that cannot work here are skipped and
    recorded in ``report.skipped`` (each also logged as a warning; every measurement at INFO).
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise OnnxPruneError("no model given to benchmark")
    batch_list = parse_batches(batches)
    engine_list = parse_engines(engines)
    _check_settings(warmup, min_runs, max_runs, min_time_s, threads, precision, max_time_s)
    shapes = parse_input_shapes(input_shapes)
    models = _load_models(paths, shapes)
    results: list[BenchResult] = []
    skipped: list[Skipped] = []
    round_meds: dict[tuple, dict] = {}

    def skip(sk: Skipped) -> None:
        skipped.append(sk)
        log.warning("%s", sk.message)

    budget = dict(warmup=warmup, min_runs=min_runs, min_time_s=float(min_time_s), max_runs=max_runs,
                  precision=precision, max_time_s=float(max_time_s))
    for engine_name in engine_list:
        try:
            engine = make_engine(engine_name, threads)
        except Unavailable as exc:
            skip(Skipped(engine_name, one_line(str(exc))))
            continue
        try:
            for batch in batch_list:
                slots, rounds = _measure_batch(engine, engine_name, models, batch, seed, budget)
                for s in slots:
                    if s.error is not None:
                        skip(Skipped(engine_name, s.error, s.model.name, batch))
                        continue
                    r = _result(s, engine_name, batch, rounds)
                    results.append(r)
                    round_meds[(s.model.name, engine_name, batch)] = s.round_medians
                    log.info("%s (%s) batch %d %s: p50 %s ms, p90 %s, IQR %s, %s img/s (%d runs)",
                             engine_name, r.device, batch, s.model.name, format_ms(r.p50_ms), format_ms(r.p90_ms),
                             format_ms(r.iqr_ms), f"{r.images_per_s:,.1f}", r.runs)
                for s in slots:
                    s.runner = None
        finally:
            engine.close()

    pairs = _baseline_pairs(models, results, round_meds, engine_list, batch_list)
    settings = {"batches": batch_list, "engines": engine_list, "warmup": warmup, "min_runs": min_runs,
                "min_time_s": min_time_s, "max_runs": max_runs, "precision": precision,
                "max_time_s": max_time_s, "threads": threads, "seed": seed,
                "input_shapes": shapes or None, "baseline": models[0].name}
    return BenchReport([m.info() for m in models], results, pairs, skipped, machine_info(), settings)


def _check_settings(warmup: int, min_runs: int, max_runs: int, min_time_s: float, threads: int | None,
                    precision: float | None = None, max_time_s: float = 10.0) -> None:
    for name, v, lo in (("warmup", warmup, 0), ("min_runs", min_runs, 1), ("max_runs", max_runs, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise OnnxPruneError(f"{name} must be an integer >= {lo}, got {v!r}")
    if max_runs < min_runs:
        raise OnnxPruneError(f"max_runs ({max_runs}) is below min_runs ({min_runs})")
    for name, v in (("min_time_s", min_time_s), ("max_time_s", max_time_s)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
            raise OnnxPruneError(f"{name} must be a number >= 0, got {v!r}")
    if precision is not None and not (isinstance(precision, (int, float)) and not isinstance(precision, bool)
                                      and 0 < precision < 1):
        raise OnnxPruneError(f"precision must be a fraction between 0 and 1 (e.g. 0.01), got {precision!r}")
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise OnnxPruneError(f"threads must be a positive integer, got {threads!r}")


def _load_models(paths: list, shapes: dict[str, list[int]]) -> list[BenchModel]:
    """Load every model (all loaded before any is analysed, so a bad input shape name fails fast)."""
    models = [BenchModel(p, n, shapes) for p, n in zip(paths, model_labels(paths))]
    unknown = set(shapes) - {name for m in models for name in m.input_names}
    if unknown:
        raise OnnxPruneError(f"input shape given for '{sorted(unknown)[0]}', which is not an input of "
                             f"{', '.join(str(m.path) for m in models)}")
    for m in models:
        m.finish()
    for m in models:
        log.info("%s: %s MACs, %s params%s", m.name, format_count(m.macs), format_count(m.params),
                 f" ({m.note})" if m.note else "")
    return models


def _measure_batch(engine, engine_name: str, models: list[BenchModel], batch: int, seed: int,
                   budget: dict) -> tuple[list[Slot], int]:
    """Prepare every model on the engine at this batch and time them interleaved; (slots, rounds).
    A slot that could not be prepared or run carries its one-line ``error``."""
    slots = []
    for m in models:
        slot = Slot(m)
        try:
            slot.runner = engine.prepare(m, batch, m.feeds(batch, seed))
        except (SkipThis, OnnxPruneError) as exc:
            slot.error = one_line(str(exc))
        except Exception as exc:
            slot.error = one_line(exc)
        if slot.error and m.needs_dynamic(batch):
            slot.error = (f"the file fixes batch {m.fixed_batch}; made dynamic, it does not "
                          f"run at batch {batch}: {slot.error}")
        slots.append(slot)
    ready = [s for s in slots if s.error is None]
    warm = max(budget["warmup"], 2) if engine_name == "torch-compile" else budget["warmup"]
    rounds = measure_rounds(ready, warm, budget["min_runs"], budget["min_time_s"], budget["max_runs"],
                            budget["precision"], budget["max_time_s"]) if ready else 0
    for s in slots:
        if s.error is not None and s.error.startswith("failed") and s.model.needs_dynamic(batch):
            s.error = f"the file fixes batch {s.model.fixed_batch}; made dynamic, it {s.error}"
    return slots, rounds


def _result(s: Slot, engine_name: str, batch: int, rounds: int) -> BenchResult:
    st = latency_stats(s.samples, batch)
    return BenchResult(s.model.name, engine_name, batch, s.runner.device, len(s.samples),
                       rounds, s.total, dynamic_batch=s.model.needs_dynamic(batch), **st)


def _baseline_pairs(models: list[BenchModel], results: list[BenchResult], round_meds: dict[tuple, dict],
                    engine_list: list[str], batch_list: list[int]) -> list[Pair]:
    """The first model against each other one, per engine and batch (speed-ups and MACs ratio)."""
    def find(model: str, engine_name: str, batch: int) -> BenchResult | None:
        return next((r for r in results if r.model == model and r.engine == engine_name and r.batch == batch), None)

    base = models[0]
    pairs = []
    for engine_name in engine_list:
        for batch in batch_list:
            rb = find(base.name, engine_name, batch)
            for m in models[1:]:
                rm = find(m.name, engine_name, batch)
                if rb is None and rm is None:
                    continue
                speedup = rb.p50_ms / rm.p50_ms if rb and rm and rm.p50_ms > 0 else None
                paired = se = None
                if rb and rm:
                    paired, se = paired_speedup(round_meds[(base.name, engine_name, batch)],
                                                round_meds[(m.name, engine_name, batch)])
                macs_ratio = base.macs / m.macs if base.macs and m.macs else None
                pairs.append(Pair(engine_name, batch, base.name, m.name, speedup, paired, macs_ratio, se))
    return pairs
