"""onnxruntime sessions: provider choice and random inputs that fit a model."""
from __future__ import annotations

import numpy as np
import onnx

from .errors import OnnxPruneError

__all__ = ["make_session", "available_providers", "random_inputs"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
             onnx.TensorProto.BOOL: np.bool_}


def available_providers(prefer: str = "auto") -> list[str]:
    """CUDA (or TensorRT when asked) when this onnxruntime offers it, else CPU."""
    import onnxruntime as ort
    have = ort.get_available_providers()
    order = {"auto": ["CUDAExecutionProvider"], "cuda": ["CUDAExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "cpu": []}[prefer]
    return [p for p in order if p in have] + ["CPUExecutionProvider"]


def make_session(model: onnx.ModelProto | bytes | str, providers: list[str] | None = None,
                 threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(data, opts, providers=providers or available_providers("cpu"))
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


def random_inputs(model: onnx.ModelProto, seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs; a dynamic dimension becomes ``batch`` on axis 0, else 1."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else 1)
                for k, d in enumerate(t.shape.dim)]
        dtype = _NP_TYPES.get(t.elem_type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds
