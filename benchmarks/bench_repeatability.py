"""How repeatable `onnxprune bench`'s speed-up is: the same pair timed again and again.

The pretrained ResNet-56 and a copy pruned data-free (uniform-l1, per-group channel steps, 50 % of
the MACs) are timed against each other ``--repeats`` times with `bench_models`, once with the
default precision stop (paired speed-up's standard error at most 1 % of it, at most 10 s per
model) and once stopping at the minimums (`precision=None`, 1 s per model), alternating the two so
that drift of the machine hits both alike. Reported per batch and setting: the mean speed-up, its
standard deviation over the repeats, the mean reported standard error and the seconds per run.

Usage: python benchmarks/bench_repeatability.py [--batches 1,64] [--repeats 6] [--name bench_repeatability]
Writes benchmarks/results/NAME.{md,json}. Needs ../shared/assets (or ONNXPRUNE_ASSETS).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from b1_common import pretrained_resnet56  # noqa: E402

SETTINGS = {"precision 1 % (default)": {}, "minimums only": {"precision": None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--name", default="bench_repeatability")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    import onnx

    from onnxprune.log import configure
    from onnxprune.pipeline import PruneConfig, prune
    from onnxprune.tools.bench import bench_models
    configure(0)
    batches = [int(b) for b in args.batches.split(",")]
    tmp = Path(tempfile.mkdtemp())
    model = pretrained_resnet56()
    original, pruned = tmp / "resnet56.onnx", tmp / "resnet56-pruned.onnx"
    onnx.save(model, str(original))
    onnx.save(prune(model, PruneConfig(flops_reduction=0.5, round_to="latency", batch=max(batches)),
                    data=None).model, str(pruned))
    runs: dict = {(b, s): [] for b in batches for s in SETTINGS}
    for _ in range(args.repeats):
        for b in batches:
            for setting, kw in SETTINGS.items():
                t0 = time.perf_counter()
                pair = bench_models([original, pruned], batches=[b], **kw).pairs[0]
                runs[(b, setting)].append((pair.speedup_rounds, pair.speedup_rounds_se, time.perf_counter() - t0))
                print(b, setting, runs[(b, setting)][-1], flush=True)
    rows = []
    for (b, setting), got in runs.items():
        sp = np.array([g[0] for g in got])
        se = [g[1] for g in got if g[1] is not None]
        rows.append({"batch": b, "setting": setting, "repeats": len(got), "speedup_mean": float(sp.mean()),
                     "speedup_sd": float(sp.std(ddof=1)) if len(sp) > 1 else None,
                     "reported_se_mean": float(np.mean(se)) if se else None,
                     "seconds_per_run": float(np.mean([g[2] for g in got]))})
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_at_end": os.getloadavg(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Repeatability of `onnxprune bench`", "",
             f"{result['machine']}, {result['cores']} cores; ResNet-56 against a copy pruned 50 % (uniform-l1, "
             f"channel steps), {args.repeats} repeats each, settings alternated.", "",
             "| batch | setting | speed-up (mean) | sd over repeats | reported SE (mean) | s per run |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['setting']} | {r['speedup_mean']:.3f}× | {r['speedup_sd']:.3f} | "
                     f"{r['reported_se_mean']:.3f} | {r['seconds_per_run']:.1f} |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
