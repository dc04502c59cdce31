"""Fine-tuning of a pruned model through the torch bridge (needs PyTorch)."""
from onnxprune.finetune.recipe import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "finetune"]
