"""Errors of the fine-tuning recipe (each an :class:`OnnxPruneError`, printed on one line)."""
from onnxprune.errors import DataError, OnnxPruneError

__all__ = ["FinetuneError", "NoSupervisionError", "NotAClassifierError", "TeacherMismatchError"]


class FinetuneError(OnnxPruneError):
    """The fine-tuning request cannot be carried out as given."""


class NoSupervisionError(FinetuneError, DataError):
    """Unlabelled training data and no teacher: nothing to learn from."""


class NotAClassifierError(FinetuneError, DataError):
    """Labels were given for a model that is not a single-output (N, C) classifier, and no teacher."""


class TeacherMismatchError(FinetuneError):
    """The teacher's inputs or outputs do not match the student's (names, ranks, count, shapes)."""
