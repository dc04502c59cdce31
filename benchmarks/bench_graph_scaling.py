"""Analysis time against graph size: a synthetic chain of N Conv+Relu with residual Adds.

Usage: python benchmarks/bench_graph_scaling.py [--sizes 250,500,1000,2000] [--out benchmarks/results]
Writes graph_scaling.json and .md; the time per conv should stay flat (linear growth).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto


def conv_chain(n: int, channels: int = 8, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """N 3x3 convs with ReLU; every second conv closes a residual Add."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    skip = x
    for i in range(n):
        w = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1, f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        out = f"c{i}"
        if i % 2 == 1:
            nodes.append(helper.make_node("Add", [out, skip], [f"a{i}"], name=f"add{i}"))
            out = f"a{i}"
        nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
        if i % 2 == 1:
            skip = x
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((10, channels)).astype(np.float32), "fc_w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="250,500,1000,2000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        model = conv_chain(n)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = analyze(model)
            CostModel(a).macs()
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        rows.append({"convs": n, "nodes": len(model.graph.node), "groups": len(a.groups),
                     "analysis_s": t, "us_per_node": 1e6 * t / len(model.graph.node)})
        print(f"{n:>5} convs {len(model.graph.node):>6} nodes  {t:7.3f} s  {rows[-1]['us_per_node']:7.1f} us/node")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph_scaling.json").write_text(json.dumps(rows, indent=1))
    md = ["| convs | nodes | groups | analysis (s) | µs per node |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['convs']} | {r['nodes']} | {r['groups']} | {r['analysis_s']:.3f} | {r['us_per_node']:.1f} |" for r in rows]
    (args.out / "graph_scaling.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
