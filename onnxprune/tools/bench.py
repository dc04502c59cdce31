"""Latency benchmark: original vs pruned models on the same engine, batch and session (DESIGN §8, B2).

``bench_models([A, B, …])`` measures every model × engine × batch: a warm-up, then interleaved
rounds (A, B, …, then …, B, A) until each model has at least ``min_runs`` runs and ``min_time_s``
of measured time (capped at ``max_runs``). It reports mean, p50, p90, p99 and IQR in milliseconds
and images/s (batch / p50), plus MACs per image (FLOPs = 2 × MACs), parameters and file size, and
for every model after the first (the baseline) the latency speed-up next to the MACs ratio, so a gap
between the two is visible. On noisy shared machines quote the medians and ratios, not single times.

Engines: ``ort-cpu``, ``ort-cuda`` (IO binding, inputs and outputs on the GPU), ``torch-cpu``,
``torch-cuda``, ``torch-compile`` (on the GPU when torch sees one, else on the CPU) and
``torch-cudagraph``. Torch engines run the ONNX graph through ``onnxprune.torch_bridge.OnnxModule``.
An engine that is not available here is skipped with a one-line reason recorded in the report;
so is a model × engine × batch that fails to load or run (for instance a graph that bakes its batch
size in and cannot be made dynamic).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.model_io import load_model, write_text_atomic
from onnxprune.runtime import available_providers, make_session, with_dynamic_batch

__all__ = ["ENGINES", "BenchReport", "BenchResult", "ModelInfo", "Pair", "Skipped",
           "bench_models", "parse_batches", "parse_engines", "machine_info",
           "add_bench_arguments", "run_bench_from_args"]

ENGINES = ("ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda", "torch-compile", "torch-cudagraph")
SCHEMA = "onnxprune.bench/1"

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
             onnx.TensorProto.BOOL: np.bool_}


# --------------------------------------------------------------------------------------------------
# Report records
# --------------------------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    """One benchmarked model. ``macs`` is per image (FLOPs = 2 × MACs); None when not countable."""
    name: str
    path: str
    macs: float | None
    params: float | None
    size_bytes: int
    inputs: dict[str, list]            # name -> shape, "batch" at the batch axis
    fixed_batch: int | None            # the batch size baked into the file, None if dynamic
    note: str | None = None            # why MACs/params are missing, if they are


@dataclass
class BenchResult:
    """Latency statistics of one model × engine × batch (times in milliseconds)."""
    model: str
    engine: str
    batch: int
    device: str
    runs: int
    rounds: int
    measured_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    min_ms: float
    images_per_s: float
    dynamic_batch: bool                # the file had a fixed batch and was made dynamic for this run


@dataclass
class Pair:
    """Baseline (first model) against one other model on the same engine and batch."""
    engine: str
    batch: int
    baseline: str
    model: str
    speedup: float | None              # baseline p50 / model p50
    speedup_rounds: float | None       # median over interleaved rounds of the per-round p50 ratio
    macs_ratio: float | None           # baseline MACs / model MACs


@dataclass
class Skipped:
    """An engine (model and batch None), or one model × engine × batch, that was not measured."""
    engine: str
    reason: str
    model: str | None = None
    batch: int | None = None

    @property
    def message(self) -> str:
        where = self.engine
        if self.batch is not None:
            where += f" batch {self.batch}"
        if self.model is not None:
            where += f" for {self.model}"
        return f"skipped {where}: {self.reason}"


@dataclass
class BenchReport:
    """Everything one ``bench_models`` call measured, with the machine it ran on."""
    models: list[ModelInfo]
    results: list[BenchResult]
    pairs: list[Pair]
    skipped: list[Skipped]
    machine: dict
    settings: dict = field(default_factory=dict)

    # --- look-ups -------------------------------------------------------------------------------
    def result(self, model: str, engine: str, batch: int) -> BenchResult | None:
        for r in self.results:
            if r.model == model and r.engine == engine and r.batch == batch:
                return r
        return None

    def pair(self, model: str, engine: str, batch: int) -> Pair | None:
        for p in self.pairs:
            if p.model == model and p.engine == engine and p.batch == batch:
                return p
        return None

    # --- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        from onnxprune import __version__
        return {"schema": SCHEMA, "onnxprune_version": __version__,
                "note": "times in milliseconds; MACs per image, FLOPs = 2 x MACs; speedup = baseline "
                        "p50 / model p50; macs_ratio = baseline MACs / model MACs",
                "machine": self.machine, "settings": self.settings,
                "models": [asdict(m) for m in self.models],
                "results": [asdict(r) for r in self.results],
                "pairs": [asdict(p) for p in self.pairs],
                "skipped": [dict(asdict(s), message=s.message) for s in self.skipped]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(_finite(self.to_dict()), indent=indent)

    def to_markdown(self) -> str:
        m = self.machine
        lines = ["# Latency benchmark", ""]
        cpu = f"{m.get('cpu', '?')}, {m.get('cores_available', '?')} of {m.get('cores', '?')} cores"
        lines.append(f"Machine: {cpu}; GPU: {m.get('gpu') or 'none'}; onnxruntime "
                     f"{m.get('onnxruntime', '?')} ({', '.join(m.get('ort_providers_working', []))}); "
                     f"torch {m.get('torch') or 'not installed'}; Python {m.get('python', '?')}.")
        s = self.settings
        if s:
            lines.append(f"Settings: warm-up {s.get('warmup')}, at least {s.get('min_runs')} runs and "
                         f"{s.get('min_time_s')} s per model (at most {s.get('max_runs')} runs), models "
                         f"interleaved in rounds; threads {s.get('threads') or 'default'}; seed {s.get('seed')}.")
        lines += ["", "MACs are per image; FLOPs = 2×MACs. Speed-up vs baseline = baseline p50 / model p50 "
                  "(same engine, batch and session); MACs ratio = baseline MACs / model MACs. "
                  "Times in ms; on a shared machine quote ratios and medians.", ""]
        head = ["model", "engine", "batch", "p50 ms", "mean", "p90", "p99", "IQR", "runs", "img/s",
                "MACs (FLOPs = 2×MACs)", "params", "size MB", "speed-up vs baseline", "MACs ratio"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        info = {mi.name: mi for mi in self.models}
        base = self.models[0].name if self.models else None
        for r in self.results:
            mi = info.get(r.model)
            p = self.pair(r.model, r.engine, r.batch)
            if r.model == base:
                sp, mr = "1.00× (baseline)", "1.00×"
            else:
                sp = _ratio(p.speedup if p else None)
                mr = _ratio(p.macs_ratio if p else None)
            lines.append("| " + " | ".join([
                r.model + (" (dyn. batch)" if r.dynamic_batch else ""), f"{r.engine} ({r.device})",
                str(r.batch), _ms(r.p50_ms), _ms(r.mean_ms), _ms(r.p90_ms), _ms(r.p99_ms),
                _ms(r.iqr_ms), str(r.runs), f"{r.images_per_s:,.1f}",
                _count(mi.macs if mi else None), _count(mi.params if mi else None),
                f"{mi.size_bytes / 1e6:.2f}" if mi else "–", sp, mr]) + " |")
        if not self.results:
            lines.append("| (nothing measured) |" + " |" * (len(head) - 1))
        lines += ["", "| model | file | MACs | FLOPs | params | size MB | note |",
                  "|---|---|---|---|---|---|---|"]
        for mi in self.models:
            note = (mi.note or "").replace("|", "/")
            lines.append(f"| {mi.name} | {mi.path} | {_count(mi.macs)} | "
                         f"{_count(2 * mi.macs if mi.macs is not None else None)} | {_count(mi.params)} | "
                         f"{mi.size_bytes / 1e6:.2f} | {note} |")
        if self.skipped:
            lines += ["", "Skipped:", ""]
            lines += [f"* {sk.message}" for sk in self.skipped]
        return "\n".join(lines) + "\n"

    def save(self, prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``prefix.json`` and ``prefix.md`` atomically; returns both paths."""
        prefix = Path(prefix)
        _check_prefix(prefix)
        js, md = Path(f"{prefix}.json"), Path(f"{prefix}.md")
        write_text_atomic(js, self.to_json() + "\n")
        write_text_atomic(md, self.to_markdown())
        return js, md


def _finite(obj):
    """JSON without NaN/inf (they are not JSON): replace them by null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


def _ratio(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.2f}×"


def _count(n: float | None) -> str:
    if n is None:
        return "–"
    from onnxprune.analysis.cost import format_count
    return format_count(n)


def _check_prefix(prefix: Path) -> None:
    parent = prefix.parent
    if not parent.exists():
        raise OnnxPruneError(f"{prefix}: folder '{parent}' does not exist")
    if not parent.is_dir():
        raise OnnxPruneError(f"{prefix}: '{parent}' is not a folder")
    for ext in (".json", ".md"):
        if Path(f"{prefix}{ext}").is_dir():
            raise OnnxPruneError(f"{prefix}{ext}: is a folder, expected a file path")


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------
def parse_batches(value: str | int | Iterable[int]) -> list[int]:
    """'1,64' (or an int, or a list of ints) -> [1, 64]; duplicates dropped, order kept."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        try:
            out = [int(v) for v in items]
        except ValueError:
            out = None
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = [int(value)]
    else:
        try:
            out = list(value)
        except TypeError:
            out = None
        if out is not None and not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                       for v in out):
            out = None
    if not out or any(int(b) < 1 for b in out):
        raise OnnxPruneError(f"batch list {value!r}: expected comma-separated positive integers, e.g. 1,64")
    return list(dict.fromkeys(int(b) for b in out))


def parse_engines(value: str | Iterable[str]) -> list[str]:
    """'ort-cpu,torch-cpu' (or a list; 'all' = every engine) -> checked list, duplicates dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(v).strip().lower() for v in items if str(v).strip()]
    if not items:
        raise OnnxPruneError(f"engine list {value!r} is empty; choose from {', '.join(ENGINES)}")
    out: list[str] = []
    for name in items:
        if name == "all":
            out.extend(ENGINES)
        elif name in ENGINES:
            out.append(name)
        else:
            raise OnnxPruneError(f"unknown engine '{name}'; choose from {', '.join(ENGINES)} (or 'all')")
    return list(dict.fromkeys(out))


def _parse_input_shapes(items: Sequence[str] | dict | None) -> dict[str, list[int]]:
    if not items:
        return {}
    if isinstance(items, dict):
        return {k: [int(d) for d in v] for k, v in items.items()}
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            name = ""
        if not name:
            raise OnnxPruneError(f"--input-shape {item!r}: expected NAME=1x3x224x224")
    return shapes


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
class _Model:
    """A loaded model, its cost figures and the graph to run at each batch size."""

    def __init__(self, path: str | os.PathLike, name: str, shapes: dict[str, list[int]]) -> None:
        self.path = Path(path)
        proto = load_model(self.path)
        if shapes:
            from onnxprune.graph.view import fix_input_shapes
            mine = {k: v for k, v in shapes.items() if k in {i.name for i in proto.graph.input}}
            dyn0 = {i.name for i in proto.graph.input if i.name in mine and i.type.tensor_type.shape.dim
                    and not i.type.tensor_type.shape.dim[0].HasField("dim_value")}
            try:
                proto = fix_input_shapes(proto, mine)
            except OnnxPruneError as exc:
                raise OnnxPruneError(f"{self.path}: {exc}") from None
            for i in proto.graph.input:   # a batch axis that was dynamic stays dynamic
                if i.name in dyn0:
                    i.type.tensor_type.shape.dim[0].Clear()
                    i.type.tensor_type.shape.dim[0].dim_param = "batch"
        self.proto = proto
        self.name = name
        self.input_names = [i.name for i in proto.graph.input
                            if i.name not in {t.name for t in proto.graph.initializer}]

    def finish(self) -> "_Model":
        """Check the input shapes, count MACs and params."""
        proto = self.proto
        inits = {t.name for t in proto.graph.initializer}
        self.inputs: list[tuple[str, list, type]] = []   # (name, dims with None at the batch axis, dtype)
        fixed = None
        for vi in proto.graph.input:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            if not t.HasField("shape"):
                raise OnnxPruneError(f"{self.path}: input '{vi.name}' has no shape; "
                                     f"give one with --input-shape {vi.name}=1x3xHxW")
            dims: list = []
            for k, d in enumerate(t.shape.dim):
                if k == 0:
                    if d.HasField("dim_value") and fixed is None:
                        fixed = int(d.dim_value)
                    dims.append(None)
                elif d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                else:
                    raise OnnxPruneError(
                        f"{self.path}: input '{vi.name}' dimension {k} is dynamic "
                        f"('{d.dim_param or '?'}'); fix it with --input-shape {vi.name}=1x3xHxW")
            self.inputs.append((vi.name, dims, _NP_TYPES.get(t.elem_type, np.float32)))
        if not self.inputs:
            raise OnnxPruneError(f"{self.path}: the model has no graph input to feed")
        self.fixed_batch = fixed
        self._dynamic: onnx.ModelProto | None = None
        self._dynamic_error: str | None = None
        self.macs = self.params = None
        self.note = None
        try:
            from onnxprune.analysis import analyze
            from onnxprune.analysis.cost import CostModel
            cost = CostModel(analyze(proto))
            self.macs, self.params = float(cost.macs()), float(cost.params())
        except Exception as exc:   # latency is still worth measuring
            self.note = f"MACs/params not counted: {_one_line(exc)}"
        # the file, or the serialized model with its weights when they live in external data files
        self.size_bytes = max(self.path.stat().st_size, proto.ByteSize())
        return self

    def info(self) -> ModelInfo:
        shapes = {n: ["batch" if d is None else d for d in dims] for n, dims, _ in self.inputs}
        return ModelInfo(self.name, str(self.path), self.macs, self.params, self.size_bytes,
                         shapes, self.fixed_batch, self.note)

    def needs_dynamic(self, batch: int) -> bool:
        return self.fixed_batch is not None and batch != self.fixed_batch

    def graph_for(self, batch: int) -> onnx.ModelProto:
        if not self.needs_dynamic(batch):
            return self.proto
        if self._dynamic is None and self._dynamic_error is None:
            try:
                self._dynamic = with_dynamic_batch(self.proto)
            except Exception as exc:
                self._dynamic_error = _one_line(exc)
        if self._dynamic is None:
            raise _SkipThis(f"cannot make the batch dynamic ({self._dynamic_error})")
        return self._dynamic

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Seeded standard-normal inputs of the model's input shapes with the batch substituted."""
        rng = np.random.default_rng(seed)
        out = {}
        for name, dims, dtype in self.inputs:
            shape = [batch if d is None else d for d in dims]
            if np.issubdtype(dtype, np.floating):
                out[name] = rng.standard_normal(shape).astype(dtype)
            else:
                out[name] = rng.integers(0, 2, shape).astype(dtype)
        return out


def _labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{n}#{i + 1}" for i, n in enumerate(names)]


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip() if not isinstance(exc, str) else exc.strip()
    first = text.splitlines()[0] if text else ""
    if not isinstance(exc, (str, OnnxPruneError)):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:300]


# --------------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------------
class _Unavailable(Exception):
    """The whole engine cannot run here."""


class _SkipThis(Exception):
    """This model × engine × batch cannot run."""


class _Runner:
    """One prepared model × engine × batch: ``fn()`` runs one batch to completion."""

    def __init__(self, fn: Callable[[], None], device: str, keep=None) -> None:
        self.fn = fn
        self.device = device
        self.keep = keep            # objects the closure needs alive (sessions, buffers, graphs)


class _OrtEngine:
    def __init__(self, cuda: bool, threads: int | None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except Exception as exc:  # pragma: no cover - onnxruntime is a dependency
            raise _Unavailable(f"onnxruntime not importable ({_one_line(exc)})") from None
        self.cuda, self.threads = cuda, threads
        if cuda:
            provs = available_providers("cuda")
            if "CUDAExecutionProvider" not in provs:
                raise _Unavailable("onnxruntime CUDA provider not available here (no GPU, CPU-only "
                                   "onnxruntime, or its CUDA/cuDNN libraries do not load)")
            self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        self.device = "cuda" if cuda else "cpu"

    def prepare(self, model: _Model, batch: int, feeds: dict[str, np.ndarray]) -> _Runner:
        graph = model.graph_for(batch)
        sess = make_session(graph, self.providers, threads=self.threads, quiet=True)
        if not self.cuda:
            return _Runner(lambda: sess.run(None, feeds), "cpu", sess)
        if "CUDAExecutionProvider" not in sess.get_providers():
            raise _SkipThis("the CUDA provider did not load for this model")
        import onnxruntime as ort
        io = sess.io_binding()
        values = []
        for name, arr in feeds.items():
            v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
            values.append(v)
            io.bind_ortvalue_input(name, v)
        for out in sess.get_outputs():
            io.bind_output(out.name, "cuda", 0)

        def run() -> None:
            sess.run_with_iobinding(io)
            io.synchronize_outputs()
        return _Runner(run, "cuda", (sess, io, values))

    def close(self) -> None:
        pass


class _TorchEngine:
    def __init__(self, engine: str, threads: int | None) -> None:
        try:
            import torch
        except Exception as exc:
            raise _Unavailable(f"torch not importable ({_one_line(exc)})") from None
        try:
            from onnxprune.torch_bridge import OnnxModule
        except Exception as exc:
            raise _Unavailable(f"torch bridge onnxprune.torch_bridge not importable ({_one_line(exc)})") from None
        self.torch, self.OnnxModule, self.engine = torch, OnnxModule, engine
        cuda = torch.cuda.is_available()
        if engine in ("torch-cuda", "torch-cudagraph") and not cuda:
            raise _Unavailable(f"no CUDA GPU visible to torch {torch.__version__} "
                               f"({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU-only build'})")
        self.device = "cuda" if engine in ("torch-cuda", "torch-cudagraph") or \
            (engine == "torch-compile" and cuda) else "cpu"
        if engine == "torch-compile":
            self._probe_compile()
        self._threads_before = None
        if threads and self.device == "cpu":
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)

    def _probe_compile(self) -> None:
        torch = self.torch
        if not hasattr(torch, "compile"):
            raise _Unavailable(f"torch {torch.__version__} has no torch.compile")
        try:
            dyn = torch._dynamo.config
            dyn.cache_size_limit = max(getattr(dyn, "cache_size_limit", 8), 256)
            if hasattr(dyn, "accumulated_cache_size_limit"):
                dyn.accumulated_cache_size_limit = max(dyn.accumulated_cache_size_limit, 1024)
        except Exception:
            pass
        try:
            def f(x):
                return torch.relu(x) * 2 + 1
            x = torch.randn(8, device=self.device)
            y = torch.compile(f, dynamic=False)(x)
            if self.device == "cuda":
                torch.cuda.synchronize()
            if not torch.allclose(y, f(x)):
                raise RuntimeError("compiled probe gives a different result")
        except Exception as exc:
            raise _Unavailable(f"torch.compile does not work here on {self.device} ({_one_line(exc)})") from None

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prepare(self, model: _Model, batch: int, feeds: dict[str, np.ndarray]) -> _Runner:
        torch = self.torch
        graph = model.graph_for(batch)
        try:
            module = self.OnnxModule(graph)
        except Exception as exc:
            raise _SkipThis(f"the torch bridge cannot build this model ({_one_line(exc)})") from None
        module = module.eval().to(self.device)
        xs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in feeds.values()]
        sync = self._sync
        if self.engine in ("torch-cpu", "torch-cuda"):
            def run() -> None:
                with torch.inference_mode():
                    module(*xs)
                sync()
            return _Runner(run, self.device, (module, xs))
        if self.engine == "torch-compile":
            compiled = torch.compile(module, dynamic=False)

            def run() -> None:
                with torch.inference_mode():
                    compiled(*xs)
                sync()
            return _Runner(run, self.device, (module, compiled, xs))
        # torch-cudagraph: warm up on a side stream, capture once, replay
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    module(*xs)
            torch.cuda.current_stream().wait_stream(side)
            graph_cuda = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph_cuda):
                    out = module(*xs)
            except Exception as exc:
                raise _SkipThis(f"CUDA graph capture failed ({_one_line(exc)})") from None

        def replay() -> None:
            graph_cuda.replay()
            torch.cuda.synchronize()
        return _Runner(replay, "cuda", (module, xs, graph_cuda, out))

    def close(self) -> None:
        if self._threads_before is not None:
            self.torch.set_num_threads(self._threads_before)
        if self.device == "cuda":
            try:
                self.torch.cuda.empty_cache()
            except Exception:
                pass


def _make_engine(name: str, threads: int | None):
    if name.startswith("ort-"):
        return _OrtEngine(name == "ort-cuda", threads)
    return _TorchEngine(name, threads)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    model: _Model
    runner: _Runner | None = None
    samples: list = field(default_factory=list)       # seconds
    round_medians: dict = field(default_factory=dict)  # round -> median seconds
    est: float | None = None
    error: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.samples))


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _measure(slots: list[_Slot], warmup: int, min_runs: int, min_time_s: float,
             max_runs: int) -> int:
    """Warm up each slot, then time interleaved rounds; returns the number of rounds."""
    for s in slots:
        try:
            for _ in range(warmup):
                s.est = _timed(s.runner.fn)
        except Exception as exc:
            s.error = f"failed in warm-up ({_one_line(exc)})"
    round_s = max(min_time_s / 10.0, 0.002)

    def done(s: _Slot) -> bool:
        n = len(s.samples)
        return n >= max_runs or (n >= min_runs and s.total >= min_time_s)

    rounds = 0
    while True:
        live = [s for s in slots if s.error is None]
        if not live or all(done(s) for s in live):
            break
        order = live if rounds % 2 == 0 else live[::-1]
        for s in order:
            if len(s.samples) >= max_runs:
                continue
            chunk = 1 if s.est is None else int(min(max(round_s / max(s.est, 1e-9), 1), 200))
            chunk = min(chunk, max_runs - len(s.samples))
            try:
                times = [_timed(s.runner.fn) for _ in range(chunk)]
            except Exception as exc:
                s.error = f"failed while timing ({_one_line(exc)})"
                continue
            s.samples.extend(times)
            s.round_medians[rounds] = float(np.median(times))
            s.est = float(np.median(times))
        rounds += 1
    return rounds


def _stats(samples_s: Sequence[float], batch: int) -> dict:
    t = np.asarray(samples_s, dtype=np.float64) * 1e3
    p25, p50, p75, p90, p99 = np.percentile(t, [25, 50, 75, 90, 99])
    return {"mean_ms": float(t.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "iqr_ms": float(p75 - p25), "min_ms": float(t.min()),
            "images_per_s": float(batch / (p50 / 1e3)) if p50 > 0 else float("inf")}


# --------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "cpu model", "processor") and \
                        value.strip() and not value.strip().isdigit():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if out.returncode == 0 and names:
                return ", ".join(names)
        except Exception:
            pass
    return None


def machine_info() -> dict:
    """CPU model and cores, GPU (if any), onnxruntime version and providers, torch version."""
    from importlib import metadata
    import onnxruntime as ort
    try:
        avail = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = os.cpu_count()
    torch_version = None
    if "torch" in sys.modules:
        torch_version = getattr(sys.modules["torch"], "__version__", None)
    if torch_version is None:
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_available": avail,
            "gpu": _gpu_name(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "ort_providers": list(ort.get_available_providers()),
            "ort_providers_working": available_providers("cuda"), "numpy": np.__version__,
            "onnx": onnx.__version__, "torch": torch_version}


# --------------------------------------------------------------------------------------------------
# Library entry point
# --------------------------------------------------------------------------------------------------
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
    shapes = _parse_input_shapes(input_shapes)

    models = [_Model(p, n, shapes) for p, n in zip(paths, _labels(paths))]
    unknown = set(shapes) - {name for m in models for name in m.input_names}
    if unknown:
        raise OnnxPruneError(f"input shape given for '{sorted(unknown)[0]}', which is not an input of "
                             f"{', '.join(str(m.path) for m in models)}")
    for m in models:
        m.finish()
    for m in models:
        say(f"{m.name}: {_count(m.macs)} MACs, {_count(m.params)} params"
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
            engine = _make_engine(engine_name, threads)
        except _Unavailable as exc:
            skip(Skipped(engine_name, _one_line(str(exc))))
            continue
        try:
            for batch in batch_list:
                slots = []
                for m in models:
                    slot = _Slot(m)
                    try:
                        slot.runner = engine.prepare(m, batch, m.feeds(batch, seed))
                    except (_SkipThis, OnnxPruneError) as exc:
                        slot.error = _one_line(str(exc))
                    except Exception as exc:
                        slot.error = _one_line(exc)
                    if slot.error and m.needs_dynamic(batch):
                        slot.error = (f"the file fixes batch {m.fixed_batch}; made dynamic, it does not "
                                      f"run at batch {batch}: {slot.error}")
                    slots.append(slot)
                ready = [s for s in slots if s.error is None]
                warm = max(warmup, 2) if engine_name == "torch-compile" else warmup
                rounds = _measure(ready, warm, min_runs, float(min_time_s), max_runs) if ready else 0
                for s in slots:
                    if s.error is not None and s.error.startswith("failed") and s.model.needs_dynamic(batch):
                        s.error = (f"the file fixes batch {s.model.fixed_batch}; made dynamic, it "
                                   f"{s.error}")
                    if s.error is not None:
                        skip(Skipped(engine_name, s.error, s.model.name, batch))
                        continue
                    st = _stats(s.samples, batch)
                    r = BenchResult(s.model.name, engine_name, batch, s.runner.device, len(s.samples),
                                    rounds, s.total, dynamic_batch=s.model.needs_dynamic(batch), **st)
                    results.append(r)
                    round_meds[(s.model.name, engine_name, batch)] = s.round_medians
                    say(f"{engine_name} ({r.device}) batch {batch} {s.model.name}: p50 {_ms(r.p50_ms)} ms, "
                        f"p90 {_ms(r.p90_ms)}, IQR {_ms(r.iqr_ms)}, {r.images_per_s:,.1f} img/s "
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


# --------------------------------------------------------------------------------------------------
# Command line (wired into ``onnxprune bench`` by cli.py)
# --------------------------------------------------------------------------------------------------
def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``onnxprune bench A.onnx [B.onnx …]``; sets ``func=run_bench_from_args``."""
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="ONNX model files; the first one is the baseline of the speed-ups")
    parser.add_argument("--batch", default="1,64", metavar="N[,N…]",
                        help="comma-separated batch sizes (default 1,64)")
    parser.add_argument("--engine", default="ort-cpu", metavar="E[,E…]",
                        help=f"comma-separated engines: {', '.join(ENGINES)}, or 'all'; engines not "
                             "available here are skipped with a message (default ort-cpu)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per model (default 5)")
    parser.add_argument("--min-runs", type=int, default=20, help="timed runs per model, at least (default 20)")
    parser.add_argument("--min-time", type=float, default=1.0, metavar="SECONDS",
                        help="measured time per model, at least (default 1.0)")
    parser.add_argument("--max-runs", type=int, default=1000, help="timed runs per model, at most (default 1000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for onnxruntime / torch (default: the runtime's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW",
                        help="fix a dynamic input shape (repeatable); the batch axis is replaced by --batch")
    parser.add_argument("-o", "--output", metavar="PREFIX",
                        help="write PREFIX.json and PREFIX.md")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    parser.set_defaults(func=run_bench_from_args)


def run_bench_from_args(args: argparse.Namespace) -> int:
    """Run ``onnxprune bench``; 0 when something was measured, 1 when everything was skipped."""
    batches = parse_batches(args.batch)
    engines = parse_engines(args.engine)
    shapes = _parse_input_shapes(getattr(args, "input_shape", None))
    if args.output:
        _check_prefix(Path(args.output))
    quiet = getattr(args, "quiet", False)

    def log(msg: str) -> None:
        if not quiet or msg.startswith("skipped"):
            print(msg, file=sys.stderr, flush=True)
    report = bench_models(args.models, batches=batches, engines=engines, warmup=args.warmup,
                          min_runs=args.min_runs, min_time_s=args.min_time, max_runs=args.max_runs,
                          threads=args.threads, seed=args.seed, input_shapes=shapes, log=log)
    sys.stdout.write(report.to_json() + "\n" if args.json else report.to_markdown())
    sys.stdout.flush()
    if args.output:
        js, md = report.save(args.output)
        print(f"wrote {js} and {md}", file=sys.stderr)
    if not report.results:
        print("onnxprune: nothing was measured (every engine/batch was skipped)", file=sys.stderr)
        return 1
    return 0
