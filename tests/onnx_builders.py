"""Tiny ONNX graphs for the pattern and CLI tests, built with ``onnx.helper``.

``Net`` collects nodes and seeded random initializers; every helper returns the name of the
tensor it made, so a test reads like the network it describes::

    n = Net(opset=13)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8))
    n.output(n.conv(y, 8, 4))
    model = n.model()
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Net", "conv_chain", "small_resnet"]


class Net:
    """A graph under construction: nodes, initializers, inputs and outputs."""

    def __init__(self, opset: int = 13, seed: int = 0, named: bool = True) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.named = named
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._ops: dict[str, int] = {}

    # --- plumbing ------------------------------------------------------------------------
    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def input(self, name: str, shape, dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, shape=None, dtype: int = TensorProto.FLOAT) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, value, stem: str = "c") -> str:
        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape, fan_in: int | None = None, stem: str = "w") -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        w = self.rng.standard_normal(shape) / np.sqrt(fan_in)
        return self.const(w.astype(np.float32), stem)

    def positive(self, shape, stem: str = "p") -> str:
        return self.const(self.rng.uniform(0.5, 1.5, shape).astype(np.float32), stem)

    def node(self, op: str, inputs, outputs: int = 1, domain: str = "", name: str | None = None,
             **attrs):
        """Add a node; it is called ``name`` or ``<op>_<k>`` (``k`` counting that op type), or
        left unnamed when the net was made with ``named=False``."""
        outs = [self._name(op.lower()) for _ in range(outputs)]
        self._ops[op] = self._ops.get(op, 0) + 1
        name = name or (f"{op}_{self._ops[op]}" if self.named else "")
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain or None,
                                           **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, ir_version: int | None = None, initializers_as_inputs: bool = False) -> onnx.ModelProto:
        inputs = list(self.inputs)
        if initializers_as_inputs:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        graph = helper.make_graph(self.nodes, "net", inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        if any(n.domain not in ("", "ai.onnx") for n in self.nodes):
            opsets += [helper.make_opsetid(d, 1) for d in sorted({n.domain for n in self.nodes} - {""})]
        ir = ir_version or (7 if self.opset <= 12 else 8 if self.opset <= 17 else 9)
        model = helper.make_model(graph, opset_imports=opsets, ir_version=ir)
        if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
            inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
            for o in model.graph.output:
                if not o.type.tensor_type.HasField("shape") and inferred[o.name].type.tensor_type.HasField("shape"):
                    o.CopyFrom(inferred[o.name])
        onnx.checker.check_model(model, full_check=not any(n.domain for n in self.nodes))
        return model

    # --- layers --------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, pad: int | None = None, name: str | None = None) -> str:
        pad = k // 2 if pad is None else pad
        ins = [x, self.weight([cout, cin // group, k, k])]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1, "b"))
        return self.node("Conv", ins, name=name, kernel_shape=[k, k], pads=[pad] * 4,
                         strides=[stride] * 2, group=group)

    def conv_transpose(self, x: str, cin: int, cout: int, k: int = 2, stride: int = 2) -> str:
        return self.node("ConvTranspose", [x, self.weight([cin, cout, k, k]),
                                           self.const(np.zeros(cout, np.float32) + 0.1, "b")],
                         kernel_shape=[k, k], strides=[stride] * 2)

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        ins = [x, self.positive([c], "gamma"),
               self.const(r.standard_normal(c).astype(np.float32) * 0.1, "beta"),
               self.const(r.standard_normal(c).astype(np.float32) * 0.1, "mean"),
               self.positive([c], "var")]
        return self.node("BatchNormalization", ins, epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def gemm(self, x: str, k: int, n: int, trans_b: int = 1) -> str:
        w = self.weight([n, k] if trans_b else [k, n], fan_in=k)
        b = self.const(self.rng.standard_normal(n).astype(np.float32) * 0.1, "b")
        return self.node("Gemm", [x, w, b], transB=trans_b)

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64), "i")

    def gap(self, x: str) -> str:
        return self.node("GlobalAveragePool", [x])

    def flatten(self, x: str) -> str:
        return self.node("Flatten", [x], axis=1)

    def head(self, x: str, c: int, classes: int = 5) -> str:
        """GlobalAveragePool → Flatten → Gemm → graph output."""
        return self.output(self.gemm(self.flatten(self.gap(x)), c, classes))


def conv_chain(opset: int = 13, seed: int = 0, c: int = 8, named: bool = True) -> onnx.ModelProto:
    """x[1,3,8,8] → Conv(3→c) → BN → Relu → Conv(c→2c) → Relu → GAP → Flatten → Gemm(2c→5)."""
    n = Net(opset, seed, named=named)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.bn(n.conv(x, 3, c), c))
    y = n.relu(n.conv(y, c, 2 * c))
    n.head(y, 2 * c)
    return n.model()


def small_resnet(opset: int = 13, seed: int = 0, shape=(1, 3, 16, 16)) -> onnx.ModelProto:
    """A CIFAR-style net for the CLI tests: stem, one residual block, a stride-2 block, GAP →
    Gemm head, and a fixed side branch ``aux`` (a conv of the image that is a graph output, so
    its MACs cannot be pruned: the largest reachable reduction is below 100 %).
    ``shape`` may hold strings for dynamic dimensions."""
    n = Net(opset=opset, seed=seed)
    x = n.input("input", list(shape))
    s = n.relu(n.bn(n.conv(x, 3, 16, name="stem"), 16))
    y = n.relu(n.bn(n.conv(s, 16, 16, name="b1_conv1"), 16))
    y = n.bn(n.conv(y, 16, 16, name="b1_conv2"), 16)
    s = n.relu(n.node("Add", [s, y], name="b1_add"))
    y = n.relu(n.bn(n.conv(s, 16, 32, stride=2, name="b2_conv1"), 32))
    y = n.relu(n.bn(n.conv(y, 32, 32, name="b2_conv2"), 32))
    n.output(n.gemm(n.flatten(n.gap(y)), 32, 10))
    aux = n.conv(x, 3, 8, name="aux")
    n.output(aux)
    return n.model()
