"""PyTorch reference CNNs used to produce ONNX test/benchmark models for ``onnxprune``.

Only plain ``torch`` is needed (no torchvision).  :mod:`models.registry` lists the
models by name; :mod:`models.export` turns one of them into a self-contained
``.onnx`` file (``python -m models.export NAME -o OUT.onnx``).
"""

from models.registry import MODELS, ModelSpec, build_model, get_spec

__all__ = ["MODELS", "ModelSpec", "build_model", "get_spec"]
