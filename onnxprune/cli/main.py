"""The ``onnxprune`` command: parser, dispatch to one module per sub-command, and error handling.

Every error onnxprune raises on purpose is printed as one line naming the file, node or tensor,
with exit status 2; nothing is written on failure.
"""
from __future__ import annotations

import argparse
import os
import sys

from onnxprune import __version__
from onnxprune.cli import analyze, bench, finetune, prune, report, verify
from onnxprune.cli.args import HelpFormatter, verbosity
from onnxprune.errors import OnnxPruneError
from onnxprune.log import configure

COMMANDS = (analyze, prune, verify, finetune, bench, report)

EXAMPLES = """
examples:
  onnxprune analyze model.onnx                       # channel groups, MACs, what is skipped and why
  onnxprune prune model.onnx -o small.onnx --flops-reduction 0.45      # writes small.plan.json too
  onnxprune prune model.onnx -o small.onnx --params-reduction 0.4 --round-to 8 --criterion l2
  onnxprune verify model.onnx small.onnx             # against the masked original, plan small.plan.json
  onnxprune report small.plan.json --png keep.png
  onnxprune bench model.onnx small.onnx --batch 1,64 --engine ort-cpu -o bench
  onnxprune COMMAND --help                           # every option of a command, with its default
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxprune", formatter_class=HelpFormatter, epilog=EXAMPLES,
        description="Structured (channel) pruning of exported ONNX CNNs. MACs are counted per image; "
                    "FLOPs = 2 x MACs.")
    parser.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's last flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        sys.stdout = open(os.devnull, "w")


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None or sys.stdout.closed:      # started with stdout closed (`>&-`)
        sys.stdout = open(os.devnull, "w")
    args = build_parser().parse_args(argv)
    configure(verbosity(args))
    try:
        status = args.func(args)
        sys.stdout.flush()                           # a closed pipe shows here, not at exit
        return status
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                          # `onnxprune report plan.json | head`
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
