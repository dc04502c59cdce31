"""The teacher: the unpruned ONNX model, run on every training batch to give distillation targets.

On CPU the teacher runs in onnxruntime (several times faster than the torch bridge's eager ops on
conv nets); on CUDA it runs through the bridge on the GPU (no host round trip). Either can be forced
with ``teacher_backend``.
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.finetune.errors import TeacherMismatchError

__all__ = ["Teacher", "check_teacher_matches", "check_output_shapes", "graph_inputs"]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _rank(vi: onnx.ValueInfoProto) -> int | None:
    t = vi.type.tensor_type
    return len(t.shape.dim) if t.HasField("shape") else None


def _compare(kind: str, student: list, teacher: list) -> None:
    if len(student) != len(teacher):
        raise TeacherMismatchError(
            f"teacher has {len(teacher)} {kind}s {[v.name for v in teacher]}, the student "
            f"{len(student)} {[v.name for v in student]}: give the unpruned original of this model")
    for s, t in zip(student, teacher):
        if s.name != t.name:
            raise TeacherMismatchError(f"teacher {kind} {t.name!r} where the student has {s.name!r}: "
                                       "give the unpruned original of this model")
        rs, rt = _rank(s), _rank(t)
        if rs is not None and rt is not None and rs != rt:
            raise TeacherMismatchError(f"{kind} {s.name!r}: rank {rt} in the teacher, {rs} in the student")


def check_teacher_matches(student: onnx.ModelProto, teacher: onnx.ModelProto) -> None:
    """Same input and output names, order and ranks, else :class:`TeacherMismatchError`."""
    _compare("input", graph_inputs(student), graph_inputs(teacher))
    _compare("output", list(student.graph.output), list(teacher.graph.output))


def check_output_shapes(names: list[str], student: list, teacher: list) -> None:
    """Student and teacher outputs on the same batch must have equal shapes."""
    for name, s, t in zip(names, student, teacher):
        if tuple(s.shape) != tuple(t.shape):
            raise TeacherMismatchError(f"output {name!r}: shape {tuple(t.shape)} from the teacher, "
                                       f"{tuple(s.shape)} from the student on the same batch")


class Teacher:
    """Calls the teacher model on a torch batch; returns its outputs as torch tensors on ``device``."""

    def __init__(self, model: onnx.ModelProto, device, backend: str = "auto"):
        if backend == "auto":
            backend = "torch" if device.type == "cuda" else "onnxruntime"
        self.backend, self.device = backend, device
        if backend == "onnxruntime":
            from onnxprune.runtime import AnyBatchSession
            self.session = AnyBatchSession(model)
        else:
            from onnxprune.runtime import with_dynamic_batch
            from onnxprune.torch_bridge import OnnxModule
            self.module = OnnxModule(with_dynamic_batch(model)).to(device).eval()
            for p in self.module.parameters():
                p.requires_grad_(False)

    def __call__(self, x) -> list:
        import torch
        with torch.no_grad():
            if self.backend == "onnxruntime":
                outs = self.session.run(np.ascontiguousarray(x.detach().cpu().numpy(), np.float32))
                return [torch.from_numpy(o).to(self.device) for o in outs]
            out = self.module(x)
            return list(out) if isinstance(out, (tuple, list)) else [out]

    def run_numpy(self, images: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
        """All outputs on ``images`` (no augmentation), concatenated over batches."""
        import torch
        parts = [[o.cpu().numpy() for o in self(torch.from_numpy(images[i:i + batch_size]).to(self.device))]
                 for i in range(0, len(images), batch_size)]
        return [np.concatenate(p) for p in zip(*parts)]
