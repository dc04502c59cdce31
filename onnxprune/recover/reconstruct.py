"""Label-free layer reconstruction after a structural rewrite.

Every Conv/Gemm/MatMul whose input lost channels is refitted, weights and bias, so that its
output on calibration images matches the *unpruned* model's output at the same tensor (the
pre-activation conv output; with BatchNorm folded that is the BN output). Layers are processed
front to back in waves: a wave holds layers whose inputs do not depend on each other, its inputs
come from the pruned model with every earlier wave already refitted (errors do not compound) and
its targets from the original model. Both models are stepped forward once over the images
(:class:`~onnxprune.recover.stepper.Stepper`): a wave runs only the nodes between the previous
frontier and its own tensors. The frontier is kept in RAM within ``max_memory_mb`` (half per
model): past it, only the first images keep their frontier and for the others it is recomputed
from the input at every wave (bit-identical values), so that memory stays bounded in the number
of images and the time grows instead. A layer whose output only feeds a residual Add is fitted
to the original sum minus the pruned skip input, so it also absorbs the error the skip path carries.
Unfused BatchNorm keeps its statistics, deliberately (no EagleEye-style re-estimation): the
refit target is the original conv output that the BN normalises, so with the original statistics
the BN output already matches the unpruned model's as closely as the fit allows; statistics
re-estimated on the calibration images would instead normalise by *their* mean and variance (not
those of the data the model was trained on) and move every BN output away from the original's.
BNs after convs whose inputs kept all channels see unchanged values (only channels were dropped),
so their statistics are still exact. Re-estimation helps when nothing is refitted (the pruned
layer's output distribution shifts); that is ``--recover none``, which leaves the weights alone.
A bias-free conv followed by BatchNorm gets its fitted bias folded into the BN running mean.
The least-squares sums are accumulated batch by batch (:class:`NormalEquations`), so their
memory does not grow with the number of images either; the calibration images themselves are
held in RAM. Weights keep their dtype; the graph is unchanged.
"""
from __future__ import annotations

import math
import time

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import DataError
from onnxprune.log import get_logger, progress
from onnxprune.recover.im2col import conv_rows, conv_targets, sample_positions
from onnxprune.recover.layers import RefitLayer, find_layers, refit_waves
from onnxprune.recover.normal_eq import NormalEquations
from onnxprune.recover.record import LayerRefit, RefitRecord, tensor_sha256
from onnxprune.recover.stepper import Stepper
from onnxprune.runtime import available_providers

__all__ = ["reconstruct", "prefix_model", "calibration_images"]

log = get_logger(__name__)


def calibration_images(data, limit: int | None = None) -> np.ndarray:
    """The first ``limit`` images of an ndarray or an onnxprune.data Dataset, as float32."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data[:limit], dtype=np.float32)
    out, have = [], 0
    for x, _ in data.batches(64):
        out.append(np.asarray(x, np.float32))
        have += len(x)
        if limit is not None and have >= limit:
            break
    if not out:
        raise DataError("reconstruct: the calibration data holds no image")
    return np.concatenate(out)[:limit]


def prefix_model(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``outputs`` (the nodes they need and nothing else)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    needed, todo, names = set(), list(outputs), set()
    while todo:
        t = todo.pop()
        n = producer.get(t)
        if n is None or id(n) in needed:
            continue
        needed.add(id(n))
        todo.extend(i for i in n.input if i)
    nodes = [n for n in model.graph.node if id(n) in needed]
    for n in nodes:
        names.update(n.input)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:], m.graph.output[:], m.graph.value_info[:]
    m.graph.node.extend(nodes)
    keep_inits = [t for t in model.graph.initializer if t.name in names]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep_inits)
    graph_inputs = [i for i in model.graph.input if i.name in names or i.name == model.graph.input[0].name]
    del m.graph.input[:]
    m.graph.input.extend(graph_inputs)
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in outputs)
    return m


# --- the problem of one layer in [groups, unknowns, outputs] form ------------------------------
def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def current_weights(layer: RefitLayer, inits) -> np.ndarray:
    """The layer's weights (and bias row) as [groups, unknowns, outputs] float64."""
    w = numpy_helper.to_array(inits[layer.weight]).astype(np.float64)
    if layer.op == "Conv":
        g = layer.geometry.groups
        w = w.reshape(g, w.shape[0] // g, -1).transpose(0, 2, 1)
    elif layer.op == "Gemm":
        w = layer.alpha * (w.T if layer.trans_b else w)
        w = w[None]
    else:
        w = w[None]
    if not layer.fits_bias:
        return w
    if layer.bias is not None:
        b = numpy_helper.to_array(inits[layer.bias]).astype(np.float64).reshape(-1)
        b = b * (layer.beta if layer.op == "Gemm" else 1.0)
    else:
        b = np.zeros(w.shape[0] * w.shape[2])
    return np.concatenate([w, b.reshape(w.shape[0], 1, w.shape[2])], axis=1)


def _target(layer: RefitLayer, px: dict, oy: dict) -> np.ndarray:
    """The original output, or for a residual layer the original sum minus the pruned skip input,
    scattered back to the original channel positions so that ``out_keep`` selects it."""
    if not layer.residual:
        return oy[layer.y]
    z, s = oy[layer.residual[0]], px[layer.residual[1]]
    out = np.zeros_like(z)
    out[:, layer.out_keep] = z[:, layer.out_keep] - s
    return out


def layer_rows(layer: RefitLayer, x: np.ndarray, y: np.ndarray, per_image: int | None,
               rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [R, groups, K], targets [R, groups, M]) of one batch."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if layer.op == "Conv":
        g = layer.geometry.groups
        picks = sample_positions(len(y), y.shape[2] * y.shape[3], per_image, rng)
        return conv_rows(x, layer.geometry, picks), conv_targets(y, layer.out_keep, g, picks)
    if layer.op == "Gemm":
        x = x.T if layer.trans_a else x
        return x[:, None, :], y[:, layer.out_keep][:, None, :]
    x = x.reshape(-1, x.shape[-1])
    return x[:, None, :], y.reshape(-1, y.shape[-1])[:, layer.out_keep][:, None, :]


def _write(layer: RefitLayer, w: np.ndarray, inits) -> dict[str, np.ndarray]:
    """New initializer values (original dtypes and shapes) from a solution [groups, K(+1), M]."""
    new = {}
    wt = inits[layer.weight]
    old = numpy_helper.to_array(wt)
    body = w[:, :-1] if layer.fits_bias else w
    if layer.op == "Conv":
        value = body.transpose(0, 2, 1).reshape(old.shape)
    elif layer.op == "Gemm":
        value = body[0] / layer.alpha
        value = value.T if layer.trans_b else value
    else:
        value = body[0]
    new[layer.weight] = value.astype(old.dtype)
    if layer.fits_bias:
        b = w[:, -1].reshape(-1)
        if layer.bias is not None:
            old_b = numpy_helper.to_array(inits[layer.bias])
            b = b / (layer.beta if layer.op == "Gemm" else 1.0)
            new[layer.bias] = b.reshape(old_b.shape).astype(old_b.dtype)
        else:
            mean = numpy_helper.to_array(inits[layer.bn_mean])
            new[layer.bn_mean] = (mean.astype(np.float64) - b).astype(mean.dtype)
    return new


# --- waves ------------------------------------------------------------------------------------
def _accumulate(wave, current, original, steppers, per_image, seed):
    """Normal equations of every layer of ``wave``: inputs from ``current`` (earlier waves
    refitted), targets from ``original``, both advanced one step."""
    pruned_steps, original_steps = steppers
    inits = _inits(current)
    eqs = {}
    for layer in wave:
        w0 = current_weights(layer, inits)
        eqs[layer.y] = NormalEquations(w0.shape[0], w0.shape[1] - int(layer.fits_bias), w0.shape[2],
                                       layer.fits_bias)
    xs = list(dict.fromkeys([layer.x for layer in wave] + [layer.residual[1] for layer in wave if layer.residual]))
    ys = list(dict.fromkeys(layer.residual[0] if layer.residual else layer.y for layer in wave))
    start = 0
    # strict: both generators run to their end, where each updates its frontier
    for px, oy in zip(pruned_steps.step(current, xs), original_steps.step(original, ys), strict=True):
        for layer in wave:
            rng = np.random.default_rng([seed, start, layer.index])
            rows, targets = layer_rows(layer, px[layer.x], _target(layer, px, oy), per_image, rng)
            eqs[layer.y].update(rows, targets)
        start += len(px[xs[0]])
    return eqs


def _solve(layer, eq: NormalEquations, w0, images: int, ridge: float, weak_ridge: float):
    warning = None
    lam = ridge
    if eq.rows < eq.unknowns:
        per_image = max(eq.rows / max(images, 1), 1e-9)
        need = math.ceil(eq.unknowns / per_image)
        warning = (f"{layer.label}: {eq.rows} calibration rows for {eq.unknowns} unknowns; about {need} "
                   f"images would be needed, using a stronger ridge ({weak_ridge:g})")
        log.warning(f"reconstruct: {warning}")
        lam = weak_ridge
    return eq.solve(w0, lam), lam, warning


def reconstruct(original: onnx.ModelProto, pruned: onnx.ModelProto, analysis, plan, data,
                images: int | None = None, batch_size: int = 64, positions_per_image: int | None = 64,
                ridge: float = 1e-3, weak_ridge: float = 0.1, seed: int = 0,
                provider: str = "cpu", max_memory_mb: float = 1024) -> tuple[onnx.ModelProto, RefitRecord]:
    """Refit the layers of ``pruned`` (the plan's structural rewrite of ``original``; ``analysis``
    is that of ``original``) on calibration ``data``, storing at most ``max_memory_mb`` of
    activations between waves. Returns the refitted copy and its record."""
    t0 = time.perf_counter()
    imgs = calibration_images(data, images)
    if not np.all(np.isfinite(imgs)):
        raise DataError("reconstruct: calibration images contain NaN or Inf")
    layers = find_layers(original, pruned, analysis, plan.kept())
    current = onnx.ModelProto()
    current.CopyFrom(pruned)
    waves = refit_waves(current, layers)
    record = RefitRecord(images=len(imgs), positions_per_image=positions_per_image, ridge=ridge, waves=len(waves),
                         memory_mb=max_memory_mb)
    providers = available_providers(provider)
    log.info(f"reconstruct: {len(layers)} layers in {len(waves)} waves on {len(imgs)} images")
    cap = int(max_memory_mb * 2 ** 20) // 2          # half for each model's frontier
    steppers = (Stepper(imgs, batch_size, providers, cap, "pruned"),
                Stepper(imgs, batch_size, providers, cap, "original"))
    try:
        for wave in progress(waves, total=len(waves), desc="reconstruct", unit="waves", logger=log):
            _refit_wave(wave, current, original, steppers, record, len(imgs), positions_per_image, seed,
                        ridge, weak_ridge)
        record.resident_images = min(s.resident for s in steppers)
    finally:
        for s in steppers:
            s.close()
    record.seconds = time.perf_counter() - t0
    log.info(f"reconstruct: {len(layers)} layers refitted in {record.seconds:.1f} s")
    return current, record


def _refit_wave(wave, current, original, steppers, record, n_images, per_image, seed, ridge, weak_ridge):
    """Accumulate, solve and write back one wave; append its layers to ``record``."""
    eqs = _accumulate(wave, current, original, steppers, per_image, seed)
    inits = _inits(current)
    for layer in wave:
        eq, w0 = eqs[layer.y], current_weights(layer, inits)
        w, lam, warning = _solve(layer, eq, w0, n_images, ridge, weak_ridge)
        before, after = eq.relative_error(w0), eq.relative_error(w)
        new = _write(layer, w, inits)
        for name, value in new.items():
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
            record.initializers[name] = tensor_sha256(numpy_helper.to_array(inits[name]))
        record.layers.append(LayerRefit(layer.label, layer.y, layer.op, sorted(new), eq.rows, eq.unknowns,
                                        before, after, lam, warning,
                                        "residual" if layer.residual else "output"))
        log.debug(f"reconstruct: {layer.label}: relative error {before:.4g} -> {after:.4g}")
