"""Random CNNs, exported with both torch exporters, pruned under random settings.

Every case must pass (checker, onnxruntime, unchanged inputs/outputs, masked oracle) or be refused
with a clear OnnxPruneError; a static-input model is never refused for want of shapes. The
default run covers 120 seeded cases; ``./run.sh test --all`` (the ``slow`` marker) runs 500 more.
"""
from __future__ import annotations

import pytest

from fuzz_harness import ExportCache, run_case, shape_refusal
from random_cnn import random_case


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    return ExportCache(tmp_path_factory.mktemp("fuzz-exports"))


def _check(seed: int, dynamo_share: float, export_cache, tmp_path) -> None:
    case = random_case(seed, dynamo_share=dynamo_share)
    outcome = run_case(case, export_cache, tmp_path)
    if outcome.status == "export-failed":
        pytest.skip(f"torch could not export {case.describe()}: {outcome.reason}")
    assert outcome.status in ("passed", "refused"), f"{case.describe()}: {outcome.reason}"
    assert not shape_refusal(outcome), f"{case.describe()}: refused for shapes: {outcome.reason}"
    if outcome.status == "refused":
        assert outcome.reason and "\n" not in outcome.reason


@pytest.mark.parametrize("seed", range(120))
def test_random_cnn(seed, export_cache, tmp_path):
    _check(seed, 0.05, export_cache, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1500))
def test_random_cnn_more(seed, export_cache, tmp_path):
    _check(seed, 0.15, export_cache, tmp_path)
