"""B1, one-shot part: ResNet-56 / CIFAR-10 accuracy right after pruning (no fine-tuning).

For every MACs reduction in --budgets and every method (ours and onnxsim's pruners, matched to the
same MACs), prune the pretrained ResNet-56 and measure top-1 on the 1017 lossless test images and
on the 10 000 JPEG test images. Calibration: a seeded sample of JPEG *train* images.

Usage: python benchmarks/b1_oneshot.py [--budgets 0.3,0.455,0.55,0.7] [--calib 256] [--jpeg-test 10000]
Writes benchmarks/results/b1_oneshot.{json,md}. Needs ../shared/assets (or ONNXPRUNE_ASSETS).
"""
from __future__ import annotations

import argparse
import sys
import json
import os
import platform
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from b1_common import OURS, PEERS  # noqa: E402

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.3,0.455,0.55,0.7")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--jpeg-test", type=int, default=10000)
    ap.add_argument("--methods", default=",".join(OURS + PEERS))
    ap.add_argument("--base", choices=["pretrained", "adapted"], default="pretrained",
                    help="starting model: the published weights (default) or the JPEG-adapted ones")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from b1_common import (adapted_resnet56, jpeg_train, macs_params, onnxsim_matched,
                           pretrained_resnet56, test_sets, top1_both)
    from onnxprune.pipeline import PruneConfig, Pruner

    model = adapted_resnet56()[0] if args.base == "adapted" else pretrained_resnet56()
    calib = jpeg_train().sample(args.calib, seed=0)
    lossless, jpeg = test_sets(args.jpeg_test)

    def acc(m):
        return top1_both(m, lossless, jpeg)

    base_macs, base_params = macs_params(model)
    a_l, a_j = acc(model)
    rows = [{"method": "unpruned", "budget": 0.0, "macs": base_macs, "params": base_params,
             "acc_lossless": a_l, "acc_jpeg": a_j}]
    print(f"unpruned: {base_macs / 1e6:.2f} M MACs, lossless {100 * a_l:.2f}%, jpeg {100 * a_j:.2f}%", flush=True)
    metrics_cache = {}
    for budget in [float(b) for b in args.budgets.split(",")]:
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            note = ""
            if method in OURS:
                cfg = PruneConfig(flops_reduction=budget, method=method, verify=True, recover="none")
                p = Pruner(cfg).fit(model, calib, metrics=metrics_cache.get(method))
                metrics_cache[method] = p.metrics_
                res = p.transform(model)
                pm, note = res.model, "; ".join(res.plan.budget["notes"])
            else:
                kind = method.split("-")[1]
                pm, s, note = onnxsim_matched(model, budget, kind, calib)
                if pm is None:
                    rows.append({"method": method, "budget": budget, "note": note})
                    print(f"{budget:.3f} {method:<14} {note}", flush=True)
                    continue
                note = f"sparsity {s:.3f}"
            secs = time.perf_counter() - t0
            macs, params = macs_params(pm)
            a_l, a_j = acc(pm)
            rows.append({"method": method, "budget": budget, "macs": macs, "params": params,
                         "macs_reduction": 1 - macs / base_macs, "params_reduction": 1 - params / base_params,
                         "acc_lossless": a_l, "acc_jpeg": a_j, "prune_s": secs, "note": note})
            print(f"{budget:.3f} {method:<14} MACs -{100 * rows[-1]['macs_reduction']:.2f}% params "
                  f"-{100 * rows[-1]['params_reduction']:.2f}%  lossless {100 * a_l:6.2f}%  jpeg {100 * a_j:6.2f}%  "
                  f"({secs:.1f}s)", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, onnxruntime CPU"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "b1_oneshot.json").write_text(json.dumps({"machine": machine, "calib_images": args.calib,
                                                         "jpeg_test_images": len(jpeg[1]), "rows": rows}, indent=1))
    md = [f"ResNet-56 ({args.base}) / CIFAR-10, one-shot (no fine-tuning). {machine}. Calibration: {args.calib} JPEG train "
          f"images (seed 0). MACs per image; FLOPs = 2 x MACs.", "",
          "| target MACs cut | method | MACs cut | params cut | top-1 lossless (1017) | top-1 JPEG "
          f"({len(jpeg[1])}) | time (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "macs" not in r:
            md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | – | – | – | – | {r['note']} |")
            continue
        md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | {100 * r.get('macs_reduction', 0):.2f}% | "
                  f"{100 * r.get('params_reduction', 0):.2f}% | {100 * r['acc_lossless']:.2f}% | "
                  f"{100 * r['acc_jpeg']:.2f}% | {r.get('prune_s', 0):.1f} |")
    (args.out / "b1_oneshot.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
