"""MaxPool, AveragePool (any padding, ceil mode, count_include_pad) and the global pools."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import explicit_pads, node_desc, torch_pads
from onnxprune.torch_bridge.ops.registry import register

_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _sum_pool(x, k, s):
    """Exact window sums (stride s, no padding), any of 1-3 spatial dims."""
    nd = len(k)
    if nd == 1:
        return F.avg_pool2d(x.unsqueeze(-2), [1] + k, [1] + s, divisor_override=1).squeeze(-2)
    return _AVGPOOL[nd](x, k, s, divisor_override=1)


def _ceil_overhang(ins, k, s, eff, begin, end, ceil_mode):
    """Per axis: extra end padding that makes an unpadded pool produce ONNX's output size."""
    extra = []
    for n, kk, ss, e, b_, e_ in zip(ins, k, s, eff, begin, end):
        span = n + b_ + e_ - e
        out = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (out - 1) * ss >= n + b_:
            out -= 1
        extra.append(max(0, (out - 1) * ss + e - (n + b_ + e_)))
    return extra


def _padded_max(x, k, s, d, tp):
    low = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
    return _MAXPOOL[len(k)](F.pad(x, tp, value=low), k, s, 0, d)


def _padded_avg(x, k, s, begin, end, extra, tp, cip):
    nd = len(k)
    sums = _sum_pool(F.pad(x, tp), k, s)
    ones = torch.ones([1, 1] + list(x.shape[2:]), dtype=x.dtype, device=x.device)
    if cip:   # the explicit pads count, the ceil-mode overhang does not
        region = F.pad(F.pad(ones, torch_pads(begin, end), value=1.0), torch_pads([0] * nd, extra))
    else:
        region = F.pad(ones, tp)
    return sums / _sum_pool(region, k, s)


def _pool_geometry(a, kind, node):
    if kind == "max" and len(node.output) > 1 and node.output[1]:
        raise OnnxPruneError(f"{node_desc(node, a)}: the Indices output is not supported")
    k = [int(v) for v in a["kernel_shape"]]
    nd = len(k)
    s = [int(v) for v in a.get("strides", [1] * nd)]
    d = [int(v) for v in a.get("dilations", [1] * nd)]
    if kind == "avg" and any(v != 1 for v in d):
        raise OnnxPruneError(f"{node_desc(node, a)}: AveragePool with dilations is not supported")
    return k, s, d


def _pool_factory(kind):
    def factory(a, opset, node):
        k, s, d = _pool_geometry(a, kind, node)
        nd = len(k)
        auto_pad = a.get("auto_pad", "NOTSET")
        ceil_mode = bool(a.get("ceil_mode", 0))
        cip = bool(a.get("count_include_pad", 0))
        eff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]

        def run(args, rt):
            x = args[0]
            ins = list(x.shape[2:])
            begin, end = explicit_pads(a, auto_pad, nd, ins, k, s, d)
            if begin == end and all(2 * p <= e for p, e in zip(begin, eff)) and auto_pad == "NOTSET":
                if kind == "max":
                    return [_MAXPOOL[nd](x, k, s, begin, d, ceil_mode)]
                return [_AVGPOOL[nd](x, k, s, begin, ceil_mode, cip)]
            # general: explicit (possibly asymmetric) padding, ONNX output size
            extra = _ceil_overhang(ins, k, s, eff, begin, end, ceil_mode)
            tp = torch_pads(begin, [e_ + x_ for e_, x_ in zip(end, extra)])
            if kind == "max":
                return [_padded_max(x, k, s, d, tp)]
            return [_padded_avg(x, k, s, begin, end, extra, tp, cip)]
        return run
    return factory


register("MaxPool")(_pool_factory("max"))
register("AveragePool")(_pool_factory("avg"))


@register("GlobalAveragePool")
def _gap(a, opset, node):
    return lambda args, rt: [args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)]


@register("GlobalMaxPool")
def _gmp(a, opset, node):
    return lambda args, rt: [args[0].amax(dim=tuple(range(2, args[0].dim())), keepdim=True)]
