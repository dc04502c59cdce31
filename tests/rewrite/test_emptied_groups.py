"""Groups emptied whole (a residual branch removed): which groups may be, and the rewrite equals the
masked original with every channel of those groups masked."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.analysis import analyze
from onnxprune.analysis.emptiable import Emptying, emptiable_groups
from onnxprune.errors import PlanError
from onnxprune.rewrite.apply import apply_plan
from onnxprune.rewrite.plan import Plan
from onnxprune.verify.oracle import compare


def _empty(analysis, groups, halve=()):
    kept = {g: np.zeros(0, np.int64) for g in groups}
    for g in halve:
        kept[g] = np.arange(0, analysis.groups[g].channels, 2)
    return Plan.build(analysis, kept)


def _check(model, groups, halve=()):
    a = analyze(model)
    plan = _empty(a, groups, halve)
    pruned = apply_plan(a, plan)
    report = compare(model, pruned, plan)
    assert report.ok, report
    return a, pruned


def _conv(name, x, w, b=None):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [name], pads=[1, 1, 1, 1], name=name)


def _block_model(join_other_from_conv: bool = False, concat: bool = False) -> onnx.ModelProto:
    """x -> stem conv (8) -> [conv a (4) -> relu -> conv b (8)] + stem -> relu -> conv head."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, s, rng.normal(size=s).astype(np.float32).ravel())
             for n, s in (("ws", [8, 3, 3, 3]), ("wa", [4, 8, 3, 3]), ("ba", [4]), ("wb", [8, 4, 3, 3]),
                          ("bb", [8]), ("wh", [5, 8, 3, 3]), ("wc", [8, 4, 3, 3]), ("we", [4, 8, 3, 3]), ("wk", [5, 12, 3, 3]))]
    nodes = [_conv("s", "x", "ws"), _conv("a", "s", "wa", "ba"), helper.make_node("Relu", ["a"], ["ar"]),
             _conv("b", "ar", "wb", "bb")]
    other = "s"
    if join_other_from_conv:      # a second branch s -> e (4) -> relu -> c (8) joins the first
        nodes += [_conv("e", "s", "we"), helper.make_node("Relu", ["e"], ["er"]), _conv("c", "er", "wc")]
        other = "c"
    nodes.append(helper.make_node("Add", ["b", other], ["sum"]))
    nodes.append(helper.make_node("Relu", ["sum"], ["r"]))
    if concat:
        nodes.append(helper.make_node("Concat", ["r", "ar"], ["cat"], axis=1))
        nodes.append(_conv("h", "cat", "wk"))
    else:
        nodes.append(_conv("h", "r", "wh"))
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                          [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 5, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _branch_group(a):
    return min(g.id for g in a.groups if g.channels == 4)


def test_residual_branch_is_emptied_to_its_bias():
    model = _block_model()
    a, pruned = _check(model, [_branch_group(analyze(model))])
    ops = [n.op_type for n in pruned.graph.node]
    assert ops.count("Conv") == 2 and ops == ["Conv", "Add", "Relu", "Conv"]
    e = emptiable_groups(a)[_branch_group(a)]
    assert isinstance(e, Emptying) and len(e.readers) == 1 and len(e.writers) == 2


def _bottleneck_model() -> onnx.ModelProto:
    """x -> stem (8) -> [1x1 a (4) -> relu -> 3x3 b (4) -> relu -> 1x1 c (8)] + stem -> relu -> head."""
    rng = np.random.default_rng(1)
    shapes = (("ws", [8, 3, 3, 3]), ("wa", [4, 8, 1, 1]), ("wb", [4, 4, 3, 3]), ("wc", [8, 4, 1, 1]),
              ("bc", [8]), ("wh", [5, 8, 3, 3]))
    inits = [helper.make_tensor(n, TensorProto.FLOAT, sh, rng.normal(size=sh).astype(np.float32).ravel())
             for n, sh in shapes]
    nodes = [_conv("s", "x", "ws"), helper.make_node("Conv", ["s", "wa"], ["a"], name="a"),
             helper.make_node("Relu", ["a"], ["ar"]), _conv("b", "ar", "wb"), helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "wc", "bc"], ["c"], name="c"), helper.make_node("Add", ["c", "s"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["r"]), _conv("h", "r", "wh")]
    g = helper.make_graph(nodes, "bottleneck", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                          [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 5, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_bottleneck_first_group_goes_with_the_second():
    """The 1x1 conv's group is read only by the 3x3 conv: it is the upstream of the 3x3 conv's group,
    not emptiable alone; emptying the second group (with or without the first) removes all three convs."""
    model = _bottleneck_model()
    a = analyze(model)
    first, second = sorted(g.id for g in a.groups if g.channels == 4)
    found = emptiable_groups(a)
    assert isinstance(found[first], str)
    assert isinstance(found[second], Emptying) and found[second].upstream == (first,)
    for groups in ([second], [first, second]):
        _, pruned = _check(model, groups)
        assert [n.op_type for n in pruned.graph.node] == ["Conv", "Add", "Relu", "Conv"]
    with pytest.raises(PlanError, match=f"group {first} cannot keep 0 channels"):
        apply_plan(a, _empty(a, [first]))


def test_not_emptiable_when_read_by_a_concat():
    model = _block_model(concat=True)
    a = analyze(model)
    g = _branch_group(a)
    assert isinstance(emptiable_groups(a)[g], str)
    with pytest.raises(PlanError, match=f"group {g} cannot keep 0 channels"):
        apply_plan(a, _empty(a, [g]))


def test_branches_that_join_each_other_are_not_emptiable():
    model = _block_model(join_other_from_conv=True)
    a = analyze(model)
    found = emptiable_groups(a)
    branches = [g.id for g in a.groups if g.channels == 4]
    assert len(branches) == 2
    assert all(isinstance(found[g], str) and "joins" in found[g] for g in branches)


def test_residual_stream_is_not_emptiable(exported):
    from onnxprune.model_io import load_model
    a = analyze(load_model(exported("resnet20", "legacy", "folded")))
    found = emptiable_groups(a)
    widest = max(a.groups, key=lambda g: len(g.producers))
    assert isinstance(found[widest.id], str)
    assert sum(isinstance(e, Emptying) for e in found.values()) >= 6


@pytest.mark.parametrize("name,exporter,bn", [("resnet20", "legacy", "folded"), ("resnet20", "dynamo", "unfused"),
                                              ("mobilenetv2", "legacy", "folded"),
                                              ("mobilenetv2", "dynamo", "unfused"),
                                              ("senet_small", "legacy", "folded"),
                                              ("resnext_small", "legacy", "folded"),
                                              ("densenet_small", "legacy", "folded"),
                                              ("yolo_small", "legacy", "folded"),
                                              pytest.param("resnet50", "legacy", "folded", marks=pytest.mark.slow)])
def test_zoo_emptied_groups_match_the_oracle(exported, name, exporter, bn):
    """Every emptiable group of the zoo model emptied at once (the rest halved where possible)."""
    from onnxprune.model_io import load_model
    model = load_model(exported(name, exporter, bn))
    a = analyze(model)
    found = emptiable_groups(a)
    groups = [g for g, e in found.items() if isinstance(e, Emptying)]
    if not groups:      # grouped convs, SE gates, concatenations: every group says why not
        assert all(isinstance(e, str) and e for e in found.values())
        return
    rest = [g.id for g in a.prunable if g.id not in groups and g.channels % 2 == 0 and g.equal_blocks == 1]
    _, pruned = _check(model, groups, rest[:3])
    assert len(pruned.graph.node) < len(model.graph.node)


def test_resnet56_pretrained_blocks_emptied(assets, exported):
    """Real weights: four blocks removed and one block halved equal the masked original, on real
    images too."""
    from onnxprune.model_io import load_model
    model = load_model(exported("resnet56", "legacy", "folded",
                                weights=assets / "pretrained" / "cifar10-resnet56-4bfd9763.th"))
    a = analyze(model)
    found = emptiable_groups(a)
    groups = [g for g, e in found.items() if isinstance(e, Emptying)]
    assert len(groups) == 26            # every block but the stage-3 downsampling one (no full-shape join)
    plan = _empty(a, groups[2:10:2], [groups[12]])
    pruned = apply_plan(a, plan)
    images = np.load(assets / "cifar10-lossless-test-first1017.npz")
    x = images["x"][:1].astype(np.float32)      # the export's batch is 1
    x = (x / 255.0 - 0.45) / 0.25
    x = x.transpose(0, 3, 1, 2)
    feeds = {model.graph.input[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    assert compare(model, pruned, plan, feeds=feeds).ok
    assert sum(n.op_type == "Conv" for n in pruned.graph.node) == sum(
        n.op_type == "Conv" for n in model.graph.node) - 8


def test_emptied_model_runs_in_the_torch_bridge():
    """A removed branch leaves an Add with a [1, C, 1, 1] constant: the bridge runs it as onnxruntime does."""
    torch = pytest.importorskip("torch")
    from onnxprune.runtime import make_session
    from onnxprune.torch_bridge import OnnxModule
    model = _bottleneck_model()
    a = analyze(model)
    second = max(g.id for g in a.groups if g.channels == 4)
    pruned = apply_plan(a, _empty(a, [second]))
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    ref = make_session(pruned).run(None, {"x": x})[0]
    got = OnnxModule(pruned)(torch.from_numpy(x))
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
