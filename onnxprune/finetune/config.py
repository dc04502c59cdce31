"""The fine-tuning recipe's settings, and the command-line options that set them.

:data:`FINETUNE_OPTIONS` maps each ``finetune`` command-line flag to its argparse keyword arguments
(``dest`` is the :class:`FinetuneConfig` field, ``default`` and ``help`` come from here), so a CLI can
declare them with ``parser.add_argument(flag, **kwargs)`` and build the config with
:func:`config_from_namespace`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

__all__ = ["FinetuneConfig", "FINETUNE_OPTIONS", "config_from_namespace", "add_finetune_arguments",
           "DEFAULT_KD_WEIGHT_LABELLED", "DEFAULT_KD_WEIGHT_LABEL_FREE", "DEFAULT_LR_LABELLED",
           "DEFAULT_LR_LABEL_FREE", "resolve_defaults"]

DEFAULT_KD_WEIGHT_LABELLED = 0.5     # with labels: loss = 0.5·CE + 0.5·distance to the teacher
DEFAULT_KD_WEIGHT_LABEL_FREE = 1.0   # without labels the teacher is the only signal
# peak lr with labels: 0.01 took a pruned, refitted ResNet-56 from 81.4 to 50.0 % in 32 steps, 0.001 to 84.4 %
DEFAULT_LR_LABELLED = 0.001
# label-free the distances to the teacher are small (~1e-3), so are their gradients: see README
DEFAULT_LR_LABEL_FREE = 0.03


@dataclass(frozen=True)
class FinetuneConfig:
    """SGD (momentum, Nesterov) with a linear warm-up then cosine learning rate, crop+flip, and
    optional distillation from the unpruned model on every output."""
    epochs: int = 10
    batch_size: int = 128            # global batch (split across DDP ranks)
    lr: float | None = None          # peak lr after warm-up; None: DEFAULT_LR_LABELLED, or DEFAULT_LR_LABEL_FREE without labels
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    crop_padding: int = 4            # random crop after zero padding; 0 disables
    flip: bool = True
    kd_temperature: float = 4.0
    kd_weight: float | None = None   # α; None (or 0 with a teacher): 1.0 without labels, 0.5 with
    kd_regression_loss: str = "mse"  # "mse" | "smooth_l1" for outputs that are neither probabilities nor (N, C) class scores
    kd_prob_loss: str = "l1"         # "l1" | "kl" | "regress" for probability maps (softmax along an axis of a rank > 2 output)
    kd_prob_temperature: float = 1.0  # temperature of "kl" on probability outputs
    teacher_backend: str = "auto"    # "auto" (onnxruntime on CPU, the bridge on CUDA) | "onnxruntime" | "torch"
    seed: int = 0
    max_steps_per_epoch: int | None = None   # for short runs
    device: str = "auto"
    reinsert_bn: bool = True         # BN-folded models: train with BatchNorm, fold it back at export
    bn_stats: str = "auto"           # "frozen" (running statistics while training) | "update" | "auto": frozen without labels

    def __post_init__(self) -> None:
        from onnxprune.finetune.errors import FinetuneError
        if self.kd_regression_loss not in ("mse", "smooth_l1"):
            raise FinetuneError(f"kd_regression_loss {self.kd_regression_loss!r}: use 'mse' or 'smooth_l1'")
        if self.kd_prob_loss not in ("kl", "l1", "regress"):
            raise FinetuneError(f"kd_prob_loss {self.kd_prob_loss!r}: use 'kl', 'l1' or 'regress'")
        if self.kd_temperature <= 0 or self.kd_prob_temperature <= 0:
            raise FinetuneError("distillation temperatures must be > 0")
        if self.bn_stats not in ("auto", "frozen", "update"):
            raise FinetuneError(f"bn_stats {self.bn_stats!r}: use auto, frozen or update")
        if self.teacher_backend not in ("auto", "onnxruntime", "torch"):
            raise FinetuneError(f"teacher_backend {self.teacher_backend!r}: use auto, onnxruntime or torch")
        if self.kd_weight is not None and not 0.0 <= self.kd_weight <= 1.0:
            raise FinetuneError(f"kd_weight {self.kd_weight}: must lie in [0, 1]")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise FinetuneError("epochs and batch size must be >= 1 and the learning rate > 0")


def _opt(dest, type_, help_, **extra) -> dict:
    default = {f.name: f.default for f in fields(FinetuneConfig)}[dest]
    return dict(dest=dest, type=type_, default=default, help=help_, **extra)


FINETUNE_OPTIONS: dict[str, dict] = {
    "--epochs": _opt("epochs", int, "training epochs (default %(default)s)"),
    "--batch-size": _opt("batch_size", int, "global batch size, split across DDP ranks (default %(default)s)"),
    "--lr": _opt("lr", float, f"peak learning rate after a linear warm-up, then cosine to 0 (default "
                 f"{DEFAULT_LR_LABELLED} with labels, where higher rates can wreck a pretrained model in "
                 f"the first epoch; {DEFAULT_LR_LABEL_FREE} without labels, where the distances to the "
                 "teacher and their gradients are small)"),
    "--momentum": _opt("momentum", float, "SGD momentum, Nesterov when > 0 (default %(default)s)"),
    "--wd": _opt("weight_decay", float, "weight decay on weights, not on biases/BN (default %(default)s)"),
    "--warmup-epochs": _opt("warmup_epochs", float, "linear learning-rate warm-up, in epochs (default %(default)s)"),
    "--label-smoothing": _opt("label_smoothing", float, "label smoothing of the cross-entropy (default %(default)s)"),
    "--crop-padding": _opt("crop_padding", int, "random-crop zero padding in pixels, 0: no crop (default %(default)s)"),
    "--no-flip": dict(dest="flip", action="store_false", default=True, help="no random horizontal flips"),
    "--kd-weight": _opt("kd_weight", float, "distillation weight α in [0, 1] (needs --teacher): loss = "
                        "(1-α)·cross-entropy + α·distance to the teacher; default 1.0 without labels, 0.5 "
                        "with labels"),
    "--kd-temperature": _opt("kd_temperature", float, "distillation temperature T for class-score "
                             "outputs (default %(default)s)"),
    "--kd-regression-loss": _opt("kd_regression_loss", str, "distance for outputs that are neither "
                                 "probabilities nor (N, C) class scores, normalised by the teacher "
                                 "output's variance (default %(default)s)", choices=["mse", "smooth_l1"]),
    "--kd-prob-loss": _opt("kd_prob_loss", str, "distance for probability maps, outputs of rank > 2 "
                           "holding distributions along an axis (a Softmax produces them, or the last "
                           "axis sums to 1: a detector's per-anchor class scores): l1 = mean absolute "
                           "difference, kl = KL divergence from the teacher's distribution along that "
                           "axis, regress = as --kd-regression-loss (default %(default)s: on a pruned "
                           "face detector it cut the score-map error more than KL at the same settings, "
                           "see benchmarks/results/labelfree)", choices=["l1", "kl", "regress"]),
    "--kd-prob-temperature": _opt("kd_prob_temperature", float, "temperature of the KL on probability "
                                  "outputs (default %(default)s)"),
    "--teacher-backend": _opt("teacher_backend", str, "what runs the teacher: auto = onnxruntime on CPU, "
                              "the torch bridge on CUDA (default %(default)s)",
                              choices=["auto", "onnxruntime", "torch"]),
    "--max-steps": _opt("max_steps_per_epoch", int, "cap the steps per epoch (short runs)"),
    "--device": _opt("device", str, "auto | cpu | cuda | cuda:N (default %(default)s)"),
    "--seed": _opt("seed", int, "seed of shuffling, augmentation and initialisation (default %(default)s)"),
    "--bn-stats": _opt("bn_stats", str, "BatchNorm while training: frozen = normalise with the running "
                       "statistics (scale and shift still train), update = batch statistics, running ones "
                       "updated; auto = frozen without labels (the original's statistics are the target, and "
                       "batch statistics make training and inference differ), update with labels (default "
                       "%(default)s)", choices=["auto", "frozen", "update"]),
    "--no-reinsert-bn": dict(dest="reinsert_bn", action="store_false", default=True,
                             help="train a BatchNorm-folded model as is (default: re-insert BatchNorm "
                                  "for training and fold it back at export)"),
}


def resolve_defaults(config: FinetuneConfig, use_labels: bool, reinserted_bn: bool = False) -> FinetuneConfig:
    """``config`` with the settings left to the supervision (None / "auto") filled in.

    BatchNorm statistics stay frozen only without labels and when the model brings its own
    BatchNorm: BatchNorm re-inserted into a BN-folded model has no trained statistics to keep, and
    with them frozen the folded network trains without normalisation (a BN-folded ResNet-56 diverged
    within one epoch, distilled without labels at lr 1e-4 and 1e-3)."""
    from dataclasses import replace
    lr = config.lr if config.lr is not None else (DEFAULT_LR_LABELLED if use_labels else DEFAULT_LR_LABEL_FREE)
    bn_stats = config.bn_stats if config.bn_stats != "auto" else \
        ("update" if use_labels or reinserted_bn else "frozen")
    return replace(config, lr=lr, bn_stats=bn_stats)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every :data:`FINETUNE_OPTIONS` flag on ``parser``."""
    for flag, kwargs in FINETUNE_OPTIONS.items():
        parser.add_argument(flag, **kwargs)


def config_from_namespace(ns: argparse.Namespace, **overrides) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from parsed :data:`FINETUNE_OPTIONS` (missing ones keep defaults)."""
    names = {f.name for f in fields(FinetuneConfig)}
    values = {k: v for k, v in vars(ns).items() if k in names}
    return FinetuneConfig(**{**values, **overrides})
