"""Shared set-up for the B1 scripts: data, the starting model, and the JPEG-adapted ResNet-56.

The pretrained ResNet-56 was trained on lossless CIFAR-10; on the JPEG test set it loses about
10 points. B1 compares every method from the same *adapted* starting model: the pretrained
network fine-tuned once on the JPEG train set (``adapted_resnet56``). The adapted model is cached
under ``benchmarks/cache/`` keyed by the weights' hash and the recipe, so later runs reuse it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the model zoo (models/) lives beside the package, not inside it
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
CACHE = Path(os.environ.get("ONNXPRUNE_BENCH_CACHE", ROOT / "benchmarks" / "cache"))
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WEIGHTS = ASSETS / "pretrained" / "cifar10-resnet56-4bfd9763.th"
OURS = ["infoconc", "itpruner", "uniform-l1", "uniform-hrank"]
PEERS = ["onnxsim-l1", "onnxsim-l2", "onnxsim-wanda"]
# Adaptation recipe: one pass over the JPEG train set, small lr so the pretrained features stay.
ADAPT = dict(epochs=1, batch_size=128, lr=0.01, warmup_epochs=0.05, weight_decay=5e-4, seed=0)


def preprocess():
    from onnxprune.data import Preprocess
    return Preprocess(**IMAGENET)


def jpeg_train():
    from onnxprune.data import load_dataset
    return load_dataset(ASSETS / "cifar10-jpeg" / "train.tar.gz", preprocess(), seed=0)


def test_sets(jpeg_limit: int | None = None):
    """(lossless x, y), (JPEG x, y): the 1017 lossless test images and the JPEG test set."""
    from onnxprune.data import load_dataset
    lossless = load_dataset(ASSETS / "cifar10-lossless-test-first1017.npz", preprocess(), shuffle=False).arrays()
    jpeg = load_dataset(ASSETS / "cifar10-jpeg" / "test.tar.gz", preprocess(), limit=jpeg_limit, seed=0).arrays()
    return lossless, jpeg


def macs_params(model) -> tuple[int, int]:
    """MACs per image and parameters of an ONNX model."""
    from onnxprune.analysis import analyze
    from onnxprune.analysis.cost import CostModel
    c = CostModel(analyze(model))
    return c.macs(), c.params()


def top1_both(model, lossless, jpeg) -> tuple[float, float]:
    """Top-1 on the lossless and the JPEG test set, as returned by ``test_sets``."""
    from onnxprune.tools.evaluate import top1_accuracy
    return top1_accuracy(model, *lossless), top1_accuracy(model, *jpeg)


def onnxsim_matched(model, target, kind, calib):
    """Bisect onnxsim's uniform sparsity until its pruned model's MACs reduction meets ``target``.
    ``kind`` is l1, l2 or wanda; wanda calibrates on the first 8 images of ``calib``.
    Returns (pruned model, sparsity, note); the model is None with the reason in the note."""
    import onnxsim.pruning as P
    feeds = [{model.graph.input[0].name: x[:1]} for x, _ in calib.batches(1)][:8]
    base = macs_params(model)[0]
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        s = (lo + hi) / 2
        try:
            if kind == "wanda":
                pm = P.apply_structured_wanda_pruning(model, calibration_data=feeds, sparsity=s)
            else:
                pm = P.apply_structured_pruning(model, sparsity=s, importance_norm=kind)
        except Exception as exc:  # noqa: BLE001 - report the peer's failure as it is
            return None, None, f"onnxsim failed at sparsity {s:.3f}: {type(exc).__name__}: {exc}"[:300]
        red = 1 - macs_params(pm)[0] / base
        if red >= target:
            best, hi = (pm, s), s
        else:
            lo = s
    if best is None:
        return None, None, f"onnxsim cannot reach {100 * target:.1f}% MACs reduction (max at sparsity 0.95: {100 * red:.1f}%)"
    return best[0], best[1], ""


def pretrained_resnet56():
    """The pretrained ResNet-56 exported to ONNX (legacy exporter, BN folded)."""
    from models.export import export_model
    from onnxprune.model_io import load_model
    path = Path(tempfile.mkdtemp()) / "resnet56.onnx"
    export_model("resnet56", path, exporter="legacy", bn="folded", weights=str(WEIGHTS))
    return load_model(path)


def adapted_resnet56(log=print):
    """The pretrained ResNet-56 fine-tuned once on the JPEG train set (cached). Returns
    (model, info) where info records the recipe, the cache file and the adaptation time."""
    from onnxprune.finetune import FinetuneConfig, finetune
    from onnxprune.model_io import load_model
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:12]
    recipe = hashlib.sha256(json.dumps(ADAPT, sort_keys=True).encode()).hexdigest()[:8]
    path = CACHE / f"resnet56-jpeg-adapted-{digest}-{recipe}.onnx"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        log(f"adapted ResNet-56: cached {path}")
        return load_model(path), json.loads(meta.read_text())
    log(f"adapting the pretrained ResNet-56 to the JPEG train set ({ADAPT}); cached at {path}")
    CACHE.mkdir(parents=True, exist_ok=True)
    summary = finetune(pretrained_resnet56(), jpeg_train(), None, FinetuneConfig(**ADAPT), path, log=log)
    info = {"recipe": ADAPT, "weights_sha256_prefix": digest, "file": path.name,
            "seconds": sum(h["seconds"] for h in summary["history"])}
    meta.write_text(json.dumps(info, indent=1))
    return load_model(path), info


if __name__ == "__main__":
    import time
    from onnxprune.tools.evaluate import top1_accuracy
    t0 = time.perf_counter()
    model, info = adapted_resnet56()
    (xl, yl), (xj, yj) = test_sets()
    base = pretrained_resnet56()
    print(f"adaptation: {time.perf_counter() - t0:.0f} s; pretrained lossless {100 * top1_accuracy(base, xl, yl):.2f}% "
          f"JPEG {100 * top1_accuracy(base, xj, yj):.2f}%; adapted lossless {100 * top1_accuracy(model, xl, yl):.2f}% "
          f"JPEG {100 * top1_accuracy(model, xj, yj):.2f}%")
