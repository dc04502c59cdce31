"""``to_onnx``: an :class:`OnnxModule` back to ONNX, by writing its current tensors into a copy
of its source graph (``method="graph"``) or with ``torch.onnx.export`` (``method="torch"``)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import torch

from onnxprune.errors import OnnxPruneError, VerificationError
from onnxprune.graph.batchnorm import REINSERTED_BN_KEY, fold_batchnorm_into, reinserted_bn_names
from onnxprune.graph.edit import ModelEdit
from onnxprune.torch_bridge.common import main_opset
from onnxprune.torch_bridge.module import OnnxModule

__all__ = ["to_onnx"]


def _write_back(module: OnnxModule) -> ModelEdit:
    """An edit of the source graph holding the module's current parameters and statistics."""
    edit = ModelEdit(module.source_model)
    for name, t in module.onnx_tensors().items():
        kind, idx, dtype = module._origin[name]
        arr = t.detach().cpu().to(torch.float32 if t.dtype == torch.bfloat16 else t.dtype).numpy()
        arr = np.ascontiguousarray(arr.astype(dtype, copy=False))
        if kind == "init":
            edit.replace_initializer(name, arr, cast=False)
        else:   # a Constant node: its tensor keeps its own name
            stored = edit.nodes[idx].attributes["value"].as_tensor().name
            edit.set_attribute(idx, "value", ir.tensor(arr, name=stored))
    return edit


def _fold_reinserted(edit: ModelEdit, source: onnx.ModelProto, fold_bn) -> None:
    """Fold BN back into Convs (``"auto"``: those reinsert_batchnorm added) and drop the record."""
    recorded = reinserted_bn_names(source)
    if fold_bn == "auto":
        if recorded:
            fold_batchnorm_into(edit, only=recorded)
    elif fold_bn:
        fold_batchnorm_into(edit)
    if fold_bn and any(p.key == REINSERTED_BN_KEY for p in source.metadata_props):
        edit.set_metadata(REINSERTED_BN_KEY, None)


def _convert_opset(m: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter
    try:
        return version_converter.convert_version(m, int(opset))
    except Exception as exc:
        raise OnnxPruneError(f"cannot convert the model to opset {opset}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") from None


def _export_graph(module: OnnxModule, opset, fold_bn) -> onnx.ModelProto:
    edit = _write_back(module)
    _fold_reinserted(edit, module.source_model, fold_bn)
    m = edit.to_proto()
    if opset is not None and opset != main_opset(m):
        m = _convert_opset(m, opset)
    return m


def _export_torch(module: OnnxModule, example_input, opset) -> onnx.ModelProto:
    if example_input is None:
        raise OnnxPruneError("to_onnx(method='torch') needs example_input")
    import io
    import warnings
    buf = io.BytesIO()
    was = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(example_input), buf, dynamo=False,
                              opset_version=int(opset or min(module.opset, 20)),
                              input_names=list(module.input_names),
                              output_names=list(module.output_names), do_constant_folding=True)
    finally:
        module.train(was)
    return onnx.load_from_string(buf.getvalue())


def _compare(got: list[np.ndarray], ref: list[np.ndarray], rtol: float, what: str) -> None:
    for i, (a, b) in enumerate(zip(got, ref)):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise VerificationError(f"{what}: output {i} has shape {a.shape}, expected {b.shape}")
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        bound = rtol * (float(np.max(np.abs(b))) if b.size else 0.0) + 1e-6
        if not err <= bound:
            raise VerificationError(f"{what}: output {i} differs by {err:.3g} (allowed {bound:.3g})")


def _eval_reference(module: OnnxModule, example_input) -> tuple:
    """The module's outputs in eval mode with TF32 off (mode and flags restored)."""
    was = module.training
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    module.eval()
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            ref = module(*example_input)
    finally:
        module.train(was)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return ref if isinstance(ref, tuple) else (ref,)


def _check_export(m: onnx.ModelProto, module: OnnxModule, example_input, rtol: float) -> None:
    if example_input is None:
        raise OnnxPruneError("to_onnx(check=True) needs example_input")
    from onnxprune.runtime import make_session
    sess = make_session(m, quiet=True)
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(module.input_names, example_input)}
    got = sess.run(None, feeds)
    ref = _eval_reference(module, example_input)
    _compare(got, [r.detach().cpu().numpy() for r in ref], rtol, "exported ONNX vs module")


def to_onnx(module: OnnxModule, path=None, example_input=None, opset: int | None = None, *,
            method: str = "graph", fold_bn="auto", check: bool = False,
            rtol: float = 1e-5) -> onnx.ModelProto:
    """Export ``module`` back to ONNX (see the package docs); write to ``path`` if given.

    ``example_input``: a tensor or tuple of tensors; needed for ``method="torch"``.  With
    ``check=True`` the export is run with onnxruntime on it and compared with the module in
    eval mode (TF32 off): max|diff| <= rtol * max|module| + 1e-6, else VerificationError.
    Off by default: deep nets reach fp32 noise of ~1e-5 of the output scale (onnxruntime
    against itself at different optimisation levels on ResNet-50).
    """
    if not isinstance(module, OnnxModule):
        raise TypeError("to_onnx expects an OnnxModule")
    if example_input is not None and not isinstance(example_input, (tuple, list)):
        example_input = (example_input,)
    if method == "graph":
        m = _export_graph(module, opset, fold_bn)
    elif method == "torch":
        m = _export_torch(module, example_input, opset)
    else:
        raise ValueError(f"method must be 'graph' or 'torch', got {method!r}")
    if check:
        _check_export(m, module, example_input, rtol)
    if path is not None:
        from onnxprune.model_io import save_model
        save_model(m, path)
    return m
