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
