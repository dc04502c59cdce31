"""onnxruntime sessions: provider choice and random inputs that fit a model."""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError

__all__ = ["make_session", "available_providers", "random_inputs", "with_dynamic_batch", "AnyBatchSession",
           "preferred_channel_multiple"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
             onnx.TensorProto.BOOL: np.bool_}


_WORKING: dict[str, bool] = {}


def _provider_works(name: str) -> bool:
    """onnxruntime-gpu lists CUDA even where its libraries cannot load: try a tiny session."""
    if name not in _WORKING:
        import onnxruntime as ort
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
        m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13)])
        ort.set_default_logger_severity(4)
        try:
            s = ort.InferenceSession(m.SerializeToString(), providers=[name, "CPUExecutionProvider"])
            _WORKING[name] = name in s.get_providers()
        except Exception:
            _WORKING[name] = False
        finally:
            ort.set_default_logger_severity(2)
    return _WORKING[name]


def available_providers(prefer: str = "auto") -> list[str]:
    """CUDA (or TensorRT when asked) when this onnxruntime offers it and it loads, else CPU."""
    import onnxruntime as ort
    have = ort.get_available_providers()
    order = {"auto": ["CUDAExecutionProvider"], "cuda": ["CUDAExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "cpu": []}[prefer]
    return [p for p in order if p in have and _provider_works(p)] + ["CPUExecutionProvider"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def preferred_channel_multiple(target: str = "cpu", cpu_flags: set[str] | None = None) -> tuple[int, str]:
    """The channel multiple that the target's kernels run fastest at, with the reason.

    onnxruntime's CPU provider converts convolutions to the NCHWc layout, blocked by 16 channels on
    AVX-512 and by 8 on AVX/AVX2; a convolution whose channel counts are not multiples of the block
    falls back to the slower NCHW path, so an exactly pruned model can be no faster than the
    original. GPUs (CUDA, TensorRT) want multiples of 8 for tensor-core tiles."""
    if target in ("cuda", "tensorrt", "gpu"):
        return 8, f"{target}: tensor-core tiles want channel multiples of 8"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    if "avx512f" in flags:
        return 16, "onnxruntime CPU on this AVX-512 machine blocks convolutions by 16 channels (NCHWc)"
    if "avx2" in flags or "avx" in flags:
        return 8, "onnxruntime CPU on this AVX/AVX2 machine blocks convolutions by 8 channels (NCHWc)"
    return 8, "no x86 AVX flags found; 8 is a safe multiple for most kernels"


def with_dynamic_batch(model: onnx.ModelProto, batch: int | None = None) -> onnx.ModelProto:
    """A copy whose first input and outputs have a symbolic batch dimension (value_info cleared).
    Reshape targets (initializers) that spell out ``batch`` (default: the first input's batch
    size) read it from the input instead; graphs that bake it in elsewhere still fail at run time
    (callers fall back)."""
    from onnxprune.graph.edit import ModelEdit
    edit = ModelEdit(model)
    edit.set_batch_dim("batch")
    edit.forget_shapes()
    if batch is None:
        batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value if model.graph.input else 0
    if batch:   # Reshape targets that spell the batch size out copy it from the input instead
        made: dict[str, object] = {}
        for idx, node in enumerate(edit.nodes):
            if node.op_type != "Reshape" or len(node.inputs) < 2 or node.inputs[1] is None:
                continue
            target = edit.initializer(node.inputs[1].name)
            if target is None or target.ndim != 1 or not target.size or target[0] != batch:
                continue
            allowzero = "allowzero" in node.attributes and node.attributes["allowzero"].as_int()
            if allowzero and -1 in target:
                continue
            name = node.inputs[1].name + "__dynbatch"
            if name not in made:
                target = target.copy()
                target[0] = -1 if allowzero else 0
                made[name] = edit.constant(target, name)
            edit.replace_input(idx, 1, made[name])
    return edit.to_proto()


def make_session(model: onnx.ModelProto | bytes | str, providers: list[str] | None = None,
                 threads: int | None = None, quiet: bool = False, arena: bool = True):
    """An onnxruntime session; ``arena=False``: no CPU memory arena (buffers freed after each run)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4 if quiet else 3
    opts.enable_cpu_mem_arena = arena
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


class AnyBatchSession:
    """A session that takes any batch size on the first input: the model with a symbolic batch
    dimension when its graph allows it, else the model as exported, fed slices of its fixed batch."""

    def __init__(self, model: onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
        self.fixed_batch = None
        self.session = make_session(with_dynamic_batch(model), providers, threads=threads, quiet=True)
        name = self.session.get_inputs()[0].name
        try:   # does the graph really accept another batch size?
            self.session.run(None, {name: np.zeros([2] + shape[1:], np.float32)})
        except Exception:
            self.session = make_session(model, providers, threads=threads)
            self.fixed_batch = shape[0] or 1
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs for batch ``x`` (split into fixed-size slices when the model needs it)."""
        if self.fixed_batch and len(x) != self.fixed_batch:
            parts = [self.session.run(None, {self.input.name: x[i:i + self.fixed_batch]})
                     for i in range(0, len(x), self.fixed_batch)]
            return [np.concatenate(p) for p in zip(*parts)]
        return self.session.run(None, {self.input.name: x})
