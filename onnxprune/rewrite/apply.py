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

from onnxprune.analysis import Analysis, ParamSlice, Update, kept_positions
from onnxprune.analysis.emptiable import emptying_of
from onnxprune.errors import PlanError
from onnxprune.graph.edit import ModelEdit, keep_io_declarations
from onnxprune.graph.view import StoredWeight, attr
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


_DEAD_WHEN_UNUSED = {"Constant", "ConstantOfShape", "Concat", "Reshape", "Cast", "Transpose", "Slice",
                     "Unsqueeze", "Squeeze", "Gather", "Shape", "Identity"}


class _Rewriter:
    def __init__(self, analysis: Analysis, plan: Plan) -> None:
        self.a = analysis
        self.kept = plan.kept()
        self.edit = ModelEdit(analysis.view.model, analysis.view)
        self.new_values: dict[tuple[int, int], np.ndarray] = {}
        self._keep_cache: dict[str, np.ndarray] = {}
        self.emptied = emptying_of(analysis, [g.id for g in plan.groups if g.channels and not g.kept])
        self.dropped = {i for e in self.emptied.values() for i in e.writers + e.readers}

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
            if node in self.dropped or not any(self.touched(s.tensor) for s in slices):
                continue
            name = self.a.view.nodes[node].input[k]
            stored = self.a.view.stored_weight(name)
            if stored is None or stored.via is None:
                self._put((node, k), self._sliced(self.a.view.constant(name), slices))
            else:
                self._slice_stored(stored, slices)

    def _sliced(self, value: np.ndarray, slices: list[ParamSlice]) -> np.ndarray:
        """``value`` with every slice of one input applied (any dtype: indexing only)."""
        original_shape = value.shape
        for s in slices:
            if s.groups == 1:
                value = _take(value, s, self.keep(s.tensor), 0)
        for s in (x for x in slices if x.groups > 1):
            row = next(x for x in slices if x.axis == 0)
            value = _grouped_weight(value, self.keep(row.tensor), self.keep(s.tensor),
                                    original_shape[0], original_shape[1] * s.groups, s.groups)
        return np.ascontiguousarray(value)

    def _slice_stored(self, stored: StoredWeight, slices: list[ParamSlice]) -> None:
        """Slice the initializer behind a Cast or DequantizeLinear in its own dtype; a per-axis
        scale and zero-point are sliced with the quantized axis."""
        v = self.a.view
        self._put((stored.via, 0), self._sliced(v.constant(stored.data), slices))
        on_axis = [s for s in slices if stored.axis is not None and s.axis == stored.axis]
        if not on_axis:
            return
        if stored.block_size or any(s.groups > 1 for s in on_axis):   # refused by the analysis
            raise PlanError(f"weight '{v.nodes[stored.via].output[0]}' is quantized along the pruned axis "
                            f"in blocks or groups; it cannot be sliced in its stored dtype")
        params = [(1, stored.scale)] + ([(2, stored.zero_point)] if stored.zero_point else [])
        for k, name in params:
            vec = v.constant(name)
            self._put((stored.via, k), self._sliced(vec, [ParamSlice(stored.via, k, 0, s.tensor, s.block)
                                                          for s in on_axis]))

    def _put(self, key: tuple[int, int], value: np.ndarray) -> None:
        """Record the new value of input ``key``; two readers asking different values of one
        Cast / DequantizeLinear (a shared weight) cannot both be served."""
        old = self.new_values.get(key)
        if old is not None and (old.shape != value.shape or not np.array_equal(old, value)):
            raise PlanError(f"input {key[1]} of node {self.a.view.label(key[0])} must be sliced in two "
                            f"different ways (a weight shared by two pruned layers)")
        self.new_values[key] = value

    # --- attributes and shape constants ---------------------------------------------------
    def _set_input(self, idx: int, k: int, value: np.ndarray) -> None:
        self.new_values[(idx, k)] = value

    def apply_update(self, u: Update) -> None:
        if u.node in self.dropped or not self.touched(u.tensor):
            return
        node = self.a.view.nodes[u.node]      # the original node: read its attributes and inputs
        keep = self.keep(u.tensor)
        opset = self.a.view.opset
        if u.kind == "conv_group":
            self.edit.set_attribute(u.node, "group", int(len(keep)))
        elif u.kind == "pad":
            self._update_pad(u, node, keep)
        elif u.kind == "slice":
            self._update_slice(u, node, keep)
        elif u.kind == "split":
            bounds = np.cumsum((0,) + tuple(u.extra))
            sizes = [int(np.sum((keep >= lo) & (keep < hi))) for lo, hi in zip(bounds[:-1], bounds[1:])]
            if min(sizes) == 0:
                raise PlanError(f"the plan empties an output of Split {self.a.view.label(u.node)}")
            if opset < 13:
                self.edit.set_attribute(u.node, "split", sizes)
            else:
                self.edit.remove_attribute(u.node, "num_outputs")
                self._set_input(u.node, 1, np.array(sizes, np.int64))
        elif u.kind == "reshape":     # extra: (block, entries that copy the input's dimension)
            block, copies = u.extra
            target = self.a.view.constant(node.input[1]).copy()
            target[list(copies)] = 0
            target[u.axis] = len(keep) * block
            self._set_input(u.node, 1, target)
        elif u.kind == "shape_entry":        # entry u.axis of constant input extra[0] (Expand targets)
            k, block = u.extra
            values = self.a.view.constant(node.input[k]).copy()
            values.reshape(-1)[u.axis] = len(keep) * block
            self._set_input(u.node, k, values)
        elif u.kind == "resize_sizes":
            sizes = self.a.view.constant(node.input[3]).copy()
            sizes[u.axis] = len(keep)
            self._set_input(u.node, 3, sizes)
        else:  # pragma: no cover - analysis emits only the kinds above
            raise PlanError(f"unknown update kind {u.kind}")

    def _update_pad(self, u: Update, node: onnx.NodeProto, keep: np.ndarray) -> None:
        """A channel Pad keeps the padding channels; only the kept data channels shrink."""
        i, n, before, after = u.extra
        c = self.a.layouts[u.tensor].channels
        nb = int(np.sum(keep < before))
        na = int(np.sum(keep >= c - after))
        if self.a.view.opset < 11:
            pads = list(attr(node, "pads"))
            pads[i], pads[i + n] = nb, na
            self.edit.set_attribute(u.node, "pads", pads)
        else:
            pads = self.a.view.constant(node.input[1]).copy()
            pads[i], pads[i + n] = nb, na
            self._set_input(u.node, 1, pads.astype(np.int64))

    def _update_slice(self, u: Update, node: onnx.NodeProto, keep: np.ndarray) -> None:
        """A channel Slice's bounds count the kept positions before them."""
        i, start, stop = u.extra
        ns, ne = int(np.sum(keep < start)), int(np.sum(keep < stop))
        if self.a.view.opset < 10:
            starts, ends = list(attr(node, "starts")), list(attr(node, "ends"))
            starts[i], ends[i] = ns, ne
            self.edit.set_attribute(u.node, "starts", starts)
            self.edit.set_attribute(u.node, "ends", ends)
        else:
            for k, v in ((1, ns), (2, ne)):
                arr = self.a.view.constant(node.input[k]).copy()
                arr[i] = v
                self._set_input(u.node, k, arr)

    # --- writing constants back -----------------------------------------------------------
    def write_constants(self) -> None:
        """Write the new constant inputs: in place when every reader of an initializer gets the same
        new value, else as new initializers, one per distinct value."""
        v = self.a.view
        by_name: dict[str, dict[tuple[int, int], np.ndarray]] = defaultdict(dict)
        for (i, k), value in self.new_values.items():
            name = v.nodes[i].input[k] if k < len(v.nodes[i].input) else ""
            by_name[name or f"__empty_{i}_{k}"][(i, k)] = value
        for name, values in by_name.items():
            distinct: list[np.ndarray] = []
            for value in values.values():
                if not any(d.shape == value.shape and d.dtype == value.dtype and np.array_equal(d, value)
                           for d in distinct):
                    distinct.append(value)
            in_place = (name in v.initializers and len(distinct) == 1
                        and set(v.consumers.get(name, [])) == set(values) and name not in v.graph_outputs)
            if in_place:
                self.edit.replace_initializer(name, distinct[0])
                continue
            base = name if not name.startswith("__empty_") else "split"
            for n, d in enumerate(distinct):
                new = self.edit.constant(d, f"{base}_pruned" if n == 0 else f"{base}_pruned{n}")
                for (i, k), value in values.items():
                    if value is d or (value.shape == d.shape and np.array_equal(value, d)):
                        self.edit.replace_input(i, k, new)

    def cleanup(self) -> None:
        """Drop nodes and initializers nobody reads any more; keep graph inputs in sync."""
        self.edit.cleanup(_DEAD_WHEN_UNUSED)

    def check_nonempty(self) -> None:
        """A tensor left with no channel (a producer whose whole span in its group is removed,
        the output of a channel Slice or Split) makes a graph no runtime accepts."""
        for name, lay in self.a.layouts.items():
            if lay.channels and self.touched(name) and len(self.keep(name)) == 0 \
                    and self.a.view.producer.get(name) not in self.dropped:
                p = self.a.view.producer.get(name)
                where = f", the output of {self.a.view.label(p)}," if p is not None else ""
                groups = sorted({s.group for s in lay.segments if s.group is not None})
                raise PlanError(f"the plan keeps no channel of tensor '{name}'{where} "
                                f"(group {', '.join(map(str, groups))}); keep at least one")

    def remove_emptied(self) -> None:
        """Groups that keep no channel (analysis.emptiable): each convolution reading one becomes
        its bias, a ``[1, C, 1, …]`` constant its joins broadcast; the nodes writing it go."""
        v = self.a.view
        for e in self.emptied.values():
            for r in e.readers:
                node = v.nodes[r]
                out = node.output[0]
                c_out, rank = v.shape(node.input[1])[0], v.rank(out)
                bias = v.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                dtype = onnx.helper.tensor_dtype_to_np_dtype(v.dtypes[out])
                value = np.zeros(c_out, dtype) if bias is None else np.asarray(bias, dtype)
                if out in self.a.layouts:                   # its output channels may be pruned too
                    value = value[self.keep(out)]
                const = self.edit.constant(value.reshape([1, len(value)] + [1] * (rank - 2)), f"{out}_emptied")
                old = self.edit.nodes[r].outputs[0]
                for user, k in list(old.uses()):
                    user.replace_input_with(k, const)
            for i in sorted(e.readers + e.writers, reverse=True):
                self.edit.remove_node(self.edit.nodes[i])

    def run(self) -> onnx.ModelProto:
        self.check_nonempty()
        self.slice_params()
        for u in self.a.updates:
            self.apply_update(u)
        self.write_constants()
        self.remove_emptied()
        self.cleanup()
        return self.edit.to_proto()


def apply_plan(analysis: Analysis, plan: Plan, check: bool = True) -> onnx.ModelProto:
    """Return the pruned model (a new ModelProto); the analysed model is left untouched."""
    plan.validate(analysis)
    model = _Rewriter(analysis, plan).run()
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise PlanError(f"the pruned graph fails shape inference: {str(exc).splitlines()[0]}") from None
    model = keep_io_declarations(model, analysis.view.model)
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            raise PlanError(f"the pruned graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return model
