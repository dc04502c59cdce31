"""Former single-module CLI; kept so ``from onnxprune.cli.core import main`` still works."""
from onnxprune.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
