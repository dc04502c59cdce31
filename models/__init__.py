"""PyTorch reference CNNs used to produce ONNX test/benchmark models for ``onnxprune``.

Only plain ``torch`` is needed (no torchvision).  :mod:`models.registry` lists the
models by name; :mod:`models.export` turns one of them into a self-contained
``.onnx`` file (``python -m models.export NAME -o OUT.onnx``).
"""

__all__ = ["MODELS", "ModelSpec", "build_model", "get_spec"]


def __getattr__(name: str):
    """Lazy: importing the package needs no torch, so ``python -m models.export`` can say it is missing."""
    if name in __all__:
        from models import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
