"""``onnxprune finetune``: train a (pruned) model through the torch bridge and export the best epoch."""
from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.args import add_command, add_verbosity_arguments, add_input_shape_argument, add_output_arguments, \
    config_from_namespace, input_dims, load_input_model, need
from onnxprune.data import add_preprocess_arguments
from onnxprune.errors import OnnxPruneError
from onnxprune.log import get_logger

log = get_logger(__name__)

EXAMPLES = """
  onnxprune finetune small.onnx --train train/ --val val/ -o tuned.onnx --epochs 10
  onnxprune finetune small.onnx --train train.tar.gz -o tuned.onnx --teacher model.onnx --kd-weight 0.5
  onnxprune finetune small.onnx --train unlabelled.npy -o tuned.onnx --teacher model.onnx   # label-free
  torchrun --nproc_per_node 4 -m onnxprune.cli finetune small.onnx --train train/ -o tuned.onnx
"""


def register(sub) -> None:
    p = add_command(sub, "finetune", help="fine-tune a (pruned) model through the torch bridge (needs torch)",
                    description="Train an ONNX model with PyTorch (SGD + cosine lr, crop+flip, optional label "
                                "smoothing and distillation from the unpruned model) and export the best "
                                "epoch back to ONNX. Multi-GPU/multi-node: run under torchrun. Needs "
                                "onnxprune[torch].",
                    examples=EXAMPLES)
    p.add_argument("model", help="the (pruned) ONNX model to train")
    add_output_arguments(p, help="fine-tuned model path")
    g = p.add_argument_group("data")
    g.add_argument("--train", required=True, help="training images (folder, .tar.gz, .npy/.npz, CIFAR "
                                                   "batches); unlabelled ones need --teacher")
    g.add_argument("--val", help="validation images: the exported epoch is the best on these (accuracy "
                                 "with labels, distance to the teacher without); default: lowest train loss")
    g.add_argument("--train-images", type=int, help="use a seeded subset of N training images (default: all)")
    g.add_argument("--val-images", type=int, help="use a seeded subset of N validation images (default: all)")
    g.add_argument("--train-split", help="sub-folder of --train to use")
    g.add_argument("--val-split", help="sub-folder of --val to use")
    _recipe_arguments(p)
    p.add_argument("--checkpoint", help="checkpoint path (default: OUT.ckpt)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    add_input_shape_argument(p)
    add_preprocess_arguments(p)
    add_verbosity_arguments(p)
    p.set_defaults(func=run)


def _recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options, declared from the finetune package's table (defaults and help there)."""
    from onnxprune.finetune.config import FINETUNE_OPTIONS
    g = p.add_argument_group("recipe")
    for flag, kwargs in FINETUNE_OPTIONS.items():
        g.add_argument(flag, **kwargs)
    g.add_argument("--teacher", help="the unpruned ONNX model: distillation on every output; with a "
                                     "teacher, --train and --val may be unlabelled")


def _datasets(args: argparse.Namespace, model):
    import onnxprune.data as data
    pre = data.preprocess_from_namespace(args)
    train = data.load_dataset(args.train, pre, limit=args.train_images, seed=args.seed, split=args.train_split)
    name, shape = input_dims(model)
    data.check_against_input(train, shape, name, source=args.train)
    if not args.val:
        return train, None
    val = data.load_dataset(args.val, pre, limit=args.val_images, seed=args.seed, split=args.val_split).arrays()
    if val[1] is None and not args.teacher:
        raise OnnxPruneError(f"{args.val}: validation data has no labels; pass --teacher ORIGINAL.onnx "
                             "to choose the epoch by the distance to it")
    return train, val


def _output_path(args: argparse.Namespace) -> Path:
    """OUT must be new unless --overwrite; --resume may replace the OUT its own earlier run wrote."""
    from onnxprune.model_io import check_output_path
    if Path(args.output).resolve() == Path(args.model).resolve() and not args.overwrite:
        raise OnnxPruneError(f"{args.output}: output path is the input model; pass --overwrite to replace it")
    return check_output_path(None, args.output, args.overwrite or args.resume)


def run(args: argparse.Namespace) -> int:
    need("torch", "torch", "onnxprune finetune")
    from onnxprune.finetune import FinetuneConfig, finetune
    from onnxprune.model_io import load_model
    out = _output_path(args)
    if args.kd_weight is not None and not args.teacher:
        raise OnnxPruneError("--kd-weight needs --teacher ORIGINAL.onnx")
    model = load_input_model(args.model, args)
    teacher = load_model(args.teacher) if args.teacher else None
    train, val = _datasets(args, model)
    cfg = config_from_namespace(FinetuneConfig, args)
    log.info("onnxprune: fine-tuning %s on %d images from %s", args.model, len(train), args.train)
    summary = finetune(model, train, val, cfg, out, teacher=teacher,
                       checkpoint=args.checkpoint or f"{out}.ckpt", resume=args.resume)
    best = summary["best"]
    value = best.get("value")
    what = f", {best['metric']} {value:.4g}" if best.get("metric") and value is not None else ""
    if best["epoch"] == 0:
        print(f"wrote {out} (the starting model unchanged: no epoch improved on it{what})")
    else:
        print(f"wrote {out} (exported epoch {best['epoch']}{what}; {summary.get('selection', '')})")
    return 0
