"""Channel-group analysis: which channel dimensions must be pruned together, and which cannot.

A *channel group* is a set of channel positions that are removed together with the same kept
indices. Every tensor that carries channels gets a :class:`Layout`: the axis that holds them, the
number of consecutive indices each channel occupies on that axis (``block``: H·W after a Flatten),
and a list of segments, each a contiguous run of some group's channels. Concat joins segment lists,
Slice/Split cut them, a channel Pad adds zero-channel segments, and element-wise ops between two
channel tensors *couple* the aligned segments with a union–find whose nodes carry offsets
(channel ``i`` of node ``a`` is channel ``i + offset`` of its parent). One forward pass over the
nodes in topological order, then one resolution pass: O(nodes + segments · α).

Anything the rules do not know, or that mixes channels (a Reshape across the channel axis, a
Softmax over channels, a graph output, ...), marks the groups it touches as blocked, with the
reason and the node; the CLI prints every such skip.

Each rule also records what the rewrite must change: parameter slices (``ParamSlice``), attribute
or shape-constant updates (``Update``), the edges where a group's channels are consumed
(``ConsumerEdge``) and the compute terms of the cost model (``ComputeTerm``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.graph.view import GraphView, attr

__all__ = ["Segment", "Layout", "ParamSlice", "Update", "ConsumerEdge", "ComputeTerm",
           "Group", "Analysis", "analyze"]


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """``length`` consecutive channels: positions ``start..start+length`` of union-find node
    ``node`` during the pass; after resolution, of group ``group`` (None: not a group)."""
    node: int
    start: int
    length: int
    group: int | None = None


@dataclass(frozen=True)
class Layout:
    axis: int
    block: int
    segments: tuple[Segment, ...]

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass(frozen=True)
class ParamSlice:
    """Input ``input_index`` of node ``node`` is sliced on ``axis`` by the kept channels of
    ``tensor`` (each channel owning ``block`` indices). ``groups`` > 1: a grouped-conv weight,
    whose axis-1 index is relative to the output row's conv group."""
    node: int
    input_index: int
    axis: int
    tensor: str
    block: int = 1
    groups: int = 1
    count_as_param: bool = True


@dataclass(frozen=True)
class Update:
    """An attribute or shape constant that carries a channel count: ``kind`` is one of
    conv_group, pad, slice, split, reshape, resize_sizes."""
    node: int
    kind: str
    tensor: str          # the tensor whose kept channels decide the new value
    axis: int = 1
    extra: tuple = ()


@dataclass(frozen=True)
class ConsumerEdge:
    """Channels of ``tensor`` enter compute node ``node`` at input ``input_index``."""
    tensor: str
    node: int
    input_index: int


@dataclass(frozen=True)
class ComputeTerm:
    """MACs of one Conv/ConvTranspose/Gemm/MatMul: ``coef × channels(in) × channels(out)``;
    ``in_tensor`` None: that side's count is folded into ``coef`` (depthwise, fixed inputs)."""
    node: int
    coef: float
    in_tensor: str | None
    out_tensor: str | None
    in_fixed: int = 1     # channels on the input side when in_tensor is None


@dataclass
class Group:
    """One channel group as reported: its channels, who makes and reads them, and its status."""
    id: int
    channels: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    equal_blocks: int = 1        # grouped conv: keep the same count in each of these blocks
    producer_spans: list[tuple[int, int, int]] = field(default_factory=list)  # node, start, length

    @property
    def prunable(self) -> bool:
        return not self.skip_reasons and self.channels >= 2

    def to_dict(self) -> dict:
        return {"id": self.id, "channels": self.channels, "prunable": self.prunable,
                "producers": self.producers, "consumers": self.consumers,
                "skip_reasons": self.skip_reasons, "equal_blocks": self.equal_blocks}


# ------------------------------------------------------------------------------------------
# union-find with offsets
# ------------------------------------------------------------------------------------------
class _OffsetUnionFind:
    """Nodes are channel spaces; ``offset[a]`` places node a's channel 0 in its parent."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.offset: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.blocked: dict[int, list[str]] = defaultdict(list)

    def add(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.offset.append(0)
        self.lo.append(0)
        self.hi.append(size)
        return len(self.parent) - 1

    def find(self, a: int) -> tuple[int, int]:
        path = []
        while self.parent[a] != a:
            path.append(a)
            a = self.parent[a]
        root, acc = a, 0
        for n in reversed(path):  # compress: offsets relative to the root
            acc += self.offset[n]
            self.parent[n], self.offset[n] = root, acc
        return root, (self.offset[path[0]] if path else 0)

    def union(self, a: int, pa: int, b: int, pb: int) -> str | None:
        """Tie channel ``pa`` of a to channel ``pb`` of b (and the runs after them)."""
        ra, oa = self.find(a)
        rb, ob = self.find(b)
        pa, pb = pa + oa, pb + ob
        if ra == rb:
            return None if pa == pb else "channels are coupled with a shift (inconsistent alignment)"
        d = pa - pb  # rb's channel j is ra's channel j + d
        self.parent[rb], self.offset[rb] = ra, d
        self.lo[ra] = min(self.lo[ra], self.lo[rb] + d)
        self.hi[ra] = max(self.hi[ra], self.hi[rb] + d)
        if rb in self.blocked:
            self.blocked[ra].extend(self.blocked.pop(rb))
        return None


# ------------------------------------------------------------------------------------------
# the pass
# ------------------------------------------------------------------------------------------
UNARY_PASS = {
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Erf", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Dropout",
    "Cast", "Clip", "Not", "IsNaN", "IsInf", "Shrink",
}
SPATIAL_PASS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                "GlobalLpPool", "Upsample", "Resize", "MaxRoiPool"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu",
               "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
HARMLESS = {"Shape", "Size", "Constant", "ConstantOfShape"}
# inputs that are parameters or settings, not data: index -> True when the op is known
_DATA_INPUTS = {"Clip": 1, "Dropout": 1, "Resize": 1, "Upsample": 1, "Pad": 1, "Slice": 1,
                "Split": 1, "Reshape": 1, "Squeeze": 1, "Unsqueeze": 1, "BatchNormalization": 1,
                "InstanceNormalization": 1} | {r: 1 for r in REDUCE}


class _Pass:
    def __init__(self, view: GraphView) -> None:
        self.v = view
        self.uf = _OffsetUnionFind()
        self.layouts: dict[str, Layout] = {}
        self.node_kind: dict[int, tuple[str, int]] = {}    # uf node -> ("producer"|"pad"|"opaque", node idx)
        self.slices: list[ParamSlice] = []
        self.updates: list[Update] = []
        self.edges: list[ConsumerEdge] = []
        self.terms: list[ComputeTerm] = []
        self.multiples: list[tuple[Layout, int, int]] = []  # layout, conv groups, node

    # --- helpers -----------------------------------------------------------------------
    def new_space(self, size: int, kind: str, node: int) -> int:
        n = self.uf.add(size)
        self.node_kind[n] = (kind, node)
        return n

    def block(self, layout: Layout | None, reason: str, node: int | None) -> None:
        if layout is None:
            return
        where = f" at {self.v.label(node)}" if node is not None else ""
        for s in layout.segments:
            r, _ = self.uf.find(s.node)
            msg = reason + where
            if msg not in self.uf.blocked[r]:
                self.uf.blocked[r].append(msg)

    def channel_dim(self, name: str, axis: int) -> int | None:
        s = self.v.shape(name)
        if s is None or axis >= len(s):
            return None
        return s[axis]

    def opaque(self, name: str, axis: int, reason: str, node: int) -> Layout | None:
        """A layout for channels the pass does not track (graph input, after a blocker)."""
        c = self.channel_dim(name, axis)
        if not c:
            return None
        n = self.new_space(c, "opaque", node)
        label = self.v.label(node)
        self.uf.blocked[n].append(reason if label in reason else f"{reason} at {label}")
        lay = Layout(axis, 1, (Segment(n, 0, c),))
        self.layouts[name] = lay
        return lay

    def layout_or_opaque(self, name: str, axis: int, node: int) -> Layout | None:
        lay = self.layouts.get(name)
        if lay is not None or self.v.is_constant(name):
            return lay
        if name in self.v.graph_inputs:
            why = f"channels tied to graph input '{name}'"
        else:
            p = self.v.producer.get(name)
            why = (f"channels of '{name}' come from {self.v.label(p)}, which is not tracked"
                   if p is not None else f"channels of '{name}' are not tracked")
        return self.opaque(name, axis, why, node)

    def couple(self, a: Layout, b: Layout, node: int) -> None:
        """Align two layouts of equal width position by position."""
        if a.channels != b.channels or a.block != b.block:
            self.block(a, f"element-wise op on tensors of {a.channels}×{a.block} and "
                          f"{b.channels}×{b.block} channels", node)
            self.block(b, "mismatched channel coupling", node)
            return
        i = j = 0
        ui = uj = 0  # used length within current segments
        sa, sb = a.segments, b.segments
        while i < len(sa) and j < len(sb):
            run = min(sa[i].length - ui, sb[j].length - uj)
            err = self.uf.union(sa[i].node, sa[i].start + ui, sb[j].node, sb[j].start + uj)
            if err:
                self.block(a, err, node)
            ui += run
            uj += run
            if ui == sa[i].length:
                i, ui = i + 1, 0
            if uj == sb[j].length:
                j, uj = j + 1, 0

    def set(self, name: str, lay: Layout | None) -> None:
        if lay is not None and name:
            self.layouts[name] = lay

    def const_input(self, node: onnx.NodeProto, k: int) -> np.ndarray | None:
        return self.v.constant(node.input[k]) if k < len(node.input) and node.input[k] else None

    # --- generic fallbacks -----------------------------------------------------------------
    def unknown(self, idx: int, node: onnx.NodeProto, why: str | None = None) -> None:
        touched = [self.layouts[i] for i in node.input if i in self.layouts]
        reason = why or f"unsupported op {node.op_type}"
        for lay in touched:
            self.block(lay, reason, idx)

    # --- dispatch -------------------------------------------------------------------------
    def run(self) -> None:
        for idx, node in enumerate(self.v.nodes):
            if node.domain not in ("", "ai.onnx"):
                self.unknown(idx, node, f"custom-domain op {node.domain}::{node.op_type}")
                continue
            op = node.op_type
            if op in HARMLESS:
                continue
            rule = RULES.get(op)
            if rule is None:
                if op in UNARY_PASS:
                    rule = _unary
                elif op in SPATIAL_PASS:
                    rule = _spatial
                elif op in ELEMENTWISE:
                    rule = _elementwise
                elif op in REDUCE:
                    rule = _reduce
            if rule is None:
                self.unknown(idx, node)
            else:
                rule(self, idx, node)
        for out in self.v.graph_outputs:
            self.block(self.layouts.get(out), f"reaches graph output '{out}'", None)


# ------------------------------------------------------------------------------------------
# rules (one function per op family)
# ------------------------------------------------------------------------------------------
def _spatial_size(shape) -> int | None:
    if shape is None or any(d is None for d in shape[2:]):
        return None
    return int(np.prod(shape[2:])) if len(shape) > 2 else 1


def _conv(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    w = p.const_input(node, 1)
    x, y = node.input[0], node.output[0]
    if w is None:
        p.unknown(idx, node, "Conv with a non-constant weight")
        return
    g = int(attr(node, "group", 1))
    c_out, cin_g = w.shape[0], w.shape[1]
    c_in = cin_g * g
    k = int(np.prod(w.shape[2:]))
    out_spatial = _spatial_size(p.v.shape(y))
    lay_x = p.layout_or_opaque(x, 1, idx)
    if lay_x is not None and (lay_x.axis != 1 or lay_x.block != 1 or lay_x.channels != c_in):
        p.block(lay_x, "Conv input channels are not on axis 1", idx)
        lay_x = None
    has_bias = len(node.input) > 2 and node.input[2]
    if g == 1:
        lay_y = Layout(1, 1, (Segment(p.new_space(c_out, "producer", idx), 0, c_out),))
        if lay_x is not None:
            p.edges.append(ConsumerEdge(x, idx, 0))
            p.slices.append(ParamSlice(idx, 1, 1, x))
        p.slices.append(ParamSlice(idx, 1, 0, y))
        p.terms.append(ComputeTerm(idx, (k * out_spatial) if out_spatial is not None else math.nan,
                                   x if lay_x is not None else None, y,
                                   in_fixed=c_in))
    elif g == c_in and c_out == c_in and lay_x is not None:
        lay_y = Layout(1, 1, lay_x.segments)           # depthwise: output channel i is input i
        p.slices.append(ParamSlice(idx, 1, 0, y))
        p.updates.append(Update(idx, "conv_group", y))
        p.terms.append(ComputeTerm(idx, (k * out_spatial) if out_spatial is not None else math.nan,
                                   None, y, in_fixed=1))
    elif lay_x is not None and c_in % g == 0 and c_out % g == 0 and g < c_in:
        lay_y = Layout(1, 1, (Segment(p.new_space(c_out, "producer", idx), 0, c_out),))
        p.edges.append(ConsumerEdge(x, idx, 0))
        p.slices.append(ParamSlice(idx, 1, 0, y))
        p.slices.append(ParamSlice(idx, 1, 1, x, groups=g))
        p.multiples.append((lay_x, g, idx))
        p.multiples.append((lay_y, g, idx))
        p.terms.append(ComputeTerm(idx, (k * out_spatial / g) if out_spatial is not None else math.nan,
                                   x, y, in_fixed=c_in))
    else:
        if lay_x is not None:
            p.block(lay_x, f"Conv with group={g} and {c_in}→{c_out} channels (depthwise multiplier)", idx)
        lay_y = p.opaque(y, 1, f"output of {p.v.label(idx)} (group={g}) is not tracked", idx)
        p.terms.append(ComputeTerm(idx, (k * out_spatial / g * c_in) if out_spatial is not None else math.nan,
                                   None, None, in_fixed=c_out))
        return
    if has_bias:
        p.slices.append(ParamSlice(idx, 2, 0, y))
    p.set(y, lay_y)


def _conv_transpose(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    w = p.const_input(node, 1)
    g = int(attr(node, "group", 1))
    if w is None or g != 1:
        p.unknown(idx, node, "ConvTranspose with group>1 or a non-constant weight")
        p.opaque(node.output[0], 1, f"output of {p.v.label(idx)} is not tracked", idx)
        return
    x, y = node.input[0], node.output[0]
    c_in, c_out = w.shape[0], w.shape[1]
    k = int(np.prod(w.shape[2:]))
    in_spatial = _spatial_size(p.v.shape(x))
    lay_x = p.layout_or_opaque(x, 1, idx)
    if lay_x is not None and (lay_x.axis != 1 or lay_x.block != 1):
        p.block(lay_x, "ConvTranspose input channels are not on axis 1", idx)
        lay_x = None
    if lay_x is not None:
        p.edges.append(ConsumerEdge(x, idx, 0))
        p.slices.append(ParamSlice(idx, 1, 0, x))
    p.slices.append(ParamSlice(idx, 1, 1, y))
    if len(node.input) > 2 and node.input[2]:
        p.slices.append(ParamSlice(idx, 2, 0, y))
    p.terms.append(ComputeTerm(idx, (k * in_spatial) if in_spatial is not None else math.nan,
                               x if lay_x is not None else None, y, in_fixed=c_in))
    p.set(y, Layout(1, 1, (Segment(p.new_space(c_out, "producer", idx), 0, c_out),)))


def _gemm(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    a, y = node.input[0], node.output[0]
    w = p.const_input(node, 1)
    trans_a, trans_b = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    if w is None or trans_a:
        p.unknown(idx, node, "Gemm with transA or a non-constant B")
        p.opaque(y, 1, f"output of {p.v.label(idx)} is not tracked", idx)
        return
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    k_in, n_out = w.shape[in_axis], w.shape[out_axis]
    lay_a = p.layout_or_opaque(a, 1, idx)
    if lay_a is not None and (lay_a.axis != 1 or lay_a.channels * lay_a.block != k_in):
        p.block(lay_a, "Gemm input features do not match its channels", idx)
        lay_a = None
    if lay_a is not None:
        p.edges.append(ConsumerEdge(a, idx, 0))
        p.slices.append(ParamSlice(idx, 1, in_axis, a, block=lay_a.block))
    p.slices.append(ParamSlice(idx, 1, out_axis, y))
    c = p.const_input(node, 2)
    if c is not None and c.ndim >= 1 and c.shape[-1] == n_out and n_out > 1:
        p.slices.append(ParamSlice(idx, 2, c.ndim - 1, y))
    elif len(node.input) > 2 and node.input[2] and c is None:
        p.unknown(idx, node, "Gemm with a non-constant C")
    p.terms.append(ComputeTerm(idx, float(lay_a.block if lay_a is not None else 1),
                               a if lay_a is not None else None, y, in_fixed=k_in))
    p.set(y, Layout(1, 1, (Segment(p.new_space(n_out, "producer", idx), 0, n_out),)))


def _matmul(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    a, y = node.input[0], node.output[0]
    w = p.const_input(node, 1)
    ra = p.v.rank(a)
    if w is None or w.ndim != 2 or ra is None or ra < 2:
        p.unknown(idx, node, "MatMul between two activations (or with a batched weight)")
        return
    lay_a = p.layout_or_opaque(a, ra - 1, idx)
    if lay_a is not None and (lay_a.axis != ra - 1 or lay_a.channels * lay_a.block != w.shape[0]):
        p.block(lay_a, "MatMul input features are not on the last axis", idx)
        lay_a = None
    if lay_a is not None:
        p.edges.append(ConsumerEdge(a, idx, 0))
        p.slices.append(ParamSlice(idx, 1, 0, a, block=lay_a.block))
    p.slices.append(ParamSlice(idx, 1, 1, y))
    ys = p.v.shape(y)
    rows = float(np.prod(ys[1:-1])) if ys and all(d is not None for d in ys[1:-1]) else math.nan
    p.terms.append(ComputeTerm(idx, rows * (lay_a.block if lay_a is not None else 1),
                               a if lay_a is not None else None, y, in_fixed=w.shape[0]))
    p.set(y, Layout(ra - 1, 1, (Segment(p.new_space(w.shape[1], "producer", idx), 0, w.shape[1]),)))


def _unary(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    for k in range(1, len(node.input)):       # Clip bounds, Dropout ratio: scalars only
        v = p.const_input(node, k)
        if node.input[k] and (v is None or v.size != 1) and node.op_type != "Dropout":
            p.block(lay, f"{node.op_type} with a non-scalar input '{node.input[k]}'", idx)
    p.set(node.output[0], lay)


def _spatial(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    if lay.axis != 1 or lay.block != 1:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    if node.op_type in ("Resize", "Upsample"):
        scales_idx = 2 if node.op_type == "Resize" and p.v.opset >= 11 else 1
        scales = p.const_input(node, scales_idx)
        if scales is None and node.op_type == "Upsample" and p.v.opset < 9:
            scales = np.array(attr(node, "scales", []))
        if scales is not None and scales.size > 1 and scales[1] != 1:
            p.block(lay, f"{node.op_type} scales the channel axis", idx)
            return
        sizes = p.const_input(node, 3) if node.op_type == "Resize" else None
        if sizes is not None and sizes.size > 1:
            p.updates.append(Update(idx, "resize_sizes", node.input[0], 1))
        elif node.op_type == "Resize" and len(node.input) > 3 and node.input[3] and sizes is None:
            p.block(lay, "Resize with computed output sizes", idx)
            return
    p.set(node.output[0], lay)


def _elementwise(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ry = p.v.rank(y)
    ys = p.v.shape(y)
    lays = []
    for k, name in enumerate(node.input):
        if name in p.layouts:
            lay = p.layouts[name]
            shift = (ry or 0) - (p.v.rank(name) or 0)
            lays.append((k, Layout(lay.axis + shift, lay.block, lay.segments)))
    # a one-channel tensor broadcast over the channels (a spatial attention map [N,1,H,W]) is
    # read whole by every output channel: nothing to couple; the rewrite refuses to empty it
    lays = [(k, l) for k, l in lays
            if not (ys is not None and l.channels * l.block == 1 and l.axis < len(ys)
                    and ys[l.axis] is not None and ys[l.axis] > 1)]
    if not lays:
        return
    axis, block = lays[0][1].axis, lays[0][1].block
    width = lays[0][1].channels * block
    if ys is None or ys[axis] != width:
        for _, lay in lays:
            p.block(lay, f"{node.op_type} broadcasts a channel tensor", idx)
        return
    base = lays[0][1]
    for _, lay in lays[1:]:
        if lay.axis != axis:
            p.block(base, f"{node.op_type} aligns channels with another axis", idx)
            p.block(lay, f"{node.op_type} aligns channels with another axis", idx)
            return
        p.couple(base, lay, idx)
    with_layout = {k for k, _ in lays}
    for k, name in enumerate(node.input):
        if k in with_layout or not name:
            continue
        shape = p.v.shape(name)
        rk = len(shape) if shape is not None else None
        if rk is None:
            p.block(base, f"{node.op_type} with input '{name}' of unknown shape", idx)
            continue
        pos = axis - (ry - rk)
        dim = shape[pos] if 0 <= pos < rk else 1
        if dim == 1:
            continue
        if p.v.is_constant(name) and dim == width:
            p.slices.append(ParamSlice(idx, k, pos, y, block=block))
            continue
        other = p.layout_or_opaque(name, pos, idx) if dim == width and block == 1 else None
        if other is not None:
            p.couple(base, Layout(axis, block, other.segments), idx)
        else:
            p.block(base, f"{node.op_type} mixes channels with '{name}'", idx)
    p.set(y, base)


def _batchnorm(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    if len([o for o in node.output if o]) > 1:
        p.block(lay, "BatchNormalization in training mode", idx)
        return
    if lay.axis != 1 or lay.block != 1:
        p.block(lay, "BatchNormalization over a non-channel axis", idx)
        return
    last = 5 if node.op_type == "BatchNormalization" else 3
    for k in range(1, min(last, len(node.input))):
        if not p.v.is_constant(node.input[k]):
            p.block(lay, f"{node.op_type} with a non-constant parameter '{node.input[k]}'", idx)
            return
        p.slices.append(ParamSlice(idx, k, 0, node.output[0], count_as_param=k <= 2))
    p.set(node.output[0], lay)


def _concat(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ry = p.v.rank(y) or 0
    axis = int(attr(node, "axis", 1))
    axis = axis + ry if axis < 0 else axis
    present = [p.layouts[i] for i in node.input if i in p.layouts]
    if not present:
        return
    if all(l.axis != axis for l in present):   # concatenation along another axis: channels align
        base = present[0]
        for lay in present[1:]:
            if lay.axis != base.axis:
                p.block(lay, "Concat of tensors with channels on different axes", idx)
                p.block(base, "Concat of tensors with channels on different axes", idx)
                return
            p.couple(base, lay, idx)
        for name in node.input:
            if name not in p.layouts:
                p.block(base, f"Concat with untracked tensor '{name}'", idx)
        p.set(y, base)
        return
    segments, block = [], None
    for name in node.input:
        lay = p.layouts.get(name) or p.layout_or_opaque(name, axis, idx)
        if lay is None or lay.axis != axis or (block is not None and lay.block != block):
            for l in present:
                p.block(l, "Concat of inputs whose channel layouts differ", idx)
            return
        block = lay.block
        segments.extend(lay.segments)
    p.set(y, Layout(axis, block or 1, tuple(segments)))


def _cut(lay: Layout, start: int, stop: int) -> tuple[Segment, ...]:
    """Segments covering channel positions ``start..stop`` of a layout."""
    out, pos = [], 0
    for s in lay.segments:
        a, b = max(start, pos), min(stop, pos + s.length)
        if a < b:
            out.append(Segment(s.node, s.start + a - pos, b - a))
        pos += s.length
    return tuple(out)


def _split(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    axis = int(attr(node, "axis", 0))
    axis = axis + rank if axis < 0 else axis
    if axis != lay.axis:
        for o in node.output:
            p.set(o, lay)
        return
    sizes = [p.channel_dim(o, axis) for o in node.output]
    if lay.block != 1 or any(s is None for s in sizes):
        p.block(lay, "Split of the channel axis with unknown sizes", idx)
        return
    pos = 0
    for o, s in zip(node.output, sizes):
        p.set(o, Layout(axis, 1, _cut(lay, pos, pos + s)))
        pos += s
    p.updates.append(Update(idx, "split", node.input[0], axis, tuple(sizes)))


def _slice_params(p: _Pass, node: onnx.NodeProto):
    if p.v.opset < 10:
        return (attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None)
    vals = [p.const_input(node, k) for k in range(1, 5)]
    if vals[0] is None or vals[1] is None or (len(node.input) > 3 and node.input[3] and vals[2] is None) \
            or (len(node.input) > 4 and node.input[4] and vals[3] is None):
        return None
    return tuple(None if v is None else [int(t) for t in v.ravel()] for v in vals)


def _slice(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    params = _slice_params(p, node)
    if params is None:
        p.block(lay, "Slice with computed bounds", idx)
        return
    starts, ends, axes, steps = params
    rank = p.v.rank(node.input[0]) or 0
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
    steps = steps or [1] * len(starts)
    if lay.axis not in axes:
        p.set(node.output[0], lay)
        return
    i = axes.index(lay.axis)
    c = lay.channels
    if steps[i] != 1 or lay.block != 1:
        p.block(lay, "Slice of the channel axis with a step", idx)
        return
    a, b = starts[i], ends[i]
    a = max(0, min(c, a + c if a < 0 else a))
    b = max(0, min(c, b + c if b < 0 else b))
    p.set(node.output[0], Layout(lay.axis, 1, _cut(lay, a, max(a, b))))
    p.updates.append(Update(idx, "slice", node.input[0], lay.axis, (i, a, max(a, b))))


def _pad(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    pads = attr(node, "pads") if p.v.opset < 11 else p.const_input(node, 1)
    axes = p.const_input(node, 3) if p.v.opset >= 18 and len(node.input) > 3 and node.input[3] else None
    if pads is None:
        p.block(lay, "Pad with computed pads", idx)
        return
    pads = [int(v) for v in np.asarray(pads).ravel()]
    axes = list(range(rank)) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    n = len(axes)
    if lay.axis not in axes:
        p.set(node.output[0], lay)
        return
    i = axes.index(lay.axis)
    before, after = pads[i], pads[i + n]
    if before < 0 or after < 0 or lay.block != 1:
        p.block(lay, "Pad that crops the channel axis", idx)
        return
    mode = attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        p.block(lay, "non-constant Pad of the channel axis", idx)
        return
    segs = list(lay.segments)
    if before:
        segs.insert(0, Segment(p.new_space(before, "pad", idx), 0, before))
    if after:
        segs.append(Segment(p.new_space(after, "pad", idx), 0, after))
    out = Layout(lay.axis, 1, tuple(segs))
    p.set(node.output[0], out)
    p.updates.append(Update(idx, "pad", node.output[0], lay.axis, (i, n, before, after)))


def _flatten(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    shape = p.v.shape(node.input[0])
    a = int(attr(node, "axis", 1))
    a = a + len(shape) if a < 0 else a
    c = lay.axis
    if shape is None or any(d is None for d in shape[a:]) or c < a or np.prod(shape[a:c]) != 1:
        p.block(lay, "Flatten that mixes the channel axis with another", idx)
        return
    p.set(node.output[0], Layout(1, lay.block * int(np.prod(shape[c + 1:])), lay.segments))


def _reshape_target(xs, target, allowzero: int) -> list[int] | None:
    """The output shape of a Reshape from its (constant) target, as the spec defines it."""
    if xs is None or any(d is None for d in xs):
        return None
    out = [int(xs[i]) if (t == 0 and not allowzero) else int(t) for i, t in enumerate(target.tolist())]
    if out.count(-1) == 1:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or int(np.prod(xs)) % known:
            return None
        out[out.index(-1)] = int(np.prod(xs)) // known
    return out if -1 not in out else None


def _reshape(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    target = p.const_input(node, 1)
    xs, ys = p.v.shape(node.input[0]), p.v.shape(node.output[0])
    if target is None:
        p.block(lay, "Reshape with a computed target shape", idx)
        return
    if ys is None or any(d is None for d in ys):
        ys = _reshape_target(xs, target, int(attr(node, "allowzero", 0)))
    if xs is None or ys is None or any(d is None for d in xs) or any(d is None for d in ys):
        p.block(lay, "Reshape with unknown shapes", idx)
        return
    c = lay.axis
    before = int(np.prod(xs[:c]))
    chunk = lay.block * int(np.prod(xs[c + 1:]))      # elements per channel, contiguous
    for c2 in range(len(ys)):
        if int(np.prod(ys[:c2])) != before:
            continue
        rest = int(np.prod(ys[c2 + 1:]))
        if chunk % rest == 0 and ys[c2] == lay.channels * (chunk // rest):
            p.set(node.output[0], Layout(c2, chunk // rest, lay.segments))
            if int(target[c2]) not in (-1, 0):
                p.updates.append(Update(idx, "reshape", node.input[0], c2, (chunk // rest,)))
            elif int(target[c2]) == 0 and c2 != c:
                p.block(lay, "Reshape copies a channel dimension to another axis", idx)
            return
    p.block(lay, f"Reshape {list(xs)}→{list(ys)} mixes the channel axis", idx)


def _transpose(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    perm = attr(node, "perm") or list(range(rank))[::-1]
    p.set(node.output[0], Layout(list(perm).index(lay.axis), lay.block, lay.segments))


def _axes_of(p: _Pass, node: onnx.NodeProto, rank: int, input_from: int):
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = p.v.constant(node.input[1])
        if v is None:
            return "computed"
        axes = v.ravel().tolist()
        if p.v.opset < input_from:
            axes = attr(node, "axes")
    return None if axes is None else sorted(int(a) + rank if a < 0 else int(a) for a in axes)


def _squeeze(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank_in, rank_out = p.v.rank(node.input[0]), p.v.rank(node.output[0])
    if node.op_type == "Squeeze":
        axes = _axes_of(p, node, rank_in or 0, 13)
        if axes == "computed" or axes is None or lay.axis in axes:
            p.block(lay, "Squeeze of unknown axes or of the channel axis", idx)
            return
        p.set(node.output[0], Layout(lay.axis - sum(a < lay.axis for a in axes), lay.block, lay.segments))
    else:
        axes = _axes_of(p, node, rank_out or 0, 13)
        if axes in ("computed", None):
            p.block(lay, "Unsqueeze with computed axes", idx)
            return
        ax = lay.axis
        for a in axes:          # axes refer to the output; insert in increasing order
            if a <= ax:
                ax += 1
        p.set(node.output[0], Layout(ax, lay.block, lay.segments))


def _reduce(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    axes = _axes_of(p, node, rank, 18 if node.op_type != "ReduceSum" else 13)
    if axes == "computed" or axes is None or lay.axis in axes or lay.block != 1:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    keep = int(attr(node, "keepdims", 1))
    ax = lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)
    p.set(node.output[0], Layout(ax, 1, lay.segments))


def _softmax(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    lay = p.layouts.get(node.input[0])
    if lay is None:
        return
    rank = p.v.rank(node.input[0]) or 0
    default = -1 if p.v.opset >= 13 else 1
    a = int(attr(node, "axis", default))
    a = a + rank if a < 0 else a
    covers = lay.axis == a if p.v.opset >= 13 else lay.axis >= a
    if covers:
        p.block(lay, f"{node.op_type} over the channel axis", idx)
        return
    p.set(node.output[0], lay)


def _maxpool(p: _Pass, idx: int, node: onnx.NodeProto) -> None:
    if len([o for o in node.output if o]) > 1:
        p.unknown(idx, node, "MaxPool with indices output")
        return
    _spatial(p, idx, node)


RULES = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul,
    "BatchNormalization": _batchnorm, "InstanceNormalization": _batchnorm,
    "Concat": _concat, "Split": _split, "Slice": _slice, "Pad": _pad, "Flatten": _flatten,
    "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _squeeze,
    "Softmax": _softmax, "LogSoftmax": _softmax, "Hardmax": _softmax, "MaxPool": _maxpool,
}


# ------------------------------------------------------------------------------------------
# resolution
# ------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """Everything the later stages need: groups, resolved layouts and the rewrite records."""
    view: GraphView
    groups: list[Group]
    layouts: dict[str, Layout]            # segments carry resolved group ids
    slices: list[ParamSlice]
    updates: list[Update]
    edges: list[ConsumerEdge]
    terms: list[ComputeTerm]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def layout(self, tensor: str) -> Layout | None:
        return self.layouts.get(tensor)

    def edge_groups(self, edge: ConsumerEdge) -> set[int]:
        lay = self.layouts.get(edge.tensor)
        return {s.group for s in lay.segments if s.group is not None} if lay else set()


def _resolve(p: _Pass) -> Analysis:
    uf, v = p.uf, p.v
    roots: dict[int, list[int]] = defaultdict(list)
    for n in range(len(uf.parent)):
        roots[uf.find(n)[0]].append(n)
    # a root becomes a reported group when a producer lives in it; number them in graph order
    order = []
    for r, members in roots.items():
        prod = [m for m in members if p.node_kind[m][0] == "producer"]
        if prod:
            order.append((min(p.node_kind[m][1] for m in prod), r))
    order.sort()
    gid = {r: i for i, (_, r) in enumerate(order)}
    groups: list[Group] = []
    for _, r in order:
        lo = uf.lo[r]
        g = Group(id=gid[r], channels=uf.hi[r] - lo, skip_reasons=list(uf.blocked.get(r, [])))
        for m in sorted(roots[r]):
            kind, node = p.node_kind[m]
            if kind == "producer":
                g.producers.append(v.label(node))
                g.producer_spans.append((node, uf.find(m)[1] - lo, uf.hi[m] - uf.lo[m]))
        groups.append(g)

    def seg(s: Segment) -> Segment:
        r, off = uf.find(s.node)
        if r in gid:
            return Segment(s.node, s.start + off - uf.lo[r], s.length, gid[r])
        return Segment(s.node, s.start, s.length, None)

    layouts = {t: Layout(l.axis, l.block, tuple(seg(s) for s in l.segments)) for t, l in p.layouts.items()}
    for e in p.edges:
        for gi in {s.group for s in layouts[e.tensor].segments if s.group is not None}:
            label = v.label(e.node)
            if label not in groups[gi].consumers:
                groups[gi].consumers.append(label)
    for lay, ngroups, node in p.multiples:
        segs = [seg(s) for s in lay.segments]
        gids = {s.group for s in segs}
        if len(segs) != 1 or None in gids or segs[0].length != groups[segs[0].group].channels:
            for gi in gids - {None}:
                groups[gi].skip_reasons.append(
                    f"grouped Conv {v.label(node)} reads only part of the group")
            continue
        g = groups[segs[0].group]
        g.equal_blocks = g.equal_blocks * ngroups // math.gcd(g.equal_blocks, ngroups)
    for g in groups:
        if g.channels < 2 and not g.skip_reasons:
            g.skip_reasons.append("a single channel")
    return Analysis(v, groups, layouts, p.slices, p.updates, p.edges, p.terms)


def analyze(model: onnx.ModelProto) -> Analysis:
    """Find the channel groups of a model (see the module docstring)."""
    view = GraphView(model)
    p = _Pass(view)
    p.run()
    return _resolve(p)
