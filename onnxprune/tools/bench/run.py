"""``bench_models``: every model × engine × batch measured, then the baseline pairs."""
from __future__ import annotations

import math
import os
from typing import Callable, Iterable, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.tools.bench.engines import SkipThis, Unavailable, make_engine
from onnxprune.tools.bench.machine import machine_info
from onnxprune.tools.bench.markdown import format_count, format_ms
from onnxprune.tools.bench.models import BenchModel, model_labels
from onnxprune.tools.bench.parsing import parse_batches, parse_engines, parse_input_shapes
from onnxprune.tools.bench.records import BenchReport, BenchResult, Pair, Skipped, one_line
from onnxprune.tools.bench.timing import Slot, latency_stats, measure_rounds

__all__ = ["bench_models"]


def bench_models(paths: Sequence[str | os.PathLike], batches: str | Iterable[int] = (1, 64),
                 engines: str | Iterable[str] = ("ort-cpu",), warmup: int = 5, min_runs: int = 20,
                 min_time_s: float = 1.0, max_runs: int = 1000, threads: int | None = None,
                 seed: int = 0, input_shapes: dict[str, list[int]] | Sequence[str] | None = None,
                 log: Callable[[str], None] | None = None) -> BenchReport:
    """Measure every model × engine × batch; the first model is the baseline of the pairs.

    Raises :class:`OnnxPruneError` (one line, naming the file) for a missing or invalid model, an
    unknown engine or a bad batch list; engines or runs that cannot work here are skipped and
    recorded in ``report.skipped`` (each also passed to ``log``).
    """
    say = log or (lambda msg: None)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise OnnxPruneError("no model given to benchmark")
    batch_list = parse_batches(batches)
    engine_list = parse_engines(engines)
    for name, v, lo in (("warmup", warmup, 0), ("min_runs", min_runs, 1), ("max_runs", max_runs, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise OnnxPruneError(f"{name} must be an integer >= {lo}, got {v!r}")
    if max_runs < min_runs:
        raise OnnxPruneError(f"max_runs ({max_runs}) is below min_runs ({min_runs})")
    if not (isinstance(min_time_s, (int, float)) and math.isfinite(min_time_s) and min_time_s >= 0):
        raise OnnxPruneError(f"min_time_s must be a number >= 0, got {min_time_s!r}")
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise OnnxPruneError(f"threads must be a positive integer, got {threads!r}")
    shapes = parse_input_shapes(input_shapes)

    models = [BenchModel(p, n, shapes) for p, n in zip(paths, model_labels(paths))]
    unknown = set(shapes) - {name for m in models for name in m.input_names}
    if unknown:
        raise OnnxPruneError(f"input shape given for '{sorted(unknown)[0]}', which is not an input of "
                             f"{', '.join(str(m.path) for m in models)}")
    for m in models:
        m.finish()
    for m in models:
        say(f"{m.name}: {format_count(m.macs)} MACs, {format_count(m.params)} params"
            + (f" ({m.note})" if m.note else ""))
    results: list[BenchResult] = []
    pairs: list[Pair] = []
    skipped: list[Skipped] = []
    round_meds: dict[tuple, dict] = {}

    def skip(sk: Skipped) -> None:
        skipped.append(sk)
        say(sk.message)

    for engine_name in engine_list:
        try:
            engine = make_engine(engine_name, threads)
        except Unavailable as exc:
            skip(Skipped(engine_name, one_line(str(exc))))
            continue
        try:
            for batch in batch_list:
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
                warm = max(warmup, 2) if engine_name == "torch-compile" else warmup
                rounds = measure_rounds(ready, warm, min_runs, float(min_time_s), max_runs) if ready else 0
                for s in slots:
                    if s.error is not None and s.error.startswith("failed") and s.model.needs_dynamic(batch):
                        s.error = (f"the file fixes batch {s.model.fixed_batch}; made dynamic, it "
                                   f"{s.error}")
                    if s.error is not None:
                        skip(Skipped(engine_name, s.error, s.model.name, batch))
                        continue
                    st = latency_stats(s.samples, batch)
                    r = BenchResult(s.model.name, engine_name, batch, s.runner.device, len(s.samples),
                                    rounds, s.total, dynamic_batch=s.model.needs_dynamic(batch), **st)
                    results.append(r)
                    round_meds[(s.model.name, engine_name, batch)] = s.round_medians
                    say(f"{engine_name} ({r.device}) batch {batch} {s.model.name}: p50 {format_ms(r.p50_ms)} ms, "
                        f"p90 {format_ms(r.p90_ms)}, IQR {format_ms(r.iqr_ms)}, {r.images_per_s:,.1f} img/s "
                        f"({r.runs} runs)")
                for s in slots:
                    s.runner = None
        finally:
            engine.close()

    base = models[0]
    for engine_name in engine_list:
        for batch in batch_list:
            rb = next((r for r in results if r.model == base.name and r.engine == engine_name
                       and r.batch == batch), None)
            for m in models[1:]:
                rm = next((r for r in results if r.model == m.name and r.engine == engine_name
                           and r.batch == batch), None)
                if rb is None and rm is None:
                    continue
                speedup = rb.p50_ms / rm.p50_ms if rb and rm and rm.p50_ms > 0 else None
                paired = None
                if rb and rm:
                    a = round_meds[(base.name, engine_name, batch)]
                    b = round_meds[(m.name, engine_name, batch)]
                    ratios = [a[k] / b[k] for k in a.keys() & b.keys() if b[k] > 0]
                    paired = float(np.median(ratios)) if ratios else None
                macs_ratio = base.macs / m.macs if base.macs and m.macs else None
                pairs.append(Pair(engine_name, batch, base.name, m.name, speedup, paired, macs_ratio))

    settings = {"batches": batch_list, "engines": engine_list, "warmup": warmup, "min_runs": min_runs,
                "min_time_s": min_time_s, "max_runs": max_runs, "threads": threads, "seed": seed,
                "input_shapes": shapes or None, "baseline": base.name}
    return BenchReport([m.info() for m in models], results, pairs, skipped, machine_info(), settings)
