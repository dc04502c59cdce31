"""How closely pruned face detectors track the original: score-map error and box agreement.

Both Ultra-Light-Fast face detectors of the assets (slim-320 and RFB-320, outputs ``scores``
(1, 4420, 2) and ``boxes`` (1, 4420, 4) in corner form) are pruned with the CLI's default with data
(infoconc) at each MACs budget, once one-shot (``--recover none``) and once with the default
least-squares refit, on the same calibration images. On held-out images (disjoint from the
calibration ones) it reports:

* score MAE: mean |face probability - original's| over every anchor;
* on the **confident anchors** — per image the original's ``--top`` anchors by face probability
  (and, separately counted, those above 0.5): the mean IoU of the pruned box with the original box,
  the share with IoU >= 0.5, and the share of the original's top anchors still in the pruned model's
  top ``--top`` (rank agreement).

No face images ship with the assets: CIFAR-10 JPEGs resized to 320x240 stand in, so the confident
anchors are the detector's strongest responses on those images, not necessarily faces. The label-free
fine-tune from both starting points is in bench_labelfree.py.

    python benchmarks/bench_detector_fidelity.py [--budgets 0.3,0.5] [--calib 64] [--test 64] [--top 20]

Writes {out}/detector_fidelity.{md,json} (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from results_io import save_rows  # noqa: E402  (benchmarks/ is the script folder)
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
MODELS = ["face-detector-version-slim-320.onnx", "face-detector-version-RFB-320.onnx"]
PRE_ARGS = ["--size", "240x320", "--no-scale", "--mean", "127,127,127", "--std", "128,128,128"]


def run_outputs(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(face probabilities (N, A), boxes (N, A, 4)) of the model at ``path`` on images ``x``."""
    from onnxprune.model_io import load_model
    from onnxprune.runtime import AnyBatchSession
    session = AnyBatchSession(load_model(path))
    outs = [session.run(x[i:i + 8]) for i in range(0, len(x), 8)]
    names = session.output_names
    scores = np.concatenate([o[names.index("scores")] for o in outs])[..., 1]
    boxes = np.concatenate([o[names.index("boxes")] for o in outs])
    return scores, boxes


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner-form boxes (..., 4) pairwise along the leading axes."""
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda z: np.prod(np.clip(z[..., 2:] - z[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def fidelity(ref: tuple, got: tuple, top: int) -> dict:
    (s0, b0), (s1, b1) = ref, got
    idx = np.argsort(-s0, axis=1)[:, :top]                       # the original's confident anchors
    rows = np.arange(len(s0))[:, None]
    ious = iou(b0[rows, idx], b1[rows, idx])
    kept = np.argsort(-s1, axis=1)[:, :top]
    rank = np.mean([len(set(idx[i]) & set(kept[i])) / top for i in range(len(s0))])
    strong = s0 > 0.5
    strong_iou = iou(b0[strong], b1[strong]) if strong.any() else np.zeros(0)
    return {"score_mae": float(np.abs(s1 - s0).mean()), "top_score_mae": float(np.abs(s1[rows, idx] - s0[rows, idx]).mean()),
            "top_mean_iou": float(ious.mean()), "top_iou_ge_0.5": float((ious >= 0.5).mean()),
            "top_rank_agreement": float(rank), "strong_anchors": int(strong.sum()),
            "strong_mean_iou": float(strong_iou.mean()) if strong_iou.size else None,
            "strong_still_above_0.5": float((s1[strong] > 0.5).mean()) if strong.any() else None}


def prune(model: Path, out: Path, budget: float, calib: int, recover: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(model), "-o", str(out), "-q",
                    "--flops-reduction", str(budget), "--data", str(ASSETS / "cifar10-jpeg" / "train.tar.gz"),
                    "--calib-images", str(calib), "--recover", recover, "--overwrite", "--no-measure", *PRE_ARGS],
                   check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def markdown(rows: list[dict], args) -> str:
    out = ["# Pruned face detectors against the original", "",
           f"`python benchmarks/bench_detector_fidelity.py --budgets {args.budgets} --calib {args.calib} "
           f"--test {args.test} --top {args.top}`: CLI default with data (infoconc), {args.calib} calibration "
           f"images (CIFAR-10 train JPEGs at 320x240), {args.test} held-out images (CIFAR-10 test JPEGs). "
           f"Confident anchors: per image the original's top {args.top} by face probability; strong: "
           "original face probability > 0.5. IoU of the pruned box with the original box at the same anchor.", "",
           "| model | MACs cut | start | score MAE | top-anchor score MAE | top mean IoU | top IoU >= 0.5 | "
           "top-k rank agreement | strong anchors | strong mean IoU | strong still > 0.5 | prune s |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, p=4: "" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        out.append(f"| {r['model']} | {100 * r['budget']:.0f} % | {r['recover']} | {fmt(r['score_mae'], 5)} | "
                   f"{fmt(r['top_score_mae'])} | {fmt(r['top_mean_iou'], 3)} | {fmt(r['top_iou_ge_0.5'], 3)} | "
                   f"{fmt(r['top_rank_agreement'], 3)} | {r['strong_anchors']} | {fmt(r['strong_mean_iou'], 3)} | "
                   f"{fmt(r['strong_still_above_0.5'], 3)} | {r['prune_s']:.0f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="0.3,0.5")
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from onnxprune.data import Preprocess, load_dataset
    pre = Preprocess(size=(240, 320), mean=(127.0,) * 3, std=(128.0,) * 3, scale=False)
    test = load_dataset(ASSETS / "cifar10-jpeg" / "test.tar.gz", pre, limit=args.test, seed=1).arrays()[0]
    tmp, rows = Path(tempfile.mkdtemp(prefix="detfid-")), []
    for name in MODELS:
        model = ASSETS / "onnx" / name
        ref = run_outputs(model, test)
        for budget in (float(b) for b in args.budgets.split(",")):
            for recover in ("none", "reconstruct"):
                out = tmp / f"{name}-{budget}-{recover}.onnx"
                secs = prune(model, out, budget, args.calib, recover)
                rows.append({"model": name.replace("face-detector-version-", "").replace(".onnx", ""),
                             "budget": budget, "recover": recover, "prune_s": secs,
                             **fidelity(ref, run_outputs(out, test), args.top)})
                save_rows(args.out, "detector_fidelity", rows, markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
