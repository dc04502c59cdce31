"""Choosing among candidate allocations by the distance of every output to the original's."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.allocate.candidates import (Candidate, choose_candidate, criterion_name, output_distance,
                                           top1_disagreement)


def detector_outputs(rng, n=4, anchors=50):
    scores = rng.random((n, anchors, 2)).astype(np.float32)
    boxes = rng.standard_normal((n, anchors, 4)).astype(np.float32)
    return [scores / scores.sum(-1, keepdims=True), boxes]


def test_every_output_counts_not_only_the_first():
    rng = np.random.default_rng(0)
    ref = detector_outputs(rng)
    moved_boxes = [ref[0], ref[1] + 0.1]
    # 3-D scores and boxes: relative squared error on each, averaged
    expected = 0.5 * float(np.sum(0.1 ** 2 * np.ones_like(ref[1], dtype=np.float64))
                           / np.sum(ref[1].astype(np.float64) ** 2))
    assert output_distance(ref, moved_boxes) == pytest.approx(expected, rel=1e-5)
    assert output_distance(ref, ref) == 0.0
    assert top1_disagreement(ref, moved_boxes) == 0.0        # no class-score (2-D) output
    assert "boxes: relative squared error" in criterion_name(ref, ["scores", "boxes"])
    assert "top-1" not in criterion_name(ref, ["scores", "boxes"])


def test_class_scores_use_kl_and_top1():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    other = np.array([[0.0, 2.0, -1.0], [0.0, 1.0, 0.5]])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    q = np.exp(other[0]) / np.exp(other[0]).sum()
    assert output_distance([logits], [other]) == pytest.approx(float(np.sum(p * np.log(p / q))) / 2)
    assert top1_disagreement([logits], [other]) == 0.5
    assert criterion_name([logits], ["logits"]).startswith("top-1 disagreement")


def test_choice_ranks_agreement_then_distance_and_records_everything():
    rng = np.random.default_rng(1)
    ref = [rng.standard_normal((8, 5))]
    flipped = ref[0].copy()
    flipped[0] = -flipped[0]                     # changes one arg-max: worse agreement
    outputs = {"a": [ref[0] * 2.0], "b": [flipped], "c": [ref[0] * 1.2], "d": [ref[0] * 1.2]}
    cands = [Candidate(name, {0: i}) for i, name in enumerate(outputs)]
    by_counts = {i: outputs[c.name] for i, c in enumerate(cands)}
    choice = choose_candidate(cands, lambda counts: by_counts[counts[0]], ref, ["logits"])
    assert choice.candidate.name == "c"          # tie with "d": the earlier candidate wins
    d = choice.to_dict()
    assert d["chosen"] == "c" and set(d["candidates"]) == set(outputs)
    assert d["candidates"]["b"]["top1_disagreement"] > 0 and "KL" in d["criterion"]
    with pytest.raises(ValueError, match="unique"):
        choose_candidate([Candidate("x", {}), Candidate("x", {})], lambda c: ref, ref)
