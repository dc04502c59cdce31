"""Latency tables: each layer geometry timed on small single-layer models, cached on disk.

For every distinct :class:`~onnxprune.latency.layers.Geometry` a one-node ONNX model (random weights)
is timed with onnxruntime at a few channel counts per **alignment class** (the largest engine block
multiple, e.g. 16 or 8 on CPU, that divides the varying channel counts; 1 for the rest), at the
user's batch size, the fastest of a few runs. A table answers ``latency(cin, cout)`` with a per-class
least-squares fit ``c0 + c1·cin·cout + c2·(cin + cout)`` (non-negative coefficients) through its
measured points; a class with too few points is the best-measured class's fit times the median
ratio of its points to that fit. Tables are cached as JSON under ``cache_dir()/<key>.json``, keyed by
geometry, provider, batch and the machine signature (CPU model, flags, threads, ORT version).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

from onnxprune.errors import OnnxPruneError
from onnxprune.latency.layers import Geometry
from onnxprune.log import get_logger

__all__ = ["Engine", "LayerTable", "TableBuilder", "engine_for", "cache_dir", "machine_signature",
           "alignment_class", "TargetError"]

log = get_logger(__name__)

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


class TargetError(OnnxPruneError):
    """The requested target engine does not load on this machine."""


def cache_dir() -> Path:
    """``$ONNXPRUNE_LATENCY_CACHE`` or ``~/.cache/onnxprune/latency``."""
    env = os.environ.get("ONNXPRUNE_LATENCY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "onnxprune" / "latency"


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return model, flags


@dataclass(frozen=True)
class Engine:
    """A target engine: the provider, its block multiples (largest first) and thread count."""
    target: str
    provider: str
    blocks: tuple[int, ...]
    threads: int

    def signature(self) -> dict:
        return machine_signature(self)


def machine_signature(engine: Engine) -> dict:
    import onnxruntime as ort
    model, flags = _cpu_model_and_flags()
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    return {"cpu": model, "simd": simd, "threads": engine.threads, "ort": ort.__version__,
            "provider": engine.provider}


def engine_for(target: str = "cpu", threads: int | None = None) -> Engine:
    """The engine for ``target`` (cpu, cuda, tensorrt); TargetError when it does not load here."""
    from onnxprune.runtime import available_providers, preferred_channel_multiple
    if target not in _PROVIDERS:
        raise TargetError(f"unknown latency target {target!r}: choose cpu, cuda or tensorrt")
    provider = _PROVIDERS[target]
    if target != "cpu" and provider not in available_providers(target):
        raise TargetError(f"latency target '{target}': onnxruntime's {provider} does not load on this machine")
    block, _ = preferred_channel_multiple(target)
    blocks = (16, 8) if block == 16 else (8,)
    return Engine(target, provider, blocks, threads or os.cpu_count() or 1)


def alignment_class(engine_blocks: tuple[int, ...], *counts: int) -> int:
    """The largest engine block dividing every count (1 if none)."""
    for b in engine_blocks:
        if all(c % b == 0 for c in counts):
            return b
    return 1


# ----------------------------------------------------------------------------- one-layer models
def layer_model(geo: Geometry, cin: int, cout: int, batch: int, seed: int = 0) -> onnx.ModelProto:
    """A one-node model of ``geo`` with ``cin`` input and ``cout`` output channels."""
    rng = np.random.default_rng(seed)
    if geo.kind == "gemm":
        shape_in, shape_w = [batch, cin], [cout, cin]
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    else:
        group = cin if geo.kind == "dw" else geo.group
        shape_in, shape_w = [batch, cin, *geo.spatial], [cout, cin // group, *geo.kernel]
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, strides=list(geo.strides),
                                pads=list(geo.pads), dilations=list(geo.dilations), kernel_shape=list(geo.kernel))
    inits = [numpy_helper.from_array((0.1 * rng.standard_normal(shape_w)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def time_model(model: onnx.ModelProto, engine: Engine, feeds: dict, repeats: int = 5,
               max_s: float = 0.4) -> float:
    """Seconds of one run: the fastest of 3 to ``repeats`` runs after one warm-up (on a machine
    shared with other work the fastest run is the one least disturbed by it; on a quiet machine it
    is within noise of the median)."""
    from onnxprune.runtime import make_session
    sess = make_session(model, [engine.provider, "CPUExecutionProvider"] if engine.provider != "CPUExecutionProvider"
                        else ["CPUExecutionProvider"], threads=engine.threads, quiet=True)
    sess.run(None, feeds)
    times, start = [], time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < max_s):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def measure_layer(geo: Geometry, cin: int, cout: int, batch: int, engine: Engine, repeats: int = 5) -> float:
    shape = [batch, cin] if geo.kind == "gemm" else [batch, cin, *geo.spatial]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return time_model(layer_model(geo, cin, cout, batch), engine, {"x": x}, repeats)


# ----------------------------------------------------------------------------- grid
def _axis_points(full: int, cls: int, higher: tuple[int, ...], multiple: int = 1) -> list[int]:
    """Up to three counts near C, C/2, C/4 in class ``cls`` (multiples of it, of no higher block)."""
    out = []
    for frac in (1.0, 0.5, 0.25):
        target = full * frac
        cands = [n for n in range(max(1, int(target) - 2 * max(cls, 8)), min(full, int(target) + 2 * max(cls, 8)) + 1)
                 if n % cls == 0 and n % multiple == 0 and not any(n % h == 0 for h in higher if h > cls)]
        if cands:
            n = min(cands, key=lambda n: (abs(n - target), -n))
            if n not in out:
                out.append(n)
    return out


def grid(geo: Geometry, blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (cin, cout) points to time: per alignment class, a few counts per varying side."""
    classes = tuple(blocks) + (1,)
    mult = geo.group if geo.kind == "conv" else 1
    points = []
    for cls in classes:
        ins = _axis_points(geo.cin, cls, classes, mult) if geo.vary_in else [geo.cin]
        outs = _axis_points(geo.cout, cls, classes, mult) if geo.vary_out else [geo.cout]
        if not ins or not outs:
            continue
        if geo.kind == "dw":
            pts = [(n, n) for n in ins]
        elif geo.vary_in and geo.vary_out:
            pts = [(a, b) for a in ins[:2] for b in outs[:2]] + [(ins[-1], outs[-1])]
        else:
            pts = [(a, b) for a in ins for b in outs]
        points += [p for p in pts if p not in points]
    return points


# ----------------------------------------------------------------------------- the table
def _features(cin, cout) -> np.ndarray:
    cin, cout = np.asarray(cin, float), np.asarray(cout, float)
    return np.stack([np.ones_like(cin), cin * cout, cin + cout], axis=-1)


@dataclass
class LayerTable:
    """Measured latencies (seconds) of one geometry at one batch on one engine."""
    geometry: Geometry
    batch: int
    blocks: tuple[int, ...]
    points: dict[tuple[int, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fits: dict[int, np.ndarray] = {}

    def _cls(self, cin: int, cout: int) -> int:
        varying = ([cin] if self.geometry.vary_in else []) + ([cout] if self.geometry.vary_out else [])
        return alignment_class(self.blocks, *varying) if varying else self.blocks[0]

    def _fit(self, cls: int) -> np.ndarray:
        if cls in self._fits:
            return self._fits[cls]
        from scipy.optimize import nnls
        by_class: dict[int, list] = {}
        for (a, b), t in self.points.items():
            by_class.setdefault(self._cls(a, b), []).append((a, b, t))
        best = max(by_class, key=lambda c: (len(by_class[c]), c))
        own = by_class.get(cls, [])
        if len(own) >= 3 or cls == best:
            a, b, t = map(np.array, zip(*own))
            coef, _ = nnls(_features(a, b), t)
            if not np.any(coef):
                coef = np.array([float(np.median(t)), 0.0, 0.0])
        else:
            base = self._fit(best)
            pts = own or by_class[best]
            ratio = float(np.median([t / max(_features(a, b) @ base, 1e-12) for a, b, t in pts]))
            coef = base * ratio
        self._fits[cls] = coef
        return coef

    def latency(self, cin: int, cout: int) -> float:
        """Predicted seconds at (cin, cout): a measured point as measured, else the class fit."""
        if (cin, cout) in self.points:
            return self.points[(cin, cout)]
        return float(_features(cin, cout) @ self._fit(self._cls(cin, cout)))

    def aligned_fit(self) -> np.ndarray:
        """(c0, c1, c2) of the largest block class: the posynomial the allocator uses."""
        return self._fit(self.blocks[0])

    def to_dict(self) -> dict:
        return {"geometry": self.geometry.__dict__, "batch": self.batch, "blocks": list(self.blocks),
                "points": [[a, b, t] for (a, b), t in sorted(self.points.items())]}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerTable":
        g = dict(d["geometry"])
        for k in ("spatial", "kernel", "strides", "pads", "dilations"):
            g[k] = tuple(g[k])
        return cls(Geometry(**g), int(d["batch"]), tuple(d["blocks"]),
                   {(int(a), int(b)): float(t) for a, b, t in d["points"]})


def table_key(geo: Geometry, batch: int, engine: Engine) -> str:
    sig = json.dumps(engine.signature(), sort_keys=True)
    digest = hashlib.sha256(f"{geo.key()}|b{batch}|{sig}".encode()).hexdigest()[:20]
    return f"{geo.kind}-b{batch}-{digest}"


class TableBuilder:
    """Builds (or reads from the cache) the tables of a set of geometries; counts what it measured."""

    def __init__(self, engine: Engine, batch: int, cache: Path | None = None, repeats: int = 5,
                 measure=measure_layer, refresh: bool = False) -> None:
        self.engine, self.batch, self.repeats, self.measure = engine, batch, repeats, measure
        self.cache = cache_dir() if cache is None else Path(cache)
        self.refresh = refresh          # measure again even where the cache has a table (and rewrite it)
        self.measured = self.reused = 0

    def path(self, geo: Geometry) -> Path:
        return self.cache / f"{table_key(geo, self.batch, self.engine)}.json"

    def table(self, geo: Geometry) -> LayerTable:
        p = self.path(geo)
        if p.exists() and not self.refresh:
            try:
                t = LayerTable.from_dict(json.loads(p.read_text()))
                if t.geometry == geo and t.batch == self.batch:
                    self.reused += 1
                    return t
            except (ValueError, KeyError, TypeError):
                log.info("latency cache %s unreadable; measuring again", p)
        t = LayerTable(geo, self.batch, self.engine.blocks)
        for cin, cout in grid(geo, self.engine.blocks):
            t.points[(cin, cout)] = self.measure(geo, cin, cout, self.batch, self.engine, self.repeats)
        self.measured += 1
        self._write(p, t)
        return t

    def _write(self, p: Path, t: LayerTable) -> None:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(t.to_dict()))
            os.replace(tmp, p)
        except OSError as exc:
            log.info("latency cache not written (%s)", exc)
