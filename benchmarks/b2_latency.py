"""B2: latency of original vs pruned models, same engine, same batch, same session.

ResNet-56 (batch 1 and 64) and ResNet-50 at 224x224 (batch 1 and 32), pruned by 45.5 % of MACs
with exact channel counts and with counts rounded to multiples of 8, on onnxruntime CPU (and the
other engines when present). Usage: python benchmarks/b2_latency.py [--engines ort-cpu]
Writes benchmarks/results/b2_latency_{resnet56,resnet50}.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engines", default="ort-cpu")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    from models.export import export_model
    from onnxprune.bench import bench_models
    from onnxprune.model_io import load_model, save_model
    from onnxprune.pipeline import PruneConfig, prune
    tmp = Path(tempfile.mkdtemp())
    for name, batches, weights in (("resnet56", (1, 64), ASSETS / "pretrained" / "cifar10-resnet56-4bfd9763.th"),
                                   ("resnet50", (1, 32), None)):
        base = tmp / f"{name}.onnx"
        export_model(name, base, weights=str(weights) if weights and weights.exists() else None)
        paths = [base]
        for round_to in (1, 8):
            r = prune(load_model(base), PruneConfig(flops_reduction=0.455, round_to=round_to))
            p = tmp / f"{name}-pruned-r{round_to}.onnx"
            save_model(r.model, p)
            paths.append(p)
        report = bench_models([str(p) for p in paths], batches=batches, engines=args.engines,
                              min_time_s=args.min_time, log=print)
        args.out.mkdir(parents=True, exist_ok=True)
        report.save(args.out / f"b2_latency_{name}")
        print(report.to_markdown())


if __name__ == "__main__":
    main()
