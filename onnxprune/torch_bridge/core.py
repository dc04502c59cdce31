"""PyTorch bridge: run an ONNX CNN (pruned or not) as a trainable ``torch.nn.Module``.

This is the only onnxprune module that imports :mod:`torch` (an optional dependency:
``pip install onnxprune[torch]``); ``import onnxprune`` never loads it.

API
    ``OnnxModule(model)``
        An ``nn.Module`` that executes the ONNX graph node by node with torch ops, in the
        graph's (topological) order.  ``forward(*inputs)`` takes the graph inputs in order
        (or by name as keyword arguments) and returns one tensor, or a tuple when the graph
        has several outputs.

        * Every float tensor used as a weight, bias, scale or slope (Conv/ConvTranspose
          W and B, Gemm/MatMul constant operands, PRelu slope, InstanceNormalization scale
          and B, a per-channel Add/Sub bias or Mul/Div scale applied right after such a
          node) is an ``nn.Parameter`` named after its initializer (sanitised, e.g.
          ``layer1.0.conv1.weight`` -> ``layer1_0_conv1_weight``); ``module.onnx_names``
          maps every state-dict key back to the ONNX tensor name.  ``trainable="all"``
          makes every float constant a parameter instead.
        * ``BatchNormalization`` (inference form) becomes an :class:`OnnxBatchNorm`
          (a ``torch.nn.modules.batchnorm._BatchNorm``, so ``SyncBatchNorm.convert_sync_batchnorm``
          and the usual ``isinstance`` checks work) in ``module.bn``, keyed by its scale
          initializer's name less ``.weight`` (``bn.layer1_0_bn1.weight``...): ONNX
          scale/B/mean/var are its weight/bias/running_mean/running_var.  (A BN whose
          tensors are shared with other nodes runs as ``F.batch_norm`` on root tensors.)  In train mode it normalises with
          the batch statistics and updates the running statistics with the ONNX momentum
          (``running = momentum * running + (1 - momentum) * batch``, i.e. torch momentum
          ``1 - m``; the variance update uses torch's unbiased batch variance, as the original
          PyTorch training did); in eval mode it uses the running statistics.
        * Other constants are buffers (float; they follow ``.to(device)``) or CPU tensors
          kept off the module (integer/bool shape data).  Nodes whose inputs are all
          constant (legacy exporters' shape arithmetic) are evaluated once at construction.
        * ``Dropout`` is the identity in eval mode and applies dropout in train mode.
        * ``module.source_model`` keeps a copy of the graph (for :func:`to_onnx`);
          ``module.onnx_tensors()`` gives ONNX name -> current tensor.
        * The module follows ``.to(device)`` / ``.double()``; integer shape data stays on
          the CPU, and constant host-side numbers (Clip bounds, Resize scales...) are read
          from CPU copies, so a GPU forward does not synchronise on them.
        * Initializers listed as graph inputs (IR < 4 models) are constants, not inputs.
        * An op outside :data:`SUPPORTED_OPS` (or an unsupported attribute value) raises
          :class:`~onnxprune.errors.OnnxPruneError` naming the op type and node when the
          module is built.

    ``to_onnx(module, path=None, example_input=None, opset=None, method="graph")``
        ``method="graph"`` (default): a copy of the module's source graph with the current
        parameter and running-statistic values written into its initializers (or Constant
        nodes).  Node, tensor, input/output names, opset and metadata stay exactly as they
        were.  BatchNormalization nodes added by :func:`reinsert_batchnorm` are folded back
        into their Conv (``fold_bn="auto"``; ``True`` folds every foldable Conv->BN,
        ``False`` none).  ``opset`` other than the graph's runs onnx's version converter.
        ``method="torch"``: ``torch.onnx.export`` (TorchScript exporter) of the module in eval
        mode; needs ``example_input``; a new graph with new tensor names, shapes frozen to
        the example.  ``check=True`` runs the export with onnxruntime on ``example_input``
        and compares it with the module in eval mode.

    ``reinsert_batchnorm(model)`` / ``fold_batchnorm(model)``
        Insert an exactly-identity BatchNormalization (scale 1, B 0, mean 0,
        var such that float32(var + eps) == 1) after each Conv feeding a Relu/Add/Clip,
        so models exported with BN folded can fine-tune with BN; fold inference-form BN
        that directly follows a Conv back into the Conv's weights and bias.

Ops: see :data:`SUPPORTED_OPS` (opsets 9-21, attribute and input forms).
Not supported: Resize/Upsample ``cubic``, ``tf_crop_and_resize`` and ``antialias``,
AveragePool with dilations, MaxPool's indices output, BatchNormalization's training
outputs, control flow (If/Loop/Scan), non-default domains.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError, VerificationError

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("onnxprune.torch_bridge needs PyTorch (pip install 'onnxprune[torch]')") from _exc

__all__ = ["OnnxModule", "OnnxBatchNorm", "to_onnx", "reinsert_batchnorm", "fold_batchnorm",
           "SUPPORTED_OPS"]

_REINSERTED_KEY = "onnxprune.reinserted_bn"

_DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16, TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8, TensorProto.BOOL: torch.bool,
}
for _name, _code in (("uint16", TensorProto.UINT16), ("uint32", TensorProto.UINT32),
                     ("uint64", TensorProto.UINT64)):
    if hasattr(torch, _name):
        _DTYPES[_code] = getattr(torch, _name)


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------

def _main_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise OnnxPruneError("model has no ai.onnx opset import")


def _node_label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "?")
    return f"{node.op_type} node '{name}'"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            raise OnnxPruneError(f"{_node_label(node)}: subgraph attributes are not supported")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.array(arr, copy=True, order="C")   # (np.ascontiguousarray would make 0-d arrays 1-d)
    if arr.dtype == np.float16 or arr.dtype.kind in "fiub":
        return torch.from_numpy(arr)
    raise OnnxPruneError(f"constant of dtype {arr.dtype} is not supported")


def _ints(t) -> list[int]:
    if isinstance(t, torch.Tensor):
        v = t.detach().cpu().reshape(-1).tolist()
    else:
        v = list(np.asarray(t).reshape(-1).tolist())
    return [int(x) for x in v]


def _floats(t) -> list[float]:
    if isinstance(t, torch.Tensor):
        return [float(x) for x in t.detach().cpu().reshape(-1).tolist()]
    return [float(x) for x in np.asarray(t).reshape(-1).tolist()]


def _scalar(t):
    return t.detach().cpu().reshape(-1)[0].item() if isinstance(t, torch.Tensor) else t


def _given(args, i) -> bool:
    return len(args) > i and args[i] is not None


def _align(*ts):
    """Put tensors on one device (shape arithmetic lives on the CPU; data may be on a GPU)."""
    dev = None
    for t in ts:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            dev = t.device
            break
    if dev is None:
        return ts
    return tuple(t.to(dev) if isinstance(t, torch.Tensor) and t.device != dev and t.dim() > 0 else t
                 for t in ts)


def _norm_axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _torch_pads(begin, end) -> list[int]:
    """ONNX per-axis begin/end (first axis first) -> F.pad order (last axis first)."""
    out = []
    for b, e in zip(reversed(list(begin)), reversed(list(end))):
        out += [int(b), int(e)]
    return out


def _same_pads(in_sizes, k, s, d, mode):
    begin, end = [], []
    for n, kk, ss, dd in zip(in_sizes, k, s, d):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        small, big = total // 2, total - total // 2
        if mode == "SAME_UPPER":
            begin.append(small); end.append(big)
        else:
            begin.append(big); end.append(small)
    return begin, end


class _Run:
    __slots__ = ("training", "device", "module")

    def __init__(self, training: bool, device, module):
        self.training = training
        self.device = device
        self.module = module


# --------------------------------------------------------------------------------------
# op implementations: factory(attrs, opset, node) -> run(args, rt) -> list of outputs
# --------------------------------------------------------------------------------------

_OPS: dict[str, Callable] = {}


def _op(*names):
    def deco(fn):
        for n in names:
            _OPS[n] = fn
        return fn
    return deco


def _unary(fn):
    return lambda a, opset, node: (lambda args, rt: [fn(args[0])])


for _n, _f in {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
    "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg, "Abs": torch.abs,
    "Reciprocal": torch.reciprocal, "Identity": lambda x: x, "Floor": torch.floor,
    "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign, "Not": torch.logical_not,
    "Softsign": F.softsign, "Mish": F.mish, "Sin": torch.sin, "Cos": torch.cos,
    "IsNaN": torch.isnan,
}.items():
    _OPS[_n] = _unary(_f)


@_op("LeakyRelu")
def _leaky(a, opset, node):
    alpha = float(a.get("alpha", 0.01))
    return lambda args, rt: [F.leaky_relu(args[0], alpha)]


@_op("Elu")
def _elu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [F.elu(args[0], alpha)]


@_op("Celu")
def _celu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [F.celu(args[0], alpha)]


@_op("Selu")
def _selu(a, opset, node):
    alpha = float(a.get("alpha", 1.67326319217681884765625))
    gamma = float(a.get("gamma", 1.05070102214813232421875))

    def run(args, rt):
        x = args[0]
        return [gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))]
    return run


@_op("ThresholdedRelu")
def _trelu(a, opset, node):
    alpha = float(a.get("alpha", 1.0))
    return lambda args, rt: [torch.where(args[0] > alpha, args[0], torch.zeros_like(args[0]))]


@_op("Softplus")
def _softplus(a, opset, node):
    return lambda args, rt: [F.softplus(args[0])]


@_op("HardSigmoid")
def _hsig(a, opset, node):
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    return lambda args, rt: [torch.clamp(args[0] * alpha + beta, 0.0, 1.0)]


@_op("HardSwish")
def _hswish(a, opset, node):
    return lambda args, rt: [F.hardswish(args[0])]


@_op("Gelu")
def _gelu(a, opset, node):
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        raise OnnxPruneError(f"{_node_label(node)}: approximate={approx!r} is not supported")
    return lambda args, rt: [F.gelu(args[0], approximate=approx)]


@_op("PRelu")
def _prelu(a, opset, node):
    def run(args, rt):
        x, slope = _align(args[0], args[1])
        return [torch.where(x >= 0, x, x * slope)]
    return run


@_op("Clip")
def _clip(a, opset, node):
    amin, amax = a.get("min"), a.get("max")

    def run(args, rt):
        x = args[0]
        lo = args[1] if _given(args, 1) else amin
        hi = args[2] if _given(args, 2) else amax
        if isinstance(lo, torch.Tensor):
            lo = lo.to(x.device) if lo.dim() else lo.item()
        if isinstance(hi, torch.Tensor):
            hi = hi.to(x.device) if hi.dim() else hi.item()
        if lo is None and hi is None:
            return [x]
        return [torch.clamp(x, lo, hi)]
    return run


def _binary(fn):
    def factory(a, opset, node):
        def run(args, rt):
            x, y = _align(args[0], args[1])
            return [fn(x, y)]
        return run
    return factory


def _div(x, y):
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


def _pow(x, y):
    r = torch.pow(x, y)
    return r.to(x.dtype) if r.dtype != x.dtype else r


for _n, _f in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": _pow,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}.items():
    _OPS[_n] = _binary(_f)


def _variadic(kind):
    def factory(a, opset, node):
        def run(args, rt):
            ts = _align(*[t for t in args if t is not None])
            out = ts[0]
            for t in ts[1:]:
                if kind == "Max":
                    out = torch.maximum(out, t)
                elif kind == "Min":
                    out = torch.minimum(out, t)
                else:
                    out = out + t
            if kind == "Mean":
                out = out / len(ts)
            return [out]
        return run
    return factory


for _n in ("Max", "Min", "Sum", "Mean"):
    _OPS[_n] = _variadic(_n)


@_op("Where")
def _where(a, opset, node):
    def run(args, rt):
        c, x, y = _align(*args[:3])
        return [torch.where(c.bool(), x, y)]
    return run


@_op("Cast")
def _cast(a, opset, node):
    to = int(a["to"])
    if to not in _DTYPES:
        raise OnnxPruneError(f"{_node_label(node)}: Cast to type {to} is not supported")
    dt = _DTYPES[to]
    return lambda args, rt: [args[0].to(dt)]


@_op("CastLike")
def _castlike(a, opset, node):
    return lambda args, rt: [args[0].to(args[1].dtype)]


@_op("Dropout")
def _dropout(a, opset, node):
    ratio_attr = float(a.get("ratio", 0.5))
    want_mask = len(node.output) > 1 and bool(node.output[1])

    def run(args, rt):
        x = args[0]
        ratio = float(_scalar(args[1])) if _given(args, 1) else ratio_attr
        if not rt.training or ratio == 0.0:
            return [x, torch.ones_like(x, dtype=torch.bool)] if want_mask else [x]
        if not want_mask:
            return [F.dropout(x, ratio, True)]
        mask = torch.rand_like(x) >= ratio
        return [x * mask / (1.0 - ratio), mask]
    return run


# ---- convolution / linear ------------------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv_inputs(a, args):
    """Conv/ConvTranspose operands and geometry: x, w, bias or None, spatial rank, kernel,
    strides and dilations."""
    x, w = args[0], args[1]
    b = args[2] if _given(args, 2) else None
    nd = w.dim() - 2
    return (x, w, b, nd, list(w.shape[2:]), list(a.get("strides", [1] * nd)),
            list(a.get("dilations", [1] * nd)))


@_op("Conv")
def _conv(a, opset, node):
    auto_pad = a.get("auto_pad", "NOTSET")
    group = int(a.get("group", 1))

    def run(args, rt):
        x, w, b, nd, k, s, d = _conv_inputs(a, args)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = _same_pads(x.shape[2:], k, s, d, auto_pad)
        elif auto_pad == "VALID":
            begin = end = [0] * nd
        else:
            p = list(a.get("pads", [0] * (2 * nd)))
            begin, end = p[:nd], p[nd:]
        if begin != end:
            x = F.pad(x, _torch_pads(begin, end))
            begin = [0] * nd
        return [_CONV[nd](x, w, b, s, begin, d, group)]
    return run


@_op("ConvTranspose")
def _convt(a, opset, node):
    auto_pad = a.get("auto_pad", "NOTSET")
    group = int(a.get("group", 1))

    def run(args, rt):
        x, w, b, nd, k, s, d = _conv_inputs(a, args)
        op = list(a.get("output_padding", [0] * nd))
        ins = list(x.shape[2:])
        full = [(n - 1) * ss + (kk - 1) * dd + 1 for n, ss, kk, dd in zip(ins, s, k, d)]
        if "output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            outs = list(a["output_shape"])[-nd:] if "output_shape" in a else [n * ss for n, ss in zip(ins, s)]
            begin, end = [], []
            for f, o, t in zip(full, op, outs):
                total = max(0, f + o - t)
                if auto_pad == "SAME_UPPER":   # the odd one is cropped at the end
                    begin.append(total // 2); end.append(total - total // 2)
                else:
                    begin.append(total - total // 2); end.append(total // 2)
        elif auto_pad == "VALID":
            begin = end = [0] * nd
        else:
            p = list(a.get("pads", [0] * (2 * nd)))
            begin, end = p[:nd], p[nd:]
        if begin == end and all(o < max(ss, dd) for o, ss, dd in zip(op, s, d)):
            return [_CONVT[nd](x, w, b, s, begin, op, group, d)]
        y = _CONVT[nd](x, w, None, s, 0, 0, group, d)
        y = F.pad(y, _torch_pads([-bb for bb in begin], [o - e for o, e in zip(op, end)]))
        if b is not None:
            y = y + b.reshape([1, -1] + [1] * nd)
        return [y]
    return run


@_op("Gemm")
def _gemm(a, opset, node):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))

    def run(args, rt):
        A, B = args[0], args[1]
        C = args[2] if _given(args, 2) else None
        if tb and not ta and alpha == 1.0 and beta == 1.0 and (C is None or (C.dim() == 1 and C.shape[0] == B.shape[0])):
            return [F.linear(A, B, C)]
        A = A.t() if ta else A
        B = B.t() if tb else B
        y = A @ B
        if alpha != 1.0:
            y = y * alpha
        if C is not None:
            y = y + (C * beta if beta != 1.0 else C)
        return [y]
    return run


@_op("MatMul")
def _matmul(a, opset, node):
    def run(args, rt):
        x, y = _align(args[0], args[1])
        return [torch.matmul(x, y)]
    return run


# ---- normalisation -----------------------------------------------------------------


class OnnxBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of any rank >= 2 (N, C, ...), holding an ONNX BatchNormalization's tensors.

    ``momentum`` here is torch's convention (``1 - onnx_momentum``)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


@_op("BatchNormalization")
def _bn(a, opset, node):
    if int(a.get("spatial", 1)) != 1:
        raise OnnxPruneError(f"{_node_label(node)}: spatial=0 is not supported")
    if any(o for o in node.output[1:]):
        raise OnnxPruneError(f"{_node_label(node)}: the training-mode outputs (mean/var) are not supported")
    eps = float(a.get("epsilon", 1e-5))
    momentum = 1.0 - float(a.get("momentum", 0.9))
    key = a.get("__bn_key__")

    def run(args, rt):
        if key is not None:
            return [rt.module.bn[key](args[0])]
        x, w, b, rm, rv = args[:5]
        return [F.batch_norm(x, rm, rv, w, b, rt.training, momentum, eps)]
    return run


@_op("InstanceNormalization")
def _inorm(a, opset, node):
    eps = float(a.get("epsilon", 1e-5))
    return lambda args, rt: [F.instance_norm(args[0], weight=args[1], bias=args[2], eps=eps)]


# ---- pooling -------------------------------------------------------------------------

_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _sum_pool(x, k, s):
    """Exact window sums (stride s, no padding), any of 1-3 spatial dims."""
    nd = len(k)
    if nd == 1:
        return F.avg_pool2d(x.unsqueeze(-2), [1] + k, [1] + s, divisor_override=1).squeeze(-2)
    return _AVGPOOL[nd](x, k, s, divisor_override=1)


def _pool_factory(kind):
    def factory(a, opset, node):
        if kind == "max" and len(node.output) > 1 and node.output[1]:
            raise OnnxPruneError(f"{_node_label(node)}: the Indices output is not supported")
        k = [int(v) for v in a["kernel_shape"]]
        nd = len(k)
        s = [int(v) for v in a.get("strides", [1] * nd)]
        d = [int(v) for v in a.get("dilations", [1] * nd)]
        if kind == "avg" and any(v != 1 for v in d):
            raise OnnxPruneError(f"{_node_label(node)}: AveragePool with dilations is not supported")
        auto_pad = a.get("auto_pad", "NOTSET")
        ceil_mode = bool(a.get("ceil_mode", 0))
        cip = bool(a.get("count_include_pad", 0))
        pads = [int(v) for v in a.get("pads", [0] * (2 * nd))]

        def run(args, rt):
            x = args[0]
            ins = list(x.shape[2:])
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                begin, end = _same_pads(ins, k, s, d, auto_pad)
            elif auto_pad == "VALID":
                begin = end = [0] * nd
            else:
                begin, end = pads[:nd], pads[nd:]
            eff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
            if begin == end and all(2 * p <= e for p, e in zip(begin, eff)) and auto_pad == "NOTSET":
                if kind == "max":
                    return [_MAXPOOL[nd](x, k, s, begin, d, ceil_mode)]
                return [_AVGPOOL[nd](x, k, s, begin, ceil_mode, cip)]
            # general: explicit (possibly asymmetric) padding, ONNX output size
            extra = []
            for n, kk, ss, e, b_, e_ in zip(ins, k, s, eff, begin, end):
                span = n + b_ + e_ - e
                out = (-(-span // ss) if ceil_mode else span // ss) + 1
                if ceil_mode and (out - 1) * ss >= n + b_:
                    out -= 1
                extra.append(max(0, (out - 1) * ss + e - (n + b_ + e_)))
            tp = _torch_pads(begin, [e_ + x_ for e_, x_ in zip(end, extra)])
            if kind == "max":
                low = torch.finfo(x.dtype).min if x.is_floating_point() else torch.iinfo(x.dtype).min
                low = -math.inf if x.is_floating_point() else low
                return [_MAXPOOL[nd](F.pad(x, tp, value=low), k, s, 0, d)]
            sums = _sum_pool(F.pad(x, tp), k, s)
            ones = torch.ones([1, 1] + ins, dtype=x.dtype, device=x.device)
            if cip:   # the explicit pads count, the ceil-mode overhang does not
                region = F.pad(F.pad(ones, _torch_pads(begin, end), value=1.0),
                               _torch_pads([0] * nd, extra))
            else:
                region = F.pad(ones, tp)
            counts = _sum_pool(region, k, s)
            return [sums / counts]
        return run
    return factory


_OPS["MaxPool"] = _pool_factory("max")
_OPS["AveragePool"] = _pool_factory("avg")


@_op("GlobalAveragePool")
def _gap(a, opset, node):
    return lambda args, rt: [args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)]


@_op("GlobalMaxPool")
def _gmp(a, opset, node):
    return lambda args, rt: [args[0].amax(dim=tuple(range(2, args[0].dim())), keepdim=True)]


def _reduce_factory(kind):
    def factory(a, opset, node):
        keep = bool(a.get("keepdims", 1))
        noop = bool(a.get("noop_with_empty_axes", 0))
        attr_axes = a.get("axes")

        def run(args, rt):
            x = args[0]
            axes = _ints(args[1]) if _given(args, 1) else (list(attr_axes) if attr_axes is not None else [])
            if not axes:
                if noop:
                    return [x]
                axes = list(range(x.dim()))
            axes = tuple(_norm_axis(v, x.dim()) for v in axes)
            if kind == "mean":
                return [x.mean(dim=axes, keepdim=keep)]
            if kind == "sum":
                return [x.sum(dim=axes, keepdim=keep)]
            if kind == "max":
                return [x.amax(dim=axes, keepdim=keep)]
            if kind == "min":
                return [x.amin(dim=axes, keepdim=keep)]
            if kind == "sumsq":
                return [(x * x).sum(dim=axes, keepdim=keep)]
            if kind == "l2":
                return [torch.sqrt((x * x).sum(dim=axes, keepdim=keep))]
            if kind == "l1":
                return [x.abs().sum(dim=axes, keepdim=keep)]
            y = x
            for ax in sorted(axes, reverse=True):
                y = y.prod(dim=ax, keepdim=keep)
            return [y]
        return run
    return factory


for _n, _k in {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min",
               "ReduceProd": "prod", "ReduceSumSquare": "sumsq", "ReduceL2": "l2",
               "ReduceL1": "l1"}.items():
    _OPS[_n] = _reduce_factory(_k)


def _softmax_factory(log):
    def factory(a, opset, node):
        axis = int(a.get("axis", 1 if opset < 13 else -1))
        fn = F.log_softmax if log else F.softmax

        def run(args, rt):
            x = args[0]
            ax = _norm_axis(axis, x.dim())
            if opset < 13:
                shape = x.shape
                lead = int(np.prod(shape[:ax], dtype=np.int64))
                return [fn(x.reshape(lead, -1), dim=1).reshape(shape)]
            return [fn(x, dim=ax)]
        return run
    return factory


_OPS["Softmax"] = _softmax_factory(False)
_OPS["LogSoftmax"] = _softmax_factory(True)


# ---- shape / data movement -----------------------------------------------------------

@_op("Flatten")
def _flatten(a, opset, node):
    axis = int(a.get("axis", 1))

    def run(args, rt):
        x = args[0]
        ax = _norm_axis(axis, x.dim())
        lead = int(np.prod(x.shape[:ax], dtype=np.int64))
        rest = int(np.prod(x.shape[ax:], dtype=np.int64))
        return [x.reshape(lead, rest)]
    return run


@_op("Reshape")
def _reshape(a, opset, node):
    allowzero = bool(a.get("allowzero", 0))

    def run(args, rt):
        x = args[0]
        shape = _ints(args[1])
        if not allowzero:
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return [x.reshape(shape)]
    return run


@_op("Transpose")
def _transpose(a, opset, node):
    perm = a.get("perm")
    return lambda args, rt: [args[0].permute(list(perm) if perm is not None
                                             else list(range(args[0].dim() - 1, -1, -1)))]


@_op("Squeeze")
def _squeeze(a, opset, node):
    attr_axes = a.get("axes")

    def run(args, rt):
        x = args[0]
        axes = _ints(args[1]) if _given(args, 1) else attr_axes
        if axes is None:
            return [x.squeeze()] if x.dim() else [x]
        axes = tuple(_norm_axis(v, x.dim()) for v in axes)
        return [x.squeeze(axes) if axes else x]
    return run


@_op("Unsqueeze")
def _unsqueeze(a, opset, node):
    attr_axes = a.get("axes")

    def run(args, rt):
        x = args[0]
        axes = _ints(args[1]) if _given(args, 1) else list(attr_axes)
        r = x.dim() + len(axes)
        for ax in sorted(_norm_axis(v, r) for v in axes):
            x = x.unsqueeze(ax)
        return [x]
    return run


@_op("Concat")
def _concat(a, opset, node):
    axis = int(a["axis"])

    def run(args, rt):
        ts = _align(*[t for t in args if t is not None])
        return [torch.cat(ts, dim=_norm_axis(axis, ts[0].dim()))]
    return run


@_op("Split")
def _split(a, opset, node):
    axis = int(a.get("axis", 0))
    attr_split = a.get("split")
    n_out = len(node.output)
    num_outputs = a.get("num_outputs")

    def run(args, rt):
        x = args[0]
        ax = _norm_axis(axis, x.dim())
        split = _ints(args[1]) if _given(args, 1) else attr_split
        if split is None:
            n = int(num_outputs) if num_outputs is not None else n_out
            size = x.shape[ax]
            chunk = -(-size // n)
            split = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
            if num_outputs is None and len(split) != n:
                raise OnnxPruneError(f"{_node_label(node)}: cannot split {size} evenly into {n}")
        return list(torch.split(x, list(split), dim=ax))
    return run


@_op("Slice")
def _slice(a, opset, node):
    attr_form = "starts" in a

    def run(args, rt):
        x = args[0]
        if attr_form:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts, ends = _ints(args[1]), _ints(args[2])
            axes = _ints(args[3]) if _given(args, 3) else list(range(len(starts)))
            steps = _ints(args[4]) if _given(args, 4) else [1] * len(starts)
        index: list = [slice(None)] * x.dim()
        flips = []
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            ax = _norm_axis(ax, x.dim())
            n = x.shape[ax]
            st = st + n if st < 0 else st
            en = en + n if en < 0 else en
            if sp > 0:
                st, en = min(max(st, 0), n), min(max(en, 0), n)
                index[ax] = slice(st, en, sp)
            elif sp < 0:
                st, en = min(max(st, 0), n - 1), min(max(en, -1), n - 1)
                flips.append((ax, torch.arange(st, en, sp, dtype=torch.int64)))
            else:
                raise OnnxPruneError(f"{_node_label(node)}: step 0")
        y = x[tuple(index)]
        for ax, idx in flips:
            y = y.index_select(ax, idx.to(y.device))
        return [y]
    return run


def _index_pad(x, ax, b, e, mode):
    n = x.shape[ax]
    idx = torch.arange(-b, n + e, dtype=torch.int64)
    if mode == "edge":
        idx = idx.clamp(0, n - 1)
    elif mode == "reflect":
        if n == 1:
            idx = torch.zeros_like(idx)
        else:
            period = 2 * (n - 1)
            m = torch.remainder(idx, period)
            idx = torch.where(m >= n, period - m, m)
    elif mode == "wrap":
        idx = torch.remainder(idx, n)
    return x.index_select(ax, idx.to(x.device))


@_op("Pad")
def _pad(a, opset, node):
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise OnnxPruneError(f"{_node_label(node)}: mode={mode!r} is not supported")
    attr_form = "pads" in a

    def run(args, rt):
        x = args[0]
        r = x.dim()
        if attr_form:
            pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), list(range(r))
        else:
            pads = _ints(args[1])
            value = _scalar(args[2]) if _given(args, 2) and args[2].numel() else 0
            axes = [_norm_axis(v, r) for v in _ints(args[3])] if _given(args, 3) else list(range(r))
        na = len(axes)
        begin, end = [0] * r, [0] * r
        for i, ax in enumerate(axes):
            begin[ax], end[ax] = pads[i], pads[i + na]
        if mode == "constant":
            # trim leading axes without padding (F.pad pads from the last axis)
            first = next((i for i in range(r) if begin[i] or end[i]), r)
            if first == r:
                return [x]
            return [F.pad(x, _torch_pads(begin[first:], end[first:]), value=value)]
        for ax in range(r):
            if begin[ax] or end[ax]:
                x = _index_pad(x, ax, begin[ax], end[ax], mode)
        return [x]
    return run


@_op("Constant")
def _constant(a, opset, node):
    if "value" in a:
        val = np.asarray(a["value"])
    elif "value_float" in a:
        val = np.array(a["value_float"], dtype=np.float32)
    elif "value_floats" in a:
        val = np.array(a["value_floats"], dtype=np.float32)
    elif "value_int" in a:
        val = np.array(a["value_int"], dtype=np.int64)
    elif "value_ints" in a:
        val = np.array(a["value_ints"], dtype=np.int64)
    else:
        raise OnnxPruneError(f"{_node_label(node)}: only tensor/float/int values are supported")
    t = _to_tensor(val)
    return lambda args, rt: [t]


@_op("ConstantOfShape")
def _cos(a, opset, node):
    val = np.asarray(a.get("value", np.zeros(1, dtype=np.float32))).reshape(-1)
    fill = _to_tensor(val[:1]).reshape(())

    def run(args, rt):
        shape = _ints(args[0])
        dev = rt.device if fill.is_floating_point() else torch.device("cpu")
        return [torch.full(shape, fill.item(), dtype=fill.dtype, device=dev)]
    return run


@_op("Shape")
def _shape(a, opset, node):
    start, end = a.get("start", 0), a.get("end")

    def run(args, rt):
        dims = list(args[0].shape)
        return [torch.tensor(dims[start:end] if end is not None else dims[start:], dtype=torch.int64)]
    return run


@_op("Size")
def _size(a, opset, node):
    return lambda args, rt: [torch.tensor(args[0].numel(), dtype=torch.int64)]


@_op("Gather")
def _gather(a, opset, node):
    axis = int(a.get("axis", 0))

    def run(args, rt):
        x, idx = args[0], args[1]
        ax = _norm_axis(axis, x.dim())
        n = x.shape[ax]
        idx = idx.to(device=x.device, dtype=torch.int64)
        idx = torch.where(idx < 0, idx + n, idx)
        y = x.index_select(ax, idx.reshape(-1))
        return [y.reshape(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]))]
    return run


@_op("Expand")
def _expand(a, opset, node):
    def run(args, rt):
        x = args[0]
        shape = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(args[1])))
        return [x.expand(shape)]
    return run


@_op("Tile")
def _tile(a, opset, node):
    return lambda args, rt: [torch.tile(args[0], tuple(_ints(args[1])))]


@_op("Range")
def _range(a, opset, node):
    def run(args, rt):
        start, limit, delta = (_scalar(t) for t in args[:3])
        return [torch.arange(start, limit, delta, dtype=args[0].dtype, device=args[0].device)]
    return run


# ---- Resize / Upsample -----------------------------------------------------------------

def _src_coords(out_len, in_len, scale, ctm):
    x = torch.arange(out_len, dtype=torch.float32)
    scale = torch.tensor(scale, dtype=torch.float32)
    if ctm == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adj = torch.tensor(out_len, dtype=torch.float32) / (scale * in_len)
        center = torch.tensor(in_len / 2.0, dtype=torch.float32)
        offset = center * (1 - adj)
        return offset + (x + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(x)
    if ctm == "align_corners":
        if out_len == 1:
            return torch.zeros_like(x)
        return x * (torch.tensor(in_len - 1, dtype=torch.float32) / (out_len - 1))
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nearest":
        return (x + 0.5) / scale
    raise ValueError(ctm)


def _nearest_index(xo, nearest_mode, scale, in_len):
    if nearest_mode == "round_prefer_floor":
        i = torch.ceil(xo - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        i = torch.floor(xo + 0.5)
    elif nearest_mode == "floor":
        i = torch.floor(xo)
    elif nearest_mode == "ceil":
        i = torch.ceil(xo)
    else:  # "simple": onnxruntime's rule for Upsample and opset-10 Resize
        i = torch.ceil(xo) if scale < 1 else torch.trunc(xo)
    return i.to(torch.int64).clamp(0, in_len - 1)


_CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_half_pixel_for_nearest")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@_op("Resize", "Upsample")
def _resize(a, opset, node):
    mode = a.get("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise OnnxPruneError(f"{_node_label(node)}: mode={mode!r} is not supported (nearest and linear are)")
    legacy = node.op_type == "Upsample" or opset < 11
    if legacy:
        ctm, nearest_mode = "asymmetric", "simple"
    else:
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
        if ctm not in _CTMS:
            raise OnnxPruneError(f"{_node_label(node)}: coordinate_transformation_mode={ctm!r} is not supported")
        if nearest_mode not in _NEAREST:
            raise OnnxPruneError(f"{_node_label(node)}: nearest_mode={nearest_mode!r} is not supported")
        if int(a.get("antialias", 0)):
            raise OnnxPruneError(f"{_node_label(node)}: antialias=1 is not supported")
    attr_scales = a.get("scales")
    attr_axes = a.get("axes")
    policy = a.get("keep_aspect_ratio_policy", "stretch")

    def run(args, rt):
        x = args[0]
        r = x.dim()
        sizes = None
        if legacy:
            scales = _floats(args[1]) if _given(args, 1) else list(attr_scales)
        else:
            scales = _floats(args[2]) if _given(args, 2) and args[2].numel() else None
            sizes = _ints(args[3]) if _given(args, 3) and args[3].numel() else None
        axes = [_norm_axis(v, r) for v in attr_axes] if attr_axes is not None else list(range(r))
        ins = [x.shape[ax] for ax in axes]
        if sizes is not None:
            if policy == "stretch":
                outs = list(sizes)
                scl = [float(np.float32(o) / np.float32(n)) for o, n in zip(outs, ins)]
            else:
                ratios = [o / n for o, n in zip(sizes, ins)]
                sc = min(ratios) if policy == "not_larger" else max(ratios)
                outs = [int(math.floor(n * sc + 0.5)) for n in ins]
                scl = [sc] * len(ins)
        else:
            scl = list(scales)
            outs = [int(math.floor(n * s)) for n, s in zip(ins, scl)]
        y = x
        for ax, n, o, sc in zip(axes, ins, outs, scl):
            if o == n and sc == 1.0:
                continue
            xo = _src_coords(o, n, sc, ctm)
            if mode == "nearest":
                y = y.index_select(ax, _nearest_index(xo, nearest_mode, sc, n).to(y.device))
                continue
            xo = xo.clamp(0, n - 1)
            i0 = torch.floor(xo).to(torch.int64)
            i1 = torch.clamp(i0 + 1, max=n - 1)
            w1 = (xo - i0.to(xo.dtype)).to(dtype=y.dtype, device=y.device)
            shape = [1] * r
            shape[ax] = o
            w1 = w1.reshape(shape)
            y0 = y.index_select(ax, i0.to(y.device))
            y1 = y.index_select(ax, i1.to(y.device))
            y = y0 + (y1 - y0) * w1
        return [y]
    return run


SUPPORTED_OPS: frozenset[str] = frozenset(_OPS)

# where a float constant is a trainable weight: op type -> input slots
_WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                 "PRelu": (1,), "InstanceNormalization": (1, 2), "BatchNormalization": (1, 2)}
_AFFINE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# float inputs read on the host (as Python numbers): constant ones are passed as their CPU
# values, so a module moved to a GPU does not synchronise on them every forward
_HOST_SLOTS = {"Clip": (1, 2), "Dropout": (1,), "Pad": (2,), "Resize": (1, 2), "Upsample": (1,)}
_NOT_FOLDABLE = {"BatchNormalization", "Dropout"}


def _sanitize(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "t_" + s
    return s


# --------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------

class OnnxModule(nn.Module):
    """A trainable ``nn.Module`` executing an ONNX graph with torch ops (see module docs).

    ``trainable``: ``"weights"`` (default: weights, biases, scales and slopes become
    parameters) or ``"all"`` (every float constant except BN running statistics).
    """

    def __init__(self, model: onnx.ModelProto, trainable: str = "weights"):
        super().__init__()
        if trainable not in ("weights", "all"):
            raise ValueError(f"trainable must be 'weights' or 'all', got {trainable!r}")
        if not isinstance(model, onnx.ModelProto):
            raise TypeError("OnnxModule expects an onnx.ModelProto")
        self.source_model = onnx.ModelProto()
        self.source_model.CopyFrom(model)
        g = model.graph
        self.opset = _main_opset(model)

        # --- constants: initializers and Constant nodes ---------------------------------
        consts: dict[str, np.ndarray] = {}
        self._origin: dict[str, tuple] = {}
        for i, t in enumerate(g.initializer):
            consts[t.name] = numpy_helper.to_array(t)
            self._origin[t.name] = ("init", i, str(consts[t.name].dtype))
        nodes = list(g.node)
        for idx, node in enumerate(nodes):
            if node.domain not in ("", "ai.onnx"):
                raise OnnxPruneError(f"{_node_label(node)}: op {node.op_type!r} of domain "
                                     f"{node.domain!r} is not supported by the torch bridge")
            if node.op_type not in _OPS:
                raise OnnxPruneError(f"{_node_label(node)}: op type {node.op_type!r} is not supported by "
                                     "the torch bridge")
            if node.op_type == "Constant":
                a = _attrs(node)
                if "value" in a:
                    consts[node.output[0]] = np.asarray(a["value"])
                    self._origin[node.output[0]] = ("constant", idx, str(consts[node.output[0]].dtype))
        init_names = {t.name for t in g.initializer}
        self.input_names = [vi.name for vi in g.input if vi.name not in init_names]
        self.output_names = [vi.name for vi in g.output]

        uses: dict[str, list[tuple[int, int]]] = {}
        producer: dict[str, int] = {}
        for idx, node in enumerate(nodes):
            for j, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((idx, j))
            for name in node.output:
                if name:
                    producer[name] = idx

        def is_float(name):
            return name in consts and consts[name].dtype.kind == "f"

        # --- classify float constants -----------------------------------------------------
        params: set[str] = set()
        bn_stats: set[str] = set()
        affine_out: set[str] = set()
        for idx, node in enumerate(nodes):
            op = node.op_type
            for j in _WEIGHT_SLOTS.get(op, ()):
                if j < len(node.input) and is_float(node.input[j]):
                    params.add(node.input[j])
            if op == "BatchNormalization":
                for j in (3, 4):
                    if j < len(node.input) and node.input[j] in consts:
                        bn_stats.add(node.input[j])
            if op in _AFFINE:
                affine_out.add(node.output[0])
            elif op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
                for j in (0, 1):
                    c, other = node.input[j], node.input[1 - j]
                    if is_float(c) and other in affine_out and other not in consts:
                        bias_like = op in ("Add", "Sub") and nodes[producer[other]].op_type in _AFFINE
                        if consts[c].size > 1 or bias_like:
                            params.add(c)
                            affine_out.add(node.output[0])
        if trainable == "all":   # every float constant that is not read as a host-side number
            host_read = {nodes[i].input[j] for n in consts for i, j in uses.get(n, ())
                         if j in _HOST_SLOTS.get(nodes[i].op_type, ())}
            params |= {n for n in consts if is_float(n) and n in uses and n not in host_read}
        params -= bn_stats
        used = set(uses) | set(self.output_names)

        # --- BatchNormalization modules -------------------------------------------------------
        self.bn = nn.ModuleDict()
        self.onnx_names: dict[str, str] = {}
        owned: set[str] = set()
        self._bn_keys: dict[int, str] = {}
        taken: set[str] = set(dir(self)) | {"_static", "_steps", "_free", "_attr_of", "_bn_keys",
                                                "_const_attrs"}
        for idx, node in enumerate(nodes):
            if node.op_type != "BatchNormalization":
                continue
            ins = list(node.input[1:5])
            if len(ins) < 4 or not all(n in consts and is_float(n) for n in ins) \
                    or any(len(uses.get(n, [])) != 1 for n in ins) or len(set(ins)) != 4:
                continue   # shared or computed tensors: functional batch norm on root tensors
            a = _attrs(node)
            base = ins[0]
            for suffix in (".weight", "_weight", ".scale", "_scale"):
                if base.endswith(suffix) and len(base) > len(suffix):
                    base = base[: -len(suffix)]
                    break
            key = _sanitize(base)
            k2, i = key, 1
            while k2 in self.bn:
                k2, i = f"{key}_{i}", i + 1
            key = k2
            w, b, rm, rv = (consts[n] for n in ins)
            mod = OnnxBatchNorm(int(w.shape[0]), eps=float(a.get("epsilon", 1e-5)),
                                momentum=1.0 - float(a.get("momentum", 0.9)))
            with torch.no_grad():
                mod.weight = nn.Parameter(_to_tensor(w))
                mod.bias = nn.Parameter(_to_tensor(b))
                mod.running_mean = _to_tensor(rm)
                mod.running_var = _to_tensor(rv)
            self.bn[key] = mod
            for field, n in zip(("weight", "bias", "running_mean", "running_var"), ins):
                self.onnx_names[f"bn.{key}.{field}"] = n
                owned.add(n)
            self._bn_keys[idx] = key

        # --- root parameters and buffers ------------------------------------------------------
        self._attr_of: dict[str, str] = {}

        def fresh(name):
            s, i = _sanitize(name), 1
            cand = s
            while cand in taken:
                cand, i = f"{s}_{i}", i + 1
            taken.add(cand)
            return cand

        for name in consts:
            if name not in used or name in owned:
                continue
            if name in params:
                attr = fresh(name)
                self.register_parameter(attr, nn.Parameter(_to_tensor(consts[name])))
                self.onnx_names[attr] = name
                self._attr_of[name] = attr
            elif name in bn_stats:
                attr = fresh(name)
                self.register_buffer(attr, _to_tensor(consts[name]))
                self.onnx_names[attr] = name
                self._attr_of[name] = attr

        # --- static values (non-trainable constants and everything computable from them) --------
        self._static: dict[str, torch.Tensor] = {}
        self._const_attrs: set[str] = set()
        n_const = 0

        def put_static(name, t):
            nonlocal n_const
            if t.is_floating_point():
                attr = fresh(f"_const{n_const}")
                n_const += 1
                self.register_buffer(attr, t, persistent=False)
                self._const_attrs.add(attr)
                self._attr_of[name] = attr
            else:
                self._static[name] = t

        for name, arr in consts.items():
            if name in used and name not in self._attr_of and name not in owned \
                    and self._origin[name][0] == "init":
                put_static(name, _to_tensor(arr))

        self._steps = []
        fold_rt = _Run(False, torch.device("cpu"), self)
        static_names = set(self._static) | {n for n, at in self._attr_of.items() if at in self._const_attrs}
        for idx, node in enumerate(nodes):
            a = _attrs(node)
            if idx in self._bn_keys:
                a["__bn_key__"] = self._bn_keys[idx]
            try:
                fn = _OPS[node.op_type](a, self.opset, node)
            except OnnxPruneError:
                raise
            except Exception as exc:
                raise OnnxPruneError(f"{_node_label(node)}: cannot be converted ({exc})") from None
            outs = list(node.output)
            if node.op_type == "Constant" and (outs[0] in self._attr_of or outs[0] in owned):
                continue   # a Constant node holding a parameter or BN tensor
            ins = list(node.input)
            if idx in self._bn_keys:
                ins = ins[:1]      # the OnnxBatchNorm module holds the other four
            if node.op_type not in _NOT_FOLDABLE and all(not n or n in static_names for n in ins):
                args = [self._resolve_static(n) if n else None for n in ins]
                try:
                    with torch.no_grad():
                        res = fn(args, fold_rt)
                except Exception as exc:
                    raise OnnxPruneError(f"{_node_label(node)}: failed on constant inputs ({exc})") from None
                for o, t in zip(outs, res):
                    if o:
                        put_static(o, t.detach().cpu().contiguous())
                        static_names.add(o)
                continue
            host = {j: self._resolve_static(ins[j]).detach().cpu() for j in _HOST_SLOTS.get(node.op_type, ())
                    if j < len(ins) and ins[j] in static_names}
            self._steps.append((fn, ins, outs, host))

        # --- free tensors after their last use ------------------------------------------------
        last: dict[str, int] = {}
        for si, (_, ins, _, _) in enumerate(self._steps):
            for n in ins:
                last[n] = si
        keep = set(self.output_names)
        self._free = [[] for _ in self._steps]
        for n, si in last.items():
            if n not in keep:
                self._free[si].append(n)

    # ------------------------------------------------------------------------------------
    def _resolve_static(self, name):
        if name in self._static:
            return self._static[name]
        return getattr(self, self._attr_of[name])

    def _get(self, env, name):
        if not name:
            return None
        t = env.get(name)
        if t is not None:
            return t
        if name in self._attr_of:
            return getattr(self, self._attr_of[name])
        if name in self._static:
            return self._static[name]
        raise OnnxPruneError(f"tensor '{name}' has no value (not an input, constant or node output)")

    def forward(self, *inputs, **named):
        if len(inputs) > len(self.input_names):
            raise TypeError(f"expected at most {len(self.input_names)} inputs, got {len(inputs)}")
        env: dict[str, torch.Tensor] = {}
        for name, x in zip(self.input_names, inputs):
            env[name] = x
        for name, x in named.items():
            if name not in self.input_names:
                raise TypeError(f"unknown input {name!r}; inputs are {self.input_names}")
            env[name] = x
        missing = [n for n in self.input_names if n not in env]
        if missing:
            raise TypeError(f"missing inputs {missing}")
        for k, v in list(env.items()):
            if isinstance(v, np.ndarray):
                env[k] = torch.from_numpy(v)
        device = next(iter(env.values())).device if env else torch.device("cpu")
        rt = _Run(self.training, device, self)
        for (fn, ins, outs, host), free in zip(self._steps, self._free):
            args = [self._get(env, n) for n in ins]
            for j, t in host.items():
                args[j] = t
            res = fn(args, rt)
            for o, t in zip(outs, res):
                if o:
                    env[o] = t
            for n in free:
                env.pop(n, None)
        res = tuple(self._get(env, n) for n in self.output_names)
        return res[0] if len(res) == 1 else res

    # ------------------------------------------------------------------------------------
    def onnx_tensors(self) -> dict[str, torch.Tensor]:
        """ONNX tensor name -> current value, for every parameter and BN running statistic."""
        state = self.state_dict(keep_vars=True)
        return {onnx_name: state[key] for key, onnx_name in self.onnx_names.items() if key in state}

    def to_onnx(self, path=None, example_input=None, opset=None, **kw) -> onnx.ModelProto:
        return to_onnx(self, path, example_input, opset, **kw)

    def extra_repr(self) -> str:
        return (f"opset={self.opset}, nodes={len(self._steps)} (+{len(self.source_model.graph.node) - len(self._steps)} "
                f"constant), params={sum(1 for _ in self.parameters())}")


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------

def _write_back(module: OnnxModule) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(module.source_model)
    g = m.graph
    for name, t in module.onnx_tensors().items():
        kind, idx, dtype = module._origin[name]
        arr = t.detach().cpu().to(torch.float32 if t.dtype == torch.bfloat16 else t.dtype).numpy()
        arr = arr.astype(dtype, copy=False)
        new = numpy_helper.from_array(arr, name)
        if kind == "init":
            g.initializer[idx].CopyFrom(new)
        else:
            node = g.node[idx]
            for att in node.attribute:
                if att.name == "value":
                    new.name = att.t.name
                    att.t.CopyFrom(new)
    return m


def _compare(got: list[np.ndarray], ref: list[np.ndarray], rtol: float, what: str) -> None:
    for i, (a, b) in enumerate(zip(got, ref)):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise VerificationError(f"{what}: output {i} has shape {a.shape}, expected {b.shape}")
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        bound = rtol * (float(np.max(np.abs(b))) if b.size else 0.0) + 1e-6
        if not err <= bound:
            raise VerificationError(f"{what}: output {i} differs by {err:.3g} (allowed {bound:.3g})")


def to_onnx(module: OnnxModule, path=None, example_input=None, opset: int | None = None, *,
            method: str = "graph", fold_bn="auto", check: bool = False,
            rtol: float = 1e-5) -> onnx.ModelProto:
    """Export ``module`` back to ONNX (see the module docstring); write to ``path`` if given.

    ``example_input``: a tensor or tuple of tensors; needed for ``method="torch"``.  With
    ``check=True`` the export is run with onnxruntime on it and compared with the module in
    eval mode (TF32 off): max|diff| <= rtol * max|module| + 1e-6, else VerificationError.
    Off by default: deep nets reach fp32 noise of ~1e-5 of the output scale (onnxruntime
    against itself at different optimisation levels on ResNet-50).
    """
    if not isinstance(module, OnnxModule):
        raise TypeError("to_onnx expects an OnnxModule")
    if example_input is not None and not isinstance(example_input, (tuple, list)):
        example_input = (example_input,)
    if method == "graph":
        m = _write_back(module)
        props = {p.key: p.value for p in m.metadata_props}
        if fold_bn == "auto":
            only = json.loads(props[_REINSERTED_KEY]) if _REINSERTED_KEY in props else []
            if only:
                m = fold_batchnorm(m, only=only)
        elif fold_bn:
            m = fold_batchnorm(m)
        if _REINSERTED_KEY in props and fold_bn:
            keep = [p for p in m.metadata_props if p.key != _REINSERTED_KEY]
            del m.metadata_props[:]
            m.metadata_props.extend(keep)
        if opset is not None and opset != _main_opset(m):
            from onnx import version_converter
            try:
                m = version_converter.convert_version(m, int(opset))
            except Exception as exc:
                raise OnnxPruneError(f"cannot convert the model to opset {opset}: "
                                     f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") from None
    elif method == "torch":
        if example_input is None:
            raise OnnxPruneError("to_onnx(method='torch') needs example_input")
        import io
        import warnings
        buf = io.BytesIO()
        was = module.training
        module.eval()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, tuple(example_input), buf, dynamo=False,
                                  opset_version=int(opset or min(module.opset, 20)),
                                  input_names=list(module.input_names),
                                  output_names=list(module.output_names), do_constant_folding=True)
        finally:
            module.train(was)
        m = onnx.load_from_string(buf.getvalue())
    else:
        raise ValueError(f"method must be 'graph' or 'torch', got {method!r}")

    if check:
        if example_input is None:
            raise OnnxPruneError("to_onnx(check=True) needs example_input")
        from onnxprune.runtime import make_session
        sess = make_session(m, quiet=True)
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(module.input_names, example_input)}
        got = sess.run(None, feeds)
        was = module.training
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        module.eval()
        try:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            with torch.no_grad():
                ref = module(*example_input)
        finally:
            module.train(was)
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        ref = ref if isinstance(ref, tuple) else (ref,)
        _compare(got, [r.detach().cpu().numpy() for r in ref], rtol, "exported ONNX vs module")
    if path is not None:
        from onnxprune.model_io import save_model
        save_model(m, path)
    return m


# --------------------------------------------------------------------------------------
# BatchNorm re-insertion and folding
# --------------------------------------------------------------------------------------

def _identity_var(eps: float) -> np.float32:
    e = np.float32(eps)
    v = np.float32(1) - e
    for _ in range(8):
        s = np.float32(v + e)
        if s == np.float32(1):
            return v
        v = np.nextafter(v, np.float32(0) if s > 1 else np.float32(2), dtype=np.float32)
    raise OnnxPruneError(f"no float32 variance makes var + {eps} exactly 1")


def _unique(name: str, taken: set[str]) -> str:
    cand, i = name, 1
    while cand in taken:
        cand, i = f"{name}_{i}", i + 1
    taken.add(cand)
    return cand


def reinsert_batchnorm(model: onnx.ModelProto, after: Iterable[str] = ("Relu", "Add", "Clip"),
                       eps: float = 1e-5, momentum: float = 0.9) -> onnx.ModelProto:
    """Copy of ``model`` with an identity BatchNormalization after every Conv whose output
    feeds one of ``after`` (and no BatchNormalization already).

    The new BN has scale 1, B 0, mean 0 and var = float32(1 - eps) adjusted so that
    float32(var + eps) == 1 exactly, so outputs are unchanged bit for bit.  The Conv's
    output tensor keeps its name on the BN's output (the Conv now writes
    ``<name>__prebn``).  The new nodes' names are recorded in metadata
    ``onnxprune.reinserted_bn`` so :func:`to_onnx` folds exactly these back.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    after = set(after)
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    taken = set(inits) | {n.name for n in g.node} | {o for n in g.node for o in n.output} \
        | {i for n in g.node for i in n.input} | {vi.name for vi in g.input}
    list_inputs = m.ir_version < 4 or any(vi.name in inits for vi in g.input)
    var = _identity_var(eps)
    new_nodes, added = [], []
    for node in g.node:
        new_nodes.append(node)
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        y = node.output[0]
        cons = consumers.get(y, [])
        if not any(c.op_type in after for c in cons) or any(c.op_type == "BatchNormalization" for c in cons):
            continue
        if node.input[1] not in inits:
            continue
        c = int(inits[node.input[1]].dims[0])
        base = node.name or y
        names = [_unique(f"{base}.bn.{f}", taken) for f in ("weight", "bias", "running_mean", "running_var")]
        vals = [np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
                np.full(c, var, np.float32)]
        for nm, v in zip(names, vals):
            t = numpy_helper.from_array(v, nm)
            g.initializer.append(t)
            if list_inputs:
                g.input.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, [c]))
        pre = _unique(f"{y}__prebn", taken)
        node.output[0] = pre
        bn_name = _unique(f"{base}__bn", taken)
        bn = helper.make_node("BatchNormalization", [pre] + names, [y], name=bn_name,
                              epsilon=float(np.float32(eps)), momentum=float(momentum))
        new_nodes.append(bn)
        added.append(bn_name)
    del g.node[:]
    g.node.extend(new_nodes)
    props = {p.key: p.value for p in m.metadata_props}
    prev = json.loads(props.get(_REINSERTED_KEY, "[]"))
    helper.set_model_props(m, {**props, _REINSERTED_KEY: json.dumps(prev + added)})
    return m


def fold_batchnorm(model: onnx.ModelProto, only: Iterable[str] | None = None) -> onnx.ModelProto:
    """Copy of ``model`` with every inference-form BatchNormalization that directly follows a
    Conv (whose output feeds nothing else) folded into the Conv's weight and bias.

    ``only``: fold just the BN nodes with these names.  Computed in float64, stored in the
    Conv weight's dtype.  Initializers left unused are removed.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    only = set(only) if only is not None else None
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    removed = []
    candidates: set[str] = set()
    taken = set(inits) | {o for n in g.node for o in n.output}
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization" or (only is not None and bn.name not in only):
            continue
        if any(o for o in bn.output[1:]) or len(bn.input) < 5:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0], 0) != 1 \
                or bn.input[0] in graph_outputs:
            continue
        if conv.input[1] not in inits or not all(n in inits for n in bn.input[1:5]):
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        a = _attrs(bn)
        eps = float(a.get("epsilon", 1e-5))
        scale, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        w_t = inits[conv.input[1]]
        w = numpy_helper.to_array(w_t)
        dtype = w.dtype
        s = scale / np.sqrt(var + np.float64(np.float32(eps)))
        has_b = len(conv.input) > 2 and bool(conv.input[2])
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_b else np.zeros_like(mean)
        w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
        b_new = ((b - mean) * s + beta).astype(dtype)
        if consumers.get(conv.input[1], 0) == 1:
            w_t.CopyFrom(numpy_helper.from_array(w_new, w_t.name))
        else:
            nm = _unique(conv.input[1] + "__bnfold", taken)
            g.initializer.append(numpy_helper.from_array(w_new, nm))
            inits[nm] = g.initializer[-1]
            consumers[conv.input[1]] -= 1
            candidates.add(conv.input[1])
            consumers[nm] = 1
            conv.input[1] = nm
        candidates.update(bn.input[1:5])
        if has_b and consumers.get(conv.input[2], 0) == 1:
            inits[conv.input[2]].CopyFrom(numpy_helper.from_array(b_new, conv.input[2]))
        elif not has_b and consumers.get(bn.input[2], 0) == 1:
            # the BN's own B (used by this BN only) becomes the Conv's bias
            inits[bn.input[2]].CopyFrom(numpy_helper.from_array(b_new, bn.input[2]))
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = bn.input[2]
            consumers[bn.input[2]] += 1
        else:
            nm = _unique((conv.input[2] if has_b else bn.input[2]) + "__bnfold", taken)
            g.initializer.append(numpy_helper.from_array(b_new, nm))
            inits[nm] = g.initializer[-1]
            if has_b:
                consumers[conv.input[2]] -= 1
                candidates.add(conv.input[2])
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = nm
            consumers[nm] = 1
        for n in bn.input[1:5]:
            consumers[n] = consumers.get(n, 0) - 1
        old = conv.output[0]
        conv.output[0] = bn.output[0]
        producer[bn.output[0]] = conv
        g.node.remove(bn)
        removed.append(old)
    if not removed:
        return m
    live = {i for n in g.node for i in n.input} | graph_outputs
    dead = {t.name for t in g.initializer if t.name in candidates and t.name not in live}
    keep_inits = [t for t in g.initializer if t.name not in dead]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    keep_inputs = [vi for vi in g.input if vi.name not in dead]
    del g.input[:]
    g.input.extend(keep_inputs)
    gone = set(removed)
    keep_vi = [vi for vi in g.value_info if vi.name not in gone]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    return m
