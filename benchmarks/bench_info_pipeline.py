"""B3: wall time per stage and peak memory of `--method infoconc` (capture, metrics, allocation,
rewrite, verify) on real data.

Cases (each in a fresh subprocess, so peak RSS is its own):
  resnet56 with 1024 and 4096 JPEG CIFAR-10 training images (memory must stay flat),
  resnet50 at 224x224 (random weights: no ImageNet here) with 512 CIFAR images resized to 224.
Usage: python benchmarks/bench_info_pipeline.py [--cases resnet56:1024,resnet56:4096,resnet50:512]
Writes benchmarks/results/info_pipeline.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
name, n, assets = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
from models.export import export_model
from onnxprune.data import Preprocess, load_dataset
from onnxprune.model_io import load_model
from onnxprune.pipeline import PruneConfig, Pruner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the model zoo (models/)
tmp = Path(tempfile.mkdtemp())
weights = str(assets / "pretrained" / "cifar10-resnet56-4bfd9763.th") if name == "resnet56" else None
export_model(name, tmp / "m.onnx", exporter="legacy", bn="folded", weights=weights)
model = load_model(tmp / "m.onnx")
size = 224 if name == "resnet50" else None
pre = Preprocess(size=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
t0 = time.perf_counter()
data = load_dataset(assets / "cifar10-jpeg" / "train.tar.gz", pre, limit=n, seed=0)
t_data = time.perf_counter() - t0
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
p = Pruner(PruneConfig(flops_reduction=0.455, method="infoconc", recover="none"), rank_images=256, hsic_images=256,
           shapley_images=128).fit(model, data)
res = p.transform(model)
total = time.perf_counter() - t0
print(json.dumps({"model": name, "images": n, "data_open_s": t_data, **res.timings, "total_s": total,
                  "peak_rss_mb_before_prune": rss_before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "achieved_macs_reduction": res.plan.budget["achieved"]["macs_reduction"],
                  "provider": getattr(p, "provider_used", "")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="resnet56:1024,resnet56:4096,resnet50:512")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    rows = []
    for case in args.cases.split(","):
        name, n = case.split(":")
        out = subprocess.run([sys.executable, "-c", CHILD, name, n, str(ASSETS)], capture_output=True, text=True,
                             cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        if out.returncode:
            sys.exit(f"{case} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "info_pipeline.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    cols = ["model", "images", "analysis_s", "capture_s", "metrics_s", "allocation_s", "rewrite_s", "verify_s",
            "total_s", "peak_rss_mb", "achieved_macs_reduction"]
    md = [f"`--method infoconc` at 45.5 % MACs, {machine}, onnxruntime CPU. Rank on 256 images, nHSIC on 256, "
          "local Shapley on 128; entropy on all.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (args.out / "info_pipeline.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
