"""Which layers to refit: every Conv (2-D, any group count), Gemm and MatMul with constant
weights whose input lost channels in the rewrite, with what their refit needs to know."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.analysis.cost import kept_positions
from onnxprune.graph.view import attr
from onnxprune.log import get_logger
from onnxprune.recover.im2col import ConvGeometry

__all__ = ["RefitLayer", "conv_geometry", "find_layers", "refit_waves"]

log = get_logger(__name__)


@dataclass
class RefitLayer:
    """A layer of the pruned model (node ``index``) and where its weights live."""
    index: int
    label: str
    op: str
    x: str                      # input tensor (pruned model)
    y: str                      # output tensor (same name in both models)
    weight: str                 # weight initializer name (pruned model)
    bias: str | None            # bias initializer refitted directly
    bn_mean: str | None         # conv without bias feeding a BatchNorm: the bias goes into its mean
    out_keep: np.ndarray        # kept output channels, positions in the original output
    residual: tuple[str, str] | None = None   # (Add output, the Add's other input): see _residual
    geometry: ConvGeometry | None = None
    trans_a: bool = False
    trans_b: bool = False
    alpha: float = 1.0
    beta: float = 1.0

    @property
    def fits_bias(self) -> bool:
        return self.bias is not None or self.bn_mean is not None


def conv_geometry(node: onnx.NodeProto, w: np.ndarray) -> ConvGeometry:
    """The im2col geometry of a 2-D Conv ``node`` with weight ``w``."""
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    return ConvGeometry(kernel=tuple(int(v) for v in w.shape[2:]),
                        strides=tuple(attr(node, "strides") or (1, 1)),
                        dilations=tuple(attr(node, "dilations") or (1, 1)),
                        pads=tuple(attr(node, "pads") or (0, 0, 0, 0)),
                        auto_pad=auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad,
                        groups=int(attr(node, "group") or 1))


def _in_channels(node: onnx.NodeProto, w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return w.shape[1] * int(attr(node, "group") or 1)
    if node.op_type == "Gemm":
        return w.shape[1] if attr(node, "transB") else w.shape[0]
    return w.shape[0]


def _users(model: onnx.ModelProto) -> dict[str, list[tuple[int, int]]]:
    users: dict[str, list[tuple[int, int]]] = {}
    for i, n in enumerate(model.graph.node):
        for k, name in enumerate(n.input):
            users.setdefault(name, []).append((i, k))
    return users


def _bn_mean(model, node_index, y, users, inits) -> str | None:
    """The running-mean initializer of a BatchNormalization that alone reads conv output ``y``."""
    readers = users.get(y, [])
    if len(readers) != 1 or y in {o.name for o in model.graph.output}:
        return None
    bn = model.graph.node[readers[0][0]]
    if bn.op_type != "BatchNormalization" or readers[0][1] != 0 or len(bn.input) < 5:
        return None
    mean = bn.input[3]
    return mean if mean in inits and len(users.get(mean, [])) == 1 else None


def _residual(model, y, users, inits, shapes) -> tuple[str, str] | None:
    """A layer whose output only feeds a residual Add ``z = y + s`` is fitted to the original
    ``z`` minus the pruned model's ``s``: the layer then also absorbs the error that the skip
    path carries, so errors do not pile up along the residual stream."""
    readers = users.get(y, [])
    if len(readers) != 1 or y in {o.name for o in model.graph.output}:
        return None
    add = model.graph.node[readers[0][0]]
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    other = add.input[1 - readers[0][1]]
    if other in inits or other == y or shapes(other) != shapes(y) or shapes(y) != shapes(add.output[0]):
        return None
    return add.output[0], other


def _output_keep(analysis, y: str, kept, channels: int, axis: int) -> np.ndarray | None:
    lay = analysis.layouts.get(y)
    if lay is None or not lay.channels:
        return np.arange(channels)
    if lay.block != 1 or lay.axis not in (axis, axis + len(analysis.view.shape(y) or [])):
        return None
    keep = kept_positions(analysis, y, kept)
    return keep if len(keep) == channels else None


def find_layers(original: onnx.ModelProto, pruned: onnx.ModelProto, analysis, kept) -> list[RefitLayer]:
    """The layers of ``pruned`` whose input lost channels, in graph (topological) order."""
    orig_by_out = {n.output[0]: n for n in original.graph.node if n.output}
    o_inits = {t.name: t for t in original.graph.initializer}
    p_inits = {t.name: t for t in pruned.graph.initializer}
    users = _users(pruned)
    outputs = {o.name for o in pruned.graph.output}
    known = {v.name: v for v in list(pruned.graph.value_info) + list(pruned.graph.output)}

    def shapes(name):
        t = known.get(name)
        if t is None or not t.type.tensor_type.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.type.tensor_type.shape.dim)
    layers = []
    for i, node in enumerate(pruned.graph.node):
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        wname = node.input[1]
        onode = orig_by_out.get(node.output[0])
        if wname not in p_inits or onode is None or onode.input[1] not in o_inits:
            continue
        w, w0 = numpy_helper.to_array(p_inits[wname]), numpy_helper.to_array(o_inits[onode.input[1]])
        if (node.op_type == "Conv" and w.ndim != 4) or (node.op_type == "MatMul" and w.ndim != 2):
            continue
        if _in_channels(node, w) == _in_channels(onode, w0):
            continue
        label = node.name or node.output[0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in p_inits else None
        if len(users.get(wname, [])) > 1 or wname in outputs or (bias and len(users.get(bias, [])) > 1):
            log.info(f"reconstruct: {label} shares its weights with another node; left as pruned")
            continue
        out_axis = {"Conv": 1, "Gemm": 1, "MatMul": -1}[node.op_type]
        out_ch = {"Conv": w.shape[0], "Gemm": w.shape[0] if attr(node, "transB") else w.shape[1],
                  "MatMul": w.shape[1]}[node.op_type]
        keep = _output_keep(analysis, node.output[0], kept, out_ch, out_axis)
        if keep is None:
            log.info(f"reconstruct: {label}: output channels not traceable; left as pruned")
            continue
        layer = RefitLayer(i, label, node.op_type, node.input[0], node.output[0], wname, bias, None, keep)
        if node.op_type == "Conv":
            layer.geometry = conv_geometry(node, w)
            if bias is None:
                layer.bn_mean = _bn_mean(pruned, i, node.output[0], users, p_inits)
        elif node.op_type == "Gemm":
            layer.trans_a, layer.trans_b = bool(attr(node, "transA")), bool(attr(node, "transB"))
            layer.alpha = float(attr(node, "alpha") if attr(node, "alpha") is not None else 1.0)
            layer.beta = float(attr(node, "beta") if attr(node, "beta") is not None else 1.0)
            if bias is not None and (numpy_helper.to_array(p_inits[bias]).size != out_ch or layer.beta == 0):
                layer.bias = None
        if node.op_type != "MatMul" and shapes(node.output[0]) is not None:
            layer.residual = _residual(pruned, node.output[0], users, p_inits, shapes)
        layers.append(layer)
    return layers


def refit_waves(model: onnx.ModelProto, layers: list[RefitLayer]) -> list[list[RefitLayer]]:
    """Group layers so that no layer's input depends on a layer of its own or a later wave."""
    by_out = {layer.y: n for n, layer in enumerate(layers)}
    upstream: dict[str, int] = {}          # tensor -> bitmask of refit layers above it
    wave_of: dict[int, int] = {}
    for node in model.graph.node:
        mask = 0
        for name in node.input:
            mask |= upstream.get(name, 0)
        for out in node.output:
            upstream[out] = mask | (1 << by_out[out] if out in by_out else 0)
    for n, layer in enumerate(layers):
        mask = upstream.get(layer.x, 0)
        above = [wave_of[j] for j in range(n) if mask >> j & 1]
        wave_of[n] = 1 + max(above) if above else 0
    for n, layer in enumerate(layers):     # the skip input must be final when this layer is fitted
        if layer.residual:
            mask = upstream.get(layer.residual[1], 0)
            if any(mask >> j & 1 and wave_of[j] >= wave_of[n] for j in range(len(layers))):
                layer.residual = None
    waves: list[list[RefitLayer]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
    for n, layer in enumerate(layers):
        waves[wave_of[n]].append(layer)
    return waves
