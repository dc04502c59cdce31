"""Rules for Conv and ConvTranspose: new channel spaces, weight slices, MACs."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.analysis.records import ComputeTerm, ConsumerEdge, Layout, ParamSlice, Segment, Update
from onnxprune.graph.view import attr

if TYPE_CHECKING:
    from onnxprune.analysis.channel_pass import ChannelPass


def spatial_size(shape) -> int | None:
    if shape is None or any(d is None for d in shape[2:]):
        return None
    return int(np.prod(shape[2:])) if len(shape) > 2 else 1


def conv(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    w = p.const_input(node, 1)
    x, y = node.input[0], node.output[0]
    if w is None:
        p.unknown(idx, node, "Conv with a non-constant weight")
        c_out = p.channel_dim(y, 1)
        if c_out:       # reported as a skipped group rather than left out of the analysis
            lay_y = Layout(1, 1, (Segment(p.new_space(c_out, "producer", idx), 0, c_out),))
            p.block(lay_y, "Conv with a weight that is not a constant (or folds from over 65,536 elements)", idx)
            p.set(y, lay_y)
        return
    g = int(attr(node, "group", 1))
    c_out, cin_g = w.shape[0], w.shape[1]
    c_in = cin_g * g
    k = int(np.prod(w.shape[2:]))
    out_spatial = spatial_size(p.v.shape(y))
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


def conv_transpose(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None:
    w = p.const_input(node, 1)
    g = int(attr(node, "group", 1))
    if w is None or g != 1:
        p.unknown(idx, node, "ConvTranspose with group>1 or a non-constant weight")
        p.opaque(node.output[0], 1, f"output of {p.v.label(idx)} is not tracked", idx)
        return
    x, y = node.input[0], node.output[0]
    c_in, c_out = w.shape[0], w.shape[1]
    k = int(np.prod(w.shape[2:]))
    in_spatial = spatial_size(p.v.shape(x))
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
