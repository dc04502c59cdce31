"""The ``onnxprune bench`` arguments and running it from the parsed namespace."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onnxprune.tools.bench.engines import ENGINES
from onnxprune.tools.bench.parsing import parse_batches, parse_engines, parse_input_shapes
from onnxprune.tools.bench.records import check_output_prefix
from onnxprune.tools.bench.run import bench_models

__all__ = ["add_bench_arguments", "run_bench_from_args"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``onnxprune bench A.onnx [B.onnx …]``; sets ``func=run_bench_from_args``."""
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="ONNX model files; the first one is the baseline of the speed-ups")
    parser.add_argument("--batch", default="1,64", metavar="N[,N…]",
                        help="comma-separated batch sizes (default 1,64)")
    parser.add_argument("--engine", default="ort-cpu", metavar="E[,E…]",
                        help=f"comma-separated engines: {', '.join(ENGINES)}, or 'all'; engines not "
                             "available here are skipped with a message (default ort-cpu)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per model (default 5)")
    parser.add_argument("--min-runs", type=int, default=20, help="timed runs per model, at least (default 20)")
    parser.add_argument("--min-time", type=float, default=1.0, metavar="SECONDS",
                        help="measured time per model, at least (default 1.0)")
    parser.add_argument("--max-runs", type=int, default=100_000,
                        help="timed runs per model, at most (default 100000; --max-time usually stops first)")
    parser.add_argument("--precision", type=_precision, default=0.01, metavar="FRACTION",
                        help="after the minimums, keep timing until the standard error of every paired "
                             "speed-up is at most this fraction of it ('off': stop at the minimums; "
                             "default 0.01)")
    parser.add_argument("--max-time", type=float, default=10.0, metavar="SECONDS",
                        help="... or until a model has been timed this long (default 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for onnxruntime / torch (default: the runtime's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--input-shape", action="append", metavar="NAME=1x3xHxW",
                        help="fix a dynamic input shape (repeatable); the batch axis is replaced by --batch")
    parser.add_argument("-o", "--output", metavar="PREFIX",
                        help="write PREFIX.json and PREFIX.md")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    parser.set_defaults(func=run_bench_from_args)


def _precision(text: str) -> float | None:
    """``--precision``: a fraction in (0, 1), or 'off'."""
    if text.strip().lower() in ("off", "none", "0"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.01 or 'off', got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 or 'off', got {text!r}")
    return v


def run_bench_from_args(args: argparse.Namespace) -> int:
    """Run ``onnxprune bench``; 0 when something was measured, 1 when everything was skipped."""
    batches = parse_batches(args.batch)
    engines = parse_engines(args.engine)
    shapes = parse_input_shapes(getattr(args, "input_shape", None))
    if args.output:
        check_output_prefix(Path(args.output))
    report = bench_models(args.models, batches=batches, engines=engines, warmup=args.warmup,
                          min_runs=args.min_runs, min_time_s=args.min_time, max_runs=args.max_runs,
                          precision=args.precision, max_time_s=args.max_time,
                          threads=args.threads, seed=args.seed, input_shapes=shapes)
    sys.stdout.write(report.to_json() + "\n" if args.json else report.to_markdown())
    sys.stdout.flush()
    if args.output:
        js, md = report.save(args.output)
        print(f"wrote {js} and {md}", file=sys.stderr)
    if not report.results:
        print("onnxprune: nothing was measured (every engine/batch was skipped)", file=sys.stderr)
        return 1
    return 0
