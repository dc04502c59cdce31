"""The main job end to end on real data.

Default (``--dataset digits``): train a small residual CNN on scikit-learn's 8x8 digits (data that
ships inside the package, no download), export it, prune half its MACs with ``--method infoconc``,
verify, fine-tune with distillation, benchmark latency, and print accuracy / MACs / params /
latency before and after. Outputs go to ``runs/demo-digits/``.

``--dataset cifar10``: exports the pretrained ResNet-56 (``../shared/assets``, or ``--assets``), analyses it, prunes
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


def digits_demo(out: Path, flops_reduction: float, epochs: int) -> int:
    """The whole story on data that ships inside a package (scikit-learn's 8x8 digits)."""
    import torch
    from sklearn.datasets import load_digits
    from onnxprune.demo.digits_cnn import DigitsCNN
    from onnxprune.cli.core import main as cli

    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]        # N, 8, 8, 1
    y = d.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:450], order[450:]
    np.savez(out / "digits-train.npz", x=x[train], y=y[train])
    np.savez(out / "digits-test.npz", x=x[test], y=y[test])
    print(f"1/6 train a small residual CNN on {len(train)} digits (8x8, grey), test on {len(test)}")
    torch.manual_seed(0)
    net = DigitsCNN()
    xt = torch.from_numpy(x[train].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    yt = torch.from_numpy(y[train].astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(12):
        net.train()
        for i in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.cross_entropy(net(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    original = out / "digits.onnx"
    torch.onnx.export(net, xt[:1], str(original), dynamo=False, input_names=["image"], output_names=["logits"])
    pruned, tuned = out / "digits-pruned.onnx", out / "digits-finetuned.onnx"
    data = ["--channel-order", "L"]
    print("\n2/6 analyse")
    cli(["analyze", str(original)])
    print(f"\n3/6 prune {100 * flops_reduction:.0f}% of MACs with --method infoconc, and verify")
    rc = cli(["prune", str(original), "-o", str(pruned), "--flops-reduction", str(flops_reduction), "--overwrite",
              "--method", "infoconc", "--data", str(out / "digits-train.npz"), "--calib-images", "512", *data])
    if rc:
        return rc
    print(f"\n4/6 fine-tune the pruned model ({epochs} epochs, distillation from the original)")
    rc = cli(["finetune", str(pruned), "--train", str(out / "digits-train.npz"), "--val", str(out / "digits-test.npz"),
              "-o", str(tuned), "--epochs", str(epochs), "--batch-size", "64", "--lr", "0.02", "--crop-padding", "1",
              "--no-flip", "--teacher", str(original), "--kd-weight", "0.5", "--overwrite", *data])
    if rc:
        return rc
    print("\n5/6 latency on onnxruntime CPU (interleaved, batch 1 and 256)")
    cli(["bench", str(original), str(pruned), str(tuned), "--batch", "1,256", "--min-time", "1", "-q",
         "-o", str(out / "bench")])
    print("\n6/6 summary (test set, 450 digits)")
    return _summary([("original", original), ("pruned (one-shot)", pruned), ("pruned + fine-tuned", tuned)],
                    out / "digits-test.npz", None, 256)


def _summary(models, test_npz, pre, batch_size: int) -> int:
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel, format_count
    from onnxprune.data.core import Preprocess, load_dataset
    from onnxprune.tools.evaluate import latency, top1_accuracy
    from onnxprune.model_io import load_model
    pre = pre or Preprocess(channel_order="L")
    x, y = load_dataset(test_npz, pre, shuffle=False).arrays()
    batch = np.ascontiguousarray(x[:batch_size])
    rows = []
    for name, path in models:
        m = load_model(path)
        cost = CostModel(analyze(m))
        rows.append((name, cost.macs(), cost.params(), top1_accuracy(m, x, y), latency(m, batch, warmup=3, runs=20)["p50_ms"]))
    print(f"{'model':<22} {'MACs (FLOPs=2xMACs)':>20} {'params':>10} {'top-1':>8} {f'p50 ms/{len(batch)}':>11}")
    for name, macs, params, acc, ms in rows:
        print(f"{name:<22} {format_count(macs):>20} {format_count(params):>10} {100 * acc:>7.2f}% {ms:>11.2f}")
    print(f"MACs ratio {rows[0][1] / rows[1][1]:.2f}x, latency ratio {rows[0][4] / rows[1][4]:.2f}x "
          "(same session; CPU times are noisy, compare ratios)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="onnxprune-demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=default_assets(), help="shared assets folder")
    ap.add_argument("--out", type=Path, help="output folder (default runs/demo-digits or runs/demo)")
    ap.add_argument("--flops-reduction", type=float, default=0.455)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--dataset", choices=["digits", "cifar10"], default="digits",
                    help="digits (default): a small CNN trained on scikit-learn's digits, which ship "
                         "inside the package; cifar10: the pretrained ResNet-56 from --assets")
    ap.add_argument("--epochs", type=int, default=8, help="digits: fine-tuning epochs")
    args = ap.parse_args(argv)
    if args.dataset == "digits":
        return digits_demo(args.out or ROOT / "runs" / "demo-digits", 0.5, args.epochs)
    args.out = args.out or ROOT / "runs" / "demo"

    weights = args.assets / "pretrained" / "cifar10-resnet56-4bfd9763.th"
    test_npz = args.assets / "cifar10-lossless-test-first1017.npz"
    for f in (weights, test_npz):
        if not f.exists():
            print(f"demo: {f} not found; pass --assets PATH (the folder with pretrained/ and the .npz)",
                  file=sys.stderr)
            return 2
    from models.export import export_model
    from onnxprune.cli.core import main as cli
    from onnxprune.data.core import Preprocess

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
    _summary([("original", original), ("pruned (one-shot)", pruned)], test_npz,
             Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), 64)
    print("One-shot accuracy drops without fine-tuning; `onnxprune finetune` recovers it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
