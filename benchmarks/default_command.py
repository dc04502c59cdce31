"""What a new user gets from the command they type first, on the pretrained ResNet-56.

Runs `onnxprune prune r56.onnx -o OUT --flops-reduction F --data train.tar.gz --norm imagenet
--calib-images N` (every default: infoconc, per-group channel steps, refit) and the variants that
switch one default off (exact counts with --round-to 1, channels only with --remove-branches off,
--recover none), then measures top-1 on the
1017 lossless and the JPEG test images and the latency of all models interleaved in one
`onnxprune bench` run. Each prune runs in its own process; wall time and peak RSS are recorded.

Usage: python benchmarks/default_command.py [--reduction 0.455] [--calib 1024] [--batch 64] [--jpeg-test 10000]
                                            [--variants default,exact,...] [--name default_command]
Writes benchmarks/results/NAME.{md,json}. Needs ../shared/assets (or ONNXPRUNE_ASSETS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from b1_common import ASSETS, pretrained_resnet56, test_sets, top1_both  # noqa: E402

VARIANTS = {            # key -> (name, extra prune options)
    "default": ("default", []),
    "exact": ("exact counts (--round-to 1)", ["--round-to", "1"]),
    "channels-only": ("channels only (--remove-branches off)", ["--remove-branches", "off"]),
    "criterion": ("channels by criterion (--channel-choice criterion)", ["--channel-choice", "criterion"]),
    "no-refit": ("no refit (--recover none)", ["--recover", "none"]),
    "exact-no-refit": ("exact counts, no refit", ["--round-to", "1", "--recover", "none"]),
}


PEAK = ("import resource, sys; from onnxprune.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def _prune(model: Path, out: Path, extra: list[str], args) -> dict:
    cmd = [sys.executable, "-c", PEAK, "prune", str(model), "-o", str(out),
           "--flops-reduction", str(args.reduction), "--data", str(ASSETS / "cifar10-jpeg" / "train.tar.gz"),
           "--norm", "imagenet", "--calib-images", str(args.calib), "--batch", str(args.batch), "--no-measure",
           *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"prune failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    peak_kb = int(res.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    stages = {}             # the summary's "timings: analysis 0.15s, latency_model 9.70s, ..." line
    for line in res.stdout.splitlines():
        if line.strip().startswith("timings:"):
            for part in line.split(":", 1)[1].split(","):
                name, _, secs = part.strip().rpartition(" ")
                stages[name] = float(secs.rstrip("s"))
    return {"command": "onnxprune prune r56.onnx -o OUT " + " ".join(cmd[7:]), "wall_s": wall,
            "peak_rss_mb": peak_kb / 1024, "stages_s": stages,
            "table_and_allocation_s": stages.get("latency_model", 0.0) + stages.get("allocation", 0.0),
            "stdout": res.stdout[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reduction", type=float, default=0.455)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--jpeg-test", type=int, default=10000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated keys of VARIANTS to run")
    ap.add_argument("--name", default="default_command", help="result file name (without suffix)")
    args = ap.parse_args()
    keys = [k for k in args.variants.split(",") if k]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    from onnxprune.model_io import load_model, save_model

    tmp = Path(tempfile.mkdtemp())
    base = tmp / "r56.onnx"
    save_model(pretrained_resnet56(), base)
    lossless, jpeg = test_sets(args.jpeg_test)
    rows, paths = [], [base]
    a_l, a_j = top1_both(load_model(base), lossless, jpeg)
    rows.append({"variant": "unpruned", "acc_lossless": a_l, "acc_jpeg": a_j})
    for i, (name, extra) in enumerate(VARIANTS[k] for k in keys):
        out = tmp / f"r56-v{i}.onnx"
        info = _prune(base, out, extra, args)
        plan = json.loads(out.with_suffix(".plan.json").read_text())
        a_l, a_j = top1_both(load_model(out), lossless, jpeg)
        rows.append({"variant": name, "file": out.name, "acc_lossless": a_l, "acc_jpeg": a_j,
                     "macs_reduction": plan["budget"]["achieved"]["macs_reduction"], **info})
        paths.append(out)
        print(f"{name}: MACs -{100 * rows[-1]['macs_reduction']:.2f}%, lossless {100 * a_l:.2f}%, "
              f"jpeg {100 * a_j:.2f}%, {info['wall_s']:.0f} s, {info['peak_rss_mb']:.0f} MB", flush=True)
    bench = tmp / "bench"
    subprocess.run([sys.executable, "-m", "onnxprune.cli", "bench", *map(str, paths), "--batch", f"1,{args.batch}",
                    "--min-time", "8", "-o", str(bench), "-q"], check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    report = json.loads(bench.with_suffix(".json").read_text())
    speed = {(p["model"], p["batch"]): p["speedup_rounds"] for p in report["pairs"]}
    for r in rows[1:]:
        for b in (1, args.batch):
            r[f"speedup_b{b}"] = speed.get((r["file"], b))
    load = os.getloadavg()
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_at_end": load,
              "reduction": args.reduction, "calib": args.calib, "batch": args.batch, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    ideal = 1 / (1 - args.reduction)
    md = [f"# The first command, on the pretrained ResNet-56 (-{100 * args.reduction:.1f} % MACs, ideal speed-up "
          f"{ideal:.2f}x)", "",
          f"{args.calib} unlabelled JPEG train images, ImageNet mean/std; top-1 on the 1017 lossless test images and "
          f"the {len(jpeg[1])} JPEG test images; speed-up = median of per-round ratios, onnxruntime CPU, models "
          f"interleaved in one `onnxprune bench` run; {os.cpu_count()} cores, load average at the end "
          f"{load[0]:.2f}. Command: `{rows[1]['command']}` plus the variant's options.", "",
          f"| variant | MACs cut | top-1 lossless | top-1 JPEG | speed-up b1 | speed-up b{args.batch} | prune wall s | "
          "tables + allocation s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cut = f"{100 * r['macs_reduction']:.1f} %" if "macs_reduction" in r else "-"
        sp = [f"{r.get(k):.2f}x" if r.get(k) else "-" for k in ("speedup_b1", f"speedup_b{args.batch}")]
        md.append(f"| {r['variant']} | {cut} | {100 * r['acc_lossless']:.2f} % | {100 * r['acc_jpeg']:.2f} % | "
                  f"{sp[0]} | {sp[1]} | {r.get('wall_s', 0):.0f} | {r.get('table_and_allocation_s', 0):.0f} | "
                  f"{r.get('peak_rss_mb', 0):.0f} |")
    (args.out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
