"""Command line: ``onnxprune analyze | prune | verify``.

Every error onnxprune raises on purpose is printed as one line naming the file, node or tensor,
with exit status 2; nothing is written on failure.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxprune import __version__
from onnxprune.errors import BudgetError, OnnxPruneError

EXAMPLES = """
examples:
  onnxprune analyze model.onnx                       # channel groups, MACs, what is skipped and why
  onnxprune prune model.onnx -o small.onnx --flops-reduction 0.45
  onnxprune prune model.onnx -o small.onnx --params-reduction 0.4 --round-to 8 --criterion l2
  onnxprune verify model.onnx small.onnx --plan small.plan.json
  onnxprune bench model.onnx small.onnx --batch 1,64 --engine ort-cpu -o bench
"""


def _parse_shapes(items: list[str] | None) -> dict[str, list[int]]:
    shapes = {}
    for item in items or []:
        name, _, dims = item.rpartition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise OnnxPruneError(f"--input-shape {item!r}: expected NAME=1x3x224x224") from None
        if not name:
            raise OnnxPruneError(f"--input-shape {item!r}: expected NAME=1x3x224x224")
    return shapes


def _load(path: str, shapes: list[str] | None):
    from onnxprune.graph.view import fix_input_shapes
    from onnxprune.model_io import load_model
    model = load_model(path)
    fixed = _parse_shapes(shapes)
    return fix_input_shapes(model, fixed) if fixed else model


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
def cmd_analyze(args) -> int:
    from onnxprune.analysis.groups import analyze
    from onnxprune.analysis.cost import CostModel
    from onnxprune.tools.report import analysis_table, analysis_json
    model = _load(args.model, args.input_shape)
    analysis = analyze(model)
    cost = CostModel(analysis)
    if args.json:
        print(json.dumps(analysis_json(analysis, cost), indent=1))
    else:
        print(analysis_table(analysis, cost, Path(args.model).name, verbose=args.verbose))
    return 0


def _round_to(value: str, target: str) -> int:
    """--round-to N, or 'auto': the channel multiple the target engine runs fastest."""
    if str(value).lower() == "auto":
        from onnxprune.runtime import preferred_channel_multiple
        n, why = preferred_channel_multiple(target)
        _say(f"onnxprune: --round-to auto = {n} ({why})")
        return n
    try:
        return int(value)
    except ValueError:
        raise BudgetError(f"--round-to must be a positive integer or 'auto', got {value!r}") from None


def cmd_prune(args) -> int:
    from onnxprune.model_io import check_output_path, save_model, write_text_atomic
    from onnxprune.pipeline import PruneConfig, prune
    from onnxprune.tools.report import prune_summary
    out = check_output_path(args.model, args.output, args.overwrite)
    plan_path = Path(args.plan) if args.plan else out.with_suffix("").with_suffix(".plan.json") \
        if out.suffix == ".onnx" else Path(str(out) + ".plan.json")
    check_output_path(args.model, plan_path, args.overwrite)
    round_to = _round_to(args.round_to, args.target)
    config = PruneConfig(flops_reduction=args.flops_reduction, params_reduction=args.params_reduction,
                         ratio=args.ratio, method=args.method, allocation=args.allocation,
                         criterion=args.criterion, weights=args.weights, round_to=round_to,
                         min_keep=args.min_keep, beta=args.beta, fusion=args.fusion, lam=args.lam,
                         shapley_permutations=args.shapley_permutations,
                         shapley_mc_images=args.shapley_images,
                         seed=args.seed, verify=not args.no_verify,
                         recover=args.recover, recover_images=args.recover_images)
    config.validate()
    model = _load(args.model, args.input_shape)
    data = _calibration(args, model) if config.needs_data or args.data else None
    _say(f"onnxprune: pruning {args.model}")
    result = prune(model, config, data=data, progress=lambda m: _say(f"  {m}"), provider=args.provider)
    from onnxprune.rewrite.plan import file_sha256
    result.plan.model_sha256 = file_sha256(args.model)
    save_model(result.model, out)
    try:
        write_text_atomic(plan_path, result.plan.to_json())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    print(prune_summary(result, out, plan_path))
    if result.plan.refit is not None:
        from onnxprune.recover.record import refit_summary
        print(refit_summary(result.plan.refit))
    return 0


def _calibration(args, model):
    """The seeded calibration sample, checked against the model's input."""
    from onnxprune.data.core import check_against_input, load_dataset, preprocess_from_namespace
    if not args.data:
        raise OnnxPruneError("this method needs calibration images: pass --data PATH "
                             "(.npy/.npz, an image folder, a .tar.gz of one, or CIFAR-10 batches)")
    pre = preprocess_from_namespace(args)
    ds = load_dataset(args.data, pre, limit=args.calib_images, seed=args.seed, split=args.split)
    inp = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    check_against_input(ds, shape, inp.name, source=args.data)
    _say(f"  calibration: {len(ds)} images from {args.data}")
    return ds


def cmd_finetune(args) -> int:
    from onnxprune.data.core import check_against_input, load_dataset, preprocess_from_namespace
    from onnxprune.finetune.recipe import FinetuneConfig, finetune
    from onnxprune.model_io import check_output_path, load_model
    out = check_output_path(args.model, args.output, args.overwrite)
    if out.exists() and not args.overwrite and not args.resume:
        raise OnnxPruneError(f"{out}: exists; pass --overwrite to replace it")
    model = _load(args.model, args.input_shape)
    teacher = load_model(args.teacher) if args.teacher else None
    pre = preprocess_from_namespace(args)
    train = load_dataset(args.train, pre, limit=args.train_images, seed=args.seed, split=args.train_split)
    inp = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    check_against_input(train, shape, inp.name, source=args.train)
    val = None
    if args.val:
        vds = load_dataset(args.val, pre, limit=args.val_images, seed=args.seed, split=args.val_split)
        val = vds.arrays()
        if val[1] is None:
            raise OnnxPruneError(f"{args.val}: validation data has no labels")
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.wd,
                         label_smoothing=args.label_smoothing, crop_padding=args.crop_padding,
                         flip=not args.no_flip, kd_temperature=args.kd_temperature,
                         kd_weight=args.kd_weight if teacher is not None else 0.0, seed=args.seed,
                         max_steps_per_epoch=args.max_steps, device=args.device)
    if args.kd_weight and teacher is None:
        raise OnnxPruneError("--kd-weight needs --teacher ORIGINAL.onnx")
    ckpt = args.checkpoint or str(out) + ".ckpt"
    _say(f"onnxprune: fine-tuning {args.model} on {len(train)} images from {args.train}")
    summary = finetune(model, train, val, cfg, out, teacher=teacher, checkpoint=ckpt, resume=args.resume, log=_say)
    best = summary["best"]
    print(f"wrote {out} (best epoch {best['epoch']}" + (f", val acc {100 * best['acc']:.2f}%)" if val else ")"))
    return 0


def cmd_report(args) -> int:
    from onnxprune.model_io import write_text_atomic
    from onnxprune.rewrite.plan import Plan
    from onnxprune.tools.plots import plan_markdown, plot_keep_ratios
    plan = Plan.load(args.plan)
    text = plan_markdown(plan, title=f"Pruning report: {Path(args.plan).name}")
    if args.output:
        write_text_atomic(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text)
    if args.png:
        plot_keep_ratios(plan, args.png)
        print(f"wrote {args.png}")
    return 0


def cmd_verify(args) -> int:
    import numpy as np
    from onnxprune.model_io import load_model
    from onnxprune.rewrite.plan import Plan
    from onnxprune.tools.report import verify_table
    from onnxprune.verify.oracle import compare
    original = _load(args.original, args.input_shape)
    pruned = load_model(args.pruned)
    plan = Plan.load(args.plan)
    from onnxprune.rewrite.plan import file_sha256
    if plan.model_sha256 and plan.model_sha256 != file_sha256(args.original):
        raise OnnxPruneError(f"{args.plan} was made for another model (sha256 {plan.model_sha256[:12]}…), "
                             f"not {args.original}")
    feeds = None
    if args.data:
        try:
            data = np.load(args.data)
        except Exception as exc:
            raise OnnxPruneError(f"{args.data}: cannot read inputs ({exc})") from None
        feeds = dict(data) if hasattr(data, "files") else {original.graph.input[0].name: data}
    if plan.refit is not None:   # the structure is proven on the rewrite before the refit
        from onnxprune.recover.record import check_refit
        check = check_refit(original, pruned, plan)
        print(check.summary())
        if not check.ok:
            return 1
        pruned = check.pre_refit
    report = compare(original, pruned, plan, feeds=feeds, rtol=args.rtol, atol=args.atol, seed=args.seed)
    print(verify_table(report))
    return 0 if report.ok else 1


# ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxprune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Structured (channel) pruning of exported ONNX CNNs. MACs are counted per "
                    "image; FLOPs = 2 x MACs.", epilog=EXAMPLES)
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("analyze", help="list channel groups, their MACs share and why any is skipped",
                       description="Find the channel groups of a model: channels that must be pruned "
                                   "together (through BN, activations, residual Add, Concat, channel "
                                   "Pad/Slice, depthwise/grouped Conv, Flatten→Gemm), and why a group "
                                   "is left alone.")
    a.add_argument("model", help="ONNX model file")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("-v", "--verbose", action="store_true", help="list every producer and consumer")
    a.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW",
                   help="fix a dynamic input shape (repeatable)")
    a.set_defaults(func=cmd_analyze)

    r = sub.add_parser("prune", help="prune under a MACs/params budget, write model + plan, verify",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Remove channels under a budget, rewrite the model and check it "
                                   "against the masked original. Writes OUT and OUT.plan.json; the "
                                   "input is never modified.")
    r.add_argument("model", help="ONNX model file")
    r.add_argument("-o", "--output", required=True, help="pruned model path")
    r.add_argument("--plan", help="plan JSON path (default: OUT with .plan.json)")
    b = r.add_mutually_exclusive_group()
    b.add_argument("--flops-reduction", type=float, metavar="F",
                   help="remove this fraction of MACs (= of FLOPs), e.g. 0.45")
    b.add_argument("--ratio", type=float, metavar="R",
                   help="remove this fraction of channels from every prunable group")
    r.add_argument("--params-reduction", type=float, metavar="F",
                   help="remove this fraction of parameters (may be combined with --flops-reduction)")
    r.add_argument("--method", choices=["infoconc", "itpruner", "uniform-l1", "uniform-hrank"],
                   help="preset: infoconc = information-concentration allocation + Shapley channels "
                        "(needs --data); itpruner = nHSIC allocation + L1 (needs --data); "
                        "uniform-l1 (the default without --data); uniform-hrank (needs --data)")
    r.add_argument("--allocation", choices=["uniform", "global", "convex", "linear"],
                   help="uniform: one keep-ratio for every group; global: rank all channels by their "
                        "per-group normalised score; convex: maximise Σ w log x under the budget "
                        "(geometric program); linear: ITPruner's published Σ w x objective")
    r.add_argument("--criterion", choices=["l1", "l2", "fpgm", "random", "hrank", "shapley", "shapley-mc"],
                   help="channel score inside a group (default: from --method, else l1). shapley: "
                        "closed-form Shapley values of the next layer's reconstruction game; "
                        "shapley-mc: Monte-Carlo Shapley values of the network's output KL (slow)")
    r.add_argument("--shapley-permutations", type=int, default=8, metavar="P",
                   help="shapley-mc: permutations per group (default 8)")
    r.add_argument("--shapley-images", type=int, default=32, metavar="M",
                   help="shapley-mc: calibration images per coalition value (default 32)")
    r.add_argument("--weights", choices=["concentration", "nhsic"],
                   help="layer weights for convex/linear allocation (default: from --method)")
    r.add_argument("--min-keep", type=float, default=0.1, metavar="X",
                   help="convex/linear allocation: keep at least this fraction of every group (default 0.1)")
    r.add_argument("--beta", type=float, default=500.0, help="ITPruner β in α = exp(-β s̃) (default 500)")
    r.add_argument("--fusion", choices=["geometric", "harmonic", "convex"], default="geometric",
                   help="how rank and entropy fuse into information concentration")
    r.add_argument("--lam", type=float, default=0.5, help="fusion weight λ of the rank (default 0.5)")
    r.add_argument("--data", help="calibration images: .npy/.npz, image folder, .tar(.gz), CIFAR-10 batches")
    r.add_argument("--split", help="sub-folder of --data to use when it holds several (e.g. train)")
    r.add_argument("--calib-images", type=int, default=256, metavar="N",
                   help="seeded sample of N calibration images (default 256)")
    r.add_argument("--provider", choices=["auto", "cpu", "cuda", "tensorrt"], default="auto",
                   help="onnxruntime provider for capture (auto: CUDA when present, else CPU)")
    r.add_argument("--round-to", default="1", metavar="N|auto",
                   help="keep channel counts that are multiples of N; 'auto' picks what the --target "
                        "engine runs fastest (16 on AVX-512 CPUs, 8 on AVX2 CPUs and GPUs). Exact counts "
                        "(1, the default) meet the MACs budget most closely, but onnxruntime's CPU "
                        "kernels only turn fewer MACs into less time at block multiples. A group of N "
                        "channels or fewer cannot be pruned: for nets with 16-channel layers use 8")
    r.add_argument("--target", choices=["cpu", "cuda", "tensorrt"], default="cpu",
                   help="the engine the pruned model will run on, for --round-to auto (default cpu: this machine)")
    r.add_argument("--seed", type=int, default=0, help="seed for random criteria and verify inputs")
    r.add_argument("--no-verify", action="store_true", help="skip the masked-original check")
    r.add_argument("--recover", choices=["reconstruct", "none"], default="reconstruct",
                   help="after the verified rewrite, refit every layer whose input lost channels so its output "
                        "matches the unpruned model's on the calibration images (least squares, no labels, no "
                        "training; needs --data, skipped without it); 'none' keeps the one-shot weights "
                        "(default: reconstruct)")
    r.add_argument("--recover-images", type=int, metavar="N",
                   help="calibration images used by the refit (default: all --calib-images)")
    r.add_argument("--overwrite", action="store_true", help="allow replacing existing output files")
    r.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW",
                   help="fix a dynamic input shape (repeatable)")
    from onnxprune.data.core import add_preprocess_arguments
    add_preprocess_arguments(r)
    r.set_defaults(func=cmd_prune)

    v = sub.add_parser("verify", help="check a pruned model against the masked original",
                       description="Insert 0/1 channel masks on the plan's consumed edges of the "
                                   "original model, run both models on the same inputs and compare "
                                   "every output. Exit status 1 on a mismatch.")
    v.add_argument("original", help="the unpruned ONNX model")
    v.add_argument("pruned", help="the pruned ONNX model")
    v.add_argument("--plan", required=True, help="the plan JSON written by `prune`")
    v.add_argument("--data", help=".npy (first input) or .npz (one array per input name) to use "
                                  "instead of random inputs")
    v.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    v.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (default 1e-6)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW")
    v.set_defaults(func=cmd_verify)
    f = sub.add_parser("finetune", help="fine-tune a (pruned) model through the torch bridge",
                       description="Train an ONNX model with PyTorch (SGD + cosine lr, crop+flip, optional "
                                   "label smoothing and distillation from the unpruned model) and export "
                                   "the best epoch back to ONNX. Multi-GPU/multi-node: run under torchrun.")
    f.add_argument("model", help="the (pruned) ONNX model to train")
    f.add_argument("--train", required=True, help="labelled training images (folder, .tar.gz, .npz, CIFAR batches)")
    f.add_argument("--val", help="labelled validation images (the best epoch on these is exported)")
    f.add_argument("-o", "--output", required=True, help="fine-tuned model path")
    f.add_argument("--teacher", help="the unpruned ONNX model, for distillation")
    f.add_argument("--kd-weight", type=float, default=0.0, help="distillation weight α (needs --teacher)")
    f.add_argument("--kd-temperature", type=float, default=4.0)
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--batch-size", type=int, default=128, help="global batch size")
    f.add_argument("--lr", type=float, default=0.05)
    f.add_argument("--wd", type=float, default=5e-4, help="weight decay")
    f.add_argument("--label-smoothing", type=float, default=0.0)
    f.add_argument("--crop-padding", type=int, default=4, help="random-crop padding (0: no crop)")
    f.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    f.add_argument("--max-steps", type=int, help="cap steps per epoch (short runs)")
    f.add_argument("--train-images", type=int, help="use a seeded subset of N training images")
    f.add_argument("--val-images", type=int, help="use a seeded subset of N validation images")
    f.add_argument("--train-split", help="sub-folder of --train to use")
    f.add_argument("--val-split", help="sub-folder of --val to use")
    f.add_argument("--checkpoint", help="checkpoint path (default OUT.ckpt)")
    f.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--overwrite", action="store_true")
    f.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW")
    add_preprocess_arguments(f)
    f.set_defaults(func=cmd_finetune)

    rp = sub.add_parser("report", help="a readable report of a plan (Markdown) and a keep-ratio plot (PNG)",
                        description="Budget requested vs achieved, per-group keep-ratios and metrics, and "
                                    "every skipped group with its reason, from a plan written by `prune`.")
    rp.add_argument("plan", help="the plan JSON")
    rp.add_argument("-o", "--output", help="write the Markdown here instead of printing it")
    rp.add_argument("--png", help="also plot keep-ratio per group to this PNG (needs matplotlib)")
    rp.set_defaults(func=cmd_report)

    from onnxprune.tools.bench import add_bench_arguments
    bb = sub.add_parser("bench", help="latency of models side by side (p50/p90/p99, images/s, MACs speed-up)",
                        description="Measure latency and throughput of one or more models on the same "
                                    "engines and batches, interleaved; the first model is the baseline "
                                    "for speed-ups. Engines that are not present are skipped with a message.")
    add_bench_arguments(bb)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
