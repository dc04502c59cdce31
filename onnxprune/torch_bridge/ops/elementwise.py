"""Element-wise math, comparison and logic; variadic Max/Min/Sum/Mean; Where; Cast."""
from __future__ import annotations

import torch

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import DTYPES, align, node_desc
from onnxprune.torch_bridge.ops.registry import OPS, register, register_binary, register_unary

register_unary("Identity", lambda x: x)
register_unary("Erf", torch.erf)
register_unary("Sqrt", torch.sqrt)
register_unary("Exp", torch.exp)
register_unary("Log", torch.log)
register_unary("Neg", torch.neg)
register_unary("Abs", torch.abs)
register_unary("Reciprocal", torch.reciprocal)
register_unary("Floor", torch.floor)
register_unary("Ceil", torch.ceil)
register_unary("Round", torch.round)
register_unary("Sign", torch.sign)
register_unary("Sin", torch.sin)
register_unary("Cos", torch.cos)
register_unary("Not", torch.logical_not)
register_unary("IsNaN", torch.isnan)


def _div(x, y):
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


def _pow(x, y):
    r = torch.pow(x, y)
    return r.to(x.dtype) if r.dtype != x.dtype else r


register_binary("Add", torch.add)
register_binary("Sub", torch.sub)
register_binary("Mul", torch.mul)
register_binary("Div", _div)
register_binary("Pow", _pow)
register_binary("Equal", torch.eq)
register_binary("Less", torch.lt)
register_binary("Greater", torch.gt)
register_binary("LessOrEqual", torch.le)
register_binary("GreaterOrEqual", torch.ge)
register_binary("And", torch.logical_and)
register_binary("Or", torch.logical_or)
register_binary("Xor", torch.logical_xor)


def _variadic(kind):
    def factory(a, opset, node):
        def run(args, rt):
            ts = align(*[t for t in args if t is not None])
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


OPS["Max"] = _variadic("Max")
OPS["Min"] = _variadic("Min")
OPS["Sum"] = _variadic("Sum")
OPS["Mean"] = _variadic("Mean")


@register("Where")
def _where(a, opset, node):
    def run(args, rt):
        c, x, y = align(*args[:3])
        return [torch.where(c.bool(), x, y)]
    return run


@register("Cast")
def _cast(a, opset, node):
    to = int(a["to"])
    if to not in DTYPES:
        raise OnnxPruneError(f"{node_desc(node, a)}: Cast to type {to} is not supported")
    dt = DTYPES[to]
    return lambda args, rt: [args[0].to(dt)]


@register("CastLike")
def _castlike(a, opset, node):
    return lambda args, rt: [args[0].to(args[1].dtype)]
