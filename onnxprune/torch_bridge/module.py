"""``OnnxModule``: an ONNX graph as a trainable ``torch.nn.Module`` (see the package docs).

Building one takes five steps, each a method below: collect the graph's constants, decide
which float constants are trainable (weights, biases, scales, slopes) and which are BN
statistics, give every movable BatchNormalization an :class:`OnnxBatchNorm`, register the
remaining constants as parameters, buffers or static CPU tensors, and compile the nodes into
a list of steps (folding nodes whose inputs are all constant).
"""
from __future__ import annotations

import re

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from onnxprune.errors import OnnxPruneError
from onnxprune.graph import GraphView
from onnxprune.torch_bridge.common import NODE_INDEX, Run, main_opset, node_attrs, node_desc, to_tensor
from onnxprune.torch_bridge.ops import OPS, OnnxBatchNorm
from onnxprune.torch_bridge.ops.norm import BN_KEY_ATTR

__all__ = ["OnnxModule"]

# where a float constant is a trainable weight: op type -> input slots
_WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                 "PRelu": (1,), "InstanceNormalization": (1, 2), "BatchNormalization": (1, 2)}
_AFFINE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# float inputs read on the host (as Python numbers): constant ones are passed as their CPU
# values, so a module moved to a GPU does not synchronise on them every forward
_HOST_SLOTS = {"Clip": (1, 2), "Dropout": (1,), "Pad": (2,), "Resize": (1, 2), "Upsample": (1,)}
_NOT_FOLDABLE = {"BatchNormalization", "Dropout"}
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
# attribute names a parameter or buffer must not take
_RESERVED = {"_static", "_steps", "_free", "_attr_of", "_bn_keys", "_const_attrs"}


def _sanitize(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "t_" + s
    return s


class _Names:
    """Hands out attribute names derived from ONNX names, never one already taken."""

    def __init__(self, taken: set[str]):
        self.taken = taken

    def fresh(self, name: str) -> str:
        s, i = _sanitize(name), 1
        cand = s
        while cand in self.taken:
            cand, i = f"{s}_{i}", i + 1
        self.taken.add(cand)
        return cand


# --------------------------------------------------------------------------------------
# graph survey (pure functions of the ONNX graph)
# --------------------------------------------------------------------------------------

def _check_supported(nodes) -> None:
    for idx, node in enumerate(nodes):
        if node.domain not in ("", "ai.onnx"):
            raise OnnxPruneError(f"{node_desc(node, idx)}: op {node.op_type!r} of domain "
                                 f"{node.domain!r} is not supported by the torch bridge")
        if node.op_type not in OPS:
            raise OnnxPruneError(f"{node_desc(node, idx)}: op type {node.op_type!r} is not supported by "
                                 "the torch bridge")


def _collect_constants(g: onnx.GraphProto):
    """Initializers and Constant-node tensors: name -> value, and name -> where it lives
    (``("init", index, dtype)`` or ``("constant", node index, dtype)``, for write-back)."""
    consts: dict[str, np.ndarray] = {}
    origin: dict[str, tuple] = {}
    for i, t in enumerate(g.initializer):
        consts[t.name] = numpy_helper.to_array(t)
        origin[t.name] = ("init", i, str(consts[t.name].dtype))
    for idx, node in enumerate(g.node):
        if node.op_type == "Constant":
            a = node_attrs(node, idx)
            if "value" in a:
                consts[node.output[0]] = np.asarray(a["value"])
                origin[node.output[0]] = ("constant", idx, str(consts[node.output[0]].dtype))
    return consts, origin


def _affine_followers(node, consts, affine_out, nodes, producer) -> set[str]:
    """Per-channel Add/Sub bias or Mul/Div scale constants applied right after an affine node."""
    found = set()
    for j in (0, 1):
        c, other = node.input[j], node.input[1 - j]
        if c in consts and consts[c].dtype.kind == "f" and other in affine_out and other not in consts:
            bias_like = node.op_type in ("Add", "Sub") and nodes[producer[other]].op_type in _AFFINE
            if consts[c].size > 1 or bias_like:
                found.add(c)
    return found


def _classify_constants(nodes, consts, uses, producer, trainable: str):
    """Float constants that become parameters, and the BN running statistics."""
    def is_float(name):
        return name in consts and consts[name].dtype.kind == "f"

    params: set[str] = set()
    bn_stats: set[str] = set()
    affine_out: set[str] = set()
    for node in nodes:
        op = node.op_type
        params.update(node.input[j] for j in _WEIGHT_SLOTS.get(op, ())
                      if j < len(node.input) and is_float(node.input[j]))
        if op == "BatchNormalization":
            bn_stats.update(node.input[j] for j in (3, 4) if j < len(node.input) and node.input[j] in consts)
        if op in _AFFINE:
            affine_out.add(node.output[0])
        elif op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            found = _affine_followers(node, consts, affine_out, nodes, producer)
            if found:
                params |= found
                affine_out.add(node.output[0])
    if trainable == "all":   # every float constant that is not read as a host-side number
        host_read = {nodes[i].input[j] for n in consts for i, j in uses.get(n, ())
                     if j in _HOST_SLOTS.get(nodes[i].op_type, ())}
        params |= {n for n in consts if is_float(n) and n in uses and n not in host_read}
    return params - bn_stats, bn_stats


def _movable_bn_inputs(node, consts, uses) -> list[str] | None:
    """A BatchNormalization's four constant tensors when it can own them (each float, used
    by this node only), else None (it then runs functionally on root tensors)."""
    ins = list(node.input[1:5])
    if len(ins) < 4 or not all(n in consts and consts[n].dtype.kind == "f" for n in ins) \
            or any(len(uses.get(n, [])) != 1 for n in ins) or len(set(ins)) != 4:
        return None
    return ins


def _bn_key(scale_name: str, taken) -> str:
    """The ``module.bn`` key: the scale's name less ``.weight`` (or similar), sanitised, unique."""
    base = scale_name
    for suffix in (".weight", "_weight", ".scale", "_scale"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    key = k2 = _sanitize(base)
    i = 1
    while k2 in taken:
        k2, i = f"{key}_{i}", i + 1
    return k2


def _free_lists(steps, keep) -> list[list[str]]:
    """Per step: the tensors whose last use it is (freed after it), except ``keep``."""
    last: dict[str, int] = {}
    for si, (_, ins, _, _) in enumerate(steps):
        for n in ins:
            last[n] = si
    free: list[list[str]] = [[] for _ in steps]
    for n, si in last.items():
        if n not in keep:
            free[si].append(n)
    return free


# --------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------

class OnnxModule(nn.Module):
    """A trainable ``nn.Module`` executing an ONNX graph with torch ops (see the package docs).

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
        self.opset = main_opset(model)
        nodes = list(model.graph.node)
        _check_supported(nodes)
        consts, self._origin = _collect_constants(model.graph)
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in
                            {t.name for t in model.graph.initializer}]
        self.output_names = [vi.name for vi in model.graph.output]
        view = GraphView(model)
        uses = dict(view.consumers)
        params, bn_stats = _classify_constants(nodes, consts, uses, view.producer, trainable)

        self.bn = nn.ModuleDict()
        self.onnx_names: dict[str, str] = {}
        self._bn_keys: dict[int, str] = {}
        owned = self._build_batchnorms(nodes, consts, uses)
        names = _Names(set(dir(self)) | _RESERVED)
        self._attr_of: dict[str, str] = {}
        self._static: dict[str, torch.Tensor] = {}
        self._const_attrs: set[str] = set()
        used = set(uses) | set(self.output_names)
        self._register_roots(consts, params, bn_stats, used - owned, names)
        self._register_statics(consts, used - owned, names)
        self._steps = self._compile(nodes, owned, names)
        self._free = _free_lists(self._steps, set(self.output_names))

    # --- construction ---------------------------------------------------------------------
    def _build_batchnorms(self, nodes, consts, uses) -> set[str]:
        """An OnnxBatchNorm in ``self.bn`` for every BN that can own its tensors; returns the
        ONNX names of the tensors now owned by them."""
        owned: set[str] = set()
        for idx, node in enumerate(nodes):
            if node.op_type != "BatchNormalization":
                continue
            ins = _movable_bn_inputs(node, consts, uses)
            if ins is None:
                continue
            a = node_attrs(node, idx)
            key = _bn_key(ins[0], self.bn)
            w, b, rm, rv = (consts[n] for n in ins)
            mod = OnnxBatchNorm(int(w.shape[0]), eps=float(a.get("epsilon", 1e-5)),
                                momentum=1.0 - float(a.get("momentum", 0.9)))
            with torch.no_grad():
                mod.weight = nn.Parameter(to_tensor(w))
                mod.bias = nn.Parameter(to_tensor(b))
                mod.running_mean = to_tensor(rm)
                mod.running_var = to_tensor(rv)
            self.bn[key] = mod
            for field, n in zip(_BN_FIELDS, ins):
                self.onnx_names[f"bn.{key}.{field}"] = n
                owned.add(n)
            self._bn_keys[idx] = key
        return owned

    def _register_roots(self, consts, params, bn_stats, wanted, names: _Names) -> None:
        """Root parameters (trainable constants) and buffers (BN statistics of functional BNs)."""
        for name in consts:
            if name not in wanted or (name not in params and name not in bn_stats):
                continue
            attr = names.fresh(name)
            if name in params:
                self.register_parameter(attr, nn.Parameter(to_tensor(consts[name])))
            else:
                self.register_buffer(attr, to_tensor(consts[name]))
            self.onnx_names[attr] = name
            self._attr_of[name] = attr

    def _put_static(self, name: str, t: torch.Tensor, names: _Names) -> None:
        """A non-trainable value: float ones as non-persistent buffers (they follow
        ``.to(device)``), others (shape data) as CPU tensors off the module."""
        if t.is_floating_point():
            attr = names.fresh(f"_const{len(self._const_attrs)}")
            self.register_buffer(attr, t, persistent=False)
            self._const_attrs.add(attr)
            self._attr_of[name] = attr
        else:
            self._static[name] = t

    def _register_statics(self, consts, wanted, names: _Names) -> None:
        for name, arr in consts.items():
            if name in wanted and name not in self._attr_of and self._origin[name][0] == "init":
                self._put_static(name, to_tensor(arr), names)

    def _factory(self, idx: int, node: onnx.NodeProto):
        a = node_attrs(node, idx)
        a[NODE_INDEX] = idx
        if idx in self._bn_keys:
            a[BN_KEY_ATTR] = self._bn_keys[idx]
        try:
            return OPS[node.op_type](a, self.opset, node)
        except OnnxPruneError:
            raise
        except Exception as exc:
            raise OnnxPruneError(f"{node_desc(node, idx)}: cannot be converted ({exc})") from None

    def _fold(self, idx: int, node, fn, ins, outs, static_names: set[str], names: _Names) -> None:
        """Evaluate a node whose inputs are all static, once; its outputs become static."""
        args = [self._resolve_static(n) if n else None for n in ins]
        try:
            with torch.no_grad():
                res = fn(args, Run(False, torch.device("cpu"), self))
        except Exception as exc:
            raise OnnxPruneError(f"{node_desc(node, idx)}: failed on constant inputs ({exc})") from None
        for o, t in zip(outs, res):
            if o:
                self._put_static(o, t.detach().cpu().contiguous(), names)
                static_names.add(o)

    def _compile(self, nodes, owned: set[str], names: _Names) -> list[tuple]:
        """The forward steps ``(run, input names, output names, host-side inputs)``."""
        steps = []
        static_names = set(self._static) | {n for n, at in self._attr_of.items() if at in self._const_attrs}
        for idx, node in enumerate(nodes):
            fn = self._factory(idx, node)
            outs = list(node.output)
            if node.op_type == "Constant" and (outs[0] in self._attr_of or outs[0] in owned):
                continue   # a Constant node holding a parameter or BN tensor
            ins = list(node.input)
            if idx in self._bn_keys:
                ins = ins[:1]      # the OnnxBatchNorm module holds the other four
            if node.op_type not in _NOT_FOLDABLE and all(not n or n in static_names for n in ins):
                self._fold(idx, node, fn, ins, outs, static_names, names)
                continue
            host = {j: self._resolve_static(ins[j]).detach().cpu() for j in _HOST_SLOTS.get(node.op_type, ())
                    if j < len(ins) and ins[j] in static_names}
            steps.append((fn, ins, outs, host))
        return steps

    # --- execution ------------------------------------------------------------------------
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

    def _bind_inputs(self, inputs, named) -> dict[str, torch.Tensor]:
        if len(inputs) > len(self.input_names):
            raise TypeError(f"expected at most {len(self.input_names)} inputs, got {len(inputs)}")
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
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
        return env

    def forward(self, *inputs, **named):
        env = self._bind_inputs(inputs, named)
        device = next(iter(env.values())).device if env else torch.device("cpu")
        rt = Run(self.training, device, self)
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

    # --- ONNX side ------------------------------------------------------------------------
    def onnx_tensors(self) -> dict[str, torch.Tensor]:
        """ONNX tensor name -> current value, for every parameter and BN running statistic."""
        state = self.state_dict(keep_vars=True)
        return {onnx_name: state[key] for key, onnx_name in self.onnx_names.items() if key in state}

    def to_onnx(self, path=None, example_input=None, opset=None, **kw) -> onnx.ModelProto:
        from onnxprune.torch_bridge.export import to_onnx
        return to_onnx(self, path, example_input, opset, **kw)

    def extra_repr(self) -> str:
        folded = len(self.source_model.graph.node) - len(self._steps)
        return (f"opset={self.opset}, nodes={len(self._steps)} (+{folded} constant), "
                f"params={sum(1 for _ in self.parameters())}")
