"""Stage 3a: information metrics (rank, entropy, their concentration, nHSIC) per channel group."""
from onnxprune.metrics.information import GroupMetrics, InformationStats

__all__ = ["GroupMetrics", "InformationStats"]
