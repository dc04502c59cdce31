"""Engines that run one model × batch: onnxruntime (CPU, CUDA with IO binding) and torch through the bridge.

Torch engines run the ONNX graph through ``onnxprune.torch_bridge.OnnxModule``: ``torch-cpu``,
``torch-cuda``, ``torch-compile`` (on the GPU when torch sees one) and ``torch-cudagraph``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from onnxprune.runtime import available_providers, make_session
from onnxprune.tools.bench.records import one_line

if TYPE_CHECKING:
    from onnxprune.tools.bench.models import BenchModel

__all__ = ["ENGINES", "Unavailable", "SkipThis", "Runner", "make_engine"]

ENGINES = ("ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda", "torch-compile", "torch-cudagraph")


class Unavailable(Exception):
    """The whole engine cannot run here."""


class SkipThis(Exception):
    """This model × engine × batch cannot run."""


class Runner:
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
            raise Unavailable(f"onnxruntime not importable ({one_line(exc)})") from None
        self.cuda, self.threads = cuda, threads
        if cuda:
            provs = available_providers("cuda")
            if "CUDAExecutionProvider" not in provs:
                raise Unavailable("onnxruntime CUDA provider not available here (no GPU, CPU-only "
                                   "onnxruntime, or its CUDA/cuDNN libraries do not load)")
            self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        self.device = "cuda" if cuda else "cpu"

    def prepare(self, model: BenchModel, batch: int, feeds: dict[str, np.ndarray]) -> Runner:
        graph = model.graph_for(batch)
        sess = make_session(graph, self.providers, threads=self.threads, quiet=True)
        if not self.cuda:
            return Runner(lambda: sess.run(None, feeds), "cpu", sess)
        if "CUDAExecutionProvider" not in sess.get_providers():
            raise SkipThis("the CUDA provider did not load for this model")
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
        return Runner(run, "cuda", (sess, io, values))

    def close(self) -> None:
        pass


class _TorchEngine:
    def __init__(self, engine: str, threads: int | None) -> None:
        try:
            import torch
        except Exception as exc:
            raise Unavailable(f"torch not importable ({one_line(exc)})") from None
        try:
            from onnxprune.torch_bridge import OnnxModule
        except Exception as exc:
            raise Unavailable(f"torch bridge onnxprune.torch_bridge not importable ({one_line(exc)})") from None
        self.torch, self.OnnxModule, self.engine = torch, OnnxModule, engine
        cuda = torch.cuda.is_available()
        if engine in ("torch-cuda", "torch-cudagraph") and not cuda:
            raise Unavailable(f"no CUDA GPU visible to torch {torch.__version__} "
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
            raise Unavailable(f"torch {torch.__version__} has no torch.compile")
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
            raise Unavailable(f"torch.compile does not work here on {self.device} ({one_line(exc)})") from None

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prepare(self, model: BenchModel, batch: int, feeds: dict[str, np.ndarray]) -> Runner:
        torch = self.torch
        graph = model.graph_for(batch)
        try:
            module = self.OnnxModule(graph)
        except Exception as exc:
            raise SkipThis(f"the torch bridge cannot build this model ({one_line(exc)})") from None
        module = module.eval().to(self.device)
        xs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in feeds.values()]
        sync = self._sync
        if self.engine in ("torch-cpu", "torch-cuda"):
            def run() -> None:
                with torch.inference_mode():
                    module(*xs)
                sync()
            return Runner(run, self.device, (module, xs))
        if self.engine == "torch-compile":
            compiled = torch.compile(module, dynamic=False)

            def run() -> None:
                with torch.inference_mode():
                    compiled(*xs)
                sync()
            return Runner(run, self.device, (module, compiled, xs))
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
                raise SkipThis(f"CUDA graph capture failed ({one_line(exc)})") from None

        def replay() -> None:
            graph_cuda.replay()
            torch.cuda.synchronize()
        return Runner(replay, "cuda", (module, xs, graph_cuda, out))

    def close(self) -> None:
        if self._threads_before is not None:
            self.torch.set_num_threads(self._threads_before)
        if self.device == "cuda":
            try:
                self.torch.cuda.empty_cache()
            except Exception:
                pass


def make_engine(name: str, threads: int | None):
    if name.startswith("ort-"):
        return _OrtEngine(name == "ort-cuda", threads)
    return _TorchEngine(name, threads)
