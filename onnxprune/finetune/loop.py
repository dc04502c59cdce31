"""The fine-tuning loop: prepare the student and the teacher, train epoch by epoch, checkpoint,
and export the selected epoch back to ONNX (atomically, so an interrupted run never leaves a
half-written model)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from onnxprune.finetune.augment import augment, calibrate_batchnorm
from onnxprune.finetune.checkpoint import load_checkpoint, save_checkpoint
from onnxprune.finetune.config import FinetuneConfig, resolve_defaults
from onnxprune.finetune.ddp import init_distributed, pick_device, shutdown_distributed, wrap_ddp
from onnxprune.finetune.errors import FinetuneError
from onnxprune.finetune.evaluate import evaluate_module, teacher_distance
from onnxprune.finetune.losses import as_list, distill_loss, mix_losses, output_specs, softmax_output_axes
from onnxprune.finetune.objective import SELECTION_TEXT, Objective, plan_objective
from onnxprune.finetune.schedule import Schedule, make_optimizer
from onnxprune.finetune.teacher import Teacher, check_output_shapes, check_teacher_matches, graph_inputs
from onnxprune.log import get_logger, progress

__all__ = ["finetune"]

log = get_logger(__name__)
CALIBRATION_IMAGES = 256


def _emitter(callback: Callable[[str], None] | None, rank: int) -> Callable[[str], None]:
    """Messages go to the package logger (rank 0 only); ``callback``, if given, gets them too."""
    def emit(msg: str) -> None:
        if rank != 0:
            return
        log.info(msg)
        if callback is not None:
            callback(msg)
    return emit


@dataclass
class _Run:
    """Everything one epoch needs."""
    config: FinetuneConfig
    train: object
    module: object
    net: object
    opt: object
    schedule: Schedule
    objective: Objective
    teacher: Teacher | None
    device: object
    rank: int
    world: int
    steps_per_epoch: int


def _with_batchnorm(model, train, config, emit):
    """(model, True) with BatchNorm re-inserted into a BN-folded model, else (model, False)."""
    if not config.reinsert_bn or any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model, False
    from onnxprune.graph.batchnorm import reinsert_batchnorm
    calib = np.concatenate([x for x, _ in train.sample(min(len(train), 256), seed=config.seed).batches(256)])
    model = calibrate_batchnorm(reinsert_batchnorm(model), calib)
    emit(f"  BN-folded model: re-inserted {sum(n.op_type == 'BatchNormalization' for n in model.graph.node)} "
         "BatchNorm layers for training (identity on the data; folded back at export)")
    return model, True


def _free_batch(model, emit):
    """The model with a symbolic batch when its graph spells a fixed batch size out in Reshape
    targets (constant-folded shape arithmetic), which training batches would not fit."""
    from onnxprune.runtime import with_dynamic_batch
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    if not dims or not dims[0].HasField("dim_value"):
        return model
    free = with_dynamic_batch(model)
    fixed = sum(n.op_type == "Reshape" and n.input[1].endswith("__dynbatch") for n in free.graph.node)
    if not fixed:
        return model
    emit(f"  {fixed} Reshape target(s) fix the batch at {dims[0].dim_value}: training on a symbolic batch "
         "(the exported model keeps it)")
    return free


def _student_outputs(module, x: np.ndarray, device) -> list:
    import torch
    with torch.no_grad():
        return as_list(module.eval()(torch.from_numpy(x).to(device)))


def _reference_images(train, val, config) -> tuple[np.ndarray, str]:
    """Images on which teacher scales and the pre-training distance are measured."""
    if val is not None:
        return val[0], "validation"
    n = min(len(train), CALIBRATION_IMAGES)
    return train.sample(n, seed=config.seed).arrays()[0], f"{n} training images"


def _prepare_teacher(run: _Run, teacher_model, val, emit):
    """Teacher runner, per-output specs, and the teacher's outputs on the reference images."""
    cfg = run.config
    run.teacher = Teacher(teacher_model, run.device, cfg.teacher_backend)
    ref, where = _reference_images(run.train, val, cfg)
    targets = run.teacher.run_numpy(ref)
    names = [o.name for o in teacher_model.graph.output]
    check_output_shapes(names, _student_outputs(run.module, ref[:2], run.device), [t[:2] for t in targets])
    run.objective.specs = output_specs(names, targets, softmax_output_axes(teacher_model), cfg.kd_prob_loss)
    kinds = ", ".join(f"{s.name}: {_loss_name(s, cfg)}" for s in run.objective.specs)
    emit(f"  distillation from the teacher ({run.teacher.backend}), α = {run.objective.kd_weight}; {kinds}")
    return ref, where, targets


def _loss_name(spec, cfg: FinetuneConfig) -> str:
    if spec.kind == "class":
        return f"KL (T {cfg.kd_temperature:g})" + (" from probabilities" if spec.probs else "")
    if spec.kind == "prob":
        how = "L1" if cfg.kd_prob_loss == "l1" else f"KL (T {cfg.kd_prob_temperature:g})"
        return f"{how} on probabilities along axis {spec.axis}"
    return cfg.kd_regression_loss


def _measure(run: _Run, val, ref, targets) -> dict:
    """Validation accuracy and/or teacher distance of the current module."""
    cfg, out = run.config, {}
    if val is not None and val[1] is not None and run.objective.classifier:
        out["val_acc"] = evaluate_module(run.module, val[0], val[1], run.device)
    if run.teacher is not None and ref is not None:
        key = "val_distance" if val is not None else "ref_distance"
        out[key] = teacher_distance(run.module, ref, targets, run.objective.specs, cfg, run.device)
    return out


def _fmt(measures: dict) -> str:
    parts = []
    if "val_acc" in measures:
        parts.append(f"val acc {100 * measures['val_acc']:.2f}%")
    for key, label in (("val_distance", "val distance to teacher"), ("ref_distance", "distance to teacher")):
        if key in measures:
            parts.append(f"{label} {measures[key]:.4g}")
    return ", ".join(parts)


def _step_loss(run: _Run, x, y):
    import torch.nn.functional as F
    obj, cfg = run.objective, run.config
    outs = as_list(run.net(x))
    ce = F.cross_entropy(outs[0], y, label_smoothing=cfg.label_smoothing) if obj.use_labels else None
    kd = None
    if obj.uses_teacher:
        kd = distill_loss(outs, run.teacher(x), obj.specs, cfg.kd_temperature, cfg.kd_regression_loss,
                          cfg.kd_prob_loss, cfg.kd_prob_temperature)
    return mix_losses(ce, kd, obj.kd_weight), outs[0]


def _train_epoch(run: _Run, epoch: int, step: int, gen) -> tuple[dict, int]:
    import torch
    cfg, rank, world = run.config, run.rank, run.world
    run.module.train()
    if cfg.bn_stats == "frozen":
        for bn in run.module.bn.values():
            bn.eval()
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    order = run.train.sample(len(run.train), seed=cfg.seed + epoch)
    batches = islice(order.batches(cfg.batch_size, drop_last=True), run.steps_per_epoch)
    for x, y in progress(batches, total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                         unit="step", logger=log):
        x = augment(torch.from_numpy(x[rank::world]).to(run.device), cfg.crop_padding, cfg.flip, gen)
        if run.objective.use_labels:
            y = torch.from_numpy(np.asarray(y)[rank::world].astype(np.int64)).to(run.device)
        for g in run.opt.param_groups:
            g["lr"] = run.schedule(step)
        loss, first = _step_loss(run, x, y)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        step += 1
        seen += len(x)
        loss_sum += float(loss.detach()) * len(x)
        if run.objective.use_labels:
            correct += int((first.argmax(1) == y).sum())
    record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "seconds": time.perf_counter() - t0}
    if run.objective.use_labels:
        record["train_acc"] = correct / max(seen, 1)
    return record, step


def _score(record: dict, selection: str) -> float:
    """Higher is better: val accuracy, or minus the distance / loss."""
    if selection == "val_acc":
        return record["val_acc"]
    return -record[selection if selection in ("val_distance", "ref_distance") else "loss"]


def _epoch_line(record: dict, epochs: int) -> str:
    text = f"  epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}"
    if "train_acc" in record:
        text += f", train acc {100 * record['train_acc']:.2f}%"
    measures = _fmt(record)
    return text + (f", {measures}" if measures else "") + f" ({record['seconds']:.0f}s)"


def _resolve(config: FinetuneConfig, use_labels: bool, reinserted_bn: bool, emit) -> FinetuneConfig:
    """The settings left to the supervision, filled in and said."""
    resolved = resolve_defaults(config, use_labels, reinserted_bn)
    left = [f"peak lr {resolved.lr:g}"] * (config.lr is None) + \
           [f"BatchNorm statistics {resolved.bn_stats}"] * (config.bn_stats == "auto")
    if left:
        emit(f"  {'with' if use_labels else 'without'} labels: " + ", ".join(left))
    return resolved


def _build(model, train, val, config, teacher_model, emit):
    """The student module, its wrapper, the optimiser and the plan, before any training."""
    import torch
    from onnxprune.torch_bridge import OnnxModule
    rank, world = init_distributed()
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    if len(graph_inputs(model)) != 1:
        raise FinetuneError(f"fine-tuning needs a model with one image input, this one has "
                            f"{[v.name for v in graph_inputs(model)]}")
    if teacher_model is not None:
        check_teacher_matches(model, teacher_model)
    model, reinserted = _with_batchnorm(_free_batch(model, emit), train, config, emit)
    module = OnnxModule(model).to(device)
    probe = next(iter(train.batches(2)))[0]
    names = [o.name for o in model.graph.output]
    objective = plan_objective(train, val, names, _student_outputs(module, probe, device), config,
                               teacher_model is not None, emit)
    config = _resolve(config, objective.use_labels, reinserted, emit)
    steps = math.ceil(len(train) / config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    run = _Run(config, train, module, wrap_ddp(module, device, world), make_optimizer(module, config),
               Schedule(config, steps), objective, None, device, rank, world, steps)
    return run, probe


def finetune(model: onnx.ModelProto, train, val: tuple[np.ndarray, np.ndarray | None] | None,
             config: FinetuneConfig, out_path: str | os.PathLike, teacher: onnx.ModelProto | None = None,
             checkpoint: str | os.PathLike | None = None, resume: bool = False,
             log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune ``model`` on ``train`` (a Dataset, labelled or not), export the selected epoch.

    With a ``teacher`` (the unpruned model) the loss includes the distance to it on every output;
    unlabelled data then needs no labels at all. ``val`` is ``(images, labels or None)``. Messages
    go to the ``onnxprune`` logger (``log``, a deprecated callback, receives them too). Returns a
    summary: ``history`` (one record per epoch), ``best`` (``epoch``, ``metric``, ``value``, and
    ``acc`` = the maximised score; epoch 0 when no epoch beat the model before training, which is
    then exported unchanged), ``before`` (measures before training), ``world_size``,
    ``kd_weight`` (α used), ``uses_labels`` and ``selection`` (how the exported epoch was chosen).
    Nothing is written to ``out_path`` until an epoch has finished; every write is atomic.
    """
    import torch
    from onnxprune.model_io import save_model
    from onnxprune.torch_bridge import to_onnx

    emit = _emitter(log, int(os.environ.get("RANK", "0")))
    run, probe = _build(model, train, val, config, teacher, emit)
    ref = targets = None
    if teacher is not None:
        ref, where, targets = _prepare_teacher(run, teacher, val, emit)
    emit(f"  {SELECTION_TEXT[run.objective.selection]}")

    start_epoch, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    before = {}
    if resume:
        start_epoch, history, best = _resume(run, ckpt, emit)
    else:
        before = _measure(run, val, ref, targets)
        if before:
            emit(f"  before training: {_fmt(before)}" + ("" if val is not None or ref is None else f" (on {where})"))
        best = _starting_best(before, run.objective.selection)
    gen = torch.Generator().manual_seed(config.seed + 1000 * start_epoch + run.rank)
    step = start_epoch * run.steps_per_epoch
    exported = False
    for epoch in range(start_epoch, config.epochs):
        record, step = _train_epoch(run, epoch, step, gen)
        if val is not None or run.objective.selection == "ref_distance":
            record.update(_measure(run, val, ref, targets))
        history.append(record)
        best, improved = _select(best, record, run.objective.selection)
        if run.rank == 0:
            emit(_epoch_line(record, config.epochs))
            if ckpt is not None:
                save_checkpoint(ckpt, {"module": run.module.state_dict(), "optimizer": run.opt.state_dict(),
                                       "epoch": epoch, "history": history, "best": best, "config": asdict(run.config)})
            if improved:
                save_model(to_onnx(run.module, None, torch.from_numpy(probe[:1]).to(run.device)), out_path)
                exported = True
        if not math.isfinite(record["loss"]):
            log.warning("finetune: the training loss is not finite in epoch %d (training diverged); stopping "
                        "(a lower --lr may help)", epoch + 1)
            break
    if run.rank == 0 and history and best["epoch"] <= 0:
        save_model(model, out_path)
        why = (f"{best['metric']} {best['value']:.4g} before training" if best["epoch"] == 0
               else "no epoch ended with a finite loss")
        emit(f"  no epoch improved on the starting model ({why}); exported the starting model unchanged to {out_path}")
    elif not exported and run.rank == 0 and not Path(out_path).exists():
        raise FinetuneError("no epoch was run (already complete?); nothing exported")
    elif run.rank == 0 and history:
        emit(f"  exported epoch {best['epoch']} to {out_path} ({SELECTION_TEXT[run.objective.selection]})")
    if run.world > 1:
        shutdown_distributed()
    return {"history": history, "best": best, "before": before, "world_size": run.world, "config": asdict(run.config),
            "kd_weight": run.objective.kd_weight, "uses_labels": run.objective.use_labels,
            "selection": run.objective.selection}


def _select(best: dict, record: dict, selection: str) -> tuple[dict, bool]:
    """The new best (and whether this epoch is it) after ``record``."""
    score = _score(record, selection)
    if not math.isfinite(score) or score <= best["acc"]:      # a diverged epoch is never the best
        return best, False
    value = score if selection == "val_acc" else -score
    return {"acc": score, "epoch": record["epoch"], "metric": selection, "value": value}, True


def _starting_best(before: dict, selection: str) -> dict:
    """The model before training as epoch 0 of the selection, so that an epoch is exported only
    if it beats it; no epoch 0 when the selection measure was not taken before training."""
    none = {"acc": -math.inf, "epoch": -1, "metric": selection}
    if selection not in before:
        return none
    best, _ = _select(none, {"epoch": 0, selection: before[selection]}, selection)
    return best


def _resume(run: _Run, ckpt: Path | None, emit):
    state = load_checkpoint(ckpt, run.device)
    if state.get("config") != asdict(run.config):
        emit("resume: the recipe differs from the checkpoint's; continuing with the checkpoint's schedule position")
    run.module.load_state_dict(state["module"])
    run.opt.load_state_dict(state["optimizer"])
    emit(f"resumed from {ckpt} after epoch {state['epoch'] + 1}")
    return state["epoch"] + 1, state["history"], state["best"]
