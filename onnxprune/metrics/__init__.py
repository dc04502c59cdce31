"""Stage 3a: information metrics (rank, entropy, their concentration, nHSIC) per channel group.

``rank_entropy`` (streaming rank and entropy), ``hsic`` (projected features, Gram matrices, CKA,
nHSIC), ``concentration`` (normalising and fusing), ``records`` (ChannelSummary, LayerMetrics) and
``information`` (the per-group statistics the pipeline collects).
"""
from onnxprune.metrics.concentration import (FUSIONS, information_concentration, normalize_across_layers,
                                             normalize_entropy)
from onnxprune.metrics.hsic import (NHSICImportance, ProjectedFeatures, center_gram, linear_cka, linear_gram,
                                    nhsic_importance, nhsic_matrix, rbf_gram)
from onnxprune.metrics.rank_entropy import EntropyAccumulator, RankAccumulator
from onnxprune.metrics.records import ChannelSummary, LayerMetrics
from onnxprune.metrics.information import GroupMetrics, InformationStats

__all__ = ["GroupMetrics", "InformationStats", "ChannelSummary", "LayerMetrics", "RankAccumulator",
           "EntropyAccumulator", "ProjectedFeatures", "center_gram", "linear_gram", "linear_cka", "rbf_gram",
           "nhsic_matrix", "NHSICImportance", "nhsic_importance", "FUSIONS", "normalize_across_layers",
           "normalize_entropy", "information_concentration"]
