"""Where the time goes: onnxruntime's per-node kernel times of an original and a pruned model, side by side.

Profiles both models (onnxruntime profiling, CPU provider, random input at --batch, --runs runs after
5 warm-up runs), sums the kernel time of every node per run, and prints per op type the time of
each model, then per convolution (matched by output name; a Conv fused with its Relu is reported
under the Relu's output) its weight shape before -> after, the MACs ratio and the time ratio. A
convolution whose time ratio stays near 1 while its MACs ratio falls is where a MACs cut buys no
time on this engine (e.g. channel counts off onnxruntime's NCHWc blocks).

Usage: python benchmarks/profile_nodes.py ORIGINAL.onnx PRUNED.onnx [--batch 64] [--runs 20] [--threads N]
Prints Markdown; writes nothing.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def profile(model: onnx.ModelProto, batch: int, runs: int, threads: int | None) -> dict[str, tuple[str, float]]:
    """{kernel name (NCHWc suffix removed): (op type, ms per run)}."""
    from onnxprune.runtime import random_inputs, with_dynamic_batch
    m = with_dynamic_batch(model)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = random_inputs(m, batch=batch)
    for _ in range(5):
        sess.run(None, feeds)
    start = sess.end_profiling()          # drop the warm-up events: a fresh profile for the timed runs
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(None, feeds)
    timed = Path(sess.end_profiling())
    events = json.loads(timed.read_text())
    for f in (Path(start), timed):
        f.unlink(missing_ok=True)
    out: dict[str, list] = collections.defaultdict(lambda: ["", 0.0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = e["name"][:-len("_kernel_time")].replace("_nchwc", "")
            out[key][0] = e["args"].get("op_name", "")
            out[key][1] += e["dur"] / 1000 / (runs + 1)
    return {k: (op, ms) for k, (op, ms) in out.items()}


def conv_kernels(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """{name its kernel is reported under: weight shape} of every Conv."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    readers = {i: n for n in model.graph.node for i in n.input}
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in shapes:
            name = n.output[0]
            nxt = readers.get(name)
            if nxt is not None and nxt.op_type == "Relu":
                name = nxt.output[0]
            out[name] = shapes[n.input[1]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("original", type=Path)
    ap.add_argument("pruned", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    models = [onnx.load(str(p)) for p in (args.original, args.pruned)]
    prof = [profile(m, args.batch, args.runs, args.threads) for m in models]
    print(f"# Per-node kernel time, batch {args.batch}, {args.runs} runs, onnxruntime {ort.__version__} CPU\n")
    print("| op type | original ms | pruned ms |\n|---|---|---|")
    by_op = [collections.Counter() for _ in prof]
    for counter, p in zip(by_op, prof):
        for op, ms in p.values():
            counter[op] += ms
    for op in sorted(set(by_op[0]) | set(by_op[1]), key=lambda o: -by_op[0][o]):
        print(f"| {op} | {by_op[0][op]:.2f} | {by_op[1][op]:.2f} |")
    print(f"| total | {sum(by_op[0].values()):.2f} | {sum(by_op[1].values()):.2f} |\n")
    kernels = [conv_kernels(m) for m in models]
    print("| conv (kernel name) | weight before | after | MACs ratio | time ms before | after | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, w0 in kernels[0].items():
        w1 = kernels[1].get(name)
        if w1 is None or name not in prof[0] or name not in prof[1]:
            continue
        t0, t1 = prof[0][name][1], prof[1][name][1]
        print(f"| {name} | {w0[:2]} | {w1[:2]} | {np.prod(w1) / np.prod(w0):.2f} | {t0:.3f} | {t1:.3f} | "
              f"{t1 / t0 if t0 else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
