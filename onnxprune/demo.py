"""The main job on a real default: prune the pretrained CIFAR-10 ResNet-56 and report.

Exports the pretrained ResNet-56 (``../shared/assets``, or ``--assets``), analyses it, prunes
45.5 % of its MACs with information concentration + Shapley scores (256 JPEG training images
for calibration), verifies the rewrite against the masked original, and measures one-shot
accuracy (no fine-tuning) on the 1017 lossless CIFAR-10 test images and latency on onnxruntime
CPU, before and after. Outputs go to ``runs/demo/``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def default_assets() -> Path:
    return Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="onnxprune-demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=default_assets(), help="shared assets folder")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "demo", help="output folder")
    ap.add_argument("--flops-reduction", type=float, default=0.455)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--calib-images", type=int, default=256)
    args = ap.parse_args(argv)

    weights = args.assets / "pretrained" / "cifar10-resnet56-4bfd9763.th"
    test_npz = args.assets / "cifar10-lossless-test-first1017.npz"
    for f in (weights, test_npz):
        if not f.exists():
            print(f"demo: {f} not found; pass --assets PATH (the folder with pretrained/ and the .npz)",
                  file=sys.stderr)
            return 2
    from models.export import export_model
    from onnxprune.cli import main as cli
    from onnxprune.cost import CostModel, format_count
    from onnxprune.analysis import analyze
    from onnxprune.data import load_dataset, Preprocess
    from onnxprune.evaluate import latency, top1_accuracy
    from onnxprune.model_io import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    original = args.out / "resnet56.onnx"
    pruned = args.out / "resnet56-pruned.onnx"
    print(f"1/4 export pretrained ResNet-56 -> {original}")
    export_model("resnet56", original, exporter="legacy", bn="folded", weights=str(weights))

    print("2/4 analyse")
    cli(["analyze", str(original)])
    train = args.assets / "cifar10-jpeg" / "train.tar.gz"
    print(f"\n3/4 prune {100 * args.flops_reduction:.1f}% of MACs with --method infoconc "
          f"(information concentration + Shapley), {args.calib_images} calibration images, and verify")
    rc = cli(["prune", str(original), "-o", str(pruned), "--flops-reduction", str(args.flops_reduction),
              "--round-to", str(args.round_to), "--overwrite", "--method", "infoconc",
              "--data", str(train), "--norm", "imagenet", "--calib-images", str(args.calib_images)])
    if rc:
        return rc

    print("\n4/4 one-shot accuracy (no fine-tuning) on the 1017 lossless CIFAR-10 test images, "
          "latency on onnxruntime CPU (batch 64)")
    pre = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ds = load_dataset(test_npz, pre, shuffle=False)
    x, y = ds.arrays()
    rows = []
    batch = np.ascontiguousarray(x[:64])
    for name, path in (("original", original), ("pruned", pruned)):
        m = load_model(path)
        cost = CostModel(analyze(m))
        acc = top1_accuracy(m, x, y)
        lat = latency(m, batch, warmup=3, runs=20)
        rows.append((name, cost.macs(), cost.params(), acc, lat["p50_ms"]))
    print(f"{'model':<10} {'MACs (FLOPs=2xMACs)':>22} {'params':>10} {'top-1':>8} {'p50 ms/64':>10}")
    for name, macs, params, acc, ms in rows:
        print(f"{name:<10} {format_count(macs):>22} {format_count(params):>10} {100 * acc:>7.2f}% {ms:>10.1f}")
    print(f"latency speed-up {rows[0][4] / rows[1][4]:.2f}x for a MACs ratio of {rows[0][1] / rows[1][1]:.2f}x "
          "(same session, same machine; CPU times are noisy, compare ratios)")
    print("One-shot accuracy drops without fine-tuning; recovering it is the job of fine-tuning.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
