"""Export a registered model to a single self-contained ONNX file.

Command line::

    python -m models.export NAME -o OUT.onnx [--exporter legacy|dynamo]
        [--bn folded|unfused] [--weights PATH] [--opset N] [--seed S] [--batch N]

Python::

    from models.export import export_model
    export_model("resnet20", "r20.onnx", exporter="dynamo", bn="unfused")

Models are exported in eval mode with a static input shape (``ModelSpec.input_shape``
with the batch size replaced by ``batch``), input ``input`` and output ``logits`` (or
the names in ``ModelSpec.output_names`` for multi-output models).

Random weights
    Without ``weights`` the model is built after ``torch.manual_seed(seed)`` and every
    BatchNorm then gets random affine parameters (gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1))
    and running statistics measured on a seeded N(0, 1) calibration batch (one
    train-mode forward pass with ``momentum=None``, single-threaded so the numbers
    do not depend on the thread count).  So running_mean/var are far from 0/1, the
    activations stay well scaled even in deep nets, and folded and unfused BN give
    numerically different graphs.  The same (name, seed) always gives the same weights.

BatchNorm handling (checked with torch 2.13 / onnxscript 0.7)
    ``bn="folded"`` is the exporters' normal eval export; both fold every
    Conv->BatchNorm into the Conv (legacy: the ``eval_peephole`` pass run when
    ``training=TrainingMode.EVAL`` and constant folding is on; dynamo: onnxscript's
    optimizer rule ``fuse_batchnorm_into_conv``).

    ``bn="unfused"`` keeps inference-form ``BatchNormalization`` nodes (one output,
    ``training_mode=0``):

    * legacy: ``training=torch.onnx.TrainingMode.PRESERVE`` with the model in eval
      mode.  The exporter then skips ``eval_peephole`` (the BN fusion) but still
      constant-folds everything else, so apart from the BN nodes the graph is the
      same as the folded one.  (``do_constant_folding=False`` also keeps BN but
      leaves many Shape/Gather/Unsqueeze/Identity nodes in the graph.)
    * dynamo: export with ``optimize=False`` and then run onnxscript's optimizer
      pipeline (``onnxscript.optimizer.optimize_ir``, which is what
      ``ONNXProgram.optimize()`` runs) with the three ``fuse_batchnorm_into_*``
      rules removed from its default rewrite rules.  Plain ``optimize=False``
      also keeps BN but leaves Cast/CastLike/Shape/Expand clutter.

    Both combinations work for both exporters; the result is checked and a
    :class:`ExportError` is raised if the BN nodes are not as requested.

Output
    Written atomically (temporary file in the destination directory, then
    ``os.replace``) as one ``.onnx`` file with all weights inline (no external data).
    ``metadata_props`` record model name, exporter, bn mode, seed and weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import onnx

try:
    import torch
    import torch.nn as nn
except ImportError:
    if __name__ == "__main__":
        print("python -m models.export: error: exporting needs PyTorch: install onnxprune[torch] "
              "(pip install 'onnxprune[torch]')", file=sys.stderr)
        sys.exit(2)
    raise

from models.cifar_resnet import load_pretrained
from models.registry import MODELS, get_spec

__all__ = ["ExportError", "build_seeded_model", "randomize_batchnorm", "export_model", "main"]

EXPORTERS = ("legacy", "dynamo")
BN_MODES = ("folded", "unfused")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(RuntimeError):
    pass


@contextlib.contextmanager
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, input_shape, seed: int = 0, calib_batch: int | None = None) -> nn.Module:
    """Give every BatchNorm random affine params and data-derived running stats.

    Affine params are drawn from a generator seeded with ``seed``; running stats are
    the batch statistics of one train-mode forward pass on a seeded N(0, 1) batch.
    The model is returned in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    g = torch.Generator().manual_seed(seed + 1_000_003)
    saved_momentum = []
    for bn in bns:
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
        bn.reset_running_stats()
        saved_momentum.append(bn.momentum)
        bn.momentum = None  # cumulative average: one pass == exact batch statistics
    if calib_batch is None:
        calib_batch = 16 if input_shape[-1] <= 64 else 4
    x = torch.randn((calib_batch, *input_shape[1:]), generator=g)
    model.eval()
    for bn in bns:  # only BN in train mode: Dropout etc. stay deterministic
        bn.train()
    with _single_thread():
        model(x)
    for bn, mom in zip(bns, saved_momentum):
        bn.momentum = mom
    return model.eval()


def build_seeded_model(name: str, seed: int = 0, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build model ``name`` deterministically (or with ``weights``) in eval mode."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state alone
        torch.manual_seed(seed)
        model = spec.build()
    if weights is not None:
        load_pretrained(model, weights)
    else:
        randomize_batchnorm(model, spec.input_shape, seed)
    return model.eval()


def example_input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    shape = get_spec(name).input_shape
    g = torch.Generator().manual_seed(seed + 7)
    return torch.randn((batch, *shape[1:]), generator=g)


def _count_bn(proto: onnx.ModelProto) -> int:
    return sum(1 for n in proto.graph.node if n.op_type == "BatchNormalization")


def _export_legacy(model, x, bn: str, opset: int | None, outputs=(OUTPUT_NAME,)) -> onnx.ModelProto:
    buf = io.BytesIO()
    training = torch.onnx.TrainingMode.EVAL if bn == "folded" else torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=opset,
            do_constant_folding=True,
            training=training,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
        )
    return onnx.load_from_string(buf.getvalue())


@contextlib.contextmanager
def _without_bn_fusion_rules():
    """Temporarily drop onnxscript's fuse_batchnorm_* rules from its default rewrite rules."""
    import onnxscript.rewriter as rw
    from onnxscript.rewriter.rules.common import (
        fuse_batchnorm_into_conv_rule,
        fuse_batchnorm_into_conv_transpose_rule,
        fuse_batchnorm_into_gemm_rule,
    )

    if not hasattr(rw, "_DEFAULT_REWRITE_RULES"):
        raise ExportError(
            "this onnxscript version has no rewriter._DEFAULT_REWRITE_RULES; cannot run the "
            "dynamo optimizer without BatchNorm fusion (use --exporter legacy for --bn unfused)"
        )
    drop = {id(fuse_batchnorm_into_conv_rule), id(fuse_batchnorm_into_conv_transpose_rule),
            id(fuse_batchnorm_into_gemm_rule)}
    saved = rw._DEFAULT_REWRITE_RULES
    rw._DEFAULT_REWRITE_RULES = tuple(r for r in saved if id(r) not in drop)
    try:
        yield
    finally:
        rw._DEFAULT_REWRITE_RULES = saved


def _require_onnxscript() -> None:
    """torch's dynamo exporter runs on onnxscript; say so in one line when it is missing."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("the dynamo exporter needs onnxscript: pip install onnxscript") from None


def _export_dynamo(model, x, bn: str, opset: int | None, outputs=(OUTPUT_NAME,)) -> onnx.ModelProto:
    _require_onnxscript()
    # torch logs "torchvision is not installed. Skipping torchvision::nms" etc. at WARNING.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            optimize=(bn == "folded"),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            verbose=False,
            report=False,
        )
        if bn == "unfused":
            import onnxscript.optimizer

            with _without_bn_fusion_rules():
                onnxscript.optimizer.optimize_ir(prog.model)
    proto = prog.model_proto
    if opset is not None and _main_opset(proto) != opset:
        # torch's dynamo exporter never emits opsets below 18 (it silently uses 18);
        # try onnx's version converter and refuse if it cannot do it.
        from onnx import version_converter

        got = _main_opset(proto)
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as e:  # noqa: BLE001
            raise ExportError(
                f"the dynamo exporter produced opset {got} and onnx's version converter cannot "
                f"convert this model to opset {opset} ({str(e).strip().splitlines()[-1]}); "
                "use --exporter legacy for opsets below 18"
            ) from e
    return proto


def _main_opset(proto: onnx.ModelProto) -> int | None:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return None


def export_model(
    name: str,
    path: str | os.PathLike,
    exporter: str = "legacy",
    bn: str = "folded",
    weights: str | os.PathLike | None = None,
    opset: int | None = None,
    seed: int = 0,
    batch: int = 1,
) -> Path:
    """Export registered model ``name`` to ``path`` and return the path.

    See the module docstring for ``exporter``/``bn`` semantics.  ``opset=None`` uses
    the exporter's default (20 for both in torch 2.13).  The legacy exporter supports
    opsets up to 20; the dynamo exporter emits 18 or newer and older requests are
    passed through ``onnx.version_converter`` (which fails, with an
    :class:`ExportError`, e.g. for graphs with ``Pad``).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    path = Path(path)
    model = build_seeded_model(name, seed=seed, weights=weights)
    x = example_input(name, batch=batch, seed=seed)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    with torch.no_grad():
        if exporter == "legacy":
            proto = _export_legacy(model, x, bn, opset, get_spec(name).output_names)
        else:
            proto = _export_dynamo(model, x, bn, opset, get_spec(name).output_names)

    n_bn = _count_bn(proto)
    if bn == "unfused" and has_bn and n_bn == 0:
        raise ExportError(f"{exporter} export of {name} with bn='unfused' produced no BatchNormalization node")
    if bn == "folded" and n_bn:
        raise ExportError(f"{exporter} export of {name} with bn='folded' left {n_bn} BatchNormalization node(s)")
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and len([o for o in node.output if o]) != 1:
            raise ExportError(f"{exporter} export of {name}: BatchNormalization {node.name!r} is not in inference form")

    onnx.helper.set_model_props(
        proto,
        {
            "onnxprune.model": name,
            "onnxprune.exporter": exporter,
            "onnxprune.bn": bn,
            "onnxprune.seed": str(seed),
            "onnxprune.weights": os.path.basename(str(weights)) if weights else "random",
            "onnxprune.torch": torch.__version__,
        },
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(proto, tmp, save_as_external_data=False)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.export", description="Export a reference CNN to ONNX.")
    ap.add_argument("name", nargs="?", choices=list(MODELS), metavar="NAME", help="model name: " + ", ".join(MODELS))
    ap.add_argument("-o", "--output", help="output .onnx path (default: NAME.onnx)")
    ap.add_argument("--exporter", choices=EXPORTERS, default="legacy")
    ap.add_argument("--bn", choices=BN_MODES, default="folded")
    ap.add_argument("--weights", help="checkpoint to load (akamaster-style state dict) instead of random weights")
    ap.add_argument("--opset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    args = ap.parse_args(argv)
    if args.list or args.name is None:
        for n, s in MODELS.items():
            print(f"{n:16s} {'x'.join(map(str, s.input_shape)):12s} {s.description}")
        return 0 if args.list else 2
    out = Path(args.output or f"{args.name}.onnx")
    try:
        export_model(args.name, out, exporter=args.exporter, bn=args.bn, weights=args.weights,
                     opset=args.opset, seed=args.seed, batch=args.batch)
    except Exception as e:  # noqa: BLE001
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    proto = onnx.load(str(out), load_external_data=False)
    ops = sorted({n.op_type for n in proto.graph.node})
    opsets = ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in proto.opset_import)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; {len(proto.graph.node)} nodes; opset {opsets})")
    print("ops: " + " ".join(ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
