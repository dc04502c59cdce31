"""The bridge's op registry: ONNX op type -> factory.

A factory ``factory(attrs, opset, node)`` checks the node's attributes once, when the module
is built (raising :class:`~onnxprune.errors.OnnxPruneError` for unsupported values), and
returns ``run(args, rt) -> list of outputs`` (``args``: the node's inputs as tensors, None
for omitted optional ones; ``rt``: a :class:`~onnxprune.torch_bridge.common.Run`).

Adding an op is one function plus one registration line::

    @register("Softplus")
    def _softplus(a, opset, node):
        return lambda args, rt: [F.softplus(args[0])]
"""
from __future__ import annotations

from typing import Callable

from onnxprune.torch_bridge.common import align

Factory = Callable
OPS: dict[str, Factory] = {}


def register(*names: str):
    """Decorator: register a factory under one or more ONNX op types."""
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def register_unary(name: str, fn: Callable) -> None:
    """Register an attribute-free one-input op computed by ``fn(x)``."""
    OPS[name] = lambda a, opset, node: (lambda args, rt: [fn(args[0])])


def register_binary(name: str, fn: Callable) -> None:
    """Register an attribute-free broadcasting two-input op computed by ``fn(x, y)``."""
    def factory(a, opset, node):
        def run(args, rt):
            x, y = align(args[0], args[1])
            return [fn(x, y)]
        return run
    OPS[name] = factory
