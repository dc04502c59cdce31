"""Which channels of a group to keep: weight-based scores per group and top-k selection.

A group's channel score at a position is the mean, over the group's producers (every
Conv/Gemm/MatMul whose output channels belong to it) that write that position, of the criterion
applied to the producer's output filters, each producer's scores divided by their mean so that
layers of different scale weigh alike. Positions no producer writes (zero channels from a channel
Pad) score 0.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from onnxprune.analysis import Analysis, Group
from onnxprune.scoring.criteria import CRITERIA, random_scores

__all__ = ["producer_filters", "group_scores", "select_kept", "select_all", "span_floors"]


def producer_filters(analysis: Analysis, group: Group) -> list[tuple[int, np.ndarray]]:
    """(start position in the group, filters [L, ...]) for every producer of ``group``."""
    out = []
    for node_idx, start, length in group.producer_spans:
        node = analysis.view.nodes[node_idx]
        w = analysis.view.constant(node.input[1])
        if node.op_type == "ConvTranspose":
            w = np.moveaxis(w, 1, 0)
        elif node.op_type == "Gemm":
            from onnxprune.graph.view import attr
            w = w if attr(node, "transB", 0) else w.T
        elif node.op_type == "MatMul":
            w = w.T
        out.append((start, np.asarray(w, np.float64).reshape(w.shape[0], -1)[:length]))
    return out


def group_scores(analysis: Analysis, group: Group, criterion: str = "l1", seed: int = 0) -> np.ndarray:
    """Channel scores of one group under a weight-based criterion (higher = keep)."""
    if criterion == "random":
        return random_scores(group.channels, seed + 7919 * group.id)
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(sorted(CRITERIA))}")
    total, covered = np.zeros(group.channels), np.zeros(group.channels)
    for start, filters in producer_filters(analysis, group):
        s = CRITERIA[criterion](filters, seed)
        mean = float(np.mean(np.abs(s)))
        total[start:start + len(filters)] += s / mean if mean > 0 else s
        covered[start:start + len(filters)] += 1
    return np.divide(total, covered, out=np.zeros_like(total), where=covered > 0)


def select_kept(scores: np.ndarray, count: int, equal_blocks: int = 1) -> np.ndarray:
    """Indices of the ``count`` best channels (sorted); with ``equal_blocks`` > 1 the same number
    is kept in each of that many consecutive blocks (grouped convolutions). Ties break by index."""
    c = len(scores)
    if equal_blocks > 1:
        per, size = count // equal_blocks, c // equal_blocks
        parts = [b * size + select_kept(scores[b * size:(b + 1) * size], per) for b in range(equal_blocks)]
        return np.sort(np.concatenate(parts))
    order = np.lexsort((np.arange(c), -scores))
    return np.sort(order[:count]).astype(np.int64)


def required_spans(analysis: Analysis) -> dict[int, set[tuple[tuple[int, int], ...]]]:
    """Per group, the position sets of tensors that carry nothing but this group: each needs at
    least one kept channel, or the tensor would be empty (e.g. the first stage of a residual
    width that grows through channel Pad)."""
    spans: dict[int, set] = {}
    for lay in analysis.layouts.values():
        groups = {s.group for s in lay.segments}
        if len(groups) == 1 and None not in groups:
            g = next(iter(groups))
            spans.setdefault(g, set()).add(tuple(sorted((s.start, s.start + s.length) for s in lay.segments)))
    return spans


def _positions(span) -> set[int]:
    return {i for a, b in span for i in range(a, b)}


def _minimal_spans(spans) -> list[set[int]]:
    """The spans that contain no other span, smallest first: keeping one channel in each keeps
    one in every span (each span contains a minimal one)."""
    sets = sorted({frozenset(_positions(sp)) for sp in spans}, key=lambda s: (len(s), min(s, default=0)))
    return [set(s) for s in sets if s and not any(o < s for o in sets)]


def span_floors(analysis: Analysis) -> dict[int, int]:
    """Per group whose tensors see only parts of it (channel Slice / Split / Pad, Concat of
    parts), the fewest kept channels with which every such tensor keeps one: its number of
    minimal spans (a floor for the allocation; :func:`select_all` then keeps one in each)."""
    out = {}
    for g, spans in required_spans(analysis).items():
        n = len(_minimal_spans(spans))
        if n > 1:
            out[g] = n
    return out


def _select_stratified(scores: np.ndarray, count: int, spans) -> np.ndarray:
    """Keep ``count`` channels so that every span (a tensor that sees only part of the group)
    keeps its proportional share, round(count·|span|/channels) and at least one. First the best
    channel of every minimal span (so no tensor is left empty when ``count`` reaches
    :func:`span_floors`); then spans are filled smallest first, each from the positions no smaller
    span has claimed, so every ring of a nested chain gets exactly its share; within a ring the best
    scores win. This is what the cost model assumes (expected counts), so the allocation's plan and
    the pruned model's cost agree (e.g. a residual width grown by channel Pad: the 16 channels of
    stage 1 keep a quarter of the kept 64)."""
    c = len(scores)
    keep: set[int] = set()
    claimed: set[int] = set()

    def best(positions, k):
        return sorted(positions, key=lambda i: (-scores[i], i))[:max(0, k)]

    for inside in _minimal_spans(spans):
        if len(keep) < count and not keep & inside:
            keep.update(best(inside, 1))
    for span in sorted(spans, key=lambda sp: sum(b - a for a, b in sp)):
        inside = _positions(span)
        quota = min(count, max(1, int(np.floor(count * len(inside) / c + 0.5))))
        have = len(keep & inside)
        keep.update(best(inside - claimed - keep, min(quota - have, count - len(keep))))
        claimed |= inside
    keep.update(best(set(range(c)) - claimed - keep, count - len(keep)))
    keep.update(best(set(range(c)) - keep, count - len(keep)))
    return np.array(sorted(keep), np.int64)


def select_all(analysis: Analysis, counts: Mapping[int, int],
               scores: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Kept indices for every group whose count is below its size."""
    kept = {}
    spans = None
    for g in analysis.groups:
        n = counts.get(g.id, g.channels)
        if n < g.channels:
            k = None
            if g.equal_blocks == 1:
                spans = required_spans(analysis) if spans is None else spans
                if any(sp != ((0, g.channels),) for sp in spans.get(g.id, ())):
                    k = _select_stratified(np.asarray(scores[g.id]), n, spans[g.id])
            kept[g.id] = select_kept(scores[g.id], n, g.equal_blocks) if k is None else k
    return kept
