"""The main job end to end on real data.

Default (``--dataset digits``): train a small residual CNN on scikit-learn's 8x8 digits (data that
ships inside the package, no download), export it, prune half its MACs with ``--method infoconc``,
verify, fine-tune with distillation, benchmark latency, and print accuracy / MACs / params /
latency before and after. Outputs go to ``runs/demo-digits/``.

``--dataset cifar10``: exports the pretrained ResNet-56 (``../shared/assets``, or ``--assets``), analyses it, prunes
45.5 % of its MACs with information concentration + Shapley scores (256 JPEG training images
for calibration), verifies the rewrite against the masked original, refits it without labels, and
measures accuracy (no training) on the 1017 lossless CIFAR-10 test images and latency on
onnxruntime CPU, before and after. Outputs go to ``runs/demo/``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]   # the checkout (shared/assets lies beside it)


def default_assets() -> Path:
    return Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))


def demo_round_to(value: str | None, default: str) -> tuple[int, str]:
    """The channel multiple to prune to, and why: 'auto' asks onnxruntime's preferred CPU block."""
    value = value or default
    if value == "auto":
        from onnxprune.runtime import preferred_channel_multiple
        return preferred_channel_multiple("cpu")
    return int(value), "as given by --round-to" if int(value) > 1 else "exact channel counts (--round-to 1)"


def _train_digits(x, y, train):
    """A small residual CNN trained for 12 epochs on the digits' training split (seeded)."""
    import torch
    from onnxprune.demo.digits_cnn import DigitsCNN
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
    return net, xt[:1]


def digits_demo(out: Path, flops_reduction: float, epochs: int, round_to: str | None = None) -> int:
    """The whole story on data that ships inside a package (scikit-learn's 8x8 digits).

    torch trains on one thread: the network is tiny, and the figures then do not depend on the
    machine's core count or load.
    """
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _digits_story(out, flops_reduction, epochs, round_to)
    finally:
        torch.set_num_threads(threads)


def _digits_story(out: Path, flops_reduction: float, epochs: int, round_to: str | None) -> int:
    import torch
    from sklearn.datasets import load_digits
    from onnxprune.cli import main as cli

    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]        # N, 8, 8, 1
    y = d.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:450], order[450:]
    np.savez(out / "digits-train.npz", x=x[train], y=y[train])
    np.savez(out / "digits-test.npz", x=x[test], y=y[test])
    print(f"1/6 train a small residual CNN on {len(train)} digits (8x8, grey), test on {len(test)}")
    net, example = _train_digits(x, y, train)
    original = out / "digits.onnx"
    torch.onnx.export(net, example, str(original), dynamo=False, input_names=["image"], output_names=["logits"])
    pruned, tuned = out / "digits-pruned.onnx", out / "digits-finetuned.onnx"
    data = ["--channel-order", "L"]
    print("\n2/6 analyse")
    cli(["analyze", str(original)])
    multiple, why = demo_round_to(round_to, "auto")
    print(f"\n3/6 prune {100 * flops_reduction:.0f}% of MACs with --method infoconc, channel counts rounded to "
          f"multiples of {multiple} (--round-to {multiple}: {why}; exact counts fall off those blocked "
          "kernels and can run slower than the original), and verify")
    rc = cli(["prune", str(original), "-o", str(pruned), "--flops-reduction", str(flops_reduction), "--overwrite",
              "--round-to", str(multiple), "--method", "infoconc", "--data", str(out / "digits-train.npz"),
              "--calib-images", "512", *data])
    if rc:
        return rc
    print(f"\n4/6 fine-tune the pruned model ({epochs} epochs, distillation from the original)")
    rc = cli(["finetune", str(pruned), "--train", str(out / "digits-train.npz"), "--val", str(out / "digits-test.npz"),
              "-o", str(tuned), "--epochs", str(epochs), "--batch-size", "64", "--lr", "0.02", "--crop-padding", "1",
              "--no-flip", "--teacher", str(original), "--kd-weight", "0.5", "--overwrite", *data])
    if rc:
        return rc
    print("\n5/6 latency on onnxruntime CPU (the three models interleaved in rounds, batch 1 and 256)")
    rc = cli(["bench", str(original), str(pruned), str(tuned), "--batch", "1,256", "--min-time", "2",
              "--max-time", "4", "-q", "-o", str(out / "bench"), "--overwrite"])
    if rc:
        return rc
    print("\n6/6 summary (test set, 450 digits)")
    models = [("original", original), ("pruned + refit", pruned), ("pruned + fine-tuned", tuned)]
    return _summary(models, out / "digits-test.npz", None, _bench_latency(out / "bench.json", 256))


def _bench_latency(bench_json: Path, batch: int) -> dict:
    """p50 per model file and the baseline's speed-up (median of per-round ratios) from a bench JSON."""
    import json
    report = json.loads(bench_json.read_text())
    p50 = {r["model"]: r["p50_ms"] for r in report["results"] if r["batch"] == batch}
    speedup = {p["model"]: p["speedup_rounds"] for p in report["pairs"] if p["batch"] == batch}
    return {"batch": batch, "p50": p50, "speedup": speedup}


def _measure_latency(models, batch: int) -> dict:
    """Interleaved onnxruntime CPU latency of the models at one batch size (as `onnxprune bench`)."""
    from onnxprune.tools.bench import bench_models
    report = bench_models([p for _, p in models], batches=[batch], engines=["ort-cpu"], min_time_s=2.0)
    return {"batch": batch, "p50": {r.model: r.p50_ms for r in report.results},
            "speedup": {p.model: p.speedup_rounds for p in report.pairs}}


def _summary(models, test_npz, pre, latency: dict) -> int:
    """Accuracy, MACs and params of every model, with the latencies measured by the bench."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel, format_count
    from onnxprune.tools.evaluate import top1_accuracy
    from onnxprune.model_io import load_model
    import onnxprune.data as data
    pre = pre or data.Preprocess(channel_order="L")
    x, y = data.load_dataset(test_npz, pre, shuffle=False).arrays()
    rows = []
    for name, path in models:
        m = load_model(path)
        cost = CostModel(analyze(m))
        rows.append((name, Path(path).name, cost.macs(), cost.params(), top1_accuracy(m, x, y)))
    batch = latency["batch"]
    print(f"{'model':<22} {'MACs (FLOPs=2xMACs)':>20} {'params':>10} {'top-1':>8} {f'p50 ms/{batch}':>11} "
          f"{'speed-up':>9}")
    for name, file, macs, params, acc in rows:
        ms, up = latency["p50"].get(file), latency["speedup"].get(file, 1.0 if file == rows[0][1] else None)
        print(f"{name:<22} {format_count(macs):>20} {format_count(params):>10} {100 * acc:>7.2f}% "
              f"{ms if ms is not None else float('nan'):>11.2f} {f'{up:.2f}x' if up else '-':>9}")
    before, after = rows[0], rows[-1]
    up = latency["speedup"].get(after[1])
    print(f"\nbefore -> after ({after[0]}): top-1 {100 * before[4]:.2f}% -> {100 * after[4]:.2f}%, "
          f"MACs {format_count(before[2])} -> {format_count(after[2])} ({before[2] / after[2]:.2f}x fewer), "
          f"params {format_count(before[3])} -> {format_count(after[3])} ({before[3] / after[3]:.2f}x fewer)")
    print(f"MACs ratio {before[2] / after[2]:.2f}x, latency ratio {up if up else float('nan'):.2f}x "
          f"(batch {batch}, onnxruntime CPU, median of interleaved rounds; CPU times are noisy, compare ratios)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="onnxprune-demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=default_assets(), help="shared assets folder")
    ap.add_argument("--out", type=Path, help="output folder (default runs/demo-digits or runs/demo)")
    ap.add_argument("--flops-reduction", type=float, default=0.455)
    ap.add_argument("--round-to", metavar="N|auto",
                    help="channel multiple to prune to (default: digits 'auto', the multiple onnxruntime's CPU "
                         "kernels run fastest on this machine; cifar10 1, exact counts)")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--dataset", choices=["digits", "cifar10"], default="digits",
                    help="digits (default): a small CNN trained on scikit-learn's digits, which ship "
                         "inside the package; cifar10: the pretrained ResNet-56 from --assets")
    ap.add_argument("--epochs", type=int, default=8, help="digits: fine-tuning epochs")
    args = ap.parse_args(argv)
    needed = ("torch", "sklearn") if args.dataset == "digits" else ("torch",)
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(f"demo: error: needs {' and '.join(missing)}: pip install 'onnxprune[torch,demo]' "
              "(or run ./run.sh demo, which sets them up)", file=sys.stderr)
        return 2
    if args.dataset == "digits":
        return digits_demo(args.out or Path("runs") / "demo-digits", 0.5, args.epochs, args.round_to)
    args.out = args.out or Path("runs") / "demo"

    weights = args.assets / "pretrained" / "cifar10-resnet56-4bfd9763.th"
    test_npz = args.assets / "cifar10-lossless-test-first1017.npz"
    for f in (weights, test_npz):
        if not f.exists():
            print(f"demo: {f} not found; pass --assets PATH (the folder with pretrained/ and the .npz)",
                  file=sys.stderr)
            return 2
    from models.export import export_model
    from onnxprune.cli import main as cli
    from onnxprune.data import Preprocess

    args.out.mkdir(parents=True, exist_ok=True)
    original = args.out / "resnet56.onnx"
    pruned = args.out / "resnet56-pruned.onnx"
    print(f"1/4 export pretrained ResNet-56 -> {original}")
    export_model("resnet56", original, exporter="legacy", bn="folded", weights=str(weights))

    print("2/4 analyse")
    cli(["analyze", str(original)])
    train = args.assets / "cifar10-jpeg" / "train.tar.gz"
    print(f"\n3/4 prune {100 * args.flops_reduction:.1f}% of MACs with --method infoconc "
          f"(information concentration + Shapley), {args.calib_images} calibration images, channel steps "
          f"from latency measured at batch 64 (or --round-to), verify, and refit without labels")
    rounding = ["--round-to", str(demo_round_to(args.round_to, "1")[0])] if args.round_to else []
    rc = cli(["prune", str(original), "-o", str(pruned), "--flops-reduction", str(args.flops_reduction),
              *rounding, "--batch", "64", "--overwrite", "--method", "infoconc",
              "--data", str(train), "--norm", "imagenet", "--calib-images", str(args.calib_images)])
    if rc:
        return rc

    print("\n4/4 accuracy without any training (pruned + label-free refit) on the 1017 lossless CIFAR-10 "
          "test images, latency on onnxruntime CPU (batch 64)")
    models = [("original", original), ("pruned + refit", pruned)]
    _summary(models, test_npz, Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
             _measure_latency(models, 64))
    print("No labels and no training were used; `onnxprune finetune --teacher` can recover more.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
