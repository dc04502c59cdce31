"""A model under benchmark: loaded, input shapes fixed and checked, MACs counted, graph per batch size."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.model_io import load_model
from onnxprune.runtime import with_dynamic_batch
from onnxprune.tools.bench.engines import SkipThis
from onnxprune.tools.bench.records import ModelInfo, one_line

__all__ = ["BenchModel", "model_labels"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
             onnx.TensorProto.BOOL: np.bool_}


class BenchModel:
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

    def finish(self) -> "BenchModel":
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
            self.note = f"MACs/params not counted: {one_line(exc)}"
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
                self._dynamic_error = one_line(exc)
        if self._dynamic is None:
            raise SkipThis(f"cannot make the batch dynamic ({self._dynamic_error})")
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


def model_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{n}#{i + 1}" for i, n in enumerate(names)]
