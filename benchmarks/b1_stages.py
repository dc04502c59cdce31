"""B1 by recovery stage: accuracy of the pretrained ResNet-56 after each step a new user can take.

For every MACs budget and method, from the published pretrained weights (not the JPEG-adapted
model), each stage starting from the previous stage's model:

1. one-shot      prune with ``recover="none"`` (ours) / onnxsim's pruner bisected to the MACs (peers);
2. + reconstruct prune with the default ``recover="reconstruct"`` (label-free least-squares refit on
                 the calibration images, part of prune; ours) / onnxsim's own refit
                 ``apply_pruning_finetune`` on the stage-1 model (peers);
3. + label-free distillation  ``onnxprune.finetune`` from the original model on unlabelled images
                 (an images-only .npy: no labels anywhere), one pass, batch 64, default lr;
4. + labelled fine-tune  a short labelled recipe with distillation from the original (α 0.5, T 4),
                 lr 0.001: b1_finetune's lr 0.02 wrecks a refitted model in a few steps.

Calibration: the first --calib images of the seeded (seed 0) JPEG train set, ImageNet mean/std, as
``onnxprune prune --data train.tar.gz --calib-images N --norm imagenet`` takes them. Exact counts
(round_to 1). Top-1 on the 1017 lossless test images and on a seeded sample of --jpeg-test JPEG test
images. Results are written after every cell, so a cut-short run still leaves a valid table.

The peers need onnxsim >= 0.8 (``onnxsim.pruning``) importable; without it their cells are skipped
and the reason recorded.

Usage: python benchmarks/b1_stages.py [--budgets 0.455,0.3,0.55,0.7] [--methods ...] [--deadline HH:MM]
Writes {out}/b1_stages.{json,md} (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from b1_common import OURS  # noqa: E402

STAGES = ["one-shot", "+ reconstruct", "+ label-free distillation", "+ labelled fine-tune"]
DEFAULT_METHODS = "infoconc,onnxsim-wanda,uniform-l1,onnxsim-l1,itpruner"


def _unlabelled(train, n: int, folder: Path):
    """The first ``n`` images of ``train`` as an images-only .npy (decoded pixels, no labels),
    opened as a user's unlabelled data set."""
    import numpy as np
    from b1_common import preprocess
    from onnxprune.data import load_dataset
    path = folder / f"unlabelled-{n}.npy"
    np.save(path, np.stack([np.asarray(im) for im in train.take(n).images]))
    ds = load_dataset(path, preprocess(), shuffle=False)
    assert ds.labels is None, "the distillation set must carry no labels"
    return ds


class Cell:
    """One (budget, method) row: the stages run so far."""

    def __init__(self, budget: float, method: str, base_macs: int, base_params: int):
        self.row = {"budget": budget, "method": method, "stages": []}
        self.base = (base_macs, base_params)

    def add(self, stage: str, model, seconds: float, acc, note: str = "") -> None:
        from b1_common import macs_params
        macs, params = macs_params(model)
        self.row["stages"].append({"stage": stage, "macs": macs, "params": params,
                                   "macs_reduction": 1 - macs / self.base[0],
                                   "params_reduction": 1 - params / self.base[1],
                                   "acc_lossless": acc[0], "acc_jpeg": acc[1], "seconds": seconds, "note": note})
        print(f"{self.row['budget']:.3f} {self.row['method']:<14} {stage:<27} MACs -{100 * (1 - macs / self.base[0]):.2f}%"
              f"  lossless {100 * acc[0]:6.2f}%  jpeg {100 * acc[1]:6.2f}%  ({seconds:.0f} s) {note}", flush=True)


def _ours(cell, model, budget, method, calib, acc, metrics_cache):
    """Stages 1 and 2 of our methods; returns the stage-2 model."""
    from onnxprune.pipeline import PruneConfig, Pruner
    models = []
    for stage, recover in zip(STAGES[:2], ("none", "reconstruct")):
        t0 = time.perf_counter()
        p = Pruner(PruneConfig(flops_reduction=budget, method=method, recover=recover))
        p.fit(model, calib, metrics=metrics_cache.get(method))
        metrics_cache.setdefault(method, p.metrics_)
        res = p.transform(model)
        secs = time.perf_counter() - t0
        choice = p.allocation_choice_
        cell.add(stage, res.model, secs, acc(res.model), f"allocation {choice}" if choice else "")
        cell.row["stages"][-1]["prune_notes"] = list(res.plan.budget.get("notes", []))
        models.append(res.model)
    return models[-1]


def _peer(cell, model, budget, method, calib, acc):
    """Stages 1 and 2 of an onnxsim pruner; returns the stage-2 model or None (reason in the row)."""
    from b1_common import onnxsim_matched
    try:
        import onnxsim
    except ImportError as exc:
        cell.row["note"] = f"onnxsim not importable ({exc}); peer not run"
        return None
    t0 = time.perf_counter()
    pm, s, note = onnxsim_matched(model, budget, method.split("-")[1], calib)
    if pm is None:
        cell.row["note"] = note
        return None
    cell.add(STAGES[0], pm, time.perf_counter() - t0, acc(pm), f"onnxsim sparsity {s:.3f}")
    # the exported model has a fixed batch of 1: one feed per calibration image
    feeds = [{model.graph.input[0].name: x[i:i + 1]} for x, _ in calib.batches(256) for i in range(len(x))]
    t0 = time.perf_counter()
    try:
        rm = onnxsim.apply_pruning_finetune(model, pm, calibration_data=feeds)
    except Exception as exc:  # noqa: BLE001 - report the peer's failure as it is
        cell.row["note"] = f"onnxsim apply_pruning_finetune failed: {type(exc).__name__}: {exc}"[:300]
        return None
    from onnx.numpy_helper import to_array
    before = {t.name: to_array(t) for t in pm.graph.initializer}
    changed = sum(t.name not in before or not (to_array(t) == before[t.name]).all() for t in rm.graph.initializer)
    cell.add(STAGES[1], rm, time.perf_counter() - t0, acc(rm),
             f"onnxsim apply_pruning_finetune on {len(feeds)} images; {changed} initializer(s) changed")
    return rm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.455,0.3,0.55,0.7", help="comma-separated MACs reductions, in run order")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--calib", type=int, default=1024, help="calibration images (first N of the seeded JPEG train set)")
    ap.add_argument("--jpeg-test", type=int, default=2000, help="seeded sample of the JPEG test set")
    ap.add_argument("--distill-images", type=int, default=2048, help="unlabelled images for stage 3")
    ap.add_argument("--distill-batch", type=int, default=64)
    ap.add_argument("--ft-steps", type=int, default=24, help="stage 4: SGD steps")
    ap.add_argument("--ft-batch", type=int, default=128)
    ap.add_argument("--ft-lr", type=float, default=0.001)
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: start no cell expected to end after it")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--append", action="store_true",
                    help="keep the cells of an existing {out}/b1_stages.json and run only the budget/method "
                         "pairs it lacks (a run cut short by --deadline continues)")
    args = ap.parse_args()

    from b1_common import jpeg_train, macs_params, pretrained_resnet56, test_sets, top1_both
    from onnxprune.finetune import FinetuneConfig, finetune
    from onnxprune.model_io import load_model

    t_start = time.perf_counter()
    model = pretrained_resnet56()
    train = jpeg_train()
    calib = train.take(args.calib)
    tmp = Path(tempfile.mkdtemp())
    unlabelled = _unlabelled(train, args.distill_images, tmp)
    lossless, jpeg = test_sets(args.jpeg_test)

    def acc(m):
        return top1_both(m, lossless, jpeg)

    base_macs, base_params = macs_params(model)
    a = acc(model)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (onnxruntime CPU, torch CPU)",
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "jpeg_test_images": int(len(jpeg[1])),
              "unpruned": {"macs": base_macs, "params": base_params, "acc_lossless": a[0], "acc_jpeg": a[1]},
              "cells": [], "not_run": []}
    print(f"unpruned: {base_macs / 1e6:.2f} M MACs, lossless {100 * a[0]:.2f}%, jpeg {100 * a[1]:.2f}%", flush=True)
    distill_cfg = FinetuneConfig(epochs=1, batch_size=args.distill_batch)
    ft_cfg = FinetuneConfig(epochs=1, batch_size=args.ft_batch, lr=args.ft_lr, kd_weight=0.5,
                            max_steps_per_epoch=args.ft_steps, warmup_epochs=0.1)
    deadline = None
    if args.deadline:
        h, m = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=h, minute=m, second=0, microsecond=0)
        if deadline <= now:                  # a time of day already past means tomorrow's
            deadline += dt.timedelta(days=1)
    metrics_cache: dict = {}
    longest: dict[bool, float] = {}          # ours? -> longest cell so far (the deadline estimate)
    todo = [(float(b), meth) for b in args.budgets.split(",") for meth in args.methods.split(",")]
    if args.append and (args.out / "b1_stages.json").exists():
        earlier = json.loads((args.out / "b1_stages.json").read_text())
        result["cells"] = earlier["cells"]
        done = {(c["budget"], c["method"]) for c in earlier["cells"]}
        todo = [t for t in todo if t not in done]
        print(f"--append: {len(done)} earlier cell(s) kept, {len(todo)} to run", flush=True)
    for i, (budget, method) in enumerate(todo):
        guess = longest.get(method in OURS, max(longest.values(), default=0.0))
        if deadline and dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.1 * guess) > deadline:
            result["not_run"] = [{"budget": b, "method": m} for b, m in todo[i:]]
            print(f"deadline {args.deadline} UTC: {len(todo) - i} cell(s) not run", flush=True)
            break
        t_cell = time.perf_counter()
        cell = Cell(budget, method, base_macs, base_params)
        result["cells"].append(cell.row)
        if method in OURS:
            current = _ours(cell, model, budget, method, calib, acc, metrics_cache)
        else:
            current = _peer(cell, model, budget, method, calib, acc)
        if current is not None:
            for stage, data, cfg in ((STAGES[2], unlabelled, distill_cfg), (STAGES[3], train, ft_cfg)):
                path = tmp / f"{method}-{budget}-s{STAGES.index(stage) + 1}.onnx"
                t0 = time.perf_counter()
                summary = finetune(current, data, None, cfg, path, teacher=model)
                secs = time.perf_counter() - t0
                current = load_model(path)
                steps = min(math.ceil(len(data) / cfg.batch_size), cfg.max_steps_per_epoch or math.inf)
                cell.add(stage, current, secs, acc(current),
                         f"{'labels + ' if summary['uses_labels'] else 'no labels, '}KD α {summary['kd_weight']}, "
                         f"{steps} steps of {cfg.batch_size}")
        else:
            print(f"{budget:.3f} {method:<14} not run: {cell.row.get('note')}", flush=True)
        longest[method in OURS] = max(longest.get(method in OURS, 0.0), time.perf_counter() - t_cell)
        result["wall_s"] = time.perf_counter() - t_start
        write(args.out, result)
    result["wall_s"] = time.perf_counter() - t_start
    write(args.out, result)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write(out: Path, result: dict) -> None:
    """JSON and Markdown, each replaced atomically (a partial run leaves a valid table)."""
    from onnxprune.model_io import write_json_atomic
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "b1_stages.json", result)
    s, u = result["settings"], result["unpruned"]
    md = [f"# B1 by recovery stage: pretrained ResNet-56 / CIFAR-10", "",
          f"{result['machine']}, shared with other jobs. Start model: the published pretrained weights "
          f"(`cifar10-resnet56-4bfd9763.th`, BN folded): {_pct(u['acc_lossless'])} % lossless (1017) / "
          f"{_pct(u['acc_jpeg'])} % JPEG ({result['jpeg_test_images']} of 10 000, seeded sample), "
          f"{u['macs'] / 1e6:.2f} M MACs, {u['params'] / 1e3:.1f} k params.", "",
          f"* Calibration: first {s['calib']} images of the seeded (seed 0) JPEG train set, ImageNet mean/std "
          "(as `onnxprune prune --data train.tar.gz --calib-images N --norm imagenet`); exact counts (round_to 1).",
          "* Stage 1 *one-shot*: `PruneConfig(flops_reduction=B, method=M, recover=\"none\")`; peers: onnxsim's "
          "uniform sparsity bisected until its MACs cut meets B (`b1_common.onnxsim_matched`).",
          "* Stage 2 *+ reconstruct*: ours: the same prune with the default `recover=\"reconstruct\"` (a separate "
          "prune from the original, metrics reused from stage 1, so its allocation may differ from stage 1's, and "
          "its channels are chosen by reconstruction error, the default when the prune refits); "
          "peers: onnxsim's `apply_pruning_finetune` on the stage-1 model (it refits MatMul/Gemm layers only).",
          f"* Stage 3 *+ label-free distillation*: `onnxprune.finetune` from stage 2, teacher = the original model, "
          f"{s['distill_images']} unlabelled JPEG train images (an images-only .npy: the first {s['distill_images']} "
          f"of the seeded train set, which include the calibration images), 1 pass, batch {s['distill_batch']}, "
          "default lr 0.001 (warm-up 0.5 epoch, cosine), crop+flip, loss = KL to the teacher (T 4).",
          f"* Stage 4 *+ labelled fine-tune*: from stage 3, {s['ft_steps']} steps of batch {s['ft_batch']} "
          f"({s['ft_steps'] * s['ft_batch'] / 50000:.2f} epoch) on the labelled JPEG train set, lr {s['ft_lr']} "
          "cosine (warm-up 0.1), wd 5e-4, crop+flip, KD from the original α 0.5 T 4. The lr is not "
          "b1_finetune's 0.02: in a one-off 20-step probe before this run (uniform-l1, −45.75 %, refit on 256 "
          "images, 80.0 % lossless) lr 0.02 ended at 19.1 %, 0.005 at 67.2 %, 0.001 at 79.8 %.",
          "* Time: wall seconds of the stage alone (prune incl. verification / refit; fine-tune incl. its "
          "set-up), not the evaluation.", "",
          "| target MACs cut | method | stage | MACs cut | params cut | top-1 lossless | top-1 JPEG | time (s) | note |",
          "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        if not c["stages"]:
            md.append(f"| {100 * c['budget']:.1f} % | {c['method']} | – | – | – | – | – | – | {c.get('note', '')} |")
        for st in c["stages"]:
            md.append(f"| {100 * c['budget']:.1f} % | {c['method']} | {st['stage']} | {_pct(st['macs_reduction'])} % | "
                      f"{_pct(st['params_reduction'])} % | {_pct(st['acc_lossless'])} % | {_pct(st['acc_jpeg'])} % | "
                      f"{st['seconds']:.0f} | {st['note']} |")
    md += ["", "Top-1 lossless / JPEG (%) by stage:", "",
           "| target | method | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for c in result["cells"]:
        got = {st["stage"]: f"{_pct(st['acc_lossless'])} / {_pct(st['acc_jpeg'])}" for st in c["stages"]}
        md.append(f"| {100 * c['budget']:.1f} % | {c['method']} | " + " | ".join(got.get(k, "–") for k in STAGES) + " |")
    ran = [f"{c['method']} @ {100 * c['budget']:.1f} % ({len(c['stages'])}/4 stages)" for c in result["cells"]]
    md += ["", f"Cells run: {', '.join(ran) or 'none'}."]
    if result.get("not_run"):
        md.append("Not run (time): " + ", ".join(f"{c['method']} @ {100 * c['budget']:.1f} %" for c in result["not_run"]) + ".")
    md += [f"* {n}" for n in result.get("notes", [])]
    if "wall_s" in result:
        md.append(f"Total wall time so far: {result['wall_s'] / 60:.0f} min.")
    tmp = out / "b1_stages.md.tmp"
    tmp.write_text("\n".join(md) + "\n")
    os.replace(tmp, out / "b1_stages.md")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rerender"]:       # rewrite the Markdown from an existing JSON
        out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "benchmarks" / "results"
        write(out, json.loads((out / "b1_stages.json").read_text()))
    else:
        main()
