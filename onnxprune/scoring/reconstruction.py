"""Channels chosen by reconstruction error: the order in which greedy backward elimination on the
consumers' least squares removes a group's channels (ThiNet; He et al. 2017 "Channel Pruning").

Every layer that reads the group (Conv with group=1, Gemm, MatMul: the consumer edges of the
analysis) is a least-squares problem on the *original* model's calibration activations: its
output ``Y`` from its input rows ``X`` (im2col for a conv, a bias column included), with the
ridge of the refit. Removing a channel drops its rows of the solution; with ``P = (XᵀX + λI)⁻¹``
and the solution ``W = P XᵀY``, the squared error then grows by ``tr(W_cᵀ P_cc⁻¹ W_c)`` when the
remaining weights are refitted (the refit that follows the rewrite). Per step the channels whose
removal costs least (summed over the consumers, each relative to its ``‖Y‖²``) go, and ``P`` and
``W`` are downdated. A channel's score is its position in that order (higher = kept longer), so
the top-k of the scores is the greedy choice for every k.

Groups with another kind of consumer (a grouped or transposed conv), or a consumer with more than
``MAX_FEATURES`` inputs, keep their criterion's scores. Memory: the sums of each consumer
(``(K+1)²`` float64), consumers processed in passes within ``memory_mb``. Time: the sums cost
``rows x (K+1)²`` per layer, so large models use fewer images (``GRAM_WORK``, at least 64; ResNet-56
keeps 512, ResNet-50 at 224² about 300).
"""
from __future__ import annotations

import time

import numpy as np
import onnx

from onnxprune.analysis import Analysis
from onnxprune.analysis.edges import segments_of
from onnxprune.graph.view import attr
from onnxprune.log import get_logger
from onnxprune.recover.im2col import conv_rows, conv_targets, sample_positions
from onnxprune.recover.layers import conv_geometry
from onnxprune.recover.normal_eq import NormalEquations

__all__ = ["reconstruction_scores", "eligible_groups", "CHOICE_IMAGES", "GRAM_WORK", "MAX_FEATURES"]

log = get_logger(__name__)

CHOICE_IMAGES = 512          # calibration images the choice looks at (at most)
GRAM_WORK = 6e11             # multiply-adds for all the sums: fewer images for large layers (at least 64)
MAX_FEATURES = 2304          # inputs of one consumer (3x3x256): its sums take ~45 MB, a step O(K² x removed)
STEP_FRACTION = 16           # channels removed per step: 1 while under 64 are left, else 1/16 of them


def _sizes(node: onnx.NodeProto, w: np.ndarray) -> tuple[int, int]:
    """(inputs, outputs) of a Conv (group=1) / Gemm / MatMul's least-squares problem."""
    if node.op_type == "Conv":
        return w.shape[1] * int(np.prod(w.shape[2:])), w.shape[0]
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return w.shape[1], w.shape[0]
    return w.shape[0], w.shape[1]


class _Consumer:
    """One consumer layer: its node, input/output tensors, inputs per channel and its sums."""

    def __init__(self, analysis: Analysis, node_index: int) -> None:
        node = analysis.view.nodes[node_index]
        w = analysis.view.constant(node.input[1])
        self.index, self.op = node_index, node.op_type
        self.x, self.y = node.input[0], node.output[0]
        self.layout = analysis.layouts[self.x]
        self.features, self.outputs = _sizes(node, w)
        self.geometry = conv_geometry(node, w) if self.op == "Conv" else None
        # inputs per input channel: the kernel's positions for a conv, the layout's block otherwise
        self.width = int(np.prod(w.shape[2:])) if self.op == "Conv" else self.layout.block
        self.sums: NormalEquations | None = None

    @staticmethod
    def supported(analysis: Analysis, node_index: int) -> str | None:
        """Why this consumer cannot be scored (None: it can)."""
        node = analysis.view.nodes[node_index]
        w = analysis.view.constant(node.input[1]) if len(node.input) > 1 else None
        if w is None:
            return "a weight that is not a constant"
        if node.op_type == "Conv" and (w.ndim != 4 or int(attr(node, "group", 1)) != 1):
            return "a grouped or non-2-D convolution"
        if node.op_type not in ("Conv", "Gemm", "MatMul") or (node.op_type != "Conv" and w.ndim != 2):
            return f"a {node.op_type} consumer"
        features = _sizes(node, w)[0]
        if features > MAX_FEATURES:
            return f"{features} inputs (more than {MAX_FEATURES})"
        return None

    @property
    def nbytes(self) -> int:
        k = self.features + 1
        return 8 * k * (k + self.outputs)

    def update(self, x: np.ndarray, y: np.ndarray, per_image: int, rng: np.random.Generator) -> None:
        if self.op == "Conv":
            picks = sample_positions(len(y), int(np.prod(y.shape[2:])), per_image, rng)
            rows, targets = conv_rows(x, self.geometry, picks), conv_targets(y, np.arange(y.shape[1]), 1, picks)
        else:
            rows = x.reshape(-1, x.shape[-1])[:, None, :] if self.op == "MatMul" else x.reshape(len(x), 1, -1)
            targets = y.reshape(-1, y.shape[-1])[:, None, :] if self.op == "MatMul" else y.reshape(len(y), 1, -1)
        if self.sums is None:
            self.sums = NormalEquations(1, rows.shape[2], targets.shape[2], bias=True)
        self.sums.update(rows, targets)

    def positions(self, group: int) -> dict[int, np.ndarray]:
        """Group channel -> the feature rows it owns in this consumer's problem."""
        out = {}
        for s in segments_of(self.layout):
            if s.group == group:
                for j in range(s.length):
                    t = s.offset + j
                    out[s.group_offset + j] = np.arange(t * self.width, (t + 1) * self.width)
        return out


class _Elimination:
    """The downdated least-squares state of one consumer during one group's elimination."""

    def __init__(self, sums: NormalEquations, ridge: float, rows: dict[int, np.ndarray]) -> None:
        a = sums.gram()[0]
        a = a + ridge * max(float(np.mean(np.diag(a))), 1e-12) * np.eye(len(a))
        self.p = np.linalg.inv(a)
        self.w = self.p @ sums.xty[0]
        self.scale = max(float(sums.yy.sum()), 1e-30)
        self.alive = np.arange(len(a))              # original feature index of each current row
        self.rows = rows

    def costs(self, channels: list[int]) -> np.ndarray:
        """Relative growth of the squared error when each of ``channels`` alone is removed (the
        others refitted); 0 for channels this consumer does not read. One batched solve."""
        out = np.zeros(len(channels))
        mine = [(j, c) for j, c in enumerate(channels) if c in self.rows]
        if not mine:
            return out
        idx = np.searchsorted(self.alive, np.stack([self.rows[c] for _, c in mine]))     # [n, width]
        pcc = self.p[idx[:, :, None], idx[:, None, :]]                                   # [n, width, width]
        wc = self.w[idx]                                                                 # [n, width, M]
        try:
            grown = np.einsum("nwm,nwm->n", wc, np.linalg.solve(pcc, wc))
        except np.linalg.LinAlgError:
            grown = np.array([float(np.sum(w * (np.linalg.pinv(a) @ w))) for a, w in zip(pcc, wc)])
        out[[j for j, _ in mine]] = grown / self.scale
        return out

    def remove(self, channels: list[int]) -> None:
        mine = [c for c in channels if c in self.rows]
        if not mine:
            return
        i = np.searchsorted(self.alive, np.concatenate([self.rows[c] for c in mine]))
        r = np.setdiff1d(np.arange(len(self.alive)), i)
        pri, pii = self.p[np.ix_(r, i)], self.p[np.ix_(i, i)]
        try:
            k = np.linalg.solve(pii, pri.T).T             # P_ri P_ii⁻¹ (P symmetric)
        except np.linalg.LinAlgError:
            k = pri @ np.linalg.pinv(pii)
        self.w = self.w[r] - k @ self.w[i]
        self.p = self.p[np.ix_(r, r)] - k @ pri.T
        self.alive = self.alive[r]
        for c in mine:
            del self.rows[c]


def eligible_groups(analysis: Analysis, groups: list[int] | None = None) -> tuple[dict[int, list[int]], dict[int, str]]:
    """(group -> consumer node indices) for the groups whose every consumer can be scored, and
    (group -> why not) for the others."""
    wanted = set(groups) if groups is not None else {g.id for g in analysis.prunable}
    consumers: dict[int, list[int]] = {g: [] for g in wanted}
    why: dict[int, str] = {}
    for e in analysis.edges:
        lay = analysis.layouts[e.tensor]
        for g in {s.group for s in lay.segments} & wanted:
            if e.node not in consumers[g]:
                consumers[g].append(e.node)
    for g, nodes in consumers.items():
        if not nodes:
            why[g] = "no consumer layer"
        for n in nodes:
            reason = _Consumer.supported(analysis, n)
            if reason:
                why[g] = f"{analysis.view.label(n)} has {reason}"
                break
    return {g: n for g, n in consumers.items() if g not in why}, why


def _gather(model: onnx.ModelProto, analysis: Analysis, consumers: list[_Consumer], images: np.ndarray,
            provider: str, batch_mb: float, per_image: int, seed: int) -> None:
    from onnxprune.capture.session import CaptureSession, batch_size_for
    tensors = list(dict.fromkeys(t for c in consumers for t in (c.x, c.y)))
    session = CaptureSession(model, tensors, provider)
    bs = batch_size_for(analysis, tensors, batch_mb, cap=64)
    batches = (images[i:i + bs] for i in range(0, len(images), bs))
    for start, outs in zip(range(0, len(images), bs), session.stream(batches, total=len(images))):
        for c in consumers:
            c.update(outs[c.x], outs[c.y], per_image, np.random.default_rng([seed, start, c.index]))


def _order(channels: int, states: list[_Elimination]) -> np.ndarray:
    """Scores: the step at which each channel was eliminated (the last one left scores highest)."""
    alive = list(range(channels))
    score = np.zeros(channels)
    step = 0
    while len(alive) > 1:
        costs = np.sum([s.costs(alive) for s in states], axis=0)
        take = 1 if len(alive) < 64 else len(alive) // STEP_FRACTION
        gone = [alive[j] for j in np.lexsort((np.arange(len(alive)), costs))[:min(take, len(alive) - 1)]]
        for c in gone:
            score[c] = step + costs[alive.index(c)] / (1.0 + costs.max())   # ties within a step by cost
        for s in states:
            s.remove(gone)
        alive = [c for c in alive if c not in gone]
        step += 1
    score[alive[0]] = step + 1.0
    return score / (step + 1.0)


def reconstruction_scores(model: onnx.ModelProto, analysis: Analysis, images: np.ndarray,
                          groups: list[int] | None = None, provider: str = "auto", memory_mb: float = 512,
                          batch_mb: float = 256, per_image: int = 32, ridge: float = 1e-3,
                          seed: int = 0) -> dict[int, np.ndarray]:
    """Channel scores (higher = kept longer) of every eligible group among ``groups`` (default:
    the prunable ones), from the original ``model``'s activations on ``images``."""
    t0 = time.perf_counter()
    eligible, why = eligible_groups(analysis, groups)
    for g, reason in sorted(why.items()):
        log.debug("channel choice: group %d keeps its criterion's scores (%s)", g, reason)
    if why:
        g, reason = min(why.items())
        log.info("channel choice: %d group(s) keep their criterion's scores (e.g. group %d: %s)", len(why), g, reason)
    if not eligible:
        return {}
    by_id = {g.id: g for g in analysis.groups}
    consumers = {n: _Consumer(analysis, n) for ns in eligible.values() for n in ns}
    per_image_work = sum(per_image * (c.features + 1) ** 2 for c in consumers.values())
    fit = max(64, int(GRAM_WORK / max(per_image_work, 1)))
    if len(images) > fit:
        log.info("channel choice: %d of the %d images (the sums of %d layers cost %.2g multiply-adds per image)",
                 fit, len(images), len(consumers), per_image_work)
        images = images[:fit]
    passes, current, used = [], set(), 0      # groups whose consumers' sums fit in memory_mb together
    for g, ns in sorted(eligible.items()):
        new = set(ns) - current
        if current and used + sum(consumers[n].nbytes for n in new) > memory_mb * 2 ** 20:
            passes.append(current)
            current, used, new = set(), 0, set(ns)
        current |= new
        used += sum(consumers[n].nbytes for n in new)
    passes.append(current)
    out = {}
    for k, nodes in enumerate(passes):
        if len(passes) > 1:
            log.info("channel choice: pass %d of %d over the images (%d layers)", k + 1, len(passes), len(nodes))
        _gather(model, analysis, [consumers[n] for n in sorted(nodes)], images, provider, batch_mb, per_image, seed)
        for g, ns in sorted(eligible.items()):
            if g not in out and set(ns) <= nodes:
                states = [_Elimination(consumers[n].sums, ridge, consumers[n].positions(g)) for n in ns]
                out[g] = _order(by_id[g].channels, states)
        for n in nodes:
            consumers[n].sums = None               # the next pass's sums take their place
    log.info("channel choice: %d groups by reconstruction error (%d layers, %d images) in %.1f s",
             len(out), len(consumers), len(images), time.perf_counter() - t0)
    return out
