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
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
CACHE = Path(os.environ.get("ONNXPRUNE_BENCH_CACHE", ROOT / "benchmarks" / "cache"))
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WEIGHTS = ASSETS / "pretrained" / "cifar10-resnet56-4bfd9763.th"
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
    from onnxprune.evaluate import top1_accuracy
    t0 = time.perf_counter()
    model, info = adapted_resnet56()
    (xl, yl), (xj, yj) = test_sets()
    base = pretrained_resnet56()
    print(f"adaptation: {time.perf_counter() - t0:.0f} s; pretrained lossless {100 * top1_accuracy(base, xl, yl):.2f}% "
          f"JPEG {100 * top1_accuracy(base, xj, yj):.2f}%; adapted lossless {100 * top1_accuracy(model, xl, yl):.2f}% "
          f"JPEG {100 * top1_accuracy(model, xj, yj):.2f}%")
