"""``onnxprune report``: a readable Markdown report of a plan, and a keep-ratio plot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onnxprune.cli.args import add_command, add_verbosity_arguments, add_overwrite_argument, check_outputs

EXAMPLES = """
  onnxprune report small.plan.json                        # Markdown on stdout
  onnxprune report small.plan.json -o report.md --png keep.png
"""


def register(sub) -> None:
    p = add_command(sub, "report", help="a readable report of a plan (Markdown) and a keep-ratio plot (PNG)",
                    description="Budget requested vs achieved, per-group keep-ratios and metrics, the "
                                "refit's per-layer reconstruction error before and after (when `prune` "
                                "refitted), and every skipped group with its reason, from a plan written "
                                "by `prune`.",
                    examples=EXAMPLES)
    p.add_argument("plan", help="the plan JSON")
    p.add_argument("-o", "--output", help="write the Markdown here instead of printing it (default: stdout)")
    p.add_argument("--png", help="also plot keep-ratio per group to this PNG (needs matplotlib)")
    add_overwrite_argument(p)
    add_verbosity_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxprune.model_io import write_text_atomic
    from onnxprune.rewrite.plan import Plan
    from onnxprune.tools.plots import plan_markdown, plot_keep_ratios
    check_outputs(args, *[p for p in (args.output, args.png) if p], source=args.plan)
    plan = Plan.load(args.plan)
    name = Path(args.plan).name
    text = plan_markdown(plan, title=f"Pruning report: {name}")
    written = []
    if args.png:                       # files first: a closed pipe on stdout must not lose them
        plot_keep_ratios(plan, args.png, model=name)
        written.append(args.png)
    if args.output:
        write_text_atomic(args.output, text)
        written.insert(0, args.output)
    else:
        print(text, end="")
    for path in written:             # stdout carries the report itself
        print(f"wrote {path}", file=sys.stderr)
    return 0
