"""Argument groups shared by the sub-commands, and the helpers that read them back.

Each option is declared in one place here (``--input-shape``, ``--provider``, ``-o/--overwrite``,
``-v/-q``) and parsed by argparse itself, so every command spells and checks it the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path
from typing import Any, Mapping

from onnxprune.errors import OnnxPruneError

__all__ = ["HelpFormatter", "add_command", "add_input_shape_argument", "add_provider_argument",
           "add_output_arguments", "add_overwrite_argument", "add_verbosity_arguments",
           "parse_input_shape", "input_shapes", "load_input_model", "fixed_input_model", "check_outputs", "plan_path_for",
           "config_from_namespace", "verbosity", "need", "input_dims", "check_runtime_support"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every help text; descriptions and epilogs keep their line breaks."""

    _FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
              argparse._CountAction, argparse._HelpAction, argparse._VersionAction)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default" in text or action.default is None
                or action.default is argparse.SUPPRESS or isinstance(action, self._FLAGS)):
            return text
        return super()._get_help_string(action)


def add_command(sub, name: str, *, help: str, description: str, examples: str = "") -> argparse.ArgumentParser:
    """A sub-command parser with the shared formatter and an ``examples:`` epilog."""
    epilog = "examples:\n" + examples.strip("\n") if examples else None
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 96), epilog=epilog,
                          formatter_class=HelpFormatter)


# ------------------------------------------------------------------------------------------
# model input shapes
# ------------------------------------------------------------------------------------------
def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=1x3x224x224`` -> ``("NAME", [1, 3, 224, 224])`` (argparse ``type=``)."""
    name, _, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.lower().split("x")]
    except ValueError:
        shape = []
    if not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=1x3x224x224")
    return name, shape


def add_input_shape_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", type=parse_input_shape, metavar="NAME=1x3xHxW",
                        help="sizes of a dynamic input for the analysis, e.g. input=1x3x224x224 (repeatable, "
                             "one per input); the written model keeps its own input/output shapes")


def input_shapes(args: argparse.Namespace) -> dict[str, list[int]]:
    return dict(getattr(args, "input_shape", None) or [])


def load_input_model(path: str | Path, args: argparse.Namespace, fix_shapes: bool = True):
    """Load ``path``, check that onnxruntime can run its opset / IR version, and (with
    ``fix_shapes``) fix the input shapes given with ``--input-shape``."""
    from onnxprune.model_io import load_model
    model = load_model(path)
    check_runtime_support(model, str(path))
    return fixed_input_model(model, args) if fix_shapes else model


_VERSION_WORDS = ("opset", "ir version", "ValidateOpsetForDomain")


def check_runtime_support(model, path: str) -> None:
    """A one-line error, before any work, when onnxruntime cannot run the model's opset or IR
    version (pruning is verified by running the model)."""
    import onnxruntime as ort
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < 7:
        raise OnnxPruneError(f"{path}: ai.onnx opset {opset}; onnxruntime {ort.__version__} runs opset 7 "
                             "and newer (convert it with onnx.version_converter)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc)
        if any(w.lower() in text.lower() for w in _VERSION_WORDS):
            raise OnnxPruneError(f"{path}: onnxruntime {ort.__version__} cannot run this model (IR version "
                                 f"{model.ir_version}, opset {opset}): {_version_reason(text)}") from None


def _version_reason(text: str) -> str:
    """The sentence of an onnxruntime load error that names the supported version, without the
    C++ source location and signature before it."""
    import re
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = re.split(r"[)&] (?=[A-Z])", text)[-1]
    sentences = [s.strip() for s in re.split(r"(?<=[.!])\s+", text) if s.strip()]
    named = [s for s in sentences if any(w.lower() in s.lower() for w in ("opset", "ir version"))]
    return (named or sentences or [text])[-1][:200]


def fixed_input_model(model, args: argparse.Namespace):
    """``model`` with the ``--input-shape`` sizes on its inputs (the model itself when none given)."""
    from onnxprune.graph.view import fix_input_shapes
    shapes = input_shapes(args)
    return fix_input_shapes(model, shapes) if shapes else model


# ------------------------------------------------------------------------------------------
# provider, outputs, verbosity
# ------------------------------------------------------------------------------------------
def add_provider_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda", "tensorrt"], default="auto",
                        help="onnxruntime provider for running the model (auto: CUDA when present, else CPU)")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that already exist (without it, nothing existing is touched)")


def add_output_arguments(parser: argparse.ArgumentParser, help: str, required: bool = True,
                         metavar: str = "OUT") -> None:
    parser.add_argument("-o", "--output", required=required, metavar=metavar, help=help)
    add_overwrite_argument(parser)


def add_verbosity_arguments(parser: argparse.ArgumentParser, quiet: bool = True) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages on stderr (repeatable)")
    if quiet:
        parser.add_argument("-q", "--quiet", action="count", default=0,
                            help="fewer messages on stderr: warnings and errors only")


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` minus ``-q`` (a boolean ``--quiet`` counts as one)."""
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def check_outputs(args: argparse.Namespace, *paths: str | Path, source: str | Path | None = None) -> list[Path]:
    """Refuse every output that exists (or is the input ``source``) unless ``--overwrite``."""
    from onnxprune.model_io import check_output_path
    overwrite = bool(getattr(args, "overwrite", False))
    return [check_output_path(source, p, overwrite) for p in paths]


def plan_path_for(model_path: str | Path) -> Path:
    """``slim.v1.onnx`` -> ``slim.v1.plan.json``; a name without ``.onnx`` gets ``.plan.json`` appended."""
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx":
        return model_path.with_suffix(".plan.json")
    return Path(f"{model_path}.plan.json")


# ------------------------------------------------------------------------------------------
# namespace -> config
# ------------------------------------------------------------------------------------------
def config_from_namespace(cls: type, args: argparse.Namespace, renames: Mapping[str, str] | None = None,
                          **values: Any):
    """A dataclass ``cls`` built from the options of the same name in ``args``.

    ``renames`` maps an option's dest to the field it fills when the names differ; ``values``
    set fields directly (they win over the namespace). Options that are not fields are ignored.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    ns = vars(args)
    kwargs = {f: ns[f] for f in fields if f in ns}
    for dest, field_name in (renames or {}).items():
        if dest in ns and field_name in fields:
            kwargs[field_name] = ns[dest]
    kwargs.update(values)
    return cls(**kwargs)


def need(module: str, extra: str, what: str):
    """Import ``module`` or raise a one-line error naming the extra to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxPruneError(f"{what} needs {module}: install onnxprune[{extra}] "
                             f"(pip install 'onnxprune[{extra}]')") from None



def input_dims(model) -> tuple[str, list[int | None]]:
    """Name and shape (None for a symbolic dimension) of the model's first input."""
    inp = model.graph.input[0]
    return inp.name, [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
