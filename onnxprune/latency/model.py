"""Whole-model latency prediction: the sum of the layers' table entries plus a measured remainder.

``predict(counts) = remainder + scale * sum(layer tables)``. Layers timed alone run faster than
inside the network (caches, layout reorders, memory traffic), and the rest of the graph (element-wise
ops, pooling, Pad/Slice, session overhead) costs time too: two whole-model measurements, the unpruned
model and the model with every group cut to half (on the block grid), fix ``scale`` and the constant
``remainder`` (scale 1 when the two measurements do not separate them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx

from onnxprune.analysis.edges import segments_of
from onnxprune.analysis.records import Analysis
from onnxprune.latency.layers import Layer, model_layers, tensor_channels
from onnxprune.latency.table import Engine, LayerTable, TableBuilder, time_model
from onnxprune.log import get_logger, progress

__all__ = ["LatencyModel", "build_latency_model", "measure_model", "counts_model"]

log = get_logger(__name__)

STALE_REMAINDER = 0.1   # cached tables whose sum overshoots the model timed now by more than this: re-timed


def measure_model(model: onnx.ModelProto, engine: Engine, batch: int, repeats: int = 10) -> float:
    """Median seconds of one run of ``model`` at ``batch`` (random input) on ``engine``."""
    from onnxprune.runtime import random_inputs, with_dynamic_batch
    m = with_dynamic_batch(model)
    return time_model(m, engine, random_inputs(m, batch=batch), repeats=repeats, max_s=2.0)


@dataclass
class LatencyModel:
    """Predicted seconds per batch of the analysed model for any kept channel counts."""
    analysis: Analysis
    layers: list[Layer]
    tables: list[LayerTable]
    remainder: float
    measured_full: float
    scale: float
    batch: int
    engine: Engine
    skipped: list[str] = field(default_factory=list)
    build_s: float = 0.0
    scale_fallback: bool = False     # the two timings gave no usable scale (1 was used)

    def layer_latencies(self, counts: Mapping[int, int],
                        kept: Mapping[int, np.ndarray] | None = None) -> list[float]:
        out = []
        for layer, table in zip(self.layers, self.tables):
            geo = layer.geometry
            cin = tensor_channels(self.analysis, layer.in_tensor, geo.cin, counts, kept) if geo.vary_in else geo.cin
            cout = tensor_channels(self.analysis, layer.out_tensor, geo.cout, counts, kept) if geo.vary_out \
                else geo.cout
            if geo.kind == "dw":
                cin = cout
            # a layer left with no channel on either side is gone (a branch emptied whole)
            out.append(0.0 if cin == 0 or cout == 0 else self.scale * table.latency(cin, cout))
        return out

    def predict(self, counts: Mapping[int, int] | None = None,
                kept: Mapping[int, np.ndarray] | None = None) -> float:
        """Seconds per batch with group g keeping ``counts[g]`` channels (missing: full width)."""
        return self.remainder + float(sum(self.layer_latencies(counts or {}, kept)))

    @property
    def full(self) -> float:
        return self.predict({})

    def posynomial_terms(self, prunable: set[int]) -> dict[tuple[int, ...], float]:
        """The aligned-class fits as a posynomial in the keep-ratios (() is the constant, >= 0)."""
        terms: dict[tuple[int, ...], float] = {(): max(self.remainder, 0.0)}

        def form(tensor, full, vary):
            if not vary or tensor is None or tensor not in self.analysis.layouts:
                return [(float(full), ())]
            parts: dict = {}
            for s in segments_of(self.analysis.layouts[tensor]):
                k = (s.group,) if s.group in prunable else ()
                parts[k] = parts.get(k, 0.0) + s.length
            return [(c, k) for k, c in parts.items()]

        def add(coef, key):
            key = tuple(sorted(key))
            terms[key] = terms.get(key, 0.0) + coef

        for layer, table in zip(self.layers, self.tables):
            geo = layer.geometry
            c0, c1, c2 = self.scale * table.aligned_fit()
            fout = form(layer.out_tensor, geo.cout, geo.vary_out)
            fin = fout if geo.kind == "dw" else form(layer.in_tensor, geo.cin, geo.vary_in)
            add(c0, ())
            for a, ka in fin:
                add(c2 * a, ka)
                for b, kb in fout:
                    add(c1 * a * b, ka + kb)
            for b, kb in fout:
                add(c2 * b, kb)
        return {k: v for k, v in terms.items() if v > 0 or k == ()}

    def group_layers(self, group: int) -> list[int]:
        """Indices of the layers whose time depends on ``group``'s channel count."""
        out = []
        for i, layer in enumerate(self.layers):
            tensors = [t for t, v in ((layer.in_tensor, layer.geometry.vary_in),
                                      (layer.out_tensor, layer.geometry.vary_out)) if v and t]
            if any(s.group == group for t in tensors if t in self.analysis.layouts
                   for s in segments_of(self.analysis.layouts[t])):
                out.append(i)
        return out

    def summary(self) -> dict:
        return {"target": self.engine.target, "provider": self.engine.provider, "batch": self.batch,
                "threads": self.engine.threads, "layers": len(self.layers),
                "geometries": len({l.geometry for l in self.layers}), "remainder_s": self.remainder, "scale": self.scale,
                "measured_full_s": self.measured_full, "build_s": round(self.build_s, 2),
                "untimed_compute_nodes": self.skipped}


def counts_model(analysis: Analysis, counts: Mapping[int, int]) -> onnx.ModelProto:
    """The model with group g cut to ``counts[g]`` channels (first channels kept; the others whole),
    for timing only."""
    from onnxprune.rewrite.apply import apply_plan
    from onnxprune.rewrite.plan import Plan
    from onnxprune.scoring.selection import select_kept
    kept = {}
    for g in analysis.prunable:
        n = counts.get(g.id, g.channels)
        kept[g.id] = np.arange(n) if g.equal_blocks == 1 else \
            select_kept(np.arange(g.channels, 0, -1, dtype=float), n, g.equal_blocks)
    return apply_plan(analysis, Plan.build(analysis, kept), check=False)


def half_model(analysis: Analysis, blocks: tuple[int, ...]) -> tuple[onnx.ModelProto, dict[int, int]]:
    """The model with every prunable group cut to about half, on the block grid (first channels kept)."""
    counts = {}
    for g in analysis.prunable:
        step = next((b for b in blocks if g.channels >= 2 * b and g.channels % b == 0), 1)
        step = step * g.equal_blocks // np.gcd(step, g.equal_blocks)
        counts[g.id] = min(g.channels, max(step, int(round(g.channels / 2 / step)) * step))
    return counts_model(analysis, counts), counts


def build_latency_model(model: onnx.ModelProto, analysis: Analysis, engine: Engine, batch: int,
                        builder: TableBuilder | None = None, measured_full: float | None = None) -> LatencyModel:
    """Tables for every distinct layer geometry (deduplicated, cached), then scale and remainder
    from the unpruned and the half model measured (see the module docstring)."""
    t0 = time.perf_counter()
    builder = builder or TableBuilder(engine, batch)
    lm = _fitted_model(model, analysis, engine, batch, builder, measured_full)
    if builder.reused and (lm.remainder < -STALE_REMAINDER * lm.measured_full or lm.scale_fallback):
        # tables cached under other conditions (e.g. timed while the machine was loaded) no longer
        # add up to the model timed now: time them again, once
        log.info("latency model: the cached layer tables disagree with the model timed now (remainder "
                 "%.2f ms, scale %.2f); measuring them again", 1e3 * lm.remainder, lm.scale)
        builder = TableBuilder(builder.engine, builder.batch, builder.cache, builder.repeats, builder.measure,
                               refresh=True)
        lm = _fitted_model(model, analysis, engine, batch, builder, lm.measured_full)
    lm.build_s = time.perf_counter() - t0
    return lm


def _fitted_model(model, analysis, engine, batch, builder, measured_full) -> LatencyModel:
    """Tables for every geometry from ``builder``, scale and remainder from two whole-model timings."""
    t0 = time.perf_counter()
    layers, skipped = model_layers(analysis)
    geos = list(dict.fromkeys(l.geometry for l in layers))
    tables = {g: builder.table(g) for g in progress(geos, total=len(geos), desc="latency tables", unit="layer")}
    lm = LatencyModel(analysis, layers, [tables[l.geometry] for l in layers], 0.0, 0.0, 1.0, batch,
                      engine, skipped)
    half, half_counts = half_model(analysis, engine.blocks)
    if measured_full is None:
        measured_full = measure_model(model, engine, batch)
    measured_half = measure_model(half, engine, batch)
    s_full, s_half = lm.predict({}), lm.predict(half_counts)
    scale = (measured_full - measured_half) / (s_full - s_half) if s_full > s_half else 0.0
    lm.scale_fallback = not 0.5 <= scale <= 20
    lm.scale = 1.0 if lm.scale_fallback else scale
    lm.measured_full = measured_full
    lm.remainder = measured_full - lm.scale * s_full
    lm.build_s = time.perf_counter() - t0
    log.info("latency model: %d layers, %d geometries (%d measured, %d from the cache), batch %d on %s: "
             "%.2f ms measured (half model %.2f ms), scale %.2f, remainder %.2f ms (%.1f s)", len(layers),
             len(geos), builder.measured, builder.reused, batch, engine.target, 1e3 * measured_full,
             1e3 * measured_half, lm.scale, 1e3 * lm.remainder, lm.build_s)
    return lm
