"""Fuzz the pruner with seeded random CNNs and write benchmarks/results/fuzz.md and fuzz.json.

Each case: a random network (tests/fuzz/random_cnn.py) exported with the legacy or the dynamo
exporter, BN folded or kept, static or dynamic batch, fp32 or fp16, pruned through the
``onnxprune prune`` code path under a random budget / criterion / allocation / rounding, then
checked (onnx full check, onnxruntime, unchanged inputs/outputs, masked oracle).

    python benchmarks/fuzz.py --cases 2000            # the full run (hours on 2 cores)
    python benchmarks/fuzz.py --cases 300 --start 0   # a shorter one
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fuzz")]

from fuzz_harness import ExportCache, reason_class, run_case, shape_refusal  # noqa: E402
from random_cnn import random_case  # noqa: E402

from onnxprune.log import get_logger, progress  # noqa: E402

log = get_logger("benchmarks.fuzz")


def summarize(outcomes, args, seconds: float) -> dict:
    counts = collections.Counter(o.status for o in outcomes)
    refused = collections.Counter(reason_class(o.reason) for o in outcomes if o.status == "refused")
    analysed = [o for o in outcomes if o.groups]
    groups = sum(o.groups for o in analysed)
    macs = sum(o.macs for o in analysed)
    by_exporter = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by_exporter[o.case.exporter][o.status] += 1
    return {
        "command": " ".join(["python benchmarks/fuzz.py", *sys.argv[1:]]),
        "cases": len(outcomes), "seconds": round(seconds, 1), "start": args.start,
        "dynamo_share": args.dynamo_share,
        "outcomes": dict(counts),
        "by_exporter": {k: dict(v) for k, v in by_exporter.items()},
        "refused_by_reason": dict(refused.most_common()),
        "shape_refusals_with_known_input": sum(shape_refusal(o) for o in outcomes),
        "prunable_group_share": sum(o.prunable_groups for o in analysed) / groups if groups else 0.0,
        "prunable_macs_share": sum(o.prunable_macs for o in analysed) / macs if macs else 0.0,
        "failures": [o.to_dict() for o in outcomes if o.status == "failed"],
        "refusals": [{"case": o.case.describe(), "reason": o.reason} for o in outcomes if o.status == "refused"],
        "export_failures": [o.to_dict() for o in outcomes if o.status == "export-failed"],
    }


def markdown(s: dict) -> str:
    lines = ["# Fuzzing the pruner with random CNNs", "",
             f"`{s['command']}`: {s['cases']} cases in {s['seconds']:.0f} s "
             f"(seeds from {s['start']}, dynamo share {s['dynamo_share']}).", "",
             "| outcome | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(s["outcomes"].items())]
    lines += ["", "| exporter | " + " | ".join(sorted(s["outcomes"])) + " |",
              "|---|" + "---|" * len(s["outcomes"])]
    for exp, c in sorted(s["by_exporter"].items()):
        lines.append(f"| {exp} | " + " | ".join(str(c.get(k, 0)) for k in sorted(s["outcomes"])) + " |")
    lines += ["", f"Share of channel groups that are prunable: **{100 * s['prunable_group_share']:.1f} %**; "
              f"share of MACs in terms touching a prunable group: **{100 * s['prunable_macs_share']:.1f} %**.",
              f"Static-input (or --input-shape) models refused for shape reasons: "
              f"**{s['shape_refusals_with_known_input']}**.", "", "## Refusals by reason", "",
              "| reason (names and numbers elided) | cases |", "|---|---|"]
    lines += [f"| {r.replace('|', '/')} | {n} |" for r, n in s["refused_by_reason"].items()]
    lines += ["", "## Failures", ""]
    lines += [f"* {f['case']}: {f['reason']}" for f in s["failures"]] or ["none"]
    if s["export_failures"]:
        lines += ["", "## Export failures (torch, not counted against the pruner)", ""]
        lines += [f"* {f['case']}: {f['reason']}" for f in s["export_failures"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--dynamo-share", type=float, default=0.15, help="share of cases exported with dynamo")
    p.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "fuzz"),
                   help="output stem (.md and .json are written)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = ExportCache(Path(tmp) / "exports")
        cache.root.mkdir()
        for seed in progress(range(args.start, args.start + args.cases), total=args.cases, desc="fuzz", unit="case"):
            o = run_case(random_case(seed, dynamo_share=args.dynamo_share), cache, Path(tmp) / "work")
            if o.status == "failed":
                log.warning("FAILED %s: %s", o.case.describe(), o.reason)
            outcomes.append(o)
            cache.paths.clear()          # one case per network: keep the disk small
            for f in cache.root.iterdir():
                f.unlink()
    summary = summarize(outcomes, args, time.perf_counter() - t0)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 1 if summary["outcomes"].get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
