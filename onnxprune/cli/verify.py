"""``onnxprune verify``: check a pruned model against the masked original."""
from __future__ import annotations

import argparse

from onnxprune.cli.args import add_command, add_verbosity_arguments, add_input_shape_argument, load_input_model, plan_path_for
from onnxprune.errors import OnnxPruneError, PlanError

EXAMPLES = """
  onnxprune verify model.onnx small.onnx                    # plan: small.plan.json beside small.onnx
  onnxprune verify model.onnx small.onnx --plan other.plan.json --data inputs.npz
"""


def register(sub) -> None:
    p = add_command(sub, "verify", help="check a pruned model against the masked original",
                    description="Insert 0/1 channel masks on the plan's consumed edges of the original "
                                "model, run both models on the same inputs and compare every output. "
                                "Exit status 1 on a mismatch, 2 when the plan does not fit the models.",
                    examples=EXAMPLES)
    p.add_argument("original", help="the unpruned ONNX model")
    p.add_argument("pruned", help="the pruned ONNX model")
    p.add_argument("--plan", help="the plan JSON written by `prune` (default: PRUNED with .onnx -> .plan.json)")
    p.add_argument("--data", help="inputs instead of random ones: a model-ready .npy (first input) or "
                                  ".npz (one array per input name), or any source `prune --data` reads "
                                  "(image folder, tar, CIFAR batches; a seeded sample resized to the input)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    add_input_shape_argument(p)
    add_verbosity_arguments(p)
    p.set_defaults(func=run)


def check_plan_fits(plan, plan_path, original: str, pruned: str) -> None:
    """The plan's recorded hashes must be those of the two model files (when it records them)."""
    from onnxprune.rewrite.plan import file_sha256
    if plan.model_sha256 and plan.model_sha256 != file_sha256(original):
        raise PlanError(f"{plan_path} was made for another model (sha256 {plan.model_sha256[:12]}…), "
                        f"not {original}")
    recorded = getattr(plan, "pruned_sha256", "")
    if recorded and recorded != file_sha256(pruned):
        raise PlanError(f"{plan_path}: this plan does not fit this pruned model: {pruned} has changed "
                        f"or was written by another run (the plan records sha256 {recorded[:12]}…)")


def _feeds(path: str | None, model, seed: int):
    """Inputs from --data: model-ready .npy/.npz, or any source `prune --data` reads (a seeded sample)."""
    if not path:
        return None
    from onnxprune.data import load_feeds
    return load_feeds(path, model.graph.input, seed=seed)


def run(args: argparse.Namespace) -> int:
    from onnxprune.model_io import load_model
    from onnxprune.rewrite.plan import Plan
    from onnxprune.tools.report import verify_table
    from onnxprune.verify.oracle import compare
    plan_path = args.plan or plan_path_for(args.pruned)
    original = load_input_model(args.original, args)
    pruned = load_model(args.pruned)
    plan = Plan.load(plan_path)
    check_plan_fits(plan, plan_path, args.original, args.pruned)
    if plan.refit is not None:   # the structure is proven on the rewrite before the refit
        from onnxprune.recover.record import check_refit
        check = check_refit(original, pruned, plan)
        print(check.summary())
        if not check.ok:
            return 1
        pruned = check.pre_refit
    report = compare(original, pruned, plan, feeds=_feeds(args.data, original, args.seed), rtol=args.rtol,
                     atol=args.atol, seed=args.seed)
    print(verify_table(report))
    return 0 if report.ok else 1
