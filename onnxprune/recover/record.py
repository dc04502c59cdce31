"""The refit record kept in the plan, and the check that a refitted model is the plan's
structural rewrite plus exactly the recorded weight changes.

The structural proof (pruned = masked original) holds for the model *before* refit; the record
says which initializers the refit changed (with a sha256 of each new value) and how much it
reduced every layer's reconstruction error on the calibration data.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["LayerRefit", "RefitRecord", "RefitCheck", "check_refit", "tensor_sha256", "refit_summary"]


def tensor_sha256(value: np.ndarray) -> str:
    """sha256 over dtype, shape and the little-endian C-order bytes of a tensor."""
    a = np.ascontiguousarray(value)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class LayerRefit:
    """One refitted layer: its node, output tensor, changed initializers and errors (relative
    MSE of its output vs the unpruned model's, on the calibration rows) before and after."""
    node: str
    output: str
    op: str
    initializers: list[str]
    rows: int
    unknowns: int
    error_before: float
    error_after: float
    ridge: float
    warning: str | None = None
    target: str = "output"     # "residual": fitted to the original Add output minus the pruned skip input


@dataclass
class RefitRecord:
    method: str = "reconstruct"
    images: int = 0
    positions_per_image: int | None = None
    ridge: float = 1e-3
    waves: int = 0
    seconds: float = 0.0
    memory_mb: float | None = None          # the cap on the activations stored between waves
    resident_images: int | None = None     # images whose activations fit under it (the rest recomputed)
    layers: list[LayerRefit] = field(default_factory=list)
    initializers: dict[str, str] = field(default_factory=dict)    # name -> sha256 of the new value

    def to_dict(self) -> dict:
        d = asdict(self)
        for layer in d["layers"]:
            for k in ("error_before", "error_after"):
                layer[k] = float(f"{layer[k]:.6g}")
        d["seconds"] = round(self.seconds, 3)
        return d

    def mean_errors(self) -> tuple[float, float]:
        """Mean relative error of the refitted layers before and after the refit (layers required)."""
        n = len(self.layers)
        return sum(x.error_before for x in self.layers) / n, sum(x.error_after for x in self.layers) / n

    @classmethod
    def from_dict(cls, d: dict) -> "RefitRecord":
        layers = [LayerRefit(**x) for x in d.get("layers", [])]
        rest = {k: v for k, v in d.items() if k != "layers"}
        return cls(layers=layers, **rest)


def refit_summary(refit: dict) -> str:
    """One line for the CLI: layers refitted, mean error before → after, images, time."""
    r = RefitRecord.from_dict(refit)
    if not r.layers:
        return "reconstruct: no layer lost input channels; nothing refitted"
    before, after = r.mean_errors()
    warned = sum(x.warning is not None for x in r.layers)
    extra = f"; {warned} with too few rows (stronger ridge)" if warned else ""
    if r.resident_images is not None and r.resident_images < r.images:
        extra += (f"; activations kept for {r.resident_images} images under the {r.memory_mb:g} MB cap, "
                  f"recomputed for the others (--recover-memory)")
    return (f"reconstruct: {len(r.layers)} layers refitted on {r.images} images in {r.seconds:.1f} s, "
            f"mean relative error {before:.3f} -> {after:.3f}{extra}")


@dataclass
class RefitCheck:
    ok: bool
    problems: list[str]
    changed: list[str]
    pre_refit: onnx.ModelProto | None = None

    def summary(self) -> str:
        if self.ok:
            return f"refit: {len(self.changed)} initializers changed, all recorded with matching sha256"
        return "refit check FAILED: " + "; ".join(self.problems[:5])


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _same_structure(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    problems = []
    if len(a.graph.node) != len(b.graph.node):
        return [f"the pruned model has {len(b.graph.node)} nodes, the plan's rewrite {len(a.graph.node)}"]
    for x, y in zip(a.graph.node, b.graph.node):
        if x.SerializeToString(deterministic=True) != y.SerializeToString(deterministic=True):
            problems.append(f"node {y.name or y.output[0]!r} differs from the plan's rewrite")
    for kind in ("input", "output"):
        names_a = [v.name for v in getattr(a.graph, kind)]
        names_b = [v.name for v in getattr(b.graph, kind)]
        if names_a != names_b:
            problems.append(f"graph {kind}s differ from the plan's rewrite")
    return problems


def check_refit(original: onnx.ModelProto, pruned: onnx.ModelProto, plan) -> RefitCheck:
    """Rebuild the structural rewrite from ``original`` + ``plan`` and check that ``pruned``
    equals it except the initializers in the plan's refit record, whose sha256 must match."""
    from onnxprune.analysis import analyze
    from onnxprune.rewrite.apply import apply_plan
    record = RefitRecord.from_dict(plan.refit) if getattr(plan, "refit", None) else RefitRecord()
    pre = apply_plan(analyze(original), plan)
    if plan.settings.get("simplify", False):      # the same clean-up the prune step ran after the rewrite
        from onnxprune.rewrite.simplify import simplify
        pre, _ = simplify(pre)
    problems = _same_structure(pre, pruned)
    ia, ib = _initializers(pre), _initializers(pruned)
    if set(ia) != set(ib):
        extra, missing = sorted(set(ib) - set(ia)), sorted(set(ia) - set(ib))
        problems.append(f"initializers differ from the plan's rewrite (extra {extra[:3]}, missing {missing[:3]})")
    changed = []
    for name in sorted(set(ia) & set(ib)):
        va, vb = numpy_helper.to_array(ia[name]), numpy_helper.to_array(ib[name])
        if va.shape == vb.shape and va.dtype == vb.dtype and np.array_equal(va, vb):
            continue
        changed.append(name)
        if name not in record.initializers:
            problems.append(f"initializer {name!r} differs from the plan's rewrite and is not in the refit record")
        elif va.shape != vb.shape or va.dtype != vb.dtype:
            problems.append(f"initializer {name!r} changed shape or dtype in the refit")
        elif tensor_sha256(vb) != record.initializers[name]:
            problems.append(f"initializer {name!r}: sha256 does not match the refit record")
    for name in record.initializers:
        if name not in ib:
            problems.append(f"refit record names initializer {name!r}, which the pruned model lacks")
    return RefitCheck(ok=not problems, problems=problems, changed=changed, pre_refit=pre)
