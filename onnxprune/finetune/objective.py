"""What the run learns from and how the exported epoch is chosen, decided once before training."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.errors import DataError
from onnxprune.finetune.config import (DEFAULT_KD_WEIGHT_LABEL_FREE, DEFAULT_KD_WEIGHT_LABELLED,
                                       FinetuneConfig)
from onnxprune.finetune.errors import NoSupervisionError, NotAClassifierError
from onnxprune.finetune.losses import OutputSpec

__all__ = ["Objective", "plan_objective", "SELECTION_TEXT"]

SELECTION_TEXT = {
    "val_acc": "the epoch with the best validation accuracy is exported",
    "val_distance": "the epoch with the lowest validation distance to the teacher is exported",
    "train_loss": "no validation data: the epoch with the lowest training loss (mean over its "
                  "augmented batches) is exported",
    "ref_distance": "no validation data: the epoch with the lowest distance to the teacher on a fixed set "
                    "of training images (not augmented) is exported, the starting model included",
}


@dataclass
class Objective:
    use_labels: bool                 # cross-entropy on the labels of the single (N, C) output
    kd_weight: float                 # α of (1-α)·CE + α·distance; 0 without a teacher
    selection: str                   # a key of SELECTION_TEXT
    classifier: bool                 # the model has a single (N, C) output
    specs: list[OutputSpec] | None = None   # per-output distance, set once teacher outputs are known

    @property
    def uses_teacher(self) -> bool:
        return self.kd_weight > 0


def _describe(names: list[str], outputs: list) -> str:
    return ", ".join(f"{n} {tuple(o.shape[1:])}" for n, o in zip(names, outputs))


def _use_labels(train, names, outputs, classifier: bool, has_teacher: bool, emit) -> bool:
    if train.labels is None:
        if not has_teacher:
            raise NoSupervisionError(
                f"{train.path}: unlabelled training data and no teacher; give labels (class sub-folders, "
                "an .npz with y, CIFAR batches) or the original model as teacher to distil from")
        return False
    if not classifier:
        if not has_teacher:
            raise NotAClassifierError(
                f"{train.path}: labels need a classifier with one (N, C) output, the model has "
                f"{len(outputs)} output(s) [{_describe(names, outputs)}]; give the original model as "
                "teacher to distil every output instead")
        emit(f"  labels of {train.path} are not used: the model is not a single-output classifier; "
             "distilling every output from the teacher")
        return False
    n_classes = int(outputs[0].shape[1])
    if int(train.labels.max()) >= n_classes:
        raise DataError(f"{train.path}: labels go up to {int(train.labels.max())} but the model has "
                        f"{n_classes} outputs")
    return True


def _kd_weight(config: FinetuneConfig, use_labels: bool, has_teacher: bool, emit) -> float:
    if not has_teacher:
        return 0.0
    if not use_labels:
        if config.kd_weight not in (None, 0.0, 1.0):
            emit(f"  no labels: the loss is the distance to the teacher alone (kd_weight {config.kd_weight} unused)")
        return DEFAULT_KD_WEIGHT_LABEL_FREE
    if config.kd_weight:
        return config.kd_weight
    emit(f"  teacher given without a distillation weight: using α = {DEFAULT_KD_WEIGHT_LABELLED} "
         "(loss = (1-α)·cross-entropy + α·distance to the teacher)")
    return DEFAULT_KD_WEIGHT_LABELLED


def _selection(val, classifier: bool, has_teacher: bool) -> str:
    if val is None:
        return "ref_distance" if has_teacher else "train_loss"
    if val[1] is not None and classifier:
        return "val_acc"
    if has_teacher:
        return "val_distance"
    raise DataError("the validation data has no labels for this model and there is no teacher to "
                    "measure the distance to; give labelled validation data or a teacher")


def plan_objective(train, val: tuple[np.ndarray, np.ndarray | None] | None, names: list[str],
                   outputs: list, config: FinetuneConfig, has_teacher: bool, emit) -> Objective:
    """Labels, teacher weight and export rule from the data, the student's outputs on a probe
    batch and the config; one-line errors when nothing can be learnt."""
    classifier = len(outputs) == 1 and outputs[0].ndim == 2
    use_labels = _use_labels(train, names, outputs, classifier, has_teacher, emit)
    kd_weight = _kd_weight(config, use_labels, has_teacher, emit)
    return Objective(use_labels, kd_weight, _selection(val, classifier, has_teacher), classifier)
