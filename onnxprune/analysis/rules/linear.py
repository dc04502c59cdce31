"""Rules for Gemm and MatMul with a constant weight."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import ComputeTerm, ConsumerEdge, Layout, ParamSlice, Segment
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def gemm(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
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


def matmul(p: ChannelPass, idx: int, node: onnx.NodeProto, parts: int = 1) -> None:
    """``parts`` > 1: the output columns are that many equal parts whose column j is one unit
    (a fused gate/up projection, see ``rules.gated``)."""
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
    unit = w.shape[1] // parts
    space = p.new_space(unit, "producer", idx)
    p.set(y, Layout(ra - 1, 1, tuple(Segment(space, 0, unit) for _ in range(parts))))
