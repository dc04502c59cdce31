"""Shared fixtures: where the real assets live, and a cache of exported models per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS") or PROJECT_ROOT.parent / "shared" / "assets")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long combinations (every exporter/BN/model); `./run.sh test --all` runs them")
    config.addinivalue_line("markers", "assets: needs the real models and data in ../shared/assets (skips without them)")
    config.addinivalue_line("markers", "torch: needs PyTorch (the torch bridge, fine-tuning, model exports)")


def pytest_collection_modifyitems(config, items):
    """Mark tests by what they use: the `assets` fixture or an ASSETS path -> assets; torch -> torch."""
    for item in items:
        module = getattr(item, "module", None)
        names = set(getattr(item, "fixturenames", ()))
        if "assets" in names or "ASSETS" in vars(module or object):
            item.add_marker(pytest.mark.assets)
        if "torch" in vars(module or object) or "exported" in names:
            item.add_marker(pytest.mark.torch)


@pytest.fixture(scope="session")
def assets() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"real assets not found at {ASSETS} (set ONNXPRUNE_ASSETS)")
    return ASSETS


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(name, exporter, bn, weights=None) -> path, each combination exported once."""
    from models.export import export_model
    cache: dict = {}
    root = tmp_path_factory.mktemp("exported")

    def get(name: str, exporter: str = "legacy", bn: str = "folded", weights=None) -> Path:
        key = (name, exporter, bn, str(weights))
        if key not in cache:
            path = root / f"{name}-{exporter}-{bn}-{len(cache)}.onnx"
            cache[key] = export_model(name, path, exporter=exporter, bn=bn, weights=weights)
        return cache[key]
    return get


@pytest.fixture(autouse=True)
def _short_speedup_timing(monkeypatch):
    """Speed-up measurements of the test's tiny models need not run 3 s per model (the default that
    keeps a user's 1 ms model's timing noise to a few points), nor longer while the cut is imprecise;
    tests of those limits pass them explicitly."""
    monkeypatch.setattr("onnxprune.latency.measure.MIN_MODEL_S", 0.0)
    monkeypatch.setattr("onnxprune.latency.measure.MAX_MODEL_S", 0.0)     # nor go on for precision
