"""The exported epoch: a diverged epoch is never the best, the start counts without validation data,
and re-inserted BatchNorm is not frozen by default."""
from __future__ import annotations

import math

from onnxprune.finetune.config import FinetuneConfig, resolve_defaults
from onnxprune.finetune.loop import _select, _starting_best
from onnxprune.finetune.objective import SELECTION_TEXT, _selection


def test_a_non_finite_epoch_is_never_selected():
    best = _starting_best({}, "train_loss")
    best, improved = _select(best, {"epoch": 1, "loss": math.nan}, "train_loss")
    assert not improved and best["epoch"] == -1
    best, improved = _select(best, {"epoch": 2, "loss": 1.5}, "train_loss")
    assert improved and best["epoch"] == 2


def test_teacher_without_validation_selects_on_the_reference_distance_and_keeps_the_start():
    assert _selection(None, classifier=True, has_teacher=True) == "ref_distance"
    assert _selection(None, classifier=True, has_teacher=False) == "train_loss"
    assert "starting model included" in SELECTION_TEXT["ref_distance"]
    best = _starting_best({"ref_distance": 2.0}, "ref_distance")
    assert best["epoch"] == 0
    best, improved = _select(best, {"epoch": 1, "loss": 0.1, "ref_distance": 2.5}, "ref_distance")
    assert not improved and best["epoch"] == 0            # worse than the start: the start stays
    best, improved = _select(best, {"epoch": 2, "loss": 0.1, "ref_distance": math.nan}, "ref_distance")
    assert not improved and best["epoch"] == 0


def test_reinserted_batchnorm_updates_its_statistics_by_default():
    cfg = FinetuneConfig()
    assert resolve_defaults(cfg, use_labels=False).bn_stats == "frozen"
    assert resolve_defaults(cfg, use_labels=False, reinserted_bn=True).bn_stats == "update"
    assert resolve_defaults(cfg, use_labels=True).bn_stats == "update"
    assert resolve_defaults(FinetuneConfig(bn_stats="frozen"), False, True).bn_stats == "frozen"
