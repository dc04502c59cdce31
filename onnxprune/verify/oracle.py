"""The correctness oracle: the pruned model must equal the original with 0/1 channel masks.

For every edge where a pruned group's channels are consumed (recorded in the plan), a ``Mul`` by
a 0/1 mask is inserted into the original model; both models then run through onnxruntime on the
same inputs and their outputs must agree to float precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnxprune.errors import PlanError, VerificationError
from onnxprune.graph.edit import ModelEdit, splice_mul
from onnxprune.rewrite.plan import Plan
from onnxprune.runtime import make_session, random_inputs

__all__ = ["masked_model", "compare", "output_diff", "VerifyReport", "OutputDiff", "RTOL", "ATOL"]

# The one tolerance rule: an output passes when max|a−b| ≤ ATOL + RTOL·max|a| (fp32 precision;
# fp16 models agree exactly, since masked channels add exact zeros).
RTOL = 1e-5
ATOL = 1e-6


def _edge_masks(plan: Plan) -> dict[tuple[int, int, str], tuple[np.ndarray, int, int]]:
    """(node index, input index, tensor) -> (mask over the tensor's channel axis, axis, block)."""
    masks: dict[tuple[int, int, str], tuple[np.ndarray, int, int]] = {}
    for g in plan.groups:
        if len(g.kept) == g.channels:
            continue
        keep = np.zeros(g.channels, bool)
        keep[g.kept] = True
        for e in g.edges:
            key = (e["node_index"], e["input_index"], e["tensor"])
            if key not in masks:
                masks[key] = (np.ones(e["channels"], np.float32), e["axis"], e["block"])
            m = masks[key][0]
            for s in e["segments"]:
                m[s["offset"]:s["offset"] + s["length"]] *= keep[s["group_offset"]:s["group_offset"] + s["length"]]
    return masks


def masked_model(original: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """The original model with a 0/1 channel mask (in the tensor's dtype) on every consumed edge of
    a pruned group."""
    edit = ModelEdit(original)
    for (idx, k, tensor), (mask, axis, block) in sorted(_edge_masks(plan).items()):
        node = edit.nodes[idx] if idx < len(edit.nodes) else None
        if node is None or k >= len(node.inputs) or node.inputs[k] is None or node.inputs[k].name != tensor:
            raise PlanError(f"plan edge {tensor} → node #{idx} input {k} does not exist in this model")
        rank = edit.rank(tensor)
        if rank is None:
            raise PlanError(f"rank of tensor '{tensor}' unknown; cannot place its mask")
        shape = [mask.size * block] + [1] * (rank - 1 - axis)
        splice_mul(edit, idx, k, np.repeat(mask, block).reshape(shape))
    return edit.to_proto()


def _dynamic_hint(model: onnx.ModelProto) -> str:
    """Advice when random inputs were made for inputs whose non-batch dimensions are dynamic
    (``random_inputs`` fills them with 1, which rarely fits a CNN)."""
    inits = {t.name for t in model.graph.initializer}
    dynamic = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        axes = [k for k, d in enumerate(dims) if k > 0 and not d.HasField("dim_value")]
        if vi.name not in inits and axes:
            dynamic[vi.name] = axes
    if not dynamic:
        return ""
    which = ", ".join(f"'{n}' (axis {', '.join(map(str, a))})" for n, a in dynamic.items())
    return (f"; dynamic dimensions of input {which} were filled with 1 for the random inputs: "
            f"pass --input-shape {next(iter(dynamic))}=1x3xHxW with the real sizes")


def _run(session, feeds, what: str, source: str, hint: str) -> list:
    try:
        return session.run(None, feeds)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise VerificationError(f"onnxruntime cannot run {what} on {source}: {msg}{hint}") from None


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    scale: float
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    outputs: tuple[OutputDiff, ...]
    inputs: str

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)


def output_diff(name: str, ref: np.ndarray, got: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> OutputDiff:
    """How far ``got`` is from ``ref``, and whether it is within the tolerance rule."""
    if np.asarray(ref).dtype == np.float16 or np.asarray(got).dtype == np.float16:
        # an fp16 output rounds to 2**-10 of its magnitude; removing channels changes the order
        # of the sums, which can move it by one such step: the rule follows the output's dtype
        rtol = max(rtol, 2.0 ** -10)
    a64, b64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if a64.shape != b64.shape:
        return OutputDiff(name, float("inf"), float("inf"), 0.0, False)
    err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
    scale = float(np.max(np.abs(a64))) if a64.size else 0.0
    rel = err / scale if scale > 0 else err
    return OutputDiff(name, err, rel, scale, err <= atol + rtol * scale)


def compare(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan,
            feeds: dict[str, np.ndarray] | None = None, rtol: float = RTOL, atol: float = ATOL,
            seed: int = 0) -> VerifyReport:
    """Run masked original and pruned model on the same inputs and compare every output.

    An output passes when max|a−b| ≤ atol + rtol·max|a| (see :func:`output_diff`).
    """
    masked = masked_model(original, plan)
    source = "given data" if feeds is not None else f"random normal inputs (seed {seed})"
    hint = "" if feeds is not None else _dynamic_hint(original)
    feeds = feeds if feeds is not None else random_inputs(original, seed=seed)
    ref = _run(make_session(masked), feeds, "the masked original model", source, hint)
    s_pruned = make_session(pruned)
    names = [o.name for o in s_pruned.get_outputs()]
    got = _run(s_pruned, feeds, "the pruned model", source, hint)
    diffs = [output_diff(name, a, b, rtol, atol) for name, a, b in zip(names, ref, got)]
    return VerifyReport(tuple(diffs), source)
