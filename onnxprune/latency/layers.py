"""The layers whose run time depends on a channel group: geometry of every Conv/Gemm compute term.

A :class:`Layer` is one Conv (or Gemm) node of the analysed model with the tensors that carry its
input and output channels; :class:`Geometry` is what its latency depends on besides the channel
counts (kernel, strides, pads, spatial size, groups), so identical layers share one table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from onnxprune.analysis.edges import segments_of
from onnxprune.analysis.records import Analysis
from onnxprune.graph.view import attr

__all__ = ["Geometry", "Layer", "model_layers", "tensor_channels"]


@dataclass(frozen=True)
class Geometry:
    """A Conv ('conv', 'dw' for depthwise) or Gemm ('gemm') with its full channel counts."""
    kind: str
    cin: int
    cout: int
    spatial: tuple[int, ...] = ()          # input H, W
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1
    vary_in: bool = True
    vary_out: bool = True

    def key(self) -> str:
        return (f"{self.kind}_i{self.cin}{'v' if self.vary_in else 'f'}_o{self.cout}{'v' if self.vary_out else 'f'}"
                f"_s{'x'.join(map(str, self.spatial))}_k{'x'.join(map(str, self.kernel))}"
                f"_st{'x'.join(map(str, self.strides))}_p{'x'.join(map(str, self.pads))}"
                f"_d{'x'.join(map(str, self.dilations))}_g{self.group}")


@dataclass(frozen=True)
class Layer:
    """One compute node: its geometry and the tensors whose kept channels set cin / cout."""
    node: int
    name: str
    geometry: Geometry
    in_tensor: str | None
    out_tensor: str | None


def _conv_geometry(view, node, vary_in: bool, vary_out: bool) -> Geometry | None:
    x, w = view.shape(node.input[0]), view.shape(node.input[1])
    if not x or not w or len(x) != 4 or any(d is None for d in x[1:]) or len(w) != 4:
        return None
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    group = int(attr(node, "group", 1))
    cout, cin = int(w[0]), int(x[1])
    depthwise = group > 1 and group == cin == cout and w[1] == 1
    kind = "dw" if depthwise else "conv"
    return Geometry(kind, cin, cout, (int(x[2]), int(x[3])), tuple(int(k) for k in w[2:]),
                    tuple(attr(node, "strides", [1, 1])), tuple(attr(node, "pads", [0, 0, 0, 0])),
                    tuple(attr(node, "dilations", [1, 1])), 1 if depthwise else group,
                    vary_in=vary_in or depthwise, vary_out=vary_out or depthwise)


def _gemm_geometry(view, node, vary_in: bool, vary_out: bool) -> Geometry | None:
    x, y = view.shape(node.input[0]), view.shape(node.output[0])
    if not x or not y or len(x) != 2 or len(y) != 2 or None in (x[1], y[1]) or attr(node, "transA", 0):
        return None
    return Geometry("gemm", int(x[1]), int(y[1]), vary_in=vary_in, vary_out=vary_out)


def _varies(analysis: Analysis, tensor: str | None, prunable: set[int]) -> bool:
    if tensor is None or tensor not in analysis.layouts:
        return False
    return any(s.group in prunable for s in segments_of(analysis.layouts[tensor]))


def model_layers(analysis: Analysis) -> tuple[list[Layer], list[str]]:
    """The Conv/Gemm layers of the model with a known geometry, and the labels of compute nodes
    left to the constant remainder (other ops, unknown shapes)."""
    prunable = {g.id for g in analysis.prunable}
    layers, skipped = [], []
    for t in analysis.terms:
        node = analysis.view.nodes[t.node]
        vin, vout = _varies(analysis, t.in_tensor, prunable), _varies(analysis, t.out_tensor, prunable)
        geo = None
        if node.op_type == "Conv":
            geo = _conv_geometry(analysis.view, node, vin, vout)
        elif node.op_type == "Gemm":
            geo = _gemm_geometry(analysis.view, node, vin, vout)
        if geo is None:
            skipped.append(analysis.view.label(t.node))
            continue
        out_tensor = t.out_tensor if t.out_tensor is not None else node.output[0]
        layers.append(Layer(t.node, analysis.view.label(t.node), geo, t.in_tensor, out_tensor))
    return layers, skipped


def tensor_channels(analysis: Analysis, tensor: str | None, full: int,
                    counts: Mapping[int, int], kept: Mapping[int, np.ndarray] | None = None) -> int:
    """Channels of ``tensor`` left when group g keeps ``counts[g]`` (its proportional share of
    every segment; exact positions when ``kept`` is given). Unknown tensors keep ``full``."""
    if tensor is None or tensor not in analysis.layouts:
        return full
    total = 0
    for s in segments_of(analysis.layouts[tensor]):
        if s.group is None or s.group not in counts:
            total += s.length
            continue
        if kept is not None and s.group in kept:
            k = kept[s.group]
            total += int(np.count_nonzero((k >= s.group_offset) & (k < s.group_offset + s.length)))
            continue
        group_channels = analysis.groups[s.group].channels if s.group < len(analysis.groups) else s.length
        total += int(round(counts[s.group] * s.length / max(group_channels, 1)))
    return max(total, 1)
