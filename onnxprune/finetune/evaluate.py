"""Validation measures of the student: top-1 accuracy on labels, and distance to the teacher."""
from __future__ import annotations

import numpy as np

from onnxprune.finetune.losses import OutputSpec, as_list, distill_loss

__all__ = ["evaluate_module", "teacher_distance"]


def evaluate_module(module, images: np.ndarray, labels: np.ndarray, device, batch_size: int = 256) -> float:
    """Top-1 accuracy of the module's first output (eval mode) on ``images``."""
    import torch
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out = as_list(module(torch.from_numpy(images[i:i + batch_size]).to(device)))[0]
            correct += int((out.argmax(1).cpu().numpy() == labels[i:i + batch_size]).sum())
    return correct / max(len(images), 1)


def teacher_distance(module, images: np.ndarray, targets: list[np.ndarray], specs: list[OutputSpec],
                     config, device, batch_size: int = 256) -> float:
    """The distillation distance (the training loss's teacher term) averaged over ``images``,
    against the teacher's precomputed outputs ``targets`` (eval mode, no augmentation), with the
    distances of ``config`` (a FinetuneConfig)."""
    import torch
    module.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out = as_list(module(torch.from_numpy(images[i:i + batch_size]).to(device)))
            tgt = [torch.from_numpy(t[i:i + batch_size]).to(device) for t in targets]
            total += float(distill_loss(out, tgt, specs, config.kd_temperature, config.kd_regression_loss,
                                        config.kd_prob_loss, config.kd_prob_temperature)) * len(out[0])
    return total / max(len(images), 1)
