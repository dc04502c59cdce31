"""Stage 3b: channel scores (L1, L2, FPGM, HRank, Shapley, reconstruction error) and the choice of
kept channels."""
from onnxprune.scoring.selection import group_scores, select_all, select_kept

__all__ = ["group_scores", "select_all", "select_kept"]
