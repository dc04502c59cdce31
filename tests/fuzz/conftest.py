"""The fuzz tests' ``slow`` marker: skipped unless selected (``-m slow``) or ONNXPRUNE_SLOW_TESTS=1."""
from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long parametrizations, run with -m slow or ONNXPRUNE_SLOW_TESTS=1")


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or "") or os.environ.get("ONNXPRUNE_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or ONNXPRUNE_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
