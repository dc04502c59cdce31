"""Every coupling pattern the analysis knows, on tiny generated models.

Each test checks the analysis (how many groups, which are prunable, why a group is skipped) and
prunes with a random plan through ``prune_and_check``: the pruned model must pass the checker and
equal the original with 0/1 channel masks on its consumed edges (fp32, rtol 1e-5).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.analysis import analyze
from onnxprune.rewrite.apply import apply_plan
from onnxprune.verify.random_plans import prune_and_check, random_plan

from onnx_builders import Net, conv_chain


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def group_of(analysis, producer: str):
    """The group whose producers include node ``producer``."""
    hits = [g for g in analysis.groups if producer in g.producers]
    assert len(hits) == 1, f"{producer} is a producer of {len(hits)} groups: {analysis.groups}"
    return hits[0]


def status(model) -> list[tuple[int, bool]]:
    """(channels, prunable) of every group, in group order."""
    return [(g.channels, g.prunable) for g in analyze(model).groups]


def init(model, name) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def node_named(model, name) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def const_input(model, node_name, k) -> np.ndarray:
    return init(model, node_named(model, node_name).input[k])


def attr_of(model, node_name, attr):
    node = node_named(model, node_name)
    return onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == attr))


def output_shapes(model) -> dict[str, list[int]]:
    return {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}


def two_stage(n: Net, x: str, c: int = 8) -> str:
    """Conv(C_x→c) → Relu → Conv(c→c) → Relu: a prunable group ahead of whatever follows."""
    return n.relu(n.conv(n.relu(n.conv(x, 3, c, name="conv_a")), c, c, name="conv_b"))


# ------------------------------------------------------------------------------------------
# producers, BN, chains across opsets
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [9, 11, 13, 17, 20])
def test_conv_chain_with_bn(opset):
    model = conv_chain(opset=opset)
    a = analyze(model)
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (16, True), (5, False)]
    assert a.groups[0].producers == ["Conv_1"] and a.groups[0].consumers == ["Conv_2"]
    assert a.groups[1].consumers == ["Gemm_1"]
    assert a.groups[2].skip_reasons == [f"reaches graph output '{model.graph.output[0].name}'"]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=opset, min_pruned_groups=2)
    # conv weights, bias and all four BN vectors are sliced to the kept channels
    conv1 = node_named(pruned, "Conv_1")
    assert const_input(pruned, "Conv_1", 1).shape == (4, 3, 3, 3)
    assert const_input(pruned, "Conv_1", 2).shape == (4,)
    bn = node_named(pruned, "BatchNormalization_1")
    assert [init(pruned, t).shape for t in bn.input[1:]] == [(4,)] * 4
    assert const_input(pruned, "Conv_2", 1).shape == (8, 4, 3, 3)
    assert const_input(pruned, "Gemm_1", 1).shape == (5, 8)
    assert conv1.input[0] == "x" and pruned.opset_import[0].version == opset


def test_conv_chain_without_bias():
    n = Net(seed=1)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8, bias=False))
    n.output(n.conv(y, 8, 4, bias=False))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.25, seed=1)
    assert const_input(pruned, "Conv_1", 1).shape == (2, 3, 3, 3)
    assert len(node_named(pruned, "Conv_1").input) == 2


def test_convtranspose_producer_and_consumer():
    n = Net(seed=2)
    x = n.input("x", [1, 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8))
    y = n.relu(n.conv_transpose(y, 8, 6))               # [1,6,8,8]
    n.output(n.conv(y, 6, 4))
    model = n.model()
    a = analyze(model)
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (6, True), (4, False)]
    assert a.groups[1].producers == ["ConvTranspose_1"] and a.groups[0].consumers == ["ConvTranspose_1"]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=2, min_pruned_groups=2)
    assert const_input(pruned, "ConvTranspose_1", 1).shape == (4, 3, 2, 2)   # [C_in, C_out, k, k]
    assert const_input(pruned, "ConvTranspose_1", 2).shape == (3,)


# ------------------------------------------------------------------------------------------
# pass-through ops
# ------------------------------------------------------------------------------------------
def _act_model(opset, act):
    n = Net(opset=opset, seed=3)
    x = n.input("x", [1, 3, 6, 6])
    y = act(n, n.conv(x, 3, 8))
    n.output(n.conv(y, 8, 4))
    return n.model()


ACTIVATIONS = {
    "Relu": (13, lambda n, y: n.relu(y)),
    "LeakyRelu": (13, lambda n, y: n.node("LeakyRelu", [y], alpha=0.1)),
    "PRelu": (13, lambda n, y: n.node("PRelu", [y, n.positive([8, 1, 1], "slope")])),
    "Clip-inputs": (13, lambda n, y: n.node("Clip", [y, n.const(np.float32(-0.5)), n.const(np.float32(0.7))])),
    "Clip-max-only": (11, lambda n, y: n.node("Clip", [y, "", n.const(np.float32(0.7))])),
    "Clip-attrs": (9, lambda n, y: n.node("Clip", [y], min=-0.5, max=0.7)),
    "HardSwish": (14, lambda n, y: n.node("HardSwish", [y])),
    "HardSigmoid": (13, lambda n, y: n.node("HardSigmoid", [y])),
    "Sigmoid": (13, lambda n, y: n.node("Sigmoid", [y])),
    "Tanh": (13, lambda n, y: n.node("Tanh", [y])),
    "Dropout": (13, lambda n, y: n.node("Dropout", [y])),
    "Identity": (13, lambda n, y: n.node("Identity", [y])),
    "InstanceNormalization": (13, lambda n, y: n.node("InstanceNormalization",
                                                      [y, n.positive([8]), n.const(np.zeros(8, np.float32))])),
}


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_activation_passes_channels(kind):
    opset, act = ACTIVATIONS[kind]
    model = _act_model(opset, act)
    a = analyze(model)
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (4, False)], a.groups
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=4)
    if kind in ("PRelu", "InstanceNormalization"):
        node = next(n for n in pruned.graph.node if n.op_type == kind.split("-")[0])
        assert init(pruned, node.input[1]).shape[0] == 4


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (8, 1, 1)])
@pytest.mark.parametrize("const_first", [False, True])
def test_per_channel_constant(op, shape, const_first):
    n = Net(seed=5)
    x = n.input("x", [1, 3, 6, 6])
    y = n.conv(x, 3, 8)
    c = n.positive(shape, "k")
    y = n.node(op, [c, y] if const_first else [y, c])
    n.output(n.conv(n.relu(y), 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=5)
    expected = (1, 4, 1, 1) if len(shape) == 4 else (4, 1, 1)
    assert const_input(pruned, f"{op}_1", 0 if const_first else 1).shape == expected


def test_scalar_constant_is_not_sliced():
    n = Net(seed=6)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Mul", [n.conv(x, 3, 8), n.const(np.array([2.0], np.float32))])
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=6)
    assert const_input(pruned, "Mul_1", 1).shape == (1,)


@pytest.mark.parametrize("pool", ["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
def test_pooling(pool):
    n = Net(seed=7)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8))
    attrs = {} if pool.startswith("Global") else {"kernel_shape": [2, 2], "strides": [2, 2]}
    y = n.node(pool, [y], **attrs)
    n.output(n.conv(y, 8, 4, k=1))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    prune_and_check(model, keep=0.5, seed=7)


@pytest.mark.parametrize("opset,keepdims", [(13, 0), (13, 1), (18, 0), (18, 1)])
def test_reduce_mean_spatial_then_gemm(opset, keepdims):
    n = Net(opset=opset, seed=8)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8))
    if opset >= 18:
        y = n.node("ReduceMean", [y, n.ints([-2, -1])], keepdims=keepdims)
    else:
        y = n.node("ReduceMean", [y], axes=[2, 3], keepdims=keepdims)
    if keepdims:
        y = n.flatten(y)
    n.output(n.gemm(y, 8, 5))
    model = n.model()
    a = analyze(model)
    assert [(g.channels, g.prunable) for g in a.groups] == [(8, True), (5, False)]
    assert a.groups[0].consumers == ["Gemm_1"]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=8)
    assert const_input(pruned, "Gemm_1", 1).shape == (5, 4)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_spatial_then_gemm(opset):
    n = Net(opset=opset, seed=9)
    x = n.input("x", [1, 3, 6, 6])
    y = n.gap(n.relu(n.conv(x, 3, 8)))
    y = n.node("Squeeze", [y, n.ints([2, 3])]) if opset >= 13 else n.node("Squeeze", [y], axes=[2, 3])
    n.output(n.gemm(y, 8, 5))
    model = n.model()
    assert status(model) == [(8, True), (5, False)]
    prune_and_check(model, keep=0.5, seed=9)


def test_unsqueeze_after_gemm_feeds_conv():
    n = Net(opset=13, seed=10)
    x = n.input("x", [1, 12])
    h = n.relu(n.gemm(x, 12, 8))                          # [1,8]
    h = n.node("Unsqueeze", [h, n.ints([2, 3])])          # [1,8,1,1]
    n.output(n.conv(h, 8, 4, k=1))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    prune_and_check(model, keep=0.5, seed=10)


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_spatial_pad(opset):
    n = Net(opset=opset, seed=11)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8))
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        y = n.node("Pad", [y], pads=pads, value=0.5)
    elif opset < 18:
        y = n.node("Pad", [y, n.ints(pads), n.const(np.float32(0.5))])
    else:   # pads given for the spatial axes only
        y = n.node("Pad", [y, n.ints([1, 2, 2, 1]), n.const(np.float32(0.5)), n.ints([2, 3])])
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=11)
    assert output_shapes(pruned) == output_shapes(model)


@pytest.mark.parametrize("opset", [9, 13])
def test_spatial_slice(opset):
    n = Net(opset=opset, seed=12)
    x = n.input("x", [1, 3, 8, 8])
    y = n.relu(n.conv(x, 3, 8))
    if opset < 10:
        y = n.node("Slice", [y], starts=[1, 0], ends=[7, 100], axes=[2, 3])
    else:
        y = n.node("Slice", [y, n.ints([1, 0]), n.ints([7, 100]), n.ints([2, 3]), n.ints([1, 2])])
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    prune_and_check(model, keep=0.5, seed=12)


@pytest.mark.parametrize("kind", ["upsample9", "resize10", "resize13-scales", "resize13-sizes"])
def test_resize_upsample(kind):
    opset = int(kind.split("-")[0][-2:].lstrip("e"))
    n = Net(opset=opset, seed=13)
    x = n.input("x", [1, 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8))
    scales = n.const(np.array([1, 1, 2, 2], np.float32))
    if kind == "upsample9":
        y = n.node("Upsample", [y, scales], mode="nearest")
    elif kind == "resize10":
        y = n.node("Resize", [y, scales], mode="nearest")
    elif kind == "resize13-scales":
        y = n.node("Resize", [y, "", scales], mode="linear")
    else:
        y = n.node("Resize", [y, "", "", n.ints([1, 8, 8, 8])], mode="nearest")
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=13)
    if kind == "resize13-sizes":
        assert init(pruned, node_named(pruned, "Resize_1").input[3]).tolist() == [1, 4, 8, 8]


# ------------------------------------------------------------------------------------------
# couplers: residuals, option-A shortcut, SE gate, depthwise / grouped conv
# ------------------------------------------------------------------------------------------
def test_residual_add_of_two_convs():
    n = Net(seed=14)
    x = n.input("x", [1, 3, 6, 6])
    s = n.relu(n.conv(x, 3, 8))
    a = n.conv(n.relu(n.conv(s, 8, 6)), 6, 10, name="conv_main")
    b = n.conv(s, 8, 10, k=1, name="conv_short")
    y = n.relu(n.node("Add", [a, b]))
    n.head(y, 10)
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (6, True), (10, True), (5, False)]
    assert sorted(an.groups[2].producers) == ["conv_main", "conv_short"]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=14, min_pruned_groups=3)
    assert const_input(pruned, "conv_main", 1).shape[0] == const_input(pruned, "conv_short", 1).shape[0] == 5


def test_residual_identity_shortcut():
    n = Net(seed=15)
    x = n.input("x", [1, 3, 6, 6])
    s = n.relu(n.conv(x, 3, 8, name="stem"))
    y = n.conv(n.relu(n.conv(s, 8, 4, name="inner")), 4, 8, name="outer")
    y = n.relu(n.node("Add", [s, y]))
    y = n.relu(n.node("Add", [y, n.conv(y, 8, 8, name="second")]))
    n.head(y, 8)
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, True), (5, False)]
    assert sorted(an.groups[0].producers) == ["outer", "second", "stem"]
    assert sorted(an.groups[0].consumers) == ["Gemm_1", "inner", "second"]
    prune_and_check(model, keep=0.5, seed=15, min_pruned_groups=2)


def _option_a(opset: int, seed: int = 16):
    """CIFAR ResNet 'option A': stride-2 spatial Slice of x, zero Pad of C/2 channels on each
    side, Add with a stride-2 conv of twice the channels."""
    n = Net(opset=opset, seed=seed)
    x = n.input("x", [1, 3, 8, 8])
    s = n.relu(n.conv(x, 3, 8, name="stem"))                                 # [1,8,8,8]
    main = n.conv(n.relu(n.conv(s, 8, 16, stride=2, name="down")), 16, 16, name="main")  # [1,16,4,4]
    if opset < 10:
        sub = n.node("Slice", [s], starts=[0, 0], ends=[8, 8], axes=[2, 3])
        sub = n.node("MaxPool", [sub], kernel_shape=[1, 1], strides=[2, 2])     # ::2 of H and W
    else:
        sub = n.node("Slice", [s, n.ints([0, 0]), n.ints([8, 8]), n.ints([2, 3]), n.ints([2, 2])])
    pads = [0, 4, 0, 0, 0, 4, 0, 0]
    if opset < 11:
        short = n.node("Pad", [sub], pads=pads)
    elif opset < 18:
        short = n.node("Pad", [sub, n.ints(pads)])
    else:
        short = n.node("Pad", [sub, n.ints([4, 4]), "", n.ints([1])])
    y = n.relu(n.node("Add", [main, short]))
    n.head(y, 16)
    return n.model()


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_option_a_shortcut_merges_through_channel_pad(opset):
    model = _option_a(opset)
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(16, True), (16, True), (5, False)]
    residual = group_of(an, "stem")
    assert sorted(residual.producers) == ["main", "stem"]
    spans = {an.view.label(node): (start, length) for node, start, length in residual.producer_spans}
    assert spans == {"main": (0, 16), "stem": (4, 8)}    # stem's 8 channels sit in the middle
    for seed in range(3):
        pruned, plan, _ = prune_and_check(model, keep=0.5, seed=seed, min_pruned_groups=2)
        kept = np.array(plan.groups[residual.id].kept)
        pads = list(attr_of(pruned, "Pad_1", "pads")) if opset < 11 else \
            const_input(pruned, "Pad_1", 1).tolist()
        before, after = (pads[1], pads[5]) if opset < 18 else (pads[0], pads[1])
        assert (before, after) == (int(np.sum(kept < 4)), int(np.sum(kept >= 12)))


def test_option_a_plan_that_empties_the_narrow_producer_is_refused():
    """Keeping only channels that the narrow producer (stem, positions 4..12) does not write
    would leave it with no output channel: the rewrite refuses, naming the node."""
    from onnxprune.errors import PlanError
    from onnxprune.rewrite.plan import Plan
    model = _option_a(13)
    an = analyze(model)
    gid = group_of(an, "stem").id
    with pytest.raises(PlanError, match="output of stem"):
        apply_plan(an, Plan.build(an, {gid: np.array([0, 1, 12, 15])}))
    prune_and_check(model, keep=0.5, seed=3)                   # one kept channel in 4..12 is enough


def test_squeeze_excitation_gate():
    n = Net(seed=17)
    x = n.input("x", [1, 3, 6, 6])
    f = n.relu(n.conv(x, 3, 8, name="body"))
    g = n.relu(n.conv(n.gap(f), 8, 2, k=1, name="se_reduce"))
    g = n.node("Sigmoid", [n.conv(g, 2, 8, k=1, name="se_expand")])
    y = n.node("Mul", [f, g])
    n.output(n.conv(y, 8, 4, name="tail"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (2, True), (4, False)]
    assert sorted(an.groups[0].producers) == ["body", "se_expand"]
    assert sorted(an.groups[0].consumers) == ["se_reduce", "tail"]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=17, min_pruned_groups=2)
    assert const_input(pruned, "se_reduce", 1).shape == (1, 4, 1, 1)
    assert const_input(pruned, "se_expand", 1).shape == (4, 1, 1, 1)


def test_spatial_attention_map_broadcast_over_channels():
    """Mul of a feature map [N,8,H,W] by a one-channel map [N,1,H,W] (CBAM spatial attention):
    the features' channels pass through, the map is read whole."""
    n = Net(seed=56)
    x = n.input("x", [1, 3, 6, 6])
    f = n.relu(n.conv(x, 3, 8, name="body"))
    a = n.node("Sigmoid", [n.conv(f, 8, 1, name="attn")])
    y = n.node("Mul", [a, f])
    n.output(n.conv(y, 8, 4, name="tail"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (1, False), (4, False)]
    assert an.groups[1].skip_reasons == ["a single channel"]
    assert sorted(an.groups[0].consumers) == ["attn", "tail"]
    prune_and_check(model, keep=0.5, seed=56)


def test_mobilenet_block_depthwise_and_inverted_residual():
    n = Net(seed=18)
    x = n.input("x", [1, 3, 8, 8])
    s = n.relu(n.bn(n.conv(x, 3, 8, name="stem"), 8))
    e = n.node("Clip", [n.bn(n.conv(s, 8, 16, k=1, bias=False, name="expand"), 16),
                        n.const(np.float32(0)), n.const(np.float32(6))])
    d = n.node("Clip", [n.bn(n.conv(e, 16, 16, group=16, bias=False, name="dw"), 16),
                        n.const(np.float32(0)), n.const(np.float32(6))])
    p = n.bn(n.conv(d, 16, 8, k=1, bias=False, name="project"), 8)
    y = n.node("Add", [s, p])
    n.head(y, 8)
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (16, True), (5, False)]
    assert sorted(an.groups[0].producers) == ["project", "stem"]
    assert an.groups[1].producers == ["expand"]            # dw adds no group of its own
    assert "dw" not in an.groups[1].producers
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=18, min_pruned_groups=2)
    assert attr_of(pruned, "dw", "group") == 8
    assert const_input(pruned, "dw", 1).shape == (8, 1, 3, 3)


def test_grouped_conv_keeps_equal_counts_per_block():
    n = Net(seed=19)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 16, name="stem"))
    y = n.relu(n.conv(y, 16, 16, group=4, name="grouped"))
    n.output(n.conv(y, 16, 4, name="tail"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable, g.equal_blocks) for g in an.groups] == \
        [(16, True, 4), (16, True, 4), (4, False, 1)]
    for seed in (19, 20):
        pruned, plan, _ = prune_and_check(model, keep=0.5, seed=seed, min_pruned_groups=2)
        for gp in plan.groups[:2]:
            assert np.bincount(np.array(gp.kept) // 4, minlength=4).tolist() == [2, 2, 2, 2]
        assert const_input(pruned, "grouped", 1).shape == (8, 2, 3, 3)
        assert attr_of(pruned, "grouped", "group") == 4


# ------------------------------------------------------------------------------------------
# Concat / Split / channel Slice
# ------------------------------------------------------------------------------------------
def test_densenet_concat_offsets():
    n = Net(seed=21)
    x = n.input("x", [1, 3, 6, 6])
    a = n.relu(n.conv(x, 3, 8, name="stem"))
    b = n.relu(n.conv(a, 8, 4, name="growth"))
    cat = n.node("Concat", [a, b], axis=1)                      # [1,12,6,6]
    n.output(n.conv(cat, 12, 6, name="transition"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, True), (6, False)]
    lay = an.layout(cat)
    assert [(s.group, s.start, s.length) for s in lay.segments] == [(0, 0, 8), (1, 0, 4)]
    assert an.groups[0].consumers == ["growth", "transition"]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=21, min_pruned_groups=2)
    assert const_input(pruned, "transition", 1).shape == (6, 6, 3, 3)
    edge = next(e for e in plan.groups[1].edges if e["node"] == "transition")
    assert edge["segments"] == [{"offset": 8, "length": 4, "group_offset": 0}]


def test_concat_with_graph_input():
    """x → conv → concat(x, y) → conv: the input's channels are fixed, the conv's prunable."""
    n = Net(seed=54)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8, name="growth"))
    cat = n.node("Concat", [x, y], axis=1)                      # [1,11,6,6]
    n.output(n.conv(cat, 11, 4, name="transition"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, False)]
    assert [(s.group, s.length) for s in an.layout(cat).segments] == [(None, 3), (0, 8)]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=54)
    w, w0 = const_input(pruned, "transition", 1), const_input(model, "transition", 1)
    np.testing.assert_array_equal(w, w0[:, np.r_[0:3, 3 + np.array(plan.groups[0].kept)]])


def test_depthwise_conv_on_a_concat():
    n = Net(seed=55)
    x = n.input("x", [1, 3, 6, 6])
    a = n.relu(n.conv(x, 3, 8, name="left"))
    b = n.relu(n.conv(x, 3, 4, name="right"))
    cat = n.node("Concat", [a, b], axis=1)
    d = n.relu(n.conv(cat, 12, 12, group=12, name="dw"))
    n.output(n.conv(d, 12, 4, k=1, name="pw"))
    model = n.model()
    assert status(model) == [(8, True), (4, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=55, min_pruned_groups=2)
    assert attr_of(pruned, "dw", "group") == 6


def test_densenet_concat_then_bn_slices_by_segments():
    """Concat → BN → Relu → Conv: the BN vectors are cut by two groups at their offsets."""
    n = Net(seed=52)
    x = n.input("x", [1, 3, 6, 6])
    a = n.relu(n.conv(x, 3, 8, name="stem"))
    b = n.relu(n.conv(n.relu(n.bn(a, 8)), 8, 4, name="growth1"))
    cat = n.node("Concat", [a, b], axis=1)                      # [1,12,6,6]
    c = n.relu(n.conv(n.relu(n.bn(cat, 12)), 12, 4, name="growth2"))
    cat2 = n.node("Concat", [cat, c], axis=1)                   # [1,16,6,6]
    n.head(n.relu(n.bn(cat2, 16)), 16)
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, True), (4, True), (5, False)]
    assert [(s.group, s.length) for s in an.layout(cat2).segments] == [(0, 8), (1, 4), (2, 4)]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=52, min_pruned_groups=3)
    bn3 = node_named(pruned, "BatchNormalization_3")
    k = [np.array(g.kept) for g in plan.groups[:3]]
    gamma0 = const_input(model, "BatchNormalization_3", 1)
    np.testing.assert_array_equal(init(pruned, bn3.input[1]),
                                  gamma0[np.concatenate([k[0], 8 + k[1], 12 + k[2]])])


@pytest.mark.parametrize("opset,sizes", [(11, [4, 4]), (13, [3, 5]), (18, None)])
def test_split_channel_axis_into_two_convs(opset, sizes):
    n = Net(opset=opset, seed=22)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8, name="stem"))
    if opset < 13:
        a, b = n.node("Split", [y], outputs=2, axis=1, split=sizes)
    elif opset < 18:
        a, b = n.node("Split", [y, n.ints(sizes)], outputs=2, axis=1)
    else:
        a, b = n.node("Split", [y], outputs=2, axis=1, num_outputs=2)
    ca, cb = (sizes or [4, 4])
    n.output(n.conv(a, ca, 4, name="left"))
    n.output(n.conv(b, cb, 4, name="right"))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, False), (4, False)]
    assert an.groups[0].consumers == ["left", "right"]
    kept_any = False
    for seed in range(4):
        plan = random_plan(an, 0.5, seed)
        k = np.array(plan.groups[0].kept)
        if np.sum(k < ca) == 0 or np.sum(k >= ca) == 0:
            continue                        # this plan empties one branch; Split cannot express it
        kept_any = True
        pruned, plan, _ = prune_and_check(model, keep=0.5, seed=seed)
        assert const_input(pruned, "left", 1).shape[1] == int(np.sum(k < ca))
        assert const_input(pruned, "right", 1).shape[1] == int(np.sum(k >= ca))
    assert kept_any


def test_split_plan_that_empties_a_branch_is_refused():
    from onnxprune.errors import PlanError
    from onnxprune.rewrite.plan import Plan
    n = Net(opset=13, seed=23)
    x = n.input("x", [1, 3, 6, 6])
    a, b = n.node("Split", [n.relu(n.conv(x, 3, 8)), n.ints([4, 4])], outputs=2, axis=1)
    n.output(n.node("Add", [n.conv(a, 4, 4), n.conv(b, 4, 4)]))
    model = n.model()
    an = analyze(model)
    with pytest.raises(PlanError, match="Split_1"):
        apply_plan(an, Plan.build(an, {0: np.array([0, 1, 2, 3])}))


@pytest.mark.parametrize("opset,start,end", [(9, 2, 6), (13, 2, 6), (13, -6, -2), (13, 2, 2**63 - 1)])
def test_slice_on_channel_axis(opset, start, end):
    n = Net(opset=opset, seed=24)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8, name="stem"))
    if opset < 10:
        s = n.node("Slice", [y], starts=[start], ends=[end], axes=[1])
    else:
        s = n.node("Slice", [y, n.ints([start]), n.ints([end]), n.ints([1])])
    picked = range(8)[start:end]                                 # what Slice keeps of 8 channels
    a = n.conv(s, len(picked), 4, name="part")
    b = n.conv(y, 8, 4, name="whole")
    n.output(n.node("Add", [a, b]))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (4, False)]
    assert an.groups[0].consumers == ["part", "whole"]
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=25)
    k = np.array(plan.groups[0].kept)
    assert const_input(pruned, "part", 1).shape[1] == int(np.isin(k, picked).sum())


def test_channel_slice_that_keeps_nothing_is_refused():
    """A plan keeping no channel inside a channel Slice would leave an empty tensor, which
    onnxruntime's Conv rejects: the rewrite refuses it, naming the Slice."""
    from onnxprune.errors import PlanError
    from onnxprune.rewrite.plan import Plan
    n = Net(opset=13, seed=26)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(x, 3, 8))
    s = n.node("Slice", [y, n.ints([2]), n.ints([6]), n.ints([1])])
    n.output(n.node("Add", [n.conv(s, 4, 4), n.conv(y, 8, 4)]))
    model = n.model()
    an = analyze(model)
    with pytest.raises(PlanError, match="Slice_1"):
        apply_plan(an, Plan.build(an, {0: np.array([0, 1, 6, 7])}))


# ------------------------------------------------------------------------------------------
# Flatten / Reshape / Gemm / MatMul / Transpose consumers
# ------------------------------------------------------------------------------------------
def test_flatten_gemm_spatial_blocks():
    n = Net(seed=27)
    x = n.input("x", [1, 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8, stride=2))                  # [1,8,2,2]
    n.output(n.gemm(n.flatten(y), 32, 5))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (5, False)]
    assert an.layout(next(nd.output[0] for nd in model.graph.node if nd.op_type == "Flatten")).block == 4
    pruned, plan, _ = prune_and_check(model, keep=0.5, seed=27)
    k = np.array(plan.groups[0].kept)
    w, w0 = const_input(pruned, "Gemm_1", 1), const_input(model, "Gemm_1", 1)
    cols = (k[:, None] * 4 + np.arange(4)).ravel()
    np.testing.assert_array_equal(w, w0[:, cols])


@pytest.mark.parametrize("target", [[1, 32], [1, -1], [0, -1], [-1, 32]])
def test_reshape_to_gemm(target):
    n = Net(seed=28)
    x = n.input("x", [1, 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8, stride=2))                  # [1,8,2,2]
    y = n.node("Reshape", [y, n.ints(target)])
    n.output(n.gemm(y, 32, 5))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (5, False)], an.groups
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=28)
    new_target = init(pruned, node_named(pruned, "Reshape_1").input[1]).tolist()
    expected = [16 if t == 32 else t for t in target]
    assert new_target == expected


def test_constant_nodes_as_parameters():
    """Exporters often emit Constant nodes instead of initializers (per-channel scale, Reshape
    target): they are replaced by sliced initializers and the dead Constant nodes dropped."""
    n = Net(seed=53)
    x = n.input("x", [1, 3, 4, 4])
    scale = n.node("Constant", [], value=numpy_helper.from_array(
        n.rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32)))
    target = n.node("Constant", [], value=numpy_helper.from_array(np.array([1, 32], np.int64)))
    y = n.relu(n.node("Mul", [n.conv(x, 3, 8, stride=2), scale]))
    n.output(n.gemm(n.node("Reshape", [y, target]), 32, 5))
    model = n.model()
    assert status(model) == [(8, True), (5, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=53)
    assert [nd.op_type for nd in pruned.graph.node if nd.op_type == "Constant"] == []
    assert const_input(pruned, "Mul_1", 1).shape == (1, 4, 1, 1)
    assert const_input(pruned, "Reshape_1", 1).tolist() == [1, 16]


def test_weight_behind_identity():
    """torch exports tied weights as Identity(initializer): the conv gets a sliced copy and the
    Identity and the full-size original, now unused, are dropped."""
    n = Net(seed=57)
    x = n.input("x", [1, 3, 6, 6])
    w = n.weight([8, 3, 3, 3])
    y = n.relu(n.node("Conv", [x, n.node("Identity", [w])], kernel_shape=[3, 3], pads=[1] * 4))
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=57)
    assert [nd.op_type for nd in pruned.graph.node] == ["Conv", "Relu", "Conv"]
    assert w not in {t.name for t in pruned.graph.initializer}
    assert const_input(pruned, "Conv_1", 1).shape == (4, 3, 3, 3)


def test_gemm_relu_gemm_mlp_head():
    n = Net(seed=29)
    x = n.input("x", [2, 12])
    h = n.relu(n.gemm(x, 12, 16, trans_b=1))
    h = n.relu(n.gemm(h, 16, 10, trans_b=0))
    n.output(n.gemm(h, 10, 3))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(16, True), (10, True), (3, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=29, min_pruned_groups=2)
    assert const_input(pruned, "Gemm_1", 1).shape == (8, 12)
    assert const_input(pruned, "Gemm_2", 1).shape == (8, 5)
    assert const_input(pruned, "Gemm_3", 1).shape == (3, 5)


@pytest.mark.parametrize("rank", [2, 3])
def test_matmul_with_constant_b(rank):
    n = Net(seed=30)
    x = n.input("x", [2, 12] if rank == 2 else [1, 4, 12])
    h = n.node("MatMul", [x, n.weight([12, 16], fan_in=12)])
    h = n.relu(n.node("Add", [h, n.const(np.full(16, 0.1, np.float32))]))
    n.output(n.node("MatMul", [h, n.weight([16, 3], fan_in=16)]))
    model = n.model()
    assert status(model) == [(16, True), (3, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=30)
    assert const_input(pruned, "MatMul_2", 1).shape == (8, 3)
    assert const_input(pruned, "Add_1", 1).shape == (8,)


def test_transpose_nhwc_then_matmul():
    n = Net(seed=31)
    x = n.input("x", [1, 3, 4, 4])
    y = n.relu(n.conv(x, 3, 8))
    y = n.node("Transpose", [y], perm=[0, 2, 3, 1])          # [1,4,4,8]
    n.output(n.node("MatMul", [y, n.weight([8, 6], fan_in=8)]))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (6, False)]
    assert an.groups[0].consumers == ["MatMul_1"]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=31)
    assert const_input(pruned, "MatMul_1", 1).shape == (4, 6)


# ------------------------------------------------------------------------------------------
# blockers: a skip with a reason that names the node; the other groups still prune
# ------------------------------------------------------------------------------------------
def _blocked(model, producer, *phrases, seed=32):
    """Assert the group of ``producer`` is skipped for a reason containing every phrase, that
    conv_a's group is prunable, and that the model prunes and verifies."""
    an = analyze(model)
    g = group_of(an, producer)
    assert not g.prunable
    assert any(all(p in r for p in phrases) for r in g.skip_reasons), g.skip_reasons
    assert group_of(an, "conv_a").prunable
    prune_and_check(model, keep=0.5, seed=seed)
    return an


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_over_channels_blocks(opset):
    n = Net(opset=opset, seed=33)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Softmax", [two_stage(n, x)], axis=1)
    n.output(n.conv(y, 8, 4))
    _blocked(n.model(), "conv_b", "Softmax over the channel axis", "Softmax_1")


def test_softmax_over_spatial_axis_is_fine():
    n = Net(opset=13, seed=34)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Softmax", [two_stage(n, x)], axis=3)
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (8, True), (4, False)]
    prune_and_check(model, keep=0.5, seed=34, min_pruned_groups=2)


def test_channel_shuffle_reshape_blocks():
    n = Net(seed=35)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Reshape", [two_stage(n, x), n.ints([1, 2, 4, 6, 6])])
    y = n.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = n.node("Reshape", [y, n.ints([1, 8, 6, 6])])
    n.output(n.conv(y, 8, 4))
    _blocked(n.model(), "conv_b", "mixes the channel axis", "Reshape_1")


def test_intermediate_graph_output_blocks():
    n = Net(seed=36)
    x = n.input("x", [1, 3, 6, 6])
    y = two_stage(n, x)
    n.output(y)
    n.output(n.conv(y, 8, 4))
    _blocked(n.model(), "conv_b", f"reaches graph output '{y}'")


def test_reduce_over_channel_axis_blocks():
    n = Net(opset=13, seed=37)
    x = n.input("x", [1, 3, 6, 6])
    n.output(n.node("ReduceMean", [two_stage(n, x)], axes=[1], keepdims=1))
    _blocked(n.model(), "conv_b", "ReduceMean over the channel axis", "ReduceMean_1")


def test_custom_domain_op_blocks():
    n = Net(opset=13, seed=38)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Mystery", [two_stage(n, x)], domain="com.example")
    n.output(n.conv(y, 8, 4), shape=[1, 4, 6, 6])
    model = n.model()
    an = analyze(model)
    g = group_of(an, "conv_b")
    assert not g.prunable and any("com.example::Mystery" in r and "Mystery_1" in r for r in g.skip_reasons)
    assert group_of(an, "conv_a").prunable
    # onnxruntime cannot run the op, but the rewrite of the other group still applies and checks
    plan = random_plan(an, 0.5, 38)
    pruned = apply_plan(an, plan)
    assert const_input(pruned, "conv_a", 1).shape[0] == 4
    assert const_input(pruned, "conv_b", 1).shape == (8, 4, 3, 3)


def test_contrib_domain_op_blocks_but_model_verifies():
    """A non-standard domain that onnxruntime runs (com.microsoft::Gelu): skipped, others verified."""
    n = Net(opset=13, seed=39)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("Gelu", [two_stage(n, x)], domain="com.microsoft")
    n.output(n.conv(y, 8, 4), shape=[1, 4, 6, 6])
    _blocked(n.model(), "conv_b", "com.microsoft::Gelu", "Gelu_1")


def test_lrn_blocks():
    n = Net(seed=40)
    x = n.input("x", [1, 3, 6, 6])
    y = n.node("LRN", [two_stage(n, x)], size=3)
    n.output(n.conv(y, 8, 4))
    _blocked(n.model(), "conv_b", "unsupported op LRN", "LRN_1")


def test_depthwise_multiplier_blocks():
    n = Net(seed=41)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(two_stage(n, x), 8, 16, group=8, name="dw_x2"))
    n.output(n.conv(y, 16, 4))
    an = _blocked(n.model(), "conv_b", "group=8", "dw_x2")
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (8, False), (4, False)]


def test_add_with_graph_input_blocks():
    n = Net(seed=42)
    x = n.input("x", [1, 3, 6, 6])
    s = n.input("skip", [1, 8, 6, 6])
    y = n.relu(n.node("Add", [two_stage(n, x), s]))
    n.output(n.conv(y, 8, 4))
    _blocked(n.model(), "conv_b", "graph input 'skip'", "Add_1")


def test_blocked_group_spreads_through_residual():
    """A blocker anywhere in a residual group blocks every producer of it."""
    n = Net(seed=43)
    x = n.input("x", [1, 3, 6, 6])
    s = n.relu(n.conv(n.relu(n.conv(x, 3, 8, name="conv_a")), 8, 8, name="conv_b"))
    y = n.relu(n.node("Add", [s, n.conv(s, 8, 8, name="conv_c")]))
    y = n.node("Softmax", [y], axis=1)
    n.output(n.conv(y, 8, 4))
    an = _blocked(n.model(), "conv_c", "Softmax")
    assert group_of(an, "conv_b") is group_of(an, "conv_c")


# ------------------------------------------------------------------------------------------
# initializers: shared, listed as inputs; unnamed nodes
# ------------------------------------------------------------------------------------------
def test_shared_initializer_needing_two_slices_is_split():
    n = Net(seed=44)
    x = n.input("x", [1, 3, 6, 6])
    scale = n.positive([1, 8, 1, 1], "shared")
    a = n.node("Mul", [n.relu(n.conv(x, 3, 8, name="conv_a")), scale])
    b = n.node("Mul", [n.relu(n.conv(x, 3, 8, name="conv_b")), scale])
    n.output(n.node("Add", [n.conv(a, 8, 4), n.conv(b, 8, 4)]))
    model = n.model()
    an = analyze(model)
    assert [(g.channels, g.prunable) for g in an.groups] == [(8, True), (8, True), (4, False)]
    plan = None
    for seed in range(10):      # a plan where both groups keep different channels
        plan = random_plan(an, 0.5, seed)
        if plan.groups[0].kept != plan.groups[1].kept:
            break
    pruned, plan2, _ = prune_and_check(model, keep=0.5, seed=seed, min_pruned_groups=2)
    assert plan2.groups[0].kept != plan2.groups[1].kept
    ma, mb = node_named(pruned, "Mul_1"), node_named(pruned, "Mul_2")
    assert ma.input[1] != mb.input[1]
    va, vb = init(pruned, ma.input[1]), init(pruned, mb.input[1])
    s0 = init(model, "shared" + scale[len("shared"):]).ravel()
    np.testing.assert_array_equal(va.ravel(), s0[plan2.groups[0].kept])
    np.testing.assert_array_equal(vb.ravel(), s0[plan2.groups[1].kept])
    assert scale not in {t.name for t in pruned.graph.initializer}     # nobody reads the original


def test_shared_initializer_with_one_slice_stays_shared():
    n = Net(seed=45)
    x = n.input("x", [1, 3, 6, 6])
    bias = n.positive([1, 8, 1, 1], "shared")
    s = n.relu(n.node("Add", [n.conv(x, 3, 8, name="conv_a"), bias]))
    y = n.node("Add", [n.conv(s, 8, 8), bias])
    y = n.relu(n.node("Add", [s, y]))
    n.output(n.conv(y, 8, 4))
    model = n.model()
    assert status(model) == [(8, True), (4, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=45)
    assert node_named(pruned, "Add_1").input[1] == node_named(pruned, "Add_2").input[1] == bias
    assert init(pruned, bias).shape == (1, 4, 1, 1)


def test_initializers_listed_as_graph_inputs_ir3():
    n = Net(opset=8, seed=46)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.bn(n.conv(x, 3, 8), 8))
    y = n.relu(n.conv(y, 8, 16))
    n.head(y, 16)
    model = n.model(ir_version=3, initializers_as_inputs=True)
    assert len(model.graph.input) == 1 + len(model.graph.initializer)
    assert status(model) == [(8, True), (16, True), (5, False)]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=46, min_pruned_groups=2)
    assert pruned.ir_version == 3
    onnx.checker.check_model(pruned, full_check=True)
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in pruned.graph.input}
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert set(inputs) == set(inits) | {"x"}
    for name, dims in inits.items():
        assert inputs[name] == dims, name
    assert inits[node_named(pruned, "Conv_1").input[1]] == [4, 3, 3, 3]


def test_unnamed_nodes():
    model = conv_chain(named=False)
    assert all(not nd.name for nd in model.graph.node)
    an = analyze(model)
    assert an.groups[0].producers == ["Conv#0"] and an.groups[0].consumers == ["Conv#3"]
    assert an.groups[1].consumers == ["Gemm#7"]
    pruned, _, _ = prune_and_check(model, keep=0.5, seed=47, min_pruned_groups=2)
    assert all(not nd.name for nd in pruned.graph.node)


def test_unnamed_blocker_is_named_by_index():
    n = Net(seed=48, named=False)
    x = n.input("x", [1, 3, 6, 6])
    y = n.relu(n.conv(n.relu(n.conv(x, 3, 8)), 8, 8))
    n.output(n.conv(n.node("LRN", [y], size=3), 8, 4))
    an = analyze(n.model())
    assert an.groups[1].skip_reasons == ["unsupported op LRN at LRN#4"]
    assert an.groups[0].prunable


def test_rewrite_keeps_names_opset_and_metadata():
    model = conv_chain(opset=13)
    model.producer_name, model.doc_string = "tests", "a tiny chain"
    onnx.helper.set_model_props(model, {"author": "onnxprune"})
    before = model.SerializeToString()
    an = analyze(model)
    pruned = apply_plan(an, random_plan(an, 0.5, 49))
    assert model.SerializeToString() == before                     # the input is not touched
    assert [nd.name for nd in pruned.graph.node] == [nd.name for nd in model.graph.node]
    assert [nd.op_type for nd in pruned.graph.node] == [nd.op_type for nd in model.graph.node]
    assert pruned.opset_import == model.opset_import and pruned.ir_version == model.ir_version
    assert (pruned.producer_name, pruned.doc_string) == ("tests", "a tiny chain")
    assert [(p.key, p.value) for p in pruned.metadata_props] == [("author", "onnxprune")]
    assert const_input(pruned, "Conv_1", 1).shape == (4, 3, 3, 3)
