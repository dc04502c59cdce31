"""Fine-tuning of a pruned model through the torch bridge (needs PyTorch), with or without labels.

Modules: ``config`` (settings and CLI options), ``objective`` (what is learnt, which epoch is
exported), ``losses`` (cross-entropy, per-output distance to the teacher), ``teacher``, ``augment``,
``schedule``, ``evaluate``, ``checkpoint``, ``ddp`` and ``loop`` (:func:`finetune`).
"""
from onnxprune.finetune.config import (FINETUNE_OPTIONS, FinetuneConfig, add_finetune_arguments,
                                       config_from_namespace)
from onnxprune.finetune.errors import (FinetuneError, NoSupervisionError, NotAClassifierError,
                                       TeacherMismatchError)
from onnxprune.finetune.loop import finetune

__all__ = ["FinetuneConfig", "FINETUNE_OPTIONS", "add_finetune_arguments", "config_from_namespace",
           "finetune", "FinetuneError", "NoSupervisionError", "NotAClassifierError", "TeacherMismatchError"]
