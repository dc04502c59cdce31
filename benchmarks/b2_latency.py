"""B2: latency budgets on the target engine: requested vs measured latency cut, and what it costs.

For each model and batch: the unpruned model, then ``--latency-reduction`` 20/30/40/50 % (tables
built on this machine, cached), the default ``--flops-reduction 0.455`` (per-group channel steps
from the tables) and the same with exact counts; every pruned model is timed against the original
in interleaved rounds (onnxruntime CPU). Reported per variant: requested and predicted latency cut,
the measured feedback rounds a latency budget took and the cut the feedback measured for the round
it kept, the written model's measured latency cut (with its standard error) and speed-up, MACs cut,
and, for ResNet-56 (published CIFAR-10 weights, infoconc on JPEG train images, refitted without
labels as `prune` does by default), top-1 on the 1017 lossless test images. MACs-budget
pruning at equal measured latency: MACs budgets on a grid (default steps), measured, and their
accuracy interpolated at each latency-budget model's measured latency.

Usage: python benchmarks/b2_latency.py [--quick] [--models resnet56,resnet50,mobilenetv2]
                                       [--latency-shapes tables,macs] [--name NAME] [--batches resnet56:64,...]
                                       [--budgets 0.2,0.3,0.4,0.5] [--macs-grid 0.3,0.55,0.65,0.75 | --macs-grid ""]
                                       [--no-defaults]
The machine load (``uptime``) is recorded: latency measured on a shared machine is noisy.
Writes benchmarks/results/b2_latency_budgets{_quick}.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

BATCHES = {"resnet56": (1, 64), "resnet50": (1, 32), "mobilenetv2": (1, 64)}
BUDGETS = (0.2, 0.3, 0.4, 0.5)
MACS_GRID = (0.3, 0.455, 0.55, 0.65, 0.75)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def base_model(name: str):
    from b1_common import pretrained_resnet56
    from models.export import export_model
    from onnxprune.model_io import load_model
    if name == "resnet56":
        return pretrained_resnet56()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"b2_{name}.onnx"
    export_model(name, path)
    return load_model(path)


class Runner:
    """Prunes one model at one batch, times each variant against the original, scores accuracy."""

    def __init__(self, name, model, batch, calib, test, rounds, metrics_cache):
        from onnxprune.latency.table import engine_for
        self.name, self.model, self.batch, self.calib, self.test = name, model, batch, calib, test
        self.rounds, self.metrics = rounds, metrics_cache
        self.engine = engine_for("cpu")
        self.rows = []

    def run(self, label: str, **config) -> dict:
        from onnxprune.latency.measure import measure_pair
        from onnxprune.pipeline import PruneConfig, Pruner
        from onnxprune.tools.evaluate import top1_accuracy
        method = "infoconc" if self.calib is not None else "uniform-l1"
        t0 = time.perf_counter()
        p = Pruner(PruneConfig(method=method, batch=self.batch, **config))
        p.fit(self.model, self.calib, metrics=self.metrics.get("m"))
        self.metrics["m"] = p.metrics_ or None
        res = p.transform(self.model)
        prune_s = time.perf_counter() - t0
        got = measure_pair(self.model, res.model, self.engine, self.batch, rounds=self.rounds)
        lat = res.plan.budget.get("latency", {})
        row = {"variant": label, "batch": self.batch, "requested": config.get("latency_reduction"),
               "macs_cut": res.plan.budget["achieved"]["macs_reduction"],
               "predicted_cut": lat.get("predicted", {}).get("reduction"),
               "measured_cut": got["reduction"], "measured_cut_se": got["reduction_se"],
               "timing_rounds": got["rounds"], "speedup": got["speedup"],
               "original_ms": 1e3 * got["original_s"], "pruned_ms": 1e3 * got["pruned_s"],
               "ideal_speedup": 1 / (1 - res.plan.budget["achieved"]["macs_reduction"]),
               "prune_s": prune_s, "latency_model_s": res.timings.get("latency_model_s"), "load": load(),
               "rounds": len(lat.get("feedback", [])) or None,
               "feedback_cut": next((r["measured_reduction"] for r in lat.get("feedback", []) if r["kept"]), None)}
        if self.test is not None:
            row["top1_lossless"] = top1_accuracy(res.model, *self.test)
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row


def equal_latency_accuracy(rows: list[dict]) -> None:
    """For each latency-budget row, the MACs-budget accuracy interpolated at its measured cut."""
    grid = sorted((r["measured_cut"], r["top1_lossless"]) for r in rows
                  if r["variant"].startswith("macs") and "top1_lossless" in r)
    if len(grid) < 2:
        return
    xs, ys = zip(*grid)
    for r in rows:
        if r["variant"].startswith("latency") and "top1_lossless" in r:
            r["macs_budget_top1_at_equal_latency"] = float(np.interp(r["measured_cut"], xs, ys))


def markdown(results: dict) -> str:
    out = [f"# B2 latency budgets ({results['mode']})", "",
           f"onnxruntime {results['ort']} CPU, {results['cpu']}, {results['threads']} threads; "
           f"load average at start {results['load_start']}, at end {results['load_end']} "
           "(a shared machine: measured cuts are noisy).", ""]
    cols = ["variant", "batch", "requested", "predicted_cut", "rounds", "feedback_cut", "measured_cut", "speedup",
            "ideal_speedup",
            "macs_cut", "top1_lossless", "macs_budget_top1_at_equal_latency", "prune_s", "load"]
    for name, rows in results["models"].items():
        out += [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c)
                if v is None:
                    cells.append("")
                elif c in ("speedup", "ideal_speedup"):
                    cells.append(f"{v:.2f}x")
                elif c == "measured_cut" and r.get("measured_cut_se") is not None:
                    cells.append(f"{100 * v:.1f}% ±{100 * r['measured_cut_se']:.1f}")
                elif c in ("requested", "predicted_cut", "feedback_cut", "measured_cut", "macs_cut", "top1_lossless",
                           "macs_budget_top1_at_equal_latency"):
                    cells.append(f"{100 * v:.1f}%")
                elif c == "prune_s":
                    cells.append(f"{v:.0f}s")
                else:
                    cells.append(str(v))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56,resnet50,mobilenetv2")
    ap.add_argument("--quick", action="store_true",
                    help="ResNet-56 at batch 64 only, budgets 30/40 %%, 3 timing rounds")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per pruned model")
    ap.add_argument("--latency-shapes", default="macs",
                    help="comma-separated --latency-shape values to run the latency budgets with (tables, macs)")
    ap.add_argument("--name", default=None, help="results file name (default b2_latency_budgets[_quick])")
    ap.add_argument("--batches", default=None, metavar="MODEL:B,...",
                    help="run only these model/batch pairs (e.g. resnet56:64,resnet50:1; default: "
                         + ", ".join(f"{m} {'/'.join(map(str, b))}" for m, b in BATCHES.items()) + ")")
    ap.add_argument("--budgets", default=None, metavar="F,...",
                    help="latency budgets to request (default " + ",".join(map(str, BUDGETS)) + ")")
    ap.add_argument("--macs-grid", default=None, metavar="F,...",
                    help="MACs budgets for the equal-latency accuracy, besides 0.455 (default "
                         + ",".join(map(str, MACS_GRID)) + "; empty: none)")
    ap.add_argument("--no-defaults", action="store_true",
                    help="skip the --flops-reduction 0.455 default and exact-count rows")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    import onnxruntime as ort
    from onnxprune.latency.table import _cpu_model_and_flags
    from onnxprune.log import configure
    configure(0)
    models = ["resnet56"] if args.quick else args.models.split(",")
    budgets, grid = ((0.3, 0.4), (0.3, 0.455, 0.6)) if args.quick else (BUDGETS, MACS_GRID)
    if args.budgets is not None:
        budgets = tuple(float(x) for x in args.budgets.split(",") if x)
    if args.macs_grid is not None:
        grid = tuple(float(x) for x in args.macs_grid.split(",") if x)
    rounds = 3 if args.quick else args.rounds
    results = {"mode": "quick" if args.quick else "full", "ort": ort.__version__, "cpu": _cpu_model_and_flags()[0],
               "threads": os.cpu_count(), "load_start": load(), "models": {}}
    for name in models:
        batches = (64,) if args.quick else BATCHES[name]
        if args.batches:
            wanted = {tuple(p.split(":")) for p in args.batches.split(",")}
            batches = tuple(b for b in batches if (name, str(b)) in wanted)
            if not batches:
                continue
        model = base_model(name)
        calib = test = None
        if name == "resnet56":
            from b1_common import jpeg_train, test_sets
            calib = jpeg_train().sample(256, seed=0)
            test = test_sets(jpeg_limit=1)[0]
        metrics: dict = {}
        for batch in batches:
            r = Runner(name, model, batch, calib, test if batch == batches[-1] else None, rounds, metrics)
            results["models"][f"{name} batch {batch}"] = r.rows

            def run(label, **config):    # saved after every row: a long run stopped early keeps them
                r.run(label, **config)
                save(results, args)
            for shape in args.latency_shapes.split(","):
                for b in budgets:
                    run(f"latency {100 * b:.0f}% ({shape} shape)", latency_reduction=b, round_to="latency",
                        latency_shape=shape)
            if not args.no_defaults:
                run("macs 45.5% default steps", flops_reduction=0.455, round_to="latency")
                run("macs 45.5% exact counts", flops_reduction=0.455, round_to=1)
            if r.test is not None and grid:
                for f in grid:
                    if f != 0.455:
                        run(f"macs {100 * f:.1f}% default steps", flops_reduction=f, round_to="latency")
                equal_latency_accuracy(r.rows)
                save(results, args)
    print(markdown(save(results, args)))


def save(results: dict, args) -> dict:
    """Write the results so far (JSON and Markdown); returns them."""
    results["load_end"] = load()
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / (args.name or f"b2_latency_budgets{'_quick' if args.quick else ''}")
    Path(f"{prefix}.json").write_text(json.dumps(results, indent=1) + "\n")
    Path(f"{prefix}.md").write_text(markdown(results) + "\n")
    return results


if __name__ == "__main__":
    main()
