"""Stage 1: channel groups on the graph, what is skipped and why, and the cost (MACs, params) of a plan.

``records`` (the dataclasses), ``union_find``, ``rules`` (one module per op family and the
registry), ``channel_pass`` (the forward pass), ``resolve`` (groups and ``analyze``), ``edges``
(the walk over a consumed tensor's segments) and ``cost``.
"""
from onnxprune.analysis.records import (Analysis, ComputeTerm, ConsumerEdge, Group, Layout, ParamSlice, Segment,
                                        Update)
from onnxprune.analysis.resolve import analyze
from onnxprune.analysis.edges import EdgeSegment, group_edges, kept_positions, segments_of
from onnxprune.analysis.cost import CostModel

__all__ = ["Analysis", "analyze", "CostModel", "Segment", "Layout", "ParamSlice", "Update", "ConsumerEdge",
           "ComputeTerm", "Group", "EdgeSegment", "group_edges", "kept_positions", "segments_of"]
