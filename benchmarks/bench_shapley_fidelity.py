"""Shapley fidelity: how well cheap channel scores rank channels like a long Monte-Carlo run.

Reference: network-level Shapley values (value = -KL to the unpruned outputs) with many
permutations, on the pretrained ResNet-56 and real CIFAR-10 images. Estimators: the same with few
permutations, the closed-form local reconstruction game (the default of `--method infoconc`),
L1 filter norms and HRank-style channel rank. Reported: Spearman rank correlation with the
reference and the wall time of each estimator.

Usage: python benchmarks/bench_shapley_fidelity.py [--groups 1,10,19] [--ref-perms 32] [--images 32]
Writes benchmarks/results/shapley_fidelity.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the model zoo (models/)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="1,10,19", help="group ids (inner groups of stages 1, 2, 3)")
    ap.add_argument("--ref-perms", type=int, default=32)
    ap.add_argument("--perms", default="2,4,8")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    from models.export import export_model
    from onnxprune.analysis import analyze
    from onnxprune.capture.session import CaptureSession, probes_for
    from onnxprune.scoring.coalitions import network_shapley
    from onnxprune.data import Preprocess, load_dataset
    from onnxprune.metrics.information import InformationStats
    from onnxprune.model_io import load_model
    from onnxprune.scoring.selection import group_scores

    path = Path(tempfile.mkdtemp()) / "resnet56.onnx"
    export_model("resnet56", path, weights=str(ASSETS / "pretrained" / "cifar10-resnet56-4bfd9763.th"))
    model = load_model(path)
    a = analyze(model)
    pre = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x, _ = load_dataset(ASSETS / "cifar10-jpeg" / "train.tar.gz", pre, limit=args.images, seed=0).arrays()
    groups = [int(g) for g in args.groups.split(",")]
    rows = []
    t0 = time.perf_counter()
    stats = InformationStats(a, probes_for(a, groups), want_shapley=True, shapley_images=args.images)
    sess = CaptureSession(model, stats.tensors, "cpu")
    stats.update(sess.run(x))
    local = stats.result()
    t_local = (time.perf_counter() - t0) / len(groups)
    for g in groups:
        t0 = time.perf_counter()
        ref = network_shapley(model, a, g, x, permutations=args.ref_perms, seed=123, truncation_tol=0.0)
        t_ref = time.perf_counter() - t0
        row = {"group": g, "channels": a.groups[g].channels, "reference_s": t_ref,
               "reference_evaluations": ref.num_evaluations,
               "reference_mean_stderr": float(np.mean(ref.stderr))}
        for p in [int(v) for v in args.perms.split(",")]:
            t0 = time.perf_counter()
            est = network_shapley(model, a, g, x, permutations=p, seed=7, truncation_tol=0.01)
            row[f"mc{p}_rho"] = float(spearmanr(est.values, ref.values)[0])
            row[f"mc{p}_s"] = time.perf_counter() - t0
        row["local_rho"] = float(spearmanr(local[g].shapley, ref.values)[0])
        row["local_s"] = t_local
        row["l1_rho"] = float(spearmanr(group_scores(a, a.groups[g], "l1"), ref.values)[0])
        row["hrank_rho"] = float(spearmanr(local[g].channel_rank, ref.values)[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, onnxruntime CPU"
    (args.out / "shapley_fidelity.json").write_text(json.dumps({"machine": machine, "images": args.images,
                                                               "ref_perms": args.ref_perms, "rows": rows}, indent=1))
    perms = [int(v) for v in args.perms.split(",")]
    head = ["group", "channels", f"reference ({args.ref_perms} perms) s"] + \
        [f"MC {p} perms ρ / s" for p in perms] + ["local closed form ρ / s", "L1 ρ", "HRank ρ"]
    md = [f"Spearman ρ of channel scores against a {args.ref_perms}-permutation network Shapley reference "
          f"(value −KL, {args.images} JPEG train images), pretrained ResNet-56, {machine}.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["group"]), str(r["channels"]), f"{r['reference_s']:.1f}"]
        cells += [f"{r[f'mc{p}_rho']:.2f} / {r[f'mc{p}_s']:.1f}" for p in perms]
        cells += [f"{r['local_rho']:.2f} / {r['local_s']:.2f}", f"{r['l1_rho']:.2f}", f"{r['hrank_rho']:.2f}"]
        md.append("| " + " | ".join(cells) + " |")
    (args.out / "shapley_fidelity.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
