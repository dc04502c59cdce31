"""B1 in full: ResNet-56 / CIFAR-10 accuracy at a MACs budget, one-shot and after fine-tuning.

Every method starts from the same model: the pretrained ResNet-56 adapted once to the JPEG train
set (b1_common.adapted_resnet56, cached). For each budget and method: prune (ours through the
Pruner; onnxsim's pruners bisected to the same MACs), measure one-shot top-1 on the 1017 lossless
and the JPEG test images, fine-tune with the same recipe, measure again; record MACs, params,
requested vs achieved budget and the wall time of every stage.

Recipe (CPU-sized): --steps SGD steps of batch 128 on the JPEG train set, lr 0.02 cosine, wd 5e-4,
crop+flip, distillation from the adapted unpruned model (α 0.5, T 4), BN re-inserted for training
and folded back. Usage:
  python benchmarks/b1_finetune.py [--budgets 0.3,0.455,0.55,0.7] [--methods ...] [--steps 100]
Writes {out}/b1_finetune.{json,md} (default benchmarks/results/b1_full).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from b1_common import OURS, PEERS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.3,0.455,0.55,0.7", help="comma-separated MACs reductions")
    ap.add_argument("--methods", default=",".join(OURS + PEERS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--calib", type=int, default=256, help="calibration images (JPEG train, seed 0)")
    ap.add_argument("--base", choices=["adapted", "pretrained"], default="adapted",
                    help="starting model: the JPEG-adapted ResNet-56 (default) or the pretrained one")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "b1_full")
    args = ap.parse_args()
    from b1_common import (adapted_resnet56, jpeg_train, macs_params, onnxsim_matched, pretrained_resnet56,
                           test_sets, top1_both)
    from onnxprune.finetune import FinetuneConfig, finetune
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, Pruner

    if args.base == "adapted":
        teacher, adapt_info = adapted_resnet56()
    else:
        teacher, adapt_info = pretrained_resnet56(), None
    tmp = Path(tempfile.mkdtemp())
    train = jpeg_train()
    calib = train.sample(args.calib, seed=0)
    lossless, jpeg = test_sets()

    def acc(m):
        return top1_both(m, lossless, jpeg)

    base_macs, base_params = macs_params(teacher)
    a_l, a_j = acc(teacher)
    rows = [{"method": "unpruned", "macs": base_macs, "params": base_params, "acc_lossless": a_l, "acc_jpeg": a_j}]
    print(f"start model ({args.base}): lossless {100 * a_l:.2f}%, JPEG {100 * a_j:.2f}%", flush=True)
    cfg = FinetuneConfig(epochs=1, batch_size=128, lr=0.02, kd_weight=0.5, max_steps_per_epoch=args.steps,
                         warmup_epochs=0.1)
    metrics_cache: dict = {}
    budgets = [float(b) for b in args.budgets.split(",")]
    for budget in budgets:
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            stages, note = {}, ""
            if method in OURS:
                p = Pruner(PruneConfig(flops_reduction=budget, method=method, verify=True, recover="none"))
                p.fit(teacher, calib, metrics=metrics_cache.get(method))
                metrics_cache.setdefault(method, p.metrics_)
                res = p.transform(teacher)
                pm, stages = res.model, dict(res.timings)
                note = getattr(p, "allocation_choice_", "")
            else:
                pm, s, note = onnxsim_matched(teacher, budget, method.split("-")[1], calib)
                if pm is None:
                    rows.append({"method": method, "budget": budget, "note": note})
                    print(f"{budget:.3f} {method}: {note}", flush=True)
                    continue
                note = f"sparsity {s:.3f}"
            stages["prune_total_s"] = time.perf_counter() - t0
            one = acc(pm)
            macs, params = macs_params(pm)
            t0 = time.perf_counter()
            finetune(pm, train, None, cfg, tmp / f"{method}-{budget}-ft.onnx", teacher=teacher, log=lambda m: None)
            stages["finetune_s"] = time.perf_counter() - t0
            after = acc(load_model(tmp / f"{method}-{budget}-ft.onnx"))
            rows.append({"method": method, "budget": budget, "macs": macs, "params": params,
                         "macs_reduction": 1 - macs / base_macs, "params_reduction": 1 - params / base_params,
                         "oneshot_lossless": one[0], "oneshot_jpeg": one[1], "acc_lossless": after[0],
                         "acc_jpeg": after[1], "stages_s": stages, "note": note})
            print(f"{budget:.3f} {method:<14} MACs -{100 * rows[-1]['macs_reduction']:.2f}% params "
                  f"-{100 * rows[-1]['params_reduction']:.2f}%  one-shot {100 * one[0]:.2f}/{100 * one[1]:.2f}  "
                  f"fine-tuned {100 * after[0]:.2f}/{100 * after[1]:.2f}  ({note})", flush=True)
            write(args, rows, budgets, adapt_info)


def write(args, rows, budgets, adapt_info) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (onnxruntime CPU, torch CPU)"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "b1_finetune.json").write_text(json.dumps(
        {"machine": machine, "base": args.base, "adaptation": adapt_info, "steps": args.steps, "batch": 128,
         "calib_images": args.calib, "budgets": budgets, "rows": rows}, indent=1))
    base = rows[0]
    start = (f"the pretrained ResNet-56 adapted to the JPEG train set ({adapt_info['recipe']['epochs']} epoch, "
             f"lr {adapt_info['recipe']['lr']}, {adapt_info['seconds']:.0f} s, cached)" if adapt_info else
             "the pretrained ResNet-56")
    md = [f"ResNet-56 / CIFAR-10, {machine}. Start model: {start}: {100 * base['acc_lossless']:.2f} % lossless (1017) / "
          f"{100 * base['acc_jpeg']:.2f} % JPEG (10 000), {base['macs'] / 1e6:.2f} M MACs, {base['params'] / 1e3:.1f} k params. "
          f"Calibration: {args.calib} JPEG train images. Fine-tune: {args.steps} steps of batch 128 "
          f"({args.steps * 128 / 50000:.2f} epoch), lr 0.02 cosine, wd 5e-4, crop+flip, KD α 0.5 T 4.", "",
          "| target | method | MACs cut | params cut | one-shot lossless / JPEG | fine-tuned lossless / JPEG | prune s | fine-tune s | note |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        if "macs" not in r:
            md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | – | – | – | – | – | – | {r['note']} |")
            continue
        st = r["stages_s"]
        md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | {100 * r['macs_reduction']:.2f}% | "
                  f"{100 * r['params_reduction']:.2f}% | {100 * r['oneshot_lossless']:.2f} / {100 * r['oneshot_jpeg']:.2f} | "
                  f"{100 * r['acc_lossless']:.2f} / {100 * r['acc_jpeg']:.2f} | {st['prune_total_s']:.1f} | "
                  f"{st['finetune_s']:.0f} | {r['note']} |")
    stage_rows = [r for r in rows[1:] if r.get("method") in OURS and "stages_s" in r]
    if stage_rows:
        keys = [k for k in ("analysis_s", "capture_s", "metrics_s", "scoring_s", "allocation_s", "rewrite_s", "verify_s")
                if any(k in r["stages_s"] for r in stage_rows)]
        md += ["", "Stage wall times of our methods (s; – : not run, because the method needs no activations "
               "or because capture and metrics from the first budget are reused):", "",
               "| target | method | " + " | ".join(k[:-2] for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
        for r in stage_rows:
            md.append(f"| {100 * r['budget']:.1f}% | {r['method']} | " + " | ".join(
                f"{r['stages_s'][k]:.2f}" if k in r["stages_s"] else "–" for k in keys) + " |")
    (args.out / "b1_finetune.md").write_text("\n".join(md) + "\n")


def rerender(out: Path) -> None:
    """Rewrite the Markdown table from an existing JSON (after a change of layout)."""
    d = json.loads((out / "b1_finetune.json").read_text())
    args = argparse.Namespace(out=out, base=d["base"], steps=d["steps"], calib=d["calib_images"])
    write(args, d["rows"], d["budgets"], d["adaptation"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rerender"]:
        rerender(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "benchmarks" / "results" / "b1_full")
    else:
        main()
