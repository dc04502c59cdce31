"""Loading models safely and writing outputs atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import onnx

from onnxprune.errors import ModelLoadError, OnnxPruneError

__all__ = ["load_model", "save_model", "write_text_atomic", "write_json_atomic", "write_atomic",
           "check_output_path"]


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external-data locations that escape the model's folder."""
    base = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if os.path.isabs(location) or (base != target and base not in target.parents):
            raise ModelLoadError(
                f"{path}: tensor '{tensor.name}' stores its data at '{location}', "
                "outside the model's folder; refusing to read it")
        if not target.is_file():
            raise ModelLoadError(f"{path}: external data file '{location}' of tensor "
                                 f"'{tensor.name}' is missing")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model with clear errors for missing, truncated or non-ONNX files."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, expected an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'parse failed'})") from None
    if not model.graph.node or not model.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph nodes or no opset); "
                             "is the file truncated or of another format?")
    _check_external_data(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot load external data ({exc})") from None
    return model


def check_output_path(inp: str | os.PathLike | None, out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output path that exists (the input model included) unless ``overwrite``.

    Also refuses a folder, or a path whose folder does not exist; nothing is written here.
    """
    out = Path(out)
    if out.is_dir():
        raise OnnxPruneError(f"{out}: is a folder, expected a file path")
    if not out.parent.exists():
        raise OnnxPruneError(f"{out}: folder '{out.parent}' does not exist")
    if inp is not None and Path(inp).resolve() == out.resolve() and not overwrite:
        raise OnnxPruneError(f"{out}: output path is the input model; pass --overwrite to replace it")
    if out.exists() and not overwrite:
        raise OnnxPruneError(f"{out}: exists; pass --overwrite to replace it")
    return out


def _new_file_mode(path: Path) -> int:
    """The mode ``open()`` would give: the replaced file's mode, else 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The file gets the permissions a plain ``open()`` would give it (``mkstemp`` makes 0600 files),
    and a failure leaves neither a half-written ``path`` nor the temporary file behind.
    """
    path = Path(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write a self-contained model atomically (temp file + rename)."""
    path = Path(path)
    if model.ByteSize() > 2_000_000_000:
        raise OnnxPruneError(f"{path}: model larger than 2 GB; external data output is not supported yet")
    write_atomic(path, lambda tmp: onnx.save(model, tmp))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (temp file + rename)."""
    path = Path(path)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    write_atomic(path, write)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")
