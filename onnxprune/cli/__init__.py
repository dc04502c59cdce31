"""The onnxprune command: one module per sub-command."""
from onnxprune.cli.core import main

__all__ = ["main"]
