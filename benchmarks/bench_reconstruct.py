"""Label-free reconstruction on the pretrained ResNet-56: one-shot vs refitted accuracy.

For each method a fresh process prunes the model at every MACs budget with ``recover="none"``
(the one-shot structural result), then runs :func:`onnxprune.recover.reconstruct` on the same
calibration images; both are scored on the 1017 lossless CIFAR-10 test images. The methods run
in parallel processes. Time (wall and CPU) and peak RSS (``ru_maxrss``, after the prune and after
the refit) are those of the method's process.

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


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(model_path: str, method: str, budgets: list[float], calib_n: int) -> list[dict]:
    """Prune, score, refit, score at every budget, in this (fresh) process; the calibration
    metrics of the first budget are reused for the others, as ``b1_oneshot`` does."""
    from b1_common import ASSETS, jpeg_train, macs_params, preprocess
    from onnxprune.data import load_dataset
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, Pruner
    from onnxprune.recover import reconstruct
    from onnxprune.recover.reconstruct import calibration_images
    from onnxprune.tools.evaluate import top1_accuracy
    model = load_model(model_path)
    calib = calibration_images(jpeg_train().sample(calib_n, seed=0))
    x, y = load_dataset(ASSETS / "cifar10-lossless-test-first1017.npz", preprocess(), shuffle=False).arrays()
    base_macs, _ = macs_params(model)
    acc_unpruned = top1_accuracy(model, x, y)
    rows, metrics = [], None
    for budget in budgets:
        t0, c0 = time.perf_counter(), _cpu_s()
        # the plain rewrite, as the pipeline refits it (the post-rewrite simplification follows the refit)
        p = Pruner(PruneConfig(flops_reduction=budget, method=method, recover="none", simplify=False)).fit(
            model, calib, metrics)
        metrics = p.metrics_ or None
        res = p.transform(model)
        prune_s, prune_cpu, rss_prune = time.perf_counter() - t0, _cpu_s() - c0, _rss_mb()
        t0, c0 = time.perf_counter(), _cpu_s()
        refit, record = reconstruct(model, res.model, p.analysis_, res.plan, calib)
        refit_s, refit_cpu, rss_refit = time.perf_counter() - t0, _cpu_s() - c0, _rss_mb()
        macs, _ = macs_params(res.model)
        errs = [(lay.error_before, lay.error_after) for lay in record.layers]
        rows.append({"method": method, "budget": budget, "macs_reduction": 1 - macs / base_macs,
                     "acc_unpruned": acc_unpruned, "acc_oneshot": top1_accuracy(res.model, x, y),
                     "acc_reconstructed": top1_accuracy(refit, x, y), "prune_s": prune_s, "prune_cpu_s": prune_cpu,
                     "reconstruct_s": refit_s, "reconstruct_cpu_s": refit_cpu,
                     "peak_rss_mb_after_prune": rss_prune, "peak_rss_mb_after_reconstruct": rss_refit,
                     "layers": len(record.layers), "waves": record.waves, "images": record.images,
                     "positions_per_image": record.positions_per_image,
                     "mean_layer_error_before": sum(e[0] for e in errs) / max(len(errs), 1),
                     "mean_layer_error_after": sum(e[1] for e in errs) / max(len(errs), 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], machine: str, calib: int) -> str:
    lines = ["# Label-free reconstruction: pretrained ResNet-56, CIFAR-10", "",
             f"Calibration: {calib} JPEG train images (seeded sample, ImageNet mean/std). Accuracy: top-1 on the "
             "1017 lossless test images. One process per method (the methods ran in parallel), budgets in turn; "
             "wall and CPU time and peak RSS from that process.",
             f"Machine: {machine}.", "",
             "| method | MACs cut | unpruned | one-shot | reconstructed | prune s | reconstruct s (CPU s) | peak RSS MB "
             "(prune / +refit) | layers (waves) | mean layer rel. error before → after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | -{100 * r['macs_reduction']:.1f} % | {100 * r['acc_unpruned']:.2f} % | "
                     f"{100 * r['acc_oneshot']:.2f} % | **{100 * r['acc_reconstructed']:.2f} %** | "
                     f"{r['prune_s']:.1f} | {r['reconstruct_s']:.1f} ({r['reconstruct_cpu_s']:.0f}) | {r['peak_rss_mb_after_prune']:.0f} / "
                     f"{r['peak_rss_mb_after_reconstruct']:.0f} | {r['layers']} ({r['waves']}) | "
                     f"{r['mean_layer_error_before']:.3f} → {r['mean_layer_error_after']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--methods", default="infoconc,uniform-l1")
    ap.add_argument("--budgets", default="0.455,0.3")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], [float(b) for b in args.budgets.split(",")], args.calib)))
        return
    from b1_common import pretrained_resnet56
    from onnxprune.model_io import save_model
    model_path = Path(tempfile.mkdtemp()) / "resnet56.onnx"
    save_model(pretrained_resnet56(), model_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, "--calib", str(args.calib), "--budgets", args.budgets,
                               "--one", str(model_path), method], stdout=subprocess.PIPE, text=True, env=env)
             for method in args.methods.split(",")]     # methods in parallel: see the note on timing
    rows = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a benchmark process failed (exit {proc.returncode})")
        rows.extend(json.loads(out.strip().splitlines()[-1]))
    rows.sort(key=lambda r: (-r["budget"], r["method"]))
    for r in rows:
        print(f"{r['method']:<11} -{100 * r['macs_reduction']:.1f}%  one-shot {100 * r['acc_oneshot']:.2f}%  "
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
