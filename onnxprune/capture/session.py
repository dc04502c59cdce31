"""Activation capture: expose the tensors the metrics need as extra outputs, run, reduce.

The probes of a group are the tensors its consumers read (post-activation, as the next layer sees
them). Each batch is handed to a reducer right away and dropped, so memory stays bounded whatever
the number of images; the batch size is chosen so that the captured tensors of one batch fit in
``memory_mb``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import onnx

from onnxprune.analysis import Analysis, group_edges
from onnxprune.errors import DataError
from onnxprune.graph.edit import ModelEdit
from onnxprune.log import get_logger, progress as progress_bar
from onnxprune.runtime import AnyBatchSession, available_providers

__all__ = ["Probe", "probes_for", "CaptureSession", "batch_size_for", "with_outputs"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Probe:
    """Channels ``group_offset..+length`` of ``group`` sit at ``offset..+length`` on ``axis`` of
    ``tensor``, which consumer ``node`` reads at ``input_index``."""
    group: int
    tensor: str
    axis: int
    block: int
    offset: int
    length: int
    group_offset: int
    node: int
    input_index: int


def probes_for(analysis: Analysis, groups: Iterable[int]) -> list[Probe]:
    """Every consumer edge of the given groups, one probe per (edge, segment)."""
    return [Probe(s.group, e.tensor, lay.axis, lay.block, s.offset, s.length, s.group_offset, e.node, e.input_index)
            for e, lay, segs in group_edges(analysis, groups=set(groups)) for s in segs]


def batch_size_for(analysis: Analysis, tensors: Iterable[str], memory_mb: float, cap: int = 256) -> int:
    """Largest batch (≤ cap) whose captured tensors fit in ``memory_mb`` (float32)."""
    per_image = 0
    for t in set(tensors):
        shape = analysis.view.shape(t) or []
        per_image += 4 * int(np.prod([d or 1 for d in shape[1:]]))
    if per_image == 0:
        return cap
    return int(max(1, min(cap, memory_mb * 2 ** 20 // per_image)))


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors``."""
    edit = ModelEdit(model)
    edit.add_outputs(tensors)
    return edit.to_proto()


class CaptureSession:
    """An onnxruntime session on a copy of the model with extra outputs."""

    def __init__(self, model: onnx.ModelProto, tensors: list[str], provider: str = "auto") -> None:
        self.tensors = list(dict.fromkeys(tensors))
        self.session = AnyBatchSession(with_outputs(model, self.tensors), available_providers(provider))
        if self.session.fixed_batch:
            log.info("capture: the model fixes batch size %d; running in slices of it", self.session.fixed_batch)
        self.provider = self.session.session.get_providers()[0]
        log.debug("capture: onnxruntime on %s", self.provider)
        self.output_names = self.session.output_names

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not np.all(np.isfinite(x)):
            raise DataError("calibration batch contains NaN or Inf")
        outs = self.session.run(x)
        return dict(zip(self.output_names, outs))

    def stream(self, batches: Iterable[np.ndarray], total: int | None = None,
               progress: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield the captured tensors batch by batch (a progress bar on an interactive stderr;
        ``total`` counts images)."""
        for _, outs in self.stream_with_inputs(batches, total, progress):
            yield outs

    def stream_with_inputs(self, batches: Iterable[np.ndarray], total: int | None = None,
                           progress: bool = True) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Like :meth:`stream`, yielding (input batch, captured tensors)."""
        if progress:
            batches = progress_bar(batches, total=total, desc="capture", unit="img", logger=log, weight=len)
        for x in batches:
            x = np.ascontiguousarray(x, dtype=np.float32)
            yield x, self.run(x)
