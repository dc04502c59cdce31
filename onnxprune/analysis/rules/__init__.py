"""The op rules of the analysis, one small function per op family, and their registry.

A rule is ``rule(p: ChannelPass, idx: int, node: onnx.NodeProto) -> None``: it reads the layouts
of the node's inputs from ``p``, sets the layouts of its outputs, and records slices, updates,
consumer edges and compute terms. Adding an op = one function in a family module plus one line in
``RULES`` below (or its name in one of the family sets).
"""
from __future__ import annotations

from onnxprune.analysis.rules import (batch_reshape, broadcast, concat_split, conv, elementwise, gated, group_norm, linear, norm,
                                      quant, shape)

__all__ = ["RULES", "HARMLESS", "UNARY_PASS", "SPATIAL_PASS", "ELEMENTWISE", "REDUCE", "rule_for"]

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
HARMLESS = {"Shape", "Size", "Constant", "ConstantOfShape"}    # read no channel values

RULES = {
    "Conv": conv.conv,
    "ConvTranspose": conv.conv_transpose,
    "Gemm": linear.gemm,
    "MatMul": gated.matmul,
    "BatchNormalization": norm.batchnorm,
    "InstanceNormalization": norm.batchnorm,
    "Concat": concat_split.concat,
    "Split": concat_split.split,
    "Slice": concat_split.slice_channels,
    "Pad": concat_split.pad,
    "Flatten": shape.flatten,
    "Reshape": batch_reshape.reshape,
    "Transpose": shape.transpose,
    "Squeeze": shape.squeeze,
    "Unsqueeze": shape.squeeze,
    "Softmax": elementwise.softmax,
    "LogSoftmax": elementwise.softmax,
    "Hardmax": elementwise.softmax,
    "MaxPool": elementwise.maxpool,
    "Expand": broadcast.expand,
    "GroupNormalization": group_norm.group_normalization,
    "QuantizeLinear": quant.quantize_linear,
    "DequantizeLinear": quant.quantize_linear,
}
_FAMILIES = ((UNARY_PASS, elementwise.unary), (SPATIAL_PASS, elementwise.spatial),
             (ELEMENTWISE, elementwise.elementwise), (REDUCE, shape.reduce))


def rule_for(op_type: str):
    """The rule of a standard-domain op, or None when the analysis does not know it."""
    rule = RULES.get(op_type)
    if rule is None:
        rule = next((r for ops, r in _FAMILIES if op_type in ops), None)
    return rule
