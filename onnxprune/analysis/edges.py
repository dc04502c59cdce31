"""The one walk over a tensor's segments: where each group's channels sit on a consumed tensor.

A layout is a list of segments; segment ``s`` occupies positions ``offset..offset+length`` of the
tensor's channel axis and holds channels ``group_offset..group_offset+length`` of group
``s.group``. Plan records, activation probes, coalition masks, kept positions and the cost
model's forms all walk layouts through these functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from onnxprune.analysis.records import Analysis, ConsumerEdge, Layout

__all__ = ["EdgeSegment", "segments_of", "group_edges", "kept_positions"]


@dataclass(frozen=True)
class EdgeSegment:
    """Channels ``group_offset..+length`` of ``group`` (None: no group) at ``offset..+length``."""
    group: int | None
    offset: int
    length: int
    group_offset: int


def segments_of(layout: Layout) -> Iterator[EdgeSegment]:
    """The segments of ``layout`` with their positions on the tensor's channel axis."""
    pos = 0
    for s in layout.segments:
        yield EdgeSegment(s.group, pos, s.length, s.start)
        pos += s.length


def group_edges(analysis: Analysis, group: int | None = None,
                groups: set[int] | None = None) -> Iterator[tuple[ConsumerEdge, Layout, list[EdgeSegment]]]:
    """Every consumer edge that reads channels of ``group`` (or of any of ``groups``), with its
    layout and the segments of those groups on it, in edge order."""
    wanted = {group} if groups is None else groups
    for e in analysis.edges:
        lay = analysis.layouts[e.tensor]
        segs = [s for s in segments_of(lay) if s.group in wanted]
        if segs:
            yield e, lay, segs


def kept_positions(analysis: Analysis, tensor: str, kept: Mapping[int, np.ndarray]) -> np.ndarray:
    """Channel positions of ``tensor`` that survive when group g keeps ``kept[g]`` (sorted)."""
    out = []
    for s in segments_of(analysis.layouts[tensor]):
        if s.group is not None and s.group in kept:
            k = kept[s.group]
            sel = k[(k >= s.group_offset) & (k < s.group_offset + s.length)] - s.group_offset
            out.append(sel + s.offset)
        else:
            out.append(np.arange(s.offset, s.offset + s.length))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)
