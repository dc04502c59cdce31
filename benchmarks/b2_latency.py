"""B2: latency of original vs pruned models, same engine, same batch, same session.

ResNet-56 (batch 1 and 64; the JPEG-adapted pretrained model, pruned with infoconc on 256 JPEG
train images) and ResNet-50 at 224x224 (batch 1 and 32; random weights, uniform-l1), pruned by
45.5 % of MACs with exact channel counts and with counts rounded to multiples of 8 and 16, on
onnxruntime CPU (and the other engines when present). For ResNet-56 the one-shot top-1 of each
variant is measured too, so the price of rounding is visible.
Usage: python benchmarks/b2_latency.py [--engines ort-cpu] [--models resnet56,resnet50]
Writes benchmarks/results/b2_latency_{resnet56,resnet50}.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
ROUNDINGS = (1, 8, 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="ort-cpu")
    ap.add_argument("--models", default="resnet56,resnet50")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    from b1_common import adapted_resnet56, jpeg_train, test_sets
    from models.export import export_model
    from onnxprune.tools.bench import bench_models
    from onnxprune.tools.evaluate import top1_accuracy
    from onnxprune.model_io import load_model, save_model
    from onnxprune.pipeline import PruneConfig, Pruner
    from onnxprune.runtime import preferred_channel_multiple
    tmp = Path(tempfile.mkdtemp())
    print(f"this machine: --round-to auto = {preferred_channel_multiple('cpu')}")
    for name in args.models.split(","):
        base = tmp / f"{name}.onnx"
        accuracy = {}
        if name == "resnet56":
            model, _ = adapted_resnet56()
            save_model(model, base)
            calib, method = jpeg_train().sample(256, seed=0), "infoconc"
            (xl, yl), (xj, yj) = test_sets(jpeg_limit=2000)
            accuracy[base.name] = (top1_accuracy(model, xl, yl), top1_accuracy(model, xj, yj))
            batches = (1, 64)
        else:
            export_model(name, base)
            model, calib, method, batches = load_model(base), None, "uniform-l1", (1, 32)
        paths, metrics = [base], None
        for round_to in ROUNDINGS:
            p = Pruner(PruneConfig(flops_reduction=0.455, method=method, round_to=round_to), progress=print)
            p.fit(model, calib, metrics=metrics)
            metrics = p.metrics_
            res = p.transform(model)
            path = tmp / f"{name}-pruned-r{round_to}.onnx"
            save_model(res.model, path)
            paths.append(path)
            if name == "resnet56":
                accuracy[path.name] = (top1_accuracy(res.model, xl, yl), top1_accuracy(res.model, xj, yj))
        report = bench_models([str(p) for p in paths], batches=batches, engines=args.engines,
                              min_time_s=args.min_time, log=print)
        args.out.mkdir(parents=True, exist_ok=True)
        prefix = args.out / f"b2_latency_{name}"
        report.save(prefix)
        if accuracy:
            md = Path(f"{prefix}.md")
            md.write_text(md.read_text() + "\nOne-shot top-1 (no fine-tuning), lossless 1017 / first 2000 JPEG test images:\n\n"
                          "| model | lossless | JPEG |\n|---|---|---|\n" + "".join(
                              f"| {k} | {100 * a:.2f}% | {100 * b:.2f}% |\n" for k, (a, b) in accuracy.items()))
            js = Path(f"{prefix}.json")
            data = json.loads(js.read_text())
            data["oneshot_top1"] = {k: {"lossless": a, "jpeg_2000": b} for k, (a, b) in accuracy.items()}
            js.write_text(json.dumps(data, indent=1) + "\n")
        print(Path(f"{prefix}.md").read_text())


if __name__ == "__main__":
    main()
