"""Apply a plan: slice initializers, update channel-carrying attributes, check the result.

Everything is computed first, from the analysis records (``ParamSlice``, ``Update``), and then
written into a copy of the model; the input model is never modified. Names, opset and metadata
stay as they were; a shared initializer that must be sliced differently for different users is
split into one initializer per distinct value.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.analysis.groups import Analysis, ParamSlice, Update
from onnxprune.analysis.cost import kept_positions
from onnxprune.errors import PlanError
from onnxprune.graph.view import attr
from onnxprune.rewrite.plan import Plan

__all__ = ["apply_plan"]


def _take(value: np.ndarray, s: ParamSlice, keep: np.ndarray, in_channels: int) -> np.ndarray:
    if s.groups > 1:  # grouped conv weight, axis 1: per output row, the kept inputs of its conv group
        return value  # handled in _grouped_weight
    idx = (keep[:, None] * s.block + np.arange(s.block)[None, :]).ravel() if s.block > 1 else keep
    return np.take(value, idx, axis=s.axis)


def _grouped_weight(w: np.ndarray, out_keep: np.ndarray, in_keep: np.ndarray,
                    c_out: int, c_in: int, groups: int) -> np.ndarray:
    """Weight [C_out, C_in/g, k…] of a grouped conv after pruning both sides (w already row-sliced)."""
    out_per, in_per = c_out // groups, c_in // groups
    rows = []
    for r, o in enumerate(out_keep):
        gi = o // out_per
        local = in_keep[(in_keep >= gi * in_per) & (in_keep < (gi + 1) * in_per)] - gi * in_per
        rows.append(w[r][local])
    return np.stack(rows)


class _Rewriter:
    def __init__(self, analysis: Analysis, plan: Plan) -> None:
        self.a = analysis
        self.kept = plan.kept()
        self.model = onnx.ModelProto()
        self.model.CopyFrom(analysis.view.model)
        self.nodes = self.model.graph.node
        self.new_values: dict[tuple[int, int], np.ndarray] = {}
        self._keep_cache: dict[str, np.ndarray] = {}

    def keep(self, tensor: str) -> np.ndarray:
        if tensor not in self._keep_cache:
            self._keep_cache[tensor] = kept_positions(self.a, tensor, self.kept)
        return self._keep_cache[tensor]

    def touched(self, tensor: str) -> bool:
        return len(self.keep(tensor)) != self.a.layouts[tensor].channels

    # --- parameters -----------------------------------------------------------------------
    def slice_params(self) -> None:
        by_input: dict[tuple[int, int], list[ParamSlice]] = defaultdict(list)
        for s in self.a.slices:
            by_input[(s.node, s.input_index)].append(s)
        for (node, k), slices in by_input.items():
            if not any(self.touched(s.tensor) for s in slices):
                continue
            value = self.a.view.constant(self.a.view.nodes[node].input[k])
            original_shape = value.shape
            grouped = [s for s in slices if s.groups > 1]
            for s in slices:
                if s.groups == 1:
                    value = _take(value, s, self.keep(s.tensor), 0)
            for s in grouped:
                row = next(x for x in slices if x.axis == 0)
                value = _grouped_weight(value, self.keep(row.tensor), self.keep(s.tensor),
                                        original_shape[0], original_shape[1] * s.groups, s.groups)
            self.new_values[(node, k)] = np.ascontiguousarray(value)

    # --- attributes and shape constants ---------------------------------------------------
    def _set_attr(self, node: onnx.NodeProto, name: str, value) -> None:
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                break
        node.attribute.append(onnx.helper.make_attribute(name, value))

    def _set_input(self, idx: int, k: int, value: np.ndarray) -> None:
        self.new_values[(idx, k)] = value

    def apply_update(self, u: Update) -> None:
        if not self.touched(u.tensor):
            return
        node = self.nodes[u.node]
        keep = self.keep(u.tensor)
        opset = self.a.view.opset
        if u.kind == "conv_group":
            self._set_attr(node, "group", int(len(keep)))
        elif u.kind == "pad":
            i, n, before, after = u.extra
            c = self.a.layouts[u.tensor].channels
            nb = int(np.sum(keep < before))
            na = int(np.sum(keep >= c - after))
            if opset < 11:
                pads = list(attr(node, "pads"))
                pads[i], pads[i + n] = nb, na
                self._set_attr(node, "pads", pads)
            else:
                pads = self.a.view.constant(node.input[1]).copy()
                pads[i], pads[i + n] = nb, na
                self._set_input(u.node, 1, pads.astype(np.int64))
        elif u.kind == "slice":
            i, start, stop = u.extra
            ns, ne = int(np.sum(keep < start)), int(np.sum(keep < stop))
            if opset < 10:
                starts, ends = list(attr(node, "starts")), list(attr(node, "ends"))
                starts[i], ends[i] = ns, ne
                self._set_attr(node, "starts", starts)
                self._set_attr(node, "ends", ends)
            else:
                for k, v in ((1, ns), (2, ne)):
                    arr = self.a.view.constant(node.input[k]).copy()
                    arr[i] = v
                    self._set_input(u.node, k, arr)
        elif u.kind == "split":
            bounds = np.cumsum((0,) + tuple(u.extra))
            sizes = [int(np.sum((keep >= lo) & (keep < hi))) for lo, hi in zip(bounds[:-1], bounds[1:])]
            if min(sizes) == 0:
                raise PlanError(f"the plan empties an output of Split {self.a.view.label(u.node)}")
            if opset < 13:
                self._set_attr(node, "split", sizes)
            else:
                for a in list(node.attribute):
                    if a.name == "num_outputs":
                        node.attribute.remove(a)
                if len(node.input) < 2:
                    node.input.append("")
                self._set_input(u.node, 1, np.array(sizes, np.int64))
        elif u.kind == "reshape":
            target = self.a.view.constant(node.input[1]).copy()
            target[u.axis] = len(keep) * u.extra[0]
            self._set_input(u.node, 1, target)
        elif u.kind == "resize_sizes":
            sizes = self.a.view.constant(node.input[3]).copy()
            sizes[u.axis] = len(keep)
            self._set_input(u.node, 3, sizes)
        else:  # pragma: no cover - analysis emits only the kinds above
            raise PlanError(f"unknown update kind {u.kind}")

    # --- writing constants back -----------------------------------------------------------
    def write_constants(self) -> None:
        g = self.model.graph
        inits = {t.name: t for t in g.initializer}
        users: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for k, name in enumerate(node.input):
                if name:
                    users[name].append((i, k))
        by_name: dict[str, dict[tuple[int, int], np.ndarray]] = defaultdict(dict)
        for (i, k), v in self.new_values.items():
            name = self.nodes[i].input[k]
            by_name[name or f"__empty_{i}_{k}"][(i, k)] = v
        taken = set(inits) | {o for n in self.nodes for o in n.output} | {x.name for x in g.input}
        for name, values in by_name.items():
            all_users = users.get(name, [])
            distinct: list[np.ndarray] = []
            for v in values.values():
                if not any(d.shape == v.shape and d.dtype == v.dtype and np.array_equal(d, v) for d in distinct):
                    distinct.append(v)
            in_place = (name in inits and len(distinct) == 1 and set(all_users) == set(values)
                        and name not in {o.name for o in g.output})
            if in_place:
                inits[name].CopyFrom(numpy_helper.from_array(distinct[0].astype(
                    numpy_helper.to_array(inits[name]).dtype, copy=False), name))
                continue
            base = name if not name.startswith("__empty_") else "split"
            for n, d in enumerate(distinct):
                new = f"{base}_pruned" if n == 0 else f"{base}_pruned{n}"
                while new in taken:
                    new += "_"
                taken.add(new)
                g.initializer.append(numpy_helper.from_array(d, new))
                for (i, k), v in values.items():
                    if v is d or (v.shape == d.shape and np.array_equal(v, d)):
                        self.nodes[i].input[k] = new

    def cleanup(self) -> None:
        """Drop nodes and initializers nobody reads any more; keep graph inputs in sync."""
        g = self.model.graph
        outputs = {o.name for o in g.output}
        while True:
            used = {i for n in g.node for i in n.input} | outputs
            dead = [n for n in g.node if n.output and not any(o in used for o in n.output)
                    and n.op_type in ("Constant", "ConstantOfShape", "Concat", "Reshape", "Cast",
                                      "Transpose", "Slice", "Unsqueeze", "Squeeze", "Gather", "Shape",
                                      "Identity")]
            if not dead:
                break
            for n in dead:
                g.node.remove(n)
        used = {i for n in g.node for i in n.input} | outputs
        for t in [t for t in g.initializer if t.name not in used]:
            g.initializer.remove(t)
        if any(i.name in {t.name for t in self.a.view.model.graph.initializer} for i in g.input):
            # IR < 4 style: initializers are also graph inputs; keep that and refresh the shapes
            keep_inputs = [i for i in g.input if i.name not in self.a.view.initializers]
            for i in list(g.input):
                g.input.remove(i)
            g.input.extend(keep_inputs)
            for t in g.initializer:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del g.value_info[:]

    def check_nonempty(self) -> None:
        """A tensor left with no channel (a producer whose whole span in its group is removed,
        the output of a channel Slice or Split) makes a graph no runtime accepts."""
        for name, lay in self.a.layouts.items():
            if lay.channels and self.touched(name) and len(self.keep(name)) == 0:
                p = self.a.view.producer.get(name)
                where = f", the output of {self.a.view.label(p)}," if p is not None else ""
                groups = sorted({s.group for s in lay.segments if s.group is not None})
                raise PlanError(f"the plan keeps no channel of tensor '{name}'{where} "
                                f"(group {', '.join(map(str, groups))}); keep at least one")

    def run(self) -> onnx.ModelProto:
        self.check_nonempty()
        self.slice_params()
        for u in self.a.updates:
            self.apply_update(u)
        self.write_constants()
        self.cleanup()
        return self.model


def apply_plan(analysis: Analysis, plan: Plan, check: bool = True) -> onnx.ModelProto:
    """Return the pruned model (a new ModelProto); the analysed model is left untouched."""
    plan.validate(analysis)
    model = _Rewriter(analysis, plan).run()
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise PlanError(f"the pruned graph fails shape inference: {str(exc).splitlines()[0]}") from None
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            raise PlanError(f"the pruned graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return model
