"""Run one fuzz case through ``onnxprune prune`` and check what it wrote.

A case passes when the pruned model passes onnx's full check, runs in onnxruntime, keeps the
original's input/output names, dtypes and shapes (symbolic dims included) and equals the masked
original (``onnxprune.verify``). A refusal (an ``OnnxPruneError``) is allowed and counted with
its reason, provided nothing was written; any other exception or check failure is a failure.
"""
from __future__ import annotations

import contextlib
import io
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError

from random_cnn import Case, export_case

FP16_RTOL = 2.0 ** -10     # one fp16 ulp at the output's largest magnitude

__all__ = ["Outcome", "run_case", "io_signature", "prunable_shares", "ExportCache", "shape_refusal"]


@dataclass
class Outcome:
    case: Case
    status: str                    # passed | refused | failed | export-failed
    reason: str = ""
    groups: int = 0
    prunable_groups: int = 0
    macs: float = 0.0
    prunable_macs: float = 0.0
    blocks: list[str] = field(default_factory=list)
    shape_hint: bool = False

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["case"] = self.case.describe()
        return d


def reason_class(message: str) -> str:
    """A refusal message with names and numbers taken out, for counting refusals by kind."""
    text = re.sub(r"'[^']*'", "'…'", message)
    text = re.sub(r"\b[\w./-]*\d[\w./-]*\b", "N", text)
    return text[:110]


def io_signature(model: onnx.ModelProto) -> list[tuple]:
    """(kind, name, dtype, dims) of every graph input (initializers aside) and output."""
    inits = {t.name for t in model.graph.initializer}
    sig = []
    for kind, values in (("in", model.graph.input), ("out", model.graph.output)):
        for vi in values:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                         for d in t.shape.dim) if t.HasField("shape") else None
            sig.append((kind, vi.name, t.elem_type, dims))
    return sig


def prunable_shares(model: onnx.ModelProto, input_shapes: dict | None = None) -> tuple[int, int, float, float]:
    """(groups, prunable groups, MACs, MACs in terms touching a prunable group)."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    from onnxprune.graph.view import fix_input_shapes
    analysis = analyze(fix_input_shapes(model, input_shapes) if input_shapes else model)
    cost = CostModel(analysis)
    terms = cost.macs_terms({g.id for g in analysis.prunable})
    total = sum(terms.values())
    return len(analysis.groups), len(analysis.prunable), total, total - terms.get((), 0.0)


class ExportCache:
    """Exports each (network, exporter settings) once into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.paths: dict[tuple, Path | Exception] = {}

    def get(self, case: Case) -> Path:
        key = case.export_key
        if key not in self.paths:
            path = self.root / ("m-" + "-".join(map(str, key)) + ".onnx")
            try:
                export_case(case, path)
                self.paths[key] = path
            except Exception as exc:   # the exporter's own limits are not the pruner's
                self.paths[key] = exc
        got = self.paths[key]
        if isinstance(got, Exception):
            raise got
        return got


def _argv(case: Case, src: Path, out: Path, shape_hint: bool) -> list[str]:
    flag = {"flops": "--flops-reduction", "params": "--params-reduction", "ratio": "--ratio"}[case.budget_kind]
    argv = ["prune", str(src), "-o", str(out), flag, str(case.budget), "--criterion", case.criterion,
            "--round-to", str(case.round_to), "--seed", str(case.seed), "-q"]
    if case.budget_kind != "ratio":
        argv += ["--allocation", case.allocation]
    if shape_hint:
        argv += ["--input-shape", f"input=1x3x{case.hw}x{case.hw}"]
    return argv


def check_pruned(original: onnx.ModelProto, out: Path, plan_path: Path, seed: int) -> str | None:
    """None when the written model is right, else what is wrong with it."""
    from onnxprune.rewrite.plan import Plan
    from onnxprune.runtime import make_session, random_inputs
    from onnxprune.verify.oracle import compare
    pruned = onnx.load(str(out))
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:
        return f"onnx checker: {str(exc).splitlines()[0]}"
    if io_signature(pruned) != io_signature(original):
        return f"inputs/outputs changed: {io_signature(original)} -> {io_signature(pruned)}"
    feeds = random_inputs(original, seed=seed + 1, batch=2)
    session = make_session(pruned)
    outs = session.run(None, feeds)
    for o, vi in zip(outs, session.get_outputs()):
        if not np.all(np.isfinite(np.asarray(o, np.float64))):
            return f"output {vi.name} not finite"
    plan = Plan.load(plan_path)
    # fp16 outputs: the same rule at fp16 precision (a different channel count changes the
    # kernels' accumulation order, which moves an fp16 result by an ulp)
    fp16 = any(vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for vi in original.graph.output)
    report = compare(original, pruned, plan, feeds=feeds, **({"rtol": FP16_RTOL} if fp16 else {}))
    if not report.ok:
        bad = next(o for o in report.outputs if not o.ok)
        return f"differs from masked original at {bad.name}: max abs {bad.max_abs:.3g} rel {bad.max_rel:.3g}"
    return None


SHAPE_WORDS = ("static spatial sizes", "unknown; cannot", "--input-shape")


def shape_refusal(outcome: Outcome) -> bool:
    """A refusal for want of shapes on a model whose input shape was known (static or given)."""
    known = not outcome.case.dynamic or outcome.shape_hint
    return outcome.status == "refused" and known and any(w in outcome.reason for w in SHAPE_WORDS)


def run_case(case: Case, cache: ExportCache, workdir: Path, shape_hint: bool | None = None) -> Outcome:
    """Export (cached), prune through the CLI code path, check the result."""
    from onnxprune.cli.main import build_parser
    try:
        src = cache.get(case)
    except Exception as exc:
        return Outcome(case, "export-failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    original = onnx.load(str(src))
    if shape_hint is None:
        shape_hint = case.dynamic and case.seed % 2 == 0
    workdir = Path(workdir) / f"case-{abs(hash(case)) % 10**10}"
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "pruned.onnx"
    plan_path = out.with_suffix(".plan.json")
    outcome = Outcome(case, "passed", shape_hint=shape_hint)
    try:
        hints = {"input": [1, 3, case.hw, case.hw]} if case.dynamic else None
        outcome.groups, outcome.prunable_groups, outcome.macs, outcome.prunable_macs = \
            prunable_shares(original, hints)
        args = build_parser().parse_args(_argv(case, src, out, shape_hint))
        with contextlib.redirect_stdout(io.StringIO()):
            args.func(args)
    except OnnxPruneError as exc:
        outcome.status, outcome.reason = "refused", str(exc)
        if any(workdir.iterdir()):
            outcome.status = "failed"
            outcome.reason = f"refused but left files {sorted(p.name for p in workdir.iterdir())}: {exc}"
        return outcome
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        outcome.status = "failed"
        outcome.reason = f"crash {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} " \
                         f"at {Path(tb.filename).name}:{tb.lineno}"
        return outcome
    try:
        problem = check_pruned(original, out, plan_path, case.seed)
    except Exception as exc:
        problem = f"check crashed {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if problem:
        outcome.status, outcome.reason = "failed", problem
    out.unlink(missing_ok=True)
    plan_path.unlink(missing_ok=True)
    left = sorted(p.name for p in workdir.iterdir())
    if left and outcome.status == "passed":
        outcome.status, outcome.reason = "failed", f"stray files left: {left}"
    return outcome
