"""The bridge's op implementations, one module per family; importing this package registers
them all in :data:`OPS` (op type -> factory, see :mod:`.registry`)."""
from onnxprune.torch_bridge.ops import (activations, conv, elementwise, misc, norm, pooling,  # noqa: F401
                                        reduce, resize, shape)
from onnxprune.torch_bridge.ops.norm import OnnxBatchNorm
from onnxprune.torch_bridge.ops.registry import OPS, register

SUPPORTED_OPS: frozenset[str] = frozenset(OPS)

__all__ = ["OPS", "SUPPORTED_OPS", "OnnxBatchNorm", "register"]
