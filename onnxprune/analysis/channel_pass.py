"""The forward pass of the analysis: one visit per node in graph order, each op handled by its rule
(see ``onnxprune.analysis.rules``); the pass holds the layouts and the records the rules write."""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analysis.records import ComputeTerm, ConsumerEdge, Layout, ParamSlice, Segment, Update
from onnxprune.analysis.rules import HARMLESS, rule_for
from onnxprune.analysis.rules.quant import refuse_unsliceable_weights
from onnxprune.analysis.union_find import OffsetUnionFind
from onnxprune.graph.view import GraphView

__all__ = ["ChannelPass"]


class ChannelPass:
    def __init__(self, view: GraphView) -> None:
        self.v = view
        self.uf = OffsetUnionFind()
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

    def block_subgraph_reads(self, idx: int) -> None:
        """Tensors read inside this node's subgraphs (If/Loop/Scan bodies) are consumed where the
        pass does not look: their groups cannot be pruned."""
        for name, readers in self.v.subgraph_reads.items():
            if idx in readers and name in self.layouts:
                op = self.v.nodes[idx].op_type
                self.block(self.layouts[name], f"'{name}' is read inside a subgraph of {op}", idx)

    # --- dispatch -------------------------------------------------------------------------
    def run(self) -> None:
        for idx, node in enumerate(self.v.nodes):
            if node.domain not in ("", "ai.onnx"):
                self.unknown(idx, node, f"custom-domain op {node.domain}::{node.op_type}")
                continue
            self.block_subgraph_reads(idx)
            op = node.op_type
            if op in HARMLESS:
                continue
            rule = rule_for(op)
            if rule is None:
                self.unknown(idx, node)
            else:
                rule(self, idx, node)
        refuse_unsliceable_weights(self)
        for out in self.v.graph_outputs:
            self.block(self.layouts.get(out), f"reaches graph output '{out}'", None)
