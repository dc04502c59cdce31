"""Reconstruction lowers the output error against the unpruned model, on the calibration images
and on held-out ones, for convs (plain, grouped/depthwise, bias-free + BatchNorm) and Gemm."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from recover_models import depthwise_bn_net, images, mlp, pruned, relative_error, residual_net, resnet
from onnxprune.recover import check_refit, reconstruct


# a linear refit cannot replace half of a 12-unit ReLU layer: the MLP's bound is looser
@pytest.mark.parametrize("build,shape,factor", [(resnet, (3, 16, 16), 0.5), (depthwise_bn_net, (3, 12, 12), 0.5),
                                                (residual_net, (3, 12, 12), 0.5), (mlp, (16,), 0.75)])
def test_refit_reduces_output_error_on_calibration_and_held_out(build, shape, factor):
    model = build()
    analysis, plan, structural = pruned(model)
    calib, held_out = images(256, shape, seed=0), images(128, shape, seed=1)
    refit, record = reconstruct(model, structural, analysis, plan, calib, positions_per_image=None)
    assert record.layers, "nothing was refitted: the test would be vacuous"
    for x in (calib, held_out):
        before, after = relative_error(structural, model, x), relative_error(refit, model, x)
        assert after < factor * before, (before, after)
    for layer in record.layers:
        assert layer.error_after <= layer.error_before + 1e-12
        assert layer.warning is None
    plan.refit = record.to_dict()
    assert check_refit(model, refit, plan).ok


def test_depthwise_and_bn_mean_are_refitted():
    model = depthwise_bn_net()
    analysis, plan, structural = pruned(model)
    refit, record = reconstruct(model, structural, analysis, plan, images(128, (3, 12, 12)))
    ops = {(layer.op, len(layer.initializers)) for layer in record.layers}
    assert ("Conv", 2) in ops
    grouped = [n for n in refit.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                                         for a in n.attribute)]
    assert grouped and any(grouped[0].output[0] == layer.output for layer in record.layers)
    bn = next(n for n in refit.graph.node if n.op_type == "BatchNormalization")
    assert bn.input[3] in record.initializers        # the bias-free conv's shift went into the BN mean


def test_weights_keep_dtype_and_other_initializers_are_untouched():
    model = resnet()
    analysis, plan, structural = pruned(model)
    refit, record = reconstruct(model, structural, analysis, plan, images(64))
    before = {t.name: numpy_helper.to_array(t) for t in structural.graph.initializer}
    for t in refit.graph.initializer:
        value = numpy_helper.to_array(t)
        assert value.dtype == before[t.name].dtype and value.shape == before[t.name].shape
        if t.name not in record.initializers:
            assert np.array_equal(value, before[t.name]), t.name


def test_residual_layers_absorb_the_skip_error():
    """The second conv of a block is fitted to the original sum minus the pruned skip input."""
    model = residual_net()
    analysis, plan, structural = pruned(model)
    calib = images(128, (3, 12, 12))
    refit, record = reconstruct(model, structural, analysis, plan, calib, positions_per_image=None)
    assert {layer.target for layer in record.layers} == {"output", "residual"}
    assert relative_error(refit, model, images(64, (3, 12, 12), seed=5)) < \
        0.5 * relative_error(structural, model, images(64, (3, 12, 12), seed=5))
