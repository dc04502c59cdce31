"""Label-free reconstruction on the pretrained ResNet-56: one-shot vs refitted accuracy.

For each method and MACs budget, a fresh process prunes the model with ``recover="none"``
(the one-shot structural result), then runs :func:`onnxprune.recover.reconstruct` on the same
calibration images; both are scored on the 1017 lossless CIFAR-10 test images. Time and peak RSS
are those of that process (``ru_maxrss``), before and after the refit.

    python benchmarks/bench_reconstruct.py [--calib 1024] [--methods infoconc,uniform-l1]
                                           [--budgets 0.455,0.3]

Writes benchmarks/results/reconstruct.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(model_path: str, method: str, budget: float, calib_n: int) -> dict:
    """Prune, score, refit, score; in this (fresh) process."""
    from b1_common import jpeg_train, macs_params, preprocess
    from onnxprune.data.core import load_dataset
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, Pruner
    from onnxprune.recover import reconstruct
    from onnxprune.recover.reconstruct import calibration_images
    from onnxprune.tools.evaluate import top1_accuracy
    from b1_common import ASSETS
    model = load_model(model_path)
    calib = calibration_images(jpeg_train().sample(calib_n, seed=0))
    x, y = load_dataset(ASSETS / "cifar10-lossless-test-first1017.npz", preprocess(), shuffle=False).arrays()
    t0 = time.perf_counter()
    p = Pruner(PruneConfig(flops_reduction=budget, method=method, recover="none")).fit(model, calib)
    res = p.transform(model)
    prune_s, rss_prune = time.perf_counter() - t0, _rss_mb()
    t0 = time.perf_counter()
    refit, record = reconstruct(model, res.model, p.analysis_, res.plan, calib)
    refit_s, rss_refit = time.perf_counter() - t0, _rss_mb()
    base_macs, _ = macs_params(model)
    macs, _ = macs_params(res.model)
    errs = [(lay.error_before, lay.error_after) for lay in record.layers]
    return {"method": method, "budget": budget, "macs_reduction": 1 - macs / base_macs,
            "acc_unpruned": top1_accuracy(model, x, y), "acc_oneshot": top1_accuracy(res.model, x, y),
            "acc_reconstructed": top1_accuracy(refit, x, y), "prune_s": prune_s, "reconstruct_s": refit_s,
            "peak_rss_mb_after_prune": rss_prune, "peak_rss_mb_after_reconstruct": rss_refit,
            "layers": len(record.layers), "waves": record.waves, "images": record.images,
            "positions_per_image": record.positions_per_image,
            "mean_layer_error_before": sum(e[0] for e in errs) / max(len(errs), 1),
            "mean_layer_error_after": sum(e[1] for e in errs) / max(len(errs), 1)}


def markdown(rows: list[dict], machine: str, calib: int) -> str:
    lines = ["# Label-free reconstruction: pretrained ResNet-56, CIFAR-10", "",
             f"Calibration: {calib} JPEG train images (seeded sample, ImageNet mean/std). Accuracy: top-1 on the "
             "1017 lossless test images. One process per row; time and peak RSS from that process.",
             f"Machine: {machine}.", "",
             "| method | MACs cut | unpruned | one-shot | reconstructed | prune s | reconstruct s | peak RSS MB "
             "(prune / +refit) | layers (waves) | mean layer rel. error before → after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | -{100 * r['macs_reduction']:.1f} % | {100 * r['acc_unpruned']:.2f} % | "
                     f"{100 * r['acc_oneshot']:.2f} % | **{100 * r['acc_reconstructed']:.2f} %** | "
                     f"{r['prune_s']:.1f} | {r['reconstruct_s']:.1f} | {r['peak_rss_mb_after_prune']:.0f} / "
                     f"{r['peak_rss_mb_after_reconstruct']:.0f} | {r['layers']} ({r['waves']}) | "
                     f"{r['mean_layer_error_before']:.3f} → {r['mean_layer_error_after']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--methods", default="infoconc,uniform-l1")
    ap.add_argument("--budgets", default="0.455,0.3")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "METHOD", "BUDGET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], float(args.one[2]), args.calib)))
        return
    from b1_common import pretrained_resnet56
    from onnxprune.model_io import save_model
    model_path = Path(tempfile.mkdtemp()) / "resnet56.onnx"
    save_model(pretrained_resnet56(), model_path)
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        for method in args.methods.split(","):
            out = subprocess.run([sys.executable, __file__, "--calib", str(args.calib), "--one", str(model_path),
                                  method, str(budget)], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{method:<11} -{100 * r['macs_reduction']:.1f}%  one-shot {100 * r['acc_oneshot']:.2f}%  "
                  f"reconstructed {100 * r['acc_reconstructed']:.2f}%  ({r['reconstruct_s']:.0f} s, "
                  f"{r['peak_rss_mb_after_reconstruct']:.0f} MB)", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, onnxruntime CPU"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reconstruct.json").write_text(json.dumps({"machine": machine, "calib": args.calib,
                                                           "rows": rows}, indent=1) + "\n")
    (args.out / "reconstruct.md").write_text(markdown(rows, machine, args.calib))
    print(f"wrote {args.out / 'reconstruct.md'}")


if __name__ == "__main__":
    main()
