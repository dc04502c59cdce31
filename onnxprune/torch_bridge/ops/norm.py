"""BatchNormalization (as an :class:`OnnxBatchNorm` module or functional) and InstanceNormalization."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from onnxprune.errors import OnnxPruneError
from onnxprune.torch_bridge.common import node_desc
from onnxprune.torch_bridge.ops.registry import register

# attribute key by which the module builder hands a BatchNormalization its OnnxBatchNorm's key
BN_KEY_ATTR = "__bn_key__"


class OnnxBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of any rank >= 2 (N, C, ...), holding an ONNX BatchNormalization's tensors.

    ``momentum`` here is torch's convention (``1 - onnx_momentum``)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


@register("BatchNormalization")
def _bn(a, opset, node):
    if int(a.get("spatial", 1)) != 1:
        raise OnnxPruneError(f"{node_desc(node, a)}: spatial=0 is not supported")
    if any(o for o in node.output[1:]):
        raise OnnxPruneError(f"{node_desc(node, a)}: the training-mode outputs (mean/var) are not supported")
    eps = float(a.get("epsilon", 1e-5))
    momentum = 1.0 - float(a.get("momentum", 0.9))
    key = a.get(BN_KEY_ATTR)

    def run(args, rt):
        if key is not None:
            return [rt.module.bn[key](args[0])]
        x, w, b, rm, rv = args[:5]
        return [F.batch_norm(x, rm, rv, w, b, rt.training, momentum, eps)]
    return run


@register("InstanceNormalization")
def _inorm(a, opset, node):
    eps = float(a.get("epsilon", 1e-5))
    return lambda args, rt: [F.instance_norm(args[0], weight=args[1], bias=args[2], eps=eps)]
