"""Fine-tuning a (pruned) ONNX model through the torch bridge, with optional distillation.

Recipe: SGD with momentum and Nesterov, cosine learning rate with a short warm-up, weight decay,
random crop (zero padding) + horizontal flip, optional label smoothing, optional distillation from
the unpruned model (KL at temperature T, weight α). One process, or several through ``torchrun``
(DDP: gloo on CPU, NCCL on CUDA; each rank takes its shard of every global batch). Checkpoints are
written atomically after every epoch; ``resume`` continues from the last one. The best model on
the validation set is exported back to ONNX.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from onnxprune.errors import DataError, OnnxPruneError

__all__ = ["FinetuneConfig", "finetune", "augment"]


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 10
    batch_size: int = 128            # global batch (split across DDP ranks)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    crop_padding: int = 4            # random crop after zero padding; 0 disables
    flip: bool = True
    kd_temperature: float = 4.0
    kd_weight: float = 0.0           # > 0 with a teacher: loss = (1-α)·CE + α·T²·KL
    seed: int = 0
    max_steps_per_epoch: int | None = None   # for short runs
    device: str = "auto"
    reinsert_bn: bool = True         # BN-folded models: train with BatchNorm, fold it back at export


def augment(x, padding: int, flip: bool, generator):
    """Random crop with zero padding and horizontal flip of a batch [N, C, H, W] (torch)."""
    import torch
    n, _, h, w = x.shape
    if padding:
        xp = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
        x = xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None],
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


def _ddp():
    """(rank, world size) from torchrun's environment; initialises the process group."""
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        import torch
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(name: str):
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and "LOCAL_RANK" in os.environ and torch.cuda.device_count() > 1:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(name)


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def evaluate_module(module, images: np.ndarray, labels: np.ndarray, device, batch_size: int = 256) -> float:
    import torch
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out = module(torch.from_numpy(images[i:i + batch_size]).to(device))
            out = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((out.argmax(1).cpu().numpy() == labels[i:i + batch_size]).sum())
    return correct / max(len(images), 1)


def finetune(model: onnx.ModelProto, train, val: tuple[np.ndarray, np.ndarray] | None,
             config: FinetuneConfig, out_path: str | os.PathLike, teacher: onnx.ModelProto | None = None,
             checkpoint: str | os.PathLike | None = None, resume: bool = False,
             log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune ``model`` on ``train`` (a Dataset with labels), export the best to ``out_path``.

    Returns a summary dict (accuracy per epoch, best accuracy, times). Nothing is written to
    ``out_path`` until an epoch has finished.
    """
    import torch
    import torch.nn.functional as F
    from onnxprune.model_io import save_model
    from onnxprune.torch_bridge import OnnxModule, to_onnx

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if train.labels is None:
        raise DataError(f"{train.path}: fine-tuning needs labels (an image folder with class sub-folders, "
                        "an .npz with y, or CIFAR batches)")
    rank, world = _ddp()
    device = _device(config.device)
    torch.manual_seed(config.seed)
    if config.reinsert_bn and not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        from onnxprune.graph.batchnorm import reinsert_batchnorm
        calib = np.concatenate([x for x, _ in train.sample(min(len(train), 256), seed=config.seed).batches(256)])
        model = calibrate_batchnorm(reinsert_batchnorm(model), calib)
        say(f"  BN-folded model: re-inserted {sum(n.op_type == 'BatchNormalization' for n in model.graph.node)} "
            "BatchNorm layers for training (identity on the data; folded back at export)")
    module = OnnxModule(model).to(device)
    n_out = None
    probe = next(iter(train.batches(2)))[0]
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(probe).to(device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        n_out = out.shape[1]
    if int(train.labels.max()) >= n_out:
        raise DataError(f"{train.path}: labels go up to {int(train.labels.max())} but the model has "
                        f"{n_out} outputs")
    teacher_module = OnnxModule(teacher).to(device).eval() if teacher is not None and config.kd_weight > 0 else None
    net = module
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    warm = int(config.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warm:
            return config.lr * (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))

    start_epoch, history, best = 0, [], {"acc": -math.inf, "epoch": -1}
    ckpt = Path(checkpoint) if checkpoint else None
    if resume:
        if ckpt is None or not ckpt.exists():
            raise OnnxPruneError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("config") != asdict(config):
            say("resume: the recipe differs from the checkpoint's; continuing with the checkpoint's schedule position")
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history, best = state["epoch"] + 1, state["history"], state["best"]
        say(f"resumed from {ckpt} after epoch {state['epoch'] + 1}")
    gen = torch.Generator().manual_seed(config.seed + 1000 * start_epoch + rank)
    step = start_epoch * steps_per_epoch
    best_state = None
    for epoch in range(start_epoch, config.epochs):
        module.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        order = train.sample(len(train), seed=config.seed + epoch)
        for i, (x, y) in enumerate(order.batches(config.batch_size, drop_last=True)):
            if i >= steps_per_epoch:
                break
            x = torch.from_numpy(x[rank::world]).to(device)
            y = torch.from_numpy(np.asarray(y)[rank::world].astype(np.int64)).to(device)
            x = augment(x, config.crop_padding, config.flip, gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            out = net(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
            if teacher_module is not None:
                with torch.no_grad():
                    t_out = teacher_module(x)
                    t_out = t_out[0] if isinstance(t_out, (tuple, list)) else t_out
                T = config.kd_temperature
                kd = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t_out / T, 1), log_target=True,
                              reduction="batchmean") * T * T
                loss = (1 - config.kd_weight) * loss + config.kd_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            if rank == 0 and sys.stderr.isatty():
                print(f"\r  epoch {epoch + 1}/{config.epochs} step {i + 1}/{steps_per_epoch} "
                      f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}% lr {lr_at(step):.4f}",
                      end="", file=sys.stderr, flush=True)
        record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "seconds": time.perf_counter() - t0}
        if val is not None:
            record["val_acc"] = evaluate_module(module, val[0], val[1], device)
        history.append(record)
        score = record.get("val_acc", -record["loss"])
        if score > best["acc"]:
            best = {"acc": score, "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if rank == 0:
            say(f"\r  epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, train acc "
                f"{100 * record['train_acc']:.2f}%" + (f", val acc {100 * record['val_acc']:.2f}%" if val is not None else "")
                + f" ({record['seconds']:.0f}s)")
            if ckpt is not None:
                _save_checkpoint(ckpt, {"module": module.state_dict(), "optimizer": opt.state_dict(),
                                        "epoch": epoch, "history": history, "best": best,
                                        "config": asdict(config)})
            if best_state is not None and best["epoch"] == epoch + 1:
                exported = to_onnx(module, None, torch.from_numpy(probe[:1]).to(device))
                save_model(exported, out_path)
    if best_state is None and rank == 0 and not Path(out_path).exists():
        raise OnnxPruneError("no epoch was run (already complete?); nothing exported")
    return {"history": history, "best": best, "world_size": world}
