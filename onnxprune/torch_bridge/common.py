"""Small helpers shared by the bridge's op implementations, module builder and exporter."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.view import node_label

try:
    import torch
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("onnxprune.torch_bridge needs PyTorch (pip install 'onnxprune[torch]')") from _exc

DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16, TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8, TensorProto.BOOL: torch.bool,
}
for _name, _code in (("uint16", TensorProto.UINT16), ("uint32", TensorProto.UINT32),
                     ("uint64", TensorProto.UINT64)):
    if hasattr(torch, _name):
        DTYPES[_code] = getattr(torch, _name)


def main_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset version."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise OnnxPruneError("model has no ai.onnx opset import")


# key OnnxModule adds to the attributes each op is built from: the node's index in the graph
NODE_INDEX = "__node_index__"


def node_desc(node: onnx.NodeProto, where: int | dict) -> str:
    """``"<OpType> node '<label>'"`` for error messages, the label being
    :func:`onnxprune.graph.view.node_label`; ``where`` is the node's index in the graph, or the
    attributes an op was built from (which carry it under :data:`NODE_INDEX`)."""
    index = where.get(NODE_INDEX, -1) if isinstance(where, dict) else where
    return f"{node.op_type} node '{node_label(node, index)}'"


def node_attrs(node: onnx.NodeProto, index: int) -> dict[str, Any]:
    """Attribute name -> Python value (strings decoded, tensors as numpy arrays) of node ``index``."""
    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            raise OnnxPruneError(f"{node_desc(node, index)}: subgraph attributes are not supported")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A contiguous torch copy of a numpy constant (float, int, uint or bool)."""
    arr = np.array(arr, copy=True, order="C")   # (np.ascontiguousarray would make 0-d arrays 1-d)
    if arr.dtype == np.float16 or arr.dtype.kind in "fiub":
        return torch.from_numpy(arr)
    raise OnnxPruneError(f"constant of dtype {arr.dtype} is not supported")


def ints(t) -> list[int]:
    """A tensor or array's values as a flat list of Python ints."""
    if isinstance(t, torch.Tensor):
        v = t.detach().cpu().reshape(-1).tolist()
    else:
        v = list(np.asarray(t).reshape(-1).tolist())
    return [int(x) for x in v]


def floats(t) -> list[float]:
    """A tensor or array's values as a flat list of Python floats."""
    if isinstance(t, torch.Tensor):
        return [float(x) for x in t.detach().cpu().reshape(-1).tolist()]
    return [float(x) for x in np.asarray(t).reshape(-1).tolist()]


def scalar(t):
    """The first element of a tensor as a Python number (anything else unchanged)."""
    return t.detach().cpu().reshape(-1)[0].item() if isinstance(t, torch.Tensor) else t


def given(args, i) -> bool:
    """True when optional input ``i`` was supplied."""
    return len(args) > i and args[i] is not None


def align(*ts):
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


def norm_axis(a: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one."""
    return a + rank if a < 0 else a


def torch_pads(begin, end) -> list[int]:
    """ONNX per-axis begin/end (first axis first) -> F.pad order (last axis first)."""
    out = []
    for b, e in zip(reversed(list(begin)), reversed(list(end))):
        out += [int(b), int(e)]
    return out


def same_pads(in_sizes, k, s, d, mode):
    """Begin/end pads of ``auto_pad`` SAME_UPPER / SAME_LOWER."""
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


def explicit_pads(a: dict, auto_pad: str, nd: int, in_sizes, k, s, d):
    """Begin/end pads from ``auto_pad`` or the ``pads`` attribute (Conv and pooling)."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(in_sizes, k, s, d, auto_pad)
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd
    p = [int(v) for v in a.get("pads", [0] * (2 * nd))]
    return p[:nd], p[nd:]


class Run:
    """Per-forward context handed to every op: train/eval mode, data device, the module."""
    __slots__ = ("training", "device", "module")

    def __init__(self, training: bool, device, module):
        self.training = training
        self.device = device
        self.module = module
