"""What the label-free refit costs: time and peak memory against the number of calibration images.

For each model the structural prune is done once (uniform-l1 at --reduction of the MACs, data-free,
so the allocation does not depend on the images), then :func:`onnxprune.recover.reconstruct` runs
in a fresh process per image count; that process records wall time, CPU time (user + system) and
peak RSS (``ru_maxrss``, which includes loading the images and both models). The normal equations
are accumulated batch by batch, so memory should stay flat as the images grow and time grow
linearly.

Models: the pretrained CIFAR-10 ResNet-56 (JPEG train images at 32x32) and ResNet-50 at 224x224
(random weights from models/: cost does not depend on the weights; the CIFAR JPEGs resized to 224
stand in for images).

    python benchmarks/bench_reconstruct_cost.py [--models resnet56,resnet50]
        [--resnet56-images 256,512,1024] [--resnet50-images 128,256,512] [--memory 1024,64]

``--memory`` lists the caps (MB, ``reconstruct(max_memory_mb=...)``, ``--recover-memory``) on the
activations kept between waves: each image count runs once per cap; past the cap the other
images are recomputed, so a small cap trades time for memory.

Writes {out}/reconstruct_cost.{md,json} (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from results_io import save_rows  # noqa: E402


def _images(name: str, n: int):
    from b1_common import ASSETS, preprocess
    from onnxprune.data import Preprocess, load_dataset
    pre = preprocess() if name == "resnet56" else Preprocess(size=(224, 224), mean=(0.485, 0.456, 0.406),
                                                             std=(0.229, 0.224, 0.225))
    return load_dataset(ASSETS / "cifar10-jpeg" / "train.tar.gz", pre, limit=n, seed=0).arrays()[0]


def _model(name: str, folder: Path) -> Path:
    from onnxprune.model_io import save_model
    path = folder / f"{name}.onnx"
    if name == "resnet56":
        from b1_common import pretrained_resnet56
        save_model(pretrained_resnet56(), path)
    else:
        from models.export import export_model
        export_model(name, path)
    return path


def one(model_path: str, name: str, n: int, reduction: float, memory_mb: int) -> dict:
    """In this process: prune data-free, refit on ``n`` images under a ``memory_mb`` cap; the cost
    of the refit alone."""
    from onnxprune.model_io import load_model
    from onnxprune.pipeline import PruneConfig, Pruner
    from onnxprune.recover.reconstruct import reconstruct
    model = load_model(model_path)
    pruner = Pruner(PruneConfig(flops_reduction=reduction, method="uniform-l1", verify=False)).fit(model)
    result = pruner.transform(model)
    images = _images(name, n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    _, record = reconstruct(model, result.model, pruner.analysis_, result.plan, images, max_memory_mb=memory_mb)
    return {"model": name, "images": n, "memory_mb": memory_mb, "resident_images": record.resident_images,
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_refit_mb": rss_before, "layers": len(record.layers),
            "macs_cut": result.plan.budget["achieved"]["macs_reduction"]}


def markdown(rows: list[dict], args) -> str:
    out = ["# Cost of the label-free refit", "",
           f"`python benchmarks/bench_reconstruct_cost.py` on {platform.machine()}, {os.cpu_count()} cores, "
           f"onnxruntime CPU; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
           "(wall time on a shared machine is inflated; CPU time is the closer estimate of a quiet one). "
           f"Structural prune: uniform-l1, -{100 * args.reduction:.1f} % MACs. Peak RSS includes the images "
           "and both models.", "",
           "| model | images | cap MB | images keeping activations | layers refitted | wall s | CPU s | "
           "peak RSS MB | RSS before the refit MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['images']} | {r.get('memory_mb', '-')} | {r.get('resident_images', '-')} | "
                   f"{r['layers']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                   f"{r['peak_rss_mb']:.0f} | {r['rss_before_refit_mb']:.0f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet56,resnet50")
    ap.add_argument("--resnet56-images", default="256,512,1024")
    ap.add_argument("--resnet50-images", default="128,256,512")
    ap.add_argument("--reduction", type=float, default=0.455)
    ap.add_argument("--memory", default="1024", help="caps in MB on the activations kept between waves")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--one", nargs=3, metavar=("MODEL_PATH", "NAME", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT", json.dumps(one(args.one[0], args.one[1], int(args.one[2]), args.reduction,
                                       int(args.memory))))
        return
    folder, rows = Path(tempfile.mkdtemp()), []
    for name in args.models.split(","):
        path = _model(name, folder)
        for n, cap in ((int(v), c) for v in getattr(args, f"{name}_images").split(",")
                       for c in args.memory.split(",")):
            res = subprocess.run([sys.executable, __file__, "--one", str(path), name, str(n),
                                  "--reduction", str(args.reduction), "--memory", cap],
                                 capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                raise SystemExit(f"{name} with {n} images (cap {cap} MB) failed:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.rsplit("RESULT", 1)[1]))
            save_rows(args.out, "reconstruct_cost", rows, markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
