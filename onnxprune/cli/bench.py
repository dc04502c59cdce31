"""``onnxprune bench``: latency of models side by side (options from ``onnxprune.tools.bench``)."""
from __future__ import annotations

import argparse

from onnxprune.cli.args import add_command, add_overwrite_argument, check_outputs

EXAMPLES = """
  onnxprune bench model.onnx small.onnx                           # ort-cpu, batch 1 and 64
  onnxprune bench model.onnx small.onnx --batch 1,256 --engine all -o bench   # bench.json + bench.md
"""


def register(sub) -> None:
    from onnxprune.tools.bench import add_bench_arguments
    p = add_command(sub, "bench", help="latency of models side by side (p50/p90/p99, images/s, MACs speed-up)",
                    description="Measure latency and throughput of one or more models on the same engines "
                                "and batches, interleaved; the first model is the baseline for speed-ups. "
                                "Engines that are not present are skipped with a message.",
                    examples=EXAMPLES)
    add_bench_arguments(p)
    add_overwrite_argument(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more messages on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxprune.tools.bench import run_bench_from_args
    if args.output:
        check_outputs(args, f"{args.output}.json", f"{args.output}.md")
    return run_bench_from_args(args)
