"""Training-time input handling: crop+flip augmentation and BatchNorm calibration for BN-folded models."""
from __future__ import annotations

import numpy as np
import onnx

__all__ = ["augment", "calibrate_batchnorm"]


def augment(x, padding: int, flip: bool, generator):
    """Random crop with zero padding and horizontal flip of a batch [N, C, H, W] (torch)."""
    import torch
    n, c, h, w = x.shape
    if padding:
        xp = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
        x = xp[torch.arange(n, device=x.device)[:, None, None, None],
               torch.arange(c, device=x.device)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def calibrate_batchnorm(model: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """Set every BatchNormalization so that it is the identity on the data and its running
    statistics are the data's: mean μ, var σ², scale √(σ²+ε), bias μ. Used after re-inserting BN
    into a BN-folded model, so that train-mode batch statistics start out as a no-op."""
    from onnx import numpy_helper
    from onnxprune.capture.session import CaptureSession
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return model
    outs = CaptureSession(model, [n.input[0] for n in bns], "cpu").run(np.ascontiguousarray(images, np.float32))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    for n in bns:
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        x = outs[n.input[0]].astype(np.float64)
        axes = (0,) + tuple(range(2, x.ndim))
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        for name, value in zip(n.input[1:5], (np.sqrt(var + eps), mu, mu, var)):
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return m
