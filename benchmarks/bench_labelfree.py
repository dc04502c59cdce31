"""Label-free fine-tuning of a pruned face detector, distilled from the unpruned detector.

Model: Ultra-Light-Fast face detector RFB-320 (opset 9, input 1x3x240x320, preprocessing
(x-127)/128, outputs ``scores`` (1, 4420, 2) softmax probabilities and ``boxes`` (1, 4420, 4)).
Steps, for each starting point (``--recover none``: the one-shot prune; ``reconstruct``: prune +
least-squares refit, the CLI default with data): prune --reduction of the MACs with the CLI;
fine-tune with no labels at all, the original model as teacher (the recipe's label-free defaults:
L1 on the scores' probabilities, variance-normalised MSE on the boxes, BatchNorm statistics
frozen, peak lr 0.03); report the mean absolute error of each output against the original on held-out images,
before and after fine-tuning. No face images ship with the assets: CIFAR-10 JPEGs resized to
320x240 stand in (training from the train archive, validation and held-out images from the test
archive, disjoint).
Usage:
  python benchmarks/bench_labelfree.py [--reduction 0.5] [--train-images 300] [--epochs 8] [--batch 16]
      [--starts none,reconstruct] [--lr LR] [--prob-loss kl|l1|regress]
Writes {out}/labelfree.{json,md} (default benchmarks/results/labelfree).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODEL = ASSETS / "onnx" / "face-detector-version-RFB-320.onnx"
PRE_ARGS = ["--size", "240x320", "--no-scale", "--mean", "127,127,127", "--std", "128,128,128"]


def preprocess():
    from onnxprune.data import Preprocess
    return Preprocess(size=(240, 320), mean=(127.0,) * 3, std=(128.0,) * 3, scale=False)


def prune(model: Path, out: Path, reduction: float, calib: int, recover: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(model), "-o", str(out),
                    "--flops-reduction", str(reduction), "--data", str(ASSETS / "cifar10-jpeg" / "train.tar.gz"),
                    "--calib-images", str(calib), "--recover", recover, "--overwrite", *PRE_ARGS],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def output_errors(model, original, x: np.ndarray) -> dict[str, float]:
    """Mean |model - original| per output on images ``x`` (onnxruntime)."""
    from onnxprune.runtime import AnyBatchSession
    a, b = AnyBatchSession(model), AnyBatchSession(original)
    outs = [np.concatenate(p) for p in zip(*[a.run(x[i:i + 16]) for i in range(0, len(x), 16)])]
    refs = [np.concatenate(p) for p in zip(*[b.run(x[i:i + 16]) for i in range(0, len(x), 16)])]
    return {o.name: float(np.abs(u - r).mean()) for o, u, r in zip(original.graph.output, outs, refs)}


def one_start(recover: str, args, original, train, val_x, test_x, cfg, tmp: Path) -> dict:
    import onnx
    from onnxprune.finetune import finetune
    prune_s = prune(MODEL, tmp / f"{recover}.onnx", args.reduction, args.calib_images, recover)
    pruned = onnx.load(tmp / f"{recover}.onnx")
    before = output_errors(pruned, original, test_x)
    t0 = time.perf_counter()
    summary = finetune(pruned, train, (val_x, None), cfg, tmp / f"{recover}-tuned.onnx", teacher=original)
    tune_s = time.perf_counter() - t0
    after = output_errors(onnx.load(tmp / f"{recover}-tuned.onnx"), original, test_x)
    return {"recover": recover, "mae_before": before, "mae_after": after, "prune_s": prune_s,
            "finetune_s": tune_s, "best_epoch": summary["best"]["epoch"], "before": summary["before"],
            "history": summary["history"], "config": summary["config"]}


def markdown(result: dict, args) -> list[str]:
    c = result["runs"][0]["config"]           # as resolved by the recipe (lr, BatchNorm statistics)
    prob = c["kd_prob_loss"] + (f" (T {c['kd_prob_temperature']})" if c["kd_prob_loss"] == "kl" else "")
    md = [f"# Label-free fine-tuning: {result['model']}, {100 * args.reduction:.0f}% of MACs pruned", "",
          f"`python benchmarks/bench_labelfree.py --train-images {args.train_images} --epochs {args.epochs} "
          f"--batch {args.batch}" + (f" --lr {args.lr}" if args.lr else "")
          + (f" --prob-loss {args.prob_loss}" if args.prob_loss else "") + "`", "",
          f"{result['train_images']} unlabelled training images, {result['val_images']} validation images "
          f"(choose the exported epoch by distance to the teacher), {result['test_images']} held-out "
          f"images ({result['data_note']}). Recipe: {c['epochs']} epochs of batch {c['batch_size']}, SGD "
          f"peak lr {c['lr']} (warm-up, cosine), crop+flip, BatchNorm statistics {c['bn_stats']}, teacher "
          f"= the original; distance: {prob} on the `scores` probabilities, {c['kd_regression_loss']} / "
          "teacher variance on `boxes`. MAE = mean |output - original output| on the held-out images.", "",
          "| start | output | MAE before fine-tuning | MAE after | ratio |", "|---|---|---:|---:|---:|"]
    for run in result["runs"]:
        b, a = run["mae_before"], run["mae_after"]
        md += [f"| {run['recover']} | {k} | {b[k]:.5f} | {a[k]:.5f} | {b[k] / max(a[k], 1e-12):.2f}x |" for k in b]
    md.append("")
    for run in result["runs"]:
        dist = ", ".join(f"{r['val_distance']:.4g}" for r in run["history"])
        md.append(f"- {run['recover']}: prune {run['prune_s']:.0f} s, fine-tune {run['finetune_s']:.0f} s, "
                  f"exported epoch {run['best_epoch']} (0 = the start kept); validation distance "
                  f"{run['before'].get('val_distance', float('nan')):.4g} before, per epoch {dist}")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reduction", type=float, default=0.5)
    ap.add_argument("--train-images", type=int, default=300)
    ap.add_argument("--val-images", type=int, default=32)
    ap.add_argument("--test-images", type=int, default=64)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default: FinetuneConfig's")
    ap.add_argument("--prob-loss", choices=["kl", "l1", "regress"], default=None, help="default: FinetuneConfig's")
    ap.add_argument("--starts", default="none,reconstruct", help="prune --recover values to start from")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "labelfree")
    args = ap.parse_args(argv)
    import onnx
    from onnxprune.data import load_dataset
    from onnxprune.finetune import FinetuneConfig
    from onnxprune.log import configure
    configure(0)
    original = onnx.load(MODEL)
    tmp = Path(tempfile.mkdtemp(prefix="labelfree-"))
    train = load_dataset(ASSETS / "cifar10-jpeg" / "train.tar.gz", preprocess(), limit=args.train_images, seed=0)
    train.labels = None                       # label-free: the class labels of CIFAR are never used
    held = load_dataset(ASSETS / "cifar10-jpeg" / "test.tar.gz", preprocess(),
                        limit=args.test_images + args.val_images, seed=0).arrays()[0]
    test_x, val_x = held[:args.test_images], held[args.test_images:]
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch, seed=0,
                         **({"lr": args.lr} if args.lr else {}),
                         **({"kd_prob_loss": args.prob_loss} if args.prob_loss else {}))
    runs = [one_start(r, args, original, train, val_x, test_x, cfg, tmp) for r in args.starts.split(",")]
    result = {"model": MODEL.name, "reduction": args.reduction, "config": runs[0]["config"],
              "train_images": len(train), "val_images": len(val_x), "test_images": len(test_x), "runs": runs,
              "data_note": "CIFAR-10 JPEGs resized to 320x240 stand in for face images (none in the assets)"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelfree.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result, args)
    (args.out / "labelfree.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
