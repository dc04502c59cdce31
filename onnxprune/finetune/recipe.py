"""Compatibility module: the recipe now lives in config, losses, objective, teacher, loop, ...

Fine-tuning a (pruned) ONNX model through the torch bridge, with optional distillation from the
unpruned model on every output (labels optional when a teacher is given). One process, or several
through ``torchrun`` (DDP: gloo on CPU, NCCL on CUDA; each rank takes its shard of every global
batch). Checkpoints are written atomically after every epoch; ``resume`` continues from the last.
"""
from onnxprune.finetune.augment import augment, calibrate_batchnorm
from onnxprune.finetune.config import FINETUNE_OPTIONS, FinetuneConfig, config_from_namespace
from onnxprune.finetune.evaluate import evaluate_module
from onnxprune.finetune.loop import finetune

__all__ = ["FinetuneConfig", "FINETUNE_OPTIONS", "config_from_namespace", "finetune", "augment",
           "calibrate_batchnorm", "evaluate_module"]
