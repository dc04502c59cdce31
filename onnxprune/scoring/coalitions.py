"""Network-level Shapley values of a group's channels (Chen & Wang): value of a coalition S =
−KL(unpruned outputs ‖ outputs with only S kept), label-free.

The model gets one extra input, a coalition mask [B, C_group], multiplied onto every edge where the
group's channels are consumed (exactly the masks of the verification oracle), so one onnxruntime
run evaluates many coalitions: batch item k·M + m is image m under coalition k.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.analysis.groups import Analysis
from onnxprune.runtime import make_session, with_dynamic_batch
from onnxprune.scoring.shapley import ShapleyEstimate, permutation_shapley

__all__ = ["coalition_model", "CoalitionGame", "network_shapley"]

MASK_INPUT = "__onnxprune_coalition"


def coalition_model(model: onnx.ModelProto, analysis: Analysis, group: int) -> onnx.ModelProto:
    """``model`` with input ``__onnxprune_coalition`` [B, C] masking ``group`` at its consumers."""
    m = with_dynamic_batch(model)
    g = m.graph
    c = analysis.groups[group].channels
    g.input.append(helper.make_tensor_value_info(MASK_INPUT, onnx.TensorProto.FLOAT, ["batch", c]))
    nodes = list(g.node)
    extra: dict[int, list[onnx.NodeProto]] = {}
    n = 0
    for e in analysis.edges:
        lay = analysis.layouts[e.tensor]
        segs = [(pos, s) for pos, s in zip(np.cumsum([0] + [s.length for s in lay.segments]), lay.segments)
                if s.group == group]
        if not segs:
            continue
        index = np.zeros(lay.channels, np.int64)
        covered = np.zeros(lay.channels, np.float32)      # 1 where the channel belongs to the group
        for pos, s in segs:
            index[pos:pos + s.length] = np.arange(s.start, s.start + s.length)
            covered[pos:pos + s.length] = 1
        index, covered = np.repeat(index, lay.block), np.repeat(covered, lay.block)
        rank = len(analysis.view.shape(e.tensor))
        shape = [0] + [1] * (lay.axis - 1) + [len(index)] + [1] * (rank - 1 - lay.axis)
        names = [f"__cm_{k}{n}" for k in ("idx", "g", "s", "r", "out", "cov", "inv", "m", "f")]
        g.initializer.extend([numpy_helper.from_array(index, names[0]),
                              numpy_helper.from_array(np.array(shape, np.int64), names[2]),
                              numpy_helper.from_array(covered, names[5]),
                              numpy_helper.from_array(1 - covered, names[6])])
        extra.setdefault(e.node, []).extend([     # mask·covered + (1 − covered): other channels pass
            helper.make_node("Gather", [MASK_INPUT, names[0]], [names[1]], axis=1),
            helper.make_node("Mul", [names[1], names[5]], [names[7]]),
            helper.make_node("Add", [names[7], names[6]], [names[8]]),
            helper.make_node("Reshape", [names[8], names[2]], [names[3]]),
            helper.make_node("Mul", [e.tensor, names[3]], [names[4]])])
        nodes[e.node].input[e.input_index] = names[4]
        n += 1
    del g.node[:]
    for i, node in enumerate(nodes):
        g.node.extend(extra.get(i, []))
        g.node.append(node)
    return m


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
