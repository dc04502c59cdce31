"""Checked parsing of the benchmark's settings: batch list, engine list, input shapes."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.tools.bench.engines import ENGINES

__all__ = ["parse_batches", "parse_engines", "parse_input_shapes"]


def parse_batches(value: str | int | Iterable[int]) -> list[int]:
    """'1,64' (or an int, or a list of ints) -> [1, 64]; duplicates dropped, order kept."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        try:
            out = [int(v) for v in items]
        except ValueError:
            out = None
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = [int(value)]
    else:
        try:
            out = list(value)
        except TypeError:
            out = None
        if out is not None and not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                       for v in out):
            out = None
    if not out or any(int(b) < 1 for b in out):
        raise OnnxPruneError(f"batch list {value!r}: expected comma-separated positive integers, e.g. 1,64")
    return list(dict.fromkeys(int(b) for b in out))


def parse_engines(value: str | Iterable[str]) -> list[str]:
    """'ort-cpu,torch-cpu' (or a list; 'all' = every engine) -> checked list, duplicates dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(v).strip().lower() for v in items if str(v).strip()]
    if not items:
        raise OnnxPruneError(f"engine list {value!r} is empty; choose from {', '.join(ENGINES)}")
    out: list[str] = []
    for name in items:
        if name == "all":
            out.extend(ENGINES)
        elif name in ENGINES:
            out.append(name)
        else:
            raise OnnxPruneError(f"unknown engine '{name}'; choose from {', '.join(ENGINES)} (or 'all')")
    return list(dict.fromkeys(out))


def parse_input_shapes(items: Sequence[str] | dict | None) -> dict[str, list[int]]:
    if not items:
        return {}
    if isinstance(items, dict):
        return {k: [int(d) for d in v] for k, v in items.items()}
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            name = ""
        if not name:
            raise OnnxPruneError(f"--input-shape {item!r}: expected NAME=1x3x224x224")
    return shapes
