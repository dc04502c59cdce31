"""Channel selection: proportional shares for groups seen in part by some tensors."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.scoring.selection import _select_stratified, select_all


def test_stratified_nested_spans_get_exact_shares():
    # a 64-wide group whose stage-1 tensor sees [24, 40) and stage-2 tensor [16, 48), as the
    # option-A residual width does; scores favour the innermost channels heavily
    scores = np.ones(64)
    scores[16:48] = 100.0
    scores[24:40] = 1000.0
    spans = {((24, 40),), ((16, 48),), ((0, 64),)}
    kept = _select_stratified(scores, 32, spans)
    assert len(kept) == 32 and len(set(kept.tolist())) == 32
    assert np.sum((kept >= 24) & (kept < 40)) == 8          # 32 * 16/64
    assert np.sum((kept >= 16) & (kept < 48)) == 16         # 32 * 32/64
    # within a ring the best scores win
    scores2 = np.arange(64, dtype=float)
    kept2 = _select_stratified(scores2, 32, spans)
    assert set(kept2[(kept2 >= 24) & (kept2 < 40)].tolist()) == set(range(32, 40))


def test_stratified_keeps_one_in_every_span():
    scores = np.r_[np.zeros(4), np.ones(60)]
    kept = _select_stratified(scores, 2, {((0, 4),), ((0, 64),)})
    assert np.any(kept < 4) and len(kept) == 2


def test_disjoint_parts_each_keep_one_at_the_floor():
    """A Split / chunk / Concat group: two tensors see disjoint halves. At the floor (one channel
    per minimal span) each half keeps its best channel, however the scores lean."""
    from onnxprune.scoring.selection import _minimal_spans
    spans = {((0, 4),), ((4, 12),), ((0, 12),)}
    assert [sorted(s) for s in _minimal_spans(spans)] == [list(range(4)), list(range(4, 12))]
    scores = np.r_[np.full(4, 1.0), np.full(8, 9.0)]
    scores[2], scores[7] = 2.0, 10.0
    kept = _select_stratified(scores, 2, spans)
    assert kept.tolist() == [2, 7]
    # three disjoint slices of a nested chain: the nested one needs no channel of its own
    spans = {((0, 2),), ((2, 4),), ((0, 4),), ((4, 6),), ((0, 6),)}
    assert len(_minimal_spans(spans)) == 3
    kept = _select_stratified(np.arange(6, dtype=float)[::-1].copy(), 3, spans)
    assert [int(np.sum((kept >= a) & (kept < a + 2))) for a in (0, 2, 4)] == [1, 1, 1]
