"""B1, fine-tuned part (short CPU recipe): prune the pretrained ResNet-56, fine-tune every method's
model with the same recipe, report one-shot and fine-tuned top-1.

Recipe (CPU-sized): --steps SGD steps of batch 128 on the JPEG training set, lr 0.02 cosine,
wd 5e-4, crop+flip, distillation from the unpruned model (α 0.5, T 4), BN re-inserted for training
and folded back. Usage:
  python benchmarks/b1_finetune.py [--budgets 0.3,0.455,0.55,0.7] [--methods infoconc,uniform-l1,onnxsim-wanda] [--steps 150]
Writes benchmarks/results/b1_finetune.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.455", help="comma-separated MACs reductions")
    ap.add_argument("--methods", default="infoconc,uniform-l1,onnxsim-wanda")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from b1_oneshot import onnxsim_matched
    from models.export import export_model
    from onnxprune.analysis import analyze
    from onnxprune.cost import CostModel
    from onnxprune.data import Preprocess, load_dataset
    from onnxprune.evaluate import top1_accuracy
    from onnxprune.finetune import FinetuneConfig, finetune
    from onnxprune.model_io import load_model, save_model
    from onnxprune.pipeline import PruneConfig, prune

    pre = Preprocess(**IMAGENET)
    tmp = Path(tempfile.mkdtemp())
    export_model("resnet56", tmp / "r56.onnx", weights=str(ASSETS / "pretrained" / "cifar10-resnet56-4bfd9763.th"))
    teacher = load_model(tmp / "r56.onnx")
    train = load_dataset(ASSETS / "cifar10-jpeg" / "train.tar.gz", pre, seed=0)
    calib = train.sample(256, seed=0)
    xl, yl = load_dataset(ASSETS / "cifar10-lossless-test-first1017.npz", pre, shuffle=False).arrays()
    xj, yj = load_dataset(ASSETS / "cifar10-jpeg" / "test.tar.gz", pre, seed=0).arrays()

    def cost_of(m):
        c = CostModel(analyze(m))
        return c.macs(), c.params()

    base = cost_of(teacher)
    cfg = FinetuneConfig(epochs=1, batch_size=128, lr=0.02, kd_weight=0.5, max_steps_per_epoch=args.steps,
                         warmup_epochs=0.1)
    rows = [{"method": "unpruned", "acc_lossless": top1_accuracy(teacher, xl, yl), "acc_jpeg": top1_accuracy(teacher, xj, yj)}]
    budgets = [float(b) for b in args.budgets.split(",")]
    for budget, method in [(b, m) for b in budgets for m in args.methods.split(",")]:
        t0 = time.perf_counter()
        if method.startswith("onnxsim"):
            calib_feeds = [{teacher.graph.input[0].name: x[:1]} for x, _ in calib.batches(1)][:8]
            pm, _, note = onnxsim_matched(teacher, budget, cost_of, method.split("-")[1], calib_feeds)
        else:
            pm = prune(teacher, PruneConfig(flops_reduction=budget, method=method), data=calib).model
        t_prune = time.perf_counter() - t0
        one = (top1_accuracy(pm, xl, yl), top1_accuracy(pm, xj, yj))
        save_model(pm, tmp / f"{method}.onnx")
        t0 = time.perf_counter()
        finetune(pm, train, None, cfg, tmp / f"{method}-ft.onnx", teacher=teacher, log=lambda m: None)
        t_ft = time.perf_counter() - t0
        ft = load_model(tmp / f"{method}-ft.onnx")
        after = (top1_accuracy(ft, xl, yl), top1_accuracy(ft, xj, yj))
        macs, params = cost_of(ft)
        rows.append({"method": method, "budget": budget, "macs_reduction": 1 - macs / base[0], "params_reduction": 1 - params / base[1],
                     "oneshot_lossless": one[0], "oneshot_jpeg": one[1], "acc_lossless": after[0], "acc_jpeg": after[1],
                     "prune_s": t_prune, "finetune_s": t_ft})
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (torch CPU)"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "b1_finetune.json").write_text(json.dumps({"machine": machine, "steps": args.steps, "batch": 128,
                                                          "budgets": budgets, "rows": rows}, indent=1))
    md = [f"ResNet-56 / CIFAR-10, short CPU fine-tune ({args.steps} steps of "
          f"batch 128 = {args.steps * 128 / 50000:.2f} epoch, lr 0.02 cosine, KD α 0.5 T 4), {machine}. "
          f"Unpruned: {100 * rows[0]['acc_lossless']:.2f} % lossless / {100 * rows[0]['acc_jpeg']:.2f} % JPEG.", "",
          "| target | method | MACs cut | params cut | one-shot lossless / JPEG | fine-tuned lossless / JPEG | fine-tune s |",
          "|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | {100 * r['macs_reduction']:.2f}% | {100 * r['params_reduction']:.2f}% | "
                  f"{100 * r['oneshot_lossless']:.2f} / {100 * r['oneshot_jpeg']:.2f} | "
                  f"{100 * r['acc_lossless']:.2f} / {100 * r['acc_jpeg']:.2f} | {r['finetune_s']:.0f} |")
    (args.out / "b1_finetune.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
