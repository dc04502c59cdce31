"""Calibration data as the pipeline reads it: batches, the first n images, and the check that it fits the model."""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.errors import DataError

__all__ = ["data_batches", "first_images", "check_calibration"]


def data_batches(data, batch_size: int):
    """Batches of images from an ndarray or an onnxprune.data.Dataset."""
    if isinstance(data, np.ndarray):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
    else:
        for x, _ in data.batches(batch_size):
            yield x


def first_images(data, n: int, skip: int = 0) -> np.ndarray:
    """Calibration images ``skip`` to ``skip + n`` as one array (fewer when the data ends first)."""
    out, seen, want = [], 0, skip + n
    for x in data_batches(data, min(want, 64)):
        x = np.asarray(x, np.float32)
        lo, hi = max(skip - seen, 0), min(want - seen, len(x))
        if hi > lo:
            out.append(x[lo:hi])
        seen += len(x)
        if seen >= want:
            break
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _input_shape(model: onnx.ModelProto) -> list:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def check_calibration(model: onnx.ModelProto, data) -> None:
    """DataError naming the model input when ``data`` (an array or a Dataset) does not fit it."""
    from onnxprune.data import Dataset, check_against_input
    if not isinstance(data, (np.ndarray, Dataset)):
        raise DataError(f"calibration data must be a NumPy array or an onnxprune Dataset, got "
                        f"{type(data).__name__} (model input '{model.graph.input[0].name}')")
    if isinstance(data, np.ndarray) and len(data) == 0:
        raise DataError(f"calibration data is empty (model input '{model.graph.input[0].name}')")
    if isinstance(data, np.ndarray):    # raw pixels, NHWC, wrong size or dtype: one message naming the input
        from onnxprune.data import as_model_batch
        as_model_batch(data, _input_shape(model), model.graph.input[0].name, source="calibration data")
    check_against_input(data, _input_shape(model), model.graph.input[0].name, source="calibration data")

