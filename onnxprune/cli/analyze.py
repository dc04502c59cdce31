"""``onnxprune analyze``: the channel groups of a model, their MACs share and why any is skipped."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxprune.cli.args import add_command, add_verbosity_arguments, add_input_shape_argument, load_input_model

EXAMPLES = """
  onnxprune analyze model.onnx                        # table of groups, MACs share, skip reasons
  onnxprune analyze model.onnx --json > groups.json   # the same, machine-readable
  onnxprune analyze dyn.onnx --input-shape input=1x3x224x224
"""


def register(sub) -> None:
    p = add_command(sub, "analyze", help="list channel groups, their MACs share and why any is skipped",
                    description="Find the channel groups of a model: channels that must be pruned together "
                                "(through BN, activations, residual Add, Concat, channel Pad/Slice, "
                                "depthwise/grouped Conv, Flatten→Gemm), and why a group is left alone. "
                                "MACs are counted per image; FLOPs = 2 x MACs.",
                    examples=EXAMPLES)
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--all-names", action="store_true",
                   help="list every producer and consumer of a group (the table shortens long lists)")
    add_input_shape_argument(p)
    add_verbosity_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxprune.analysis.cost import CostModel
    from onnxprune.analysis import analyze
    from onnxprune.tools.report import analysis_json, analysis_table
    model = load_input_model(args.model, args)
    analysis = analyze(model)
    cost = CostModel(analysis)
    if args.json:
        print(json.dumps(analysis_json(analysis, cost), indent=1))
    else:
        print(analysis_table(analysis, cost, Path(args.model).name,
                             verbose=args.all_names or args.verbose > 0))
    return 0
