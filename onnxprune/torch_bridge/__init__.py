"""ONNX graph -> trainable torch.nn.Module and back (needs PyTorch)."""
from onnxprune.torch_bridge.core import (SUPPORTED_OPS, OnnxBatchNorm, OnnxModule, fold_batchnorm,
                                         reinsert_batchnorm, to_onnx)

__all__ = ["OnnxModule", "OnnxBatchNorm", "to_onnx", "reinsert_batchnorm", "fold_batchnorm", "SUPPORTED_OPS"]
