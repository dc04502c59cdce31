"""onnxprune: structured channel pruning of exported ONNX CNNs."""

__version__ = "0.1.0"
