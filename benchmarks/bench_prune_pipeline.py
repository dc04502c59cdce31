"""Wall time and peak memory of analysis + prune + verify on real topologies.

Usage: python benchmarks/bench_prune_pipeline.py [--models resnet56,resnet50] [--reduction 0.45]
Each model runs in a fresh subprocess so its peak RSS is its own. Writes pipeline.json / .md under
benchmarks/results. ResNet-50 has random weights (no ImageNet here): this measures cost, not accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
name, red, tmp = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
from models.export import export_model
path = tmp / f"{name}.onnx"
t0 = time.perf_counter(); export_model(name, path, exporter="legacy", bn="folded"); t_export = time.perf_counter() - t0
from onnxprune.model_io import load_model
from onnxprune.pipeline import PruneConfig, prune
t0 = time.perf_counter(); model = load_model(path); t_load = time.perf_counter() - t0
res = prune(model, PruneConfig(flops_reduction=red))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
b = res.plan.budget["achieved"]
print(json.dumps({"model": name, "nodes": len(model.graph.node), "groups": len(res.analysis.groups),
                  "prunable": len(res.analysis.prunable), "export_s": t_export, "load_s": t_load,
                  **res.timings, "achieved_macs_reduction": b["macs_reduction"],
                  "achieved_params_reduction": b["params_reduction"],
                  "verify_max_rel": max(o.max_rel for o in res.report.outputs), "peak_rss_mb": peak}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet56,resnet50")
    ap.add_argument("--reduction", type=float, default=0.45)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, name, str(args.reduction), tmp],
                                 capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
            if out.returncode:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    cols = ["model", "nodes", "groups", "prunable", "analysis_s", "allocation_s", "rewrite_s", "verify_s",
            "achieved_macs_reduction", "peak_rss_mb"]
    md = [f"Machine: {machine}. Requested MACs reduction {args.reduction}.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (args.out / "pipeline.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
