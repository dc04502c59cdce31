"""Network-level Shapley values of a group's channels (Chen & Wang): value of a coalition S =
−KL(unpruned outputs ‖ outputs with only S kept), label-free.

The model gets one extra input, a coalition mask [B, C_group], multiplied onto every edge where the
group's channels are consumed (exactly the masks of the verification oracle), so one onnxruntime
run evaluates many coalitions: batch item k·M + m is image m under coalition k.
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analysis import Analysis
from onnxprune.analysis.edges import group_edges
from onnxprune.graph.edit import ModelEdit, splice_mul
from onnxprune.runtime import make_session, with_dynamic_batch
from onnxprune.scoring.shapley import ShapleyEstimate, permutation_shapley

__all__ = ["coalition_model", "CoalitionGame", "network_shapley"]

MASK_INPUT = "__onnxprune_coalition"


def coalition_model(model: onnx.ModelProto, analysis: Analysis, group: int) -> onnx.ModelProto:
    """``model`` with input ``__onnxprune_coalition`` [B, C] masking ``group`` at its consumers."""
    edit = ModelEdit(with_dynamic_batch(model), analysis.view)
    c = analysis.groups[group].channels
    mask = edit.add_input(MASK_INPUT, onnx.TensorProto.FLOAT, ["batch", c])
    for e, lay, segments in group_edges(analysis, group):
        index = np.zeros(lay.channels, np.int64)
        covered = np.zeros(lay.channels, np.float32)      # 1 where the channel belongs to the group
        for s in segments:
            index[s.offset:s.offset + s.length] = np.arange(s.group_offset, s.group_offset + s.length)
            covered[s.offset:s.offset + s.length] = 1
        index, covered = np.repeat(index, lay.block), np.repeat(covered, lay.block)
        rank = len(analysis.view.shape(e.tensor))
        shape = [0] + [1] * (lay.axis - 1) + [len(index)] + [1] * (rank - 1 - lay.axis)
        at = e.node           # mask·covered + (1 − covered): the other channels pass
        picked = edit.node_before(at, "Gather", [mask, edit.constant(index, "__cm_idx")], "__cm_g",
                                  onnx.TensorProto.FLOAT, axis=1)
        on = edit.node_before(at, "Mul", [picked, edit.constant(covered, "__cm_cov")], "__cm_m",
                              onnx.TensorProto.FLOAT)
        full = edit.node_before(at, "Add", [on, edit.constant(1 - covered, "__cm_inv")], "__cm_f",
                                onnx.TensorProto.FLOAT)
        factor = edit.node_before(at, "Reshape", [full, edit.constant(np.array(shape, np.int64), "__cm_s")],
                                  "__cm_r", onnx.TensorProto.FLOAT)
        splice_mul(edit, at, e.input_index, factor, "__cm_out")
    return edit.to_proto()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.reshape(z.shape[0], -1).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class CoalitionGame:
    """v(S) = −mean over images of KL(p_full ‖ p_S) on the model's first output."""

    def __init__(self, model: onnx.ModelProto, analysis: Analysis, group: int, images: np.ndarray,
                 max_batch: int = 512, providers=None) -> None:
        self.session = make_session(coalition_model(model, analysis, group), providers)
        self.input = model.graph.input[0].name
        self.images = np.ascontiguousarray(images, np.float32)
        self.c = analysis.groups[group].channels
        self.per_run = max(1, max_batch // len(self.images))
        self.evaluations = 0
        full = self._logits(np.ones((1, self.c), np.float32))
        self.ref_logp = _log_softmax(full)
        self.ref_p = np.exp(self.ref_logp)

    def _logits(self, masks: np.ndarray) -> np.ndarray:
        k, m = len(masks), len(self.images)
        x = np.tile(self.images, (k,) + (1,) * (self.images.ndim - 1))
        cm = np.repeat(masks.astype(np.float32), m, axis=0)
        return self.session.run(None, {self.input: x, MASK_INPUT: cm})[0]

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        """Values of coalitions ``masks`` [B, C] (bool)."""
        out = []
        m = len(self.images)
        for i in range(0, len(masks), self.per_run):
            chunk = masks[i:i + self.per_run]
            logp = _log_softmax(self._logits(chunk)).reshape(len(chunk), m, -1)
            kl = (self.ref_p[None] * (self.ref_logp[None] - logp)).sum(axis=2).mean(axis=1)
            out.append(-kl)
            self.evaluations += len(chunk)
        return np.concatenate(out)


def network_shapley(model: onnx.ModelProto, analysis: Analysis, group: int, images: np.ndarray,
                    permutations: int = 8, seed: int = 0, truncation_tol: float = 0.01) -> ShapleyEstimate:
    """Monte-Carlo permutation Shapley values (with truncation) of one group's channels."""
    game = CoalitionGame(model, analysis, group, images)
    return permutation_shapley(game, game.c, permutations, seed=seed, truncation_tol=truncation_tol,
                               batch_size=max(game.per_run, 1) * 4)
