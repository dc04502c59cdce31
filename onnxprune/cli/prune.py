"""``onnxprune prune``: remove channels under a budget, write the model and its plan, verify."""
from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.cli.args import add_command, add_verbosity_arguments, add_input_shape_argument, add_output_arguments, \
    add_provider_argument, check_outputs, config_from_namespace, fixed_input_model, input_dims, \
    load_input_model, plan_path_for
from onnxprune.data import add_preprocess_arguments
from onnxprune.errors import BudgetError, OnnxPruneError
from onnxprune.log import get_logger

log = get_logger(__name__)

EXAMPLES = """
  onnxprune prune model.onnx -o small.onnx --flops-reduction 0.45        # writes small.plan.json too
  onnxprune prune model.onnx -o small.onnx --params-reduction 0.4 --round-to 8 --criterion l2
  onnxprune prune model.onnx -o small.onnx --flops-reduction 0.5 --method infoconc --data train/ --norm imagenet
  onnxprune prune model.onnx -o small.onnx --ratio 0.3 --round-to auto   # channel multiples this CPU runs fast
  onnxprune prune model.onnx -o small.onnx --latency-reduction 0.4 --batch 64   # measured latency budget
"""


def register(sub) -> None:
    p = add_command(sub, "prune", help="prune under a MACs/params budget, write model + plan, verify",
                    description="Remove channels under a budget, rewrite the model and check it against the "
                                "masked original. Writes OUT and its plan (OUT with .onnx -> .plan.json); the "
                                "input is never modified and no existing file is replaced without --overwrite.",
                    examples=EXAMPLES)
    p.add_argument("model", help="ONNX model file")
    add_output_arguments(p, help="pruned model path")
    p.add_argument("--plan", help="plan JSON path (default: OUT with .onnx replaced by .plan.json)")
    _budget_arguments(p)
    _method_arguments(p)
    _data_arguments(p)
    add_provider_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed for random criteria and verify inputs")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the check against the masked original")
    add_input_shape_argument(p)
    add_preprocess_arguments(p)
    add_verbosity_arguments(p)
    p.set_defaults(func=run)


def _budget_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("budget (give one; MACs and params may be combined)")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--flops-reduction", type=float, metavar="F",
                   help="remove this fraction of MACs (= of FLOPs), e.g. 0.45")
    b.add_argument("--ratio", type=float, metavar="R",
                   help="remove this fraction of channels from every prunable group")
    g.add_argument("--params-reduction", type=float, metavar="F",
                   help="remove this fraction of parameters (may be combined with --flops-reduction)")
    g.add_argument("--latency-reduction", type=float, metavar="F",
                   help="remove this fraction of the latency measured on --target at --batch: up to "
                        "--latency-rounds pruned models are timed against the original and the budget "
                        "corrected until the measured cut lands within 2 points (may be combined with "
                        "MACs/params budgets)")
    g.add_argument("--latency-rounds", type=int, default=6, metavar="K",
                   help="with --latency-reduction: at most K rounds of allocate, time the pruned model against "
                        "the original, correct the budget (stops within 2 points of the request, confirmed by a "
                        "second timing: repeated timings of one model differ by a few points; each timing runs "
                        "3-10 s per model, longer for fast, noisy models; with calibration data up to 3 brief rounds "
                        "first locate the budget before the allocation is chosen); 0 trusts the tables' "
                        "prediction alone")
    g.add_argument("--latency-shape", choices=["macs", "tables"], default="macs",
                   help="with --latency-reduction, what spreads the cut over the layers: 'macs' (default) "
                        "searches the MACs budget whose allocation (information weights, the per-group channel "
                        "steps measured on --target, branch removal) meets the measured cut; 'tables' puts "
                        "per-layer latency tables measured on this machine into the allocation as a latency "
                        "budget, channels only (less accurate at equal latency on ResNet-56: see the README). "
                        "With --latency-rounds 0 the tables are always used")
    g.add_argument("--round-to", default=None, metavar="N|auto",
                   help="keep channel counts that are multiples of N; 'auto' picks one multiple for every "
                        "group (16 on AVX-512 CPUs, 8 on AVX2 CPUs and GPUs). Default: per group, the step "
                        "the --target engine runs fast, chosen from measured latency tables (16-channel "
                        "groups stay prunable). 1: exact counts, which meet the MACs budget most closely "
                        "but on CPU rarely run faster")
    g.add_argument("--remove-branches", choices=["auto", "off"], default="auto",
                   help="auto (default, with the per-group channel steps and calibration data; MACs, params or "
                        "latency budgets): also judge "
                        "allocations that remove whole residual branches (a block whose output only joins the "
                        "residual sum), the least harmful per measured time saved first, spending the rest of the "
                        "budget on channels; the fastest on --target within --branch-tolerance of the best output "
                        "distance wins (timings within 3%% of the fastest count as equal: the closest of those). A branch removed frees all its layers' time, where a channel cut "
                        "below the engine's block saves little. Under a latency budget the choice is made once brief "
                        "channels-only timings have located the budget, at equal latency: a removal that would "
                        "overshoot it is allocated again where it should land (more channels kept), and the "
                        "closest output among those no slower than channels only wins; the measured rounds keep "
                        "it unless the budget moves more than 10 points. "
                        "off: channels only")
    g.add_argument("--branch-tolerance", type=float, default=0.5, metavar="F",
                   help="with --remove-branches auto: how much larger (fraction) the output distance of an "
                        "allocation with branches removed may be than that of the channels-only choice, each "
                        "judged after the same quick refit (default 0.5: that refit on a few images favours "
                        "allocations with fewer kept channels; 0 removes a branch only where it judges at least "
                        "as close)")
    g.add_argument("--max-branches", type=int, default=8, metavar="K",
                   help="with --remove-branches auto: the candidates remove 2, 4, 6, 8, 12, 16 branches, at most K "
                        "(default 8; each candidate costs a quick refit)")
    g.add_argument("--target", choices=["cpu", "cuda", "tensorrt"], default="cpu",
                   help="the engine the pruned model will run on (cpu: this machine's onnxruntime CPU)")
    g.add_argument("--batch", type=int, default=1, metavar="B",
                   help="batch size the latency tables and the speed-up are measured at")
    g.add_argument("--no-measure", dest="measure", action="store_false",
                   help="skip timing the pruned model against the original after pruning")


def _method_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=["infoconc", "itpruner", "uniform-l1", "uniform-hrank"],
                   help="preset: infoconc = information-concentration allocation + Shapley channels "
                        "(needs --data); itpruner = nHSIC allocation + L1 (needs --data); "
                        "uniform-l1 (data-free); uniform-hrank (needs --data). Default: infoconc when --data is given, else uniform-l1")
    g.add_argument("--allocation", choices=["uniform", "global", "convex", "linear"],
                   help="uniform: one keep-ratio for every group; global: rank all channels by their "
                        "per-group normalised score; convex: maximise Σ w log x under the budget "
                        "(geometric program); linear: ITPruner's published Σ w x objective "
                        "(default: from --method)")
    g.add_argument("--criterion", choices=["l1", "l2", "fpgm", "random", "hrank", "shapley", "shapley-mc"],
                   help="channel score inside a group (default: from --method, else l1). shapley: "
                        "closed-form Shapley values of the next layer's reconstruction game; "
                        "shapley-mc: Monte-Carlo Shapley values of the network's output KL (slow)")
    g.add_argument("--channel-choice", choices=["reconstruction", "criterion"],
                   help="which channels of a group go once its count is set. reconstruction: greedy "
                        "elimination on the least squares of the layers that read the group (the channels "
                        "whose loss the refit can best make up go first; ThiNet / He et al. 2017), on the "
                        "refit's calibration images (at most 512, fewer for large layers); groups read by a grouped "
                        "or transposed conv, or by a layer with more than 2304 inputs, keep the "
                        "criterion. criterion: the --criterion scores. Default: reconstruction when the "
                        "prune refits (--recover reconstruct with --data), else criterion")
    g.add_argument("--weights", choices=["concentration", "nhsic"],
                   help="layer weights for convex/linear allocation (default: from --method)")
    g.add_argument("--min-keep", type=float, default=0.1, metavar="X",
                   help="convex/linear allocation: keep at least this fraction of every group")
    g.add_argument("--beta", type=float, default=500.0, help="ITPruner β in α = exp(-β s̃)")
    g.add_argument("--fusion", choices=["geometric", "harmonic", "convex"], default="geometric",
                   help="how rank and entropy fuse into information concentration")
    g.add_argument("--lam", type=float, default=0.5, help="fusion weight λ of the rank")
    g.add_argument("--shapley-permutations", type=int, default=8, metavar="P",
                   help="shapley-mc: permutations per group")
    g.add_argument("--shapley-images", dest="shapley_mc_images", type=int, default=32, metavar="M",
                   help="shapley-mc: calibration images per coalition value")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration data (for data-driven methods)")
    g.add_argument("--data", help="calibration images: .npy/.npz, image folder, .tar(.gz), CIFAR-10 batches")
    g.add_argument("--split", help="sub-folder of --data to use when it holds several (e.g. train)")
    g.add_argument("--calib-images", type=int, default=256, metavar="N",
                   help="seeded sample of N calibration images")
    g = p.add_argument_group("recovery (label-free, needs --data)")
    g.add_argument("--recover", choices=["reconstruct", "none"], default="reconstruct",
                   help="after the verified rewrite, refit every layer whose input lost channels so its output "
                        "matches the unpruned model's on the calibration images (ridge least squares, no "
                        "labels, no training; skipped without --data); 'none' keeps the one-shot weights")
    g.add_argument("--recover-images", type=int, metavar="N",
                   help="calibration images used by the refit (default: all --calib-images)")
    g.add_argument("--recover-memory", type=int, default=1024, metavar="MB", dest="recover_memory_mb",
                   help="RAM for the activations the refit keeps between its layer waves, for both models "
                        "together (default 1024). Past it, those activations are kept for the first images "
                        "only and recomputed from the input for the others at every wave: the refit gets "
                        "slower, not less accurate (same result); memory then no longer grows with the images")


def round_to(value: str | None, target: str, ratio: float | None = None) -> int | str:
    """--round-to N, 'auto' (the target's block multiple) or, when not given, 'latency' (per-group
    steps) for a MACs/params/latency budget and 1 for --ratio."""
    if value is None:
        return 1 if ratio is not None else "latency"
    if str(value).lower() == "auto":
        from onnxprune.runtime import preferred_channel_multiple
        n, why = preferred_channel_multiple(target)
        log.info("onnxprune: --round-to auto = %d (%s)", n, why)
        return n
    try:
        return int(value)
    except ValueError:
        raise BudgetError(f"--round-to must be a positive integer or 'auto', got {value!r}") from None


def calibration(args: argparse.Namespace, model):
    """The seeded calibration sample, checked against the model's input."""
    if not args.data:
        raise OnnxPruneError("this method needs calibration images: pass --data PATH "
                             "(.npy/.npz, an image folder, a .tar.gz of one, or CIFAR-10 batches)")
    import onnxprune.data as data
    check_single_input(model, args.model)
    ds = data.load_dataset(args.data, data.preprocess_from_namespace(args), limit=args.calib_images,
                           seed=args.seed, split=args.split)
    name, shape = input_dims(model)
    data.check_against_input(ds, shape, name, source=args.data)
    log.info("  calibration: %d images from %s", len(ds), args.data)
    return ds


def check_single_input(model, path: str) -> None:
    """Calibration images feed one input: a model with several (say an image and a scale, or
    token ids) is refused before any work, with the data-free criteria named."""
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    if len(names) > 1:
        raise OnnxPruneError(f"{path}: the model has {len(names)} inputs ({', '.join(names)}); calibration "
                             f"images can feed only a single-input model: prune it data-free "
                             f"(--criterion l1|l2|fpgm|random with --allocation uniform|global)")


def save_outputs(result, source: str, out: Path, plan_path: Path) -> None:
    """Write the model, then its plan recording both models' sha256; on failure neither is left."""
    from onnxprune.model_io import save_model, write_text_atomic
    from onnxprune.rewrite.plan import file_sha256
    result.plan.model_sha256 = file_sha256(source)
    save_model(result.model, out)
    try:
        result.plan.pruned_sha256 = file_sha256(out)
        write_text_atomic(plan_path, result.plan.to_json())
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def measure_speedup(model, pruned, plan, config) -> None:
    """Time both models interleaved on the target; log the speed-up next to the MACs ideal and
    record it in the plan (budget.latency.measured)."""
    from onnxprune.latency.measure import measure_pair
    from onnxprune.latency.table import TargetError, engine_for
    try:
        engine = engine_for(config.target)
    except TargetError as exc:
        log.info("onnxprune: speed-up not measured (%s)", exc)
        return
    got = measure_pair(model, pruned, engine, config.batch)
    cost = plan.cost.get("macs", {})
    ideal = cost["original"] / cost["pruned"] if cost.get("pruned") else float("nan")
    error = "" if got["reduction_se"] is None else f" +- {100 * got['reduction_se']:.1f} points of latency"
    log.info("onnxprune: measured speed-up %.2fx%s at batch %d on %s (median %.2f -> %.2f ms, %d interleaved "
             "rounds); ideal 1/(1-MACs cut) %.2fx", got["speedup"], error, config.batch, config.target,
             1e3 * got["original_s"], 1e3 * got["pruned_s"], got["rounds"], ideal)
    rec = plan.budget.setdefault("latency", {"target": config.target, "batch": config.batch})
    rec["measured"] = {**got, "ideal_speedup": ideal}


def with_source_io(result, source, fixed, config, seed: int):
    """--input-shape informs the analysis only: the written model keeps the source's input and
    output declarations (symbolic dims included), checked again at a batch other than the one
    analysed: against the masked source, or (after a refit, whose weights differ from it by design;
    the structure was proven before the refit) by running it."""
    import dataclasses
    from onnxprune.errors import VerificationError
    from onnxprune.graph.edit import keep_io_declarations
    from onnxprune.runtime import make_session, random_inputs
    from onnxprune.verify.oracle import compare
    model = keep_io_declarations(result.model, source)
    report = result.report
    if not config.verify:
        return dataclasses.replace(result, model=model)
    feeds = {name: _with_source_batch(x, source, name) for name, x in random_inputs(fixed, seed=seed).items()}
    try:
        if result.plan.refit is not None:
            _run_or_fail(make_session(model), feeds)
        else:
            report = compare(source, model, result.plan, feeds=feeds, rtol=config.rtol)
    except VerificationError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VerificationError(
            f"the pruned model does not run at another batch size than the --input-shape one "
            f"(a shape computed from the input was rewritten as a constant); nothing written. "
            f"Prune an export with a static batch instead. ({first[:160]})") from None
    if not report.ok:
        bad = next(o for o in report.outputs if not o.ok)
        raise VerificationError(
            f"pruned model differs from the masked original at output '{bad.name}' at batch "
            f"{next(iter(feeds.values())).shape[0]} (max abs {bad.max_abs:.3g}); nothing written")
    return dataclasses.replace(result, model=model, report=report)


def _run_or_fail(session, feeds) -> None:
    """Run ``session`` once; whatever onnxruntime raises becomes a VerificationError."""
    from onnxprune.errors import VerificationError
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot run the pruned model: {exc}") from None


def _with_source_batch(x, source, name: str):
    """``x`` repeated to batch 2 when the source's input ``name`` has a symbolic batch dim."""
    import numpy as np
    vi = next((v for v in source.graph.input if v.name == name), None)
    dims = vi.type.tensor_type.shape.dim if vi is not None else []
    if len(dims) and not dims[0].HasField("dim_value") and x.ndim and x.shape[0] == 1:
        return np.concatenate([x, -x[:, ::-1] if x.ndim > 1 else -x])
    return x


def run(args: argparse.Namespace) -> int:
    from onnxprune.pipeline import PruneConfig, prune
    from onnxprune.tools.report import prune_summary
    (out,) = check_outputs(args, args.output, source=args.model)
    plan_path = Path(args.plan) if args.plan else plan_path_for(out)
    if plan_path.resolve() == out.resolve():
        raise OnnxPruneError(f"{plan_path}: the plan path is the model output path; pick another --plan")
    check_outputs(args, plan_path, source=args.model)
    config = config_from_namespace(PruneConfig, args, round_to=round_to(args.round_to, args.target, args.ratio))
    config.validate()
    source = load_input_model(args.model, args, fix_shapes=False)
    model = fixed_input_model(source, args)
    if model is not source and config.simplify:
        # shapes fixed by --input-shape are not static in the written model: fold nothing from them
        import dataclasses
        config = dataclasses.replace(config, simplify=False)
    data = calibration(args, model) if config.needs_data or args.data else None
    log.info("onnxprune: pruning %s", args.model)
    result = prune(model, config, data=data, provider=args.provider)
    if model is not source:
        result = with_source_io(result, source, model, config, args.seed)
    if args.measure:   # timed at the analysed shapes (those --input-shape gave, when given)
        from onnxprune.graph.edit import keep_io_declarations
        measure_speedup(model, keep_io_declarations(result.model, model), result.plan, config)
    save_outputs(result, args.model, out, plan_path)
    print(prune_summary(result, out, plan_path))
    if result.plan.refit is not None:
        from onnxprune.recover.record import refit_summary
        print(refit_summary(result.plan.refit))
    return 0
