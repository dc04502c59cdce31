"""The onnxprune command: ``main.py`` parses and dispatches, one module per sub-command, shared
argument groups in ``args.py``.

``main`` here is the function (the entry point of the ``onnxprune`` console script and of
``python -m onnxprune.cli``); importing it by name keeps the sub-module ``onnxprune.cli.main`` from
shadowing it.
"""
from onnxprune.cli.main import main

__all__ = ["main"]
