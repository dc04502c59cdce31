"""Optimiser and learning-rate schedule: SGD (Nesterov) with linear warm-up then cosine to zero."""
from __future__ import annotations

import math

from onnxprune.finetune.config import FinetuneConfig

__all__ = ["make_optimizer", "Schedule"]


def make_optimizer(module, config: FinetuneConfig):
    """SGD with weight decay on weights (ndim > 1) only, not on biases and BatchNorm parameters."""
    import torch
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


class Schedule:
    """The learning rate at each global step of a run of ``epochs`` × ``steps_per_epoch`` steps."""

    def __init__(self, config: FinetuneConfig, steps_per_epoch: int):
        self.peak = config.lr
        self.total = steps_per_epoch * config.epochs
        self.warm = int(config.warmup_epochs * steps_per_epoch)

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return self.peak * (step + 1) / self.warm
        t = (step - self.warm) / max(1, self.total - self.warm)
        return 0.5 * self.peak * (1 + math.cos(math.pi * t))
