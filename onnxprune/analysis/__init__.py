"""Stage 1: channel groups on the graph, what is skipped and why, and the cost (MACs, params) of a plan."""
from onnxprune.analysis.groups import Analysis, analyze
from onnxprune.analysis.cost import CostModel

__all__ = ["Analysis", "analyze", "CostModel"]
