"""Test helpers: prune a model with a random plan and check it against the masked original.

The tolerance rule is the oracle's (``onnxprune.verify.oracle.output_diff``, RTOL/ATOL).
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analysis import Analysis, analyze
from onnxprune.rewrite.plan import Plan
from onnxprune.rewrite.apply import apply_plan
from onnxprune.scoring.selection import select_kept
from onnxprune.verify.oracle import RTOL, VerifyReport, compare, masked_model, output_diff
from onnxprune.runtime import make_session, random_inputs

__all__ = ["RTOL", "random_plan", "prune_and_check"]


def random_plan(analysis: Analysis, keep: float = 0.5, seed: int = 0) -> Plan:
    """Keep a random ``keep`` fraction (at least one channel) of every prunable group."""
    rng = np.random.default_rng(seed)
    kept = {}
    for g in analysis.prunable:
        blocks = g.equal_blocks
        n = max(blocks, int(round(g.channels * keep / blocks)) * blocks)
        if n < g.channels:
            kept[g.id] = select_kept(rng.random(g.channels), n, blocks)
    return Plan.build(analysis, kept)


def prune_and_check(model: onnx.ModelProto, keep: float = 0.5, seed: int = 0,
                    min_pruned_groups: int = 1) -> tuple[onnx.ModelProto, Plan, VerifyReport]:
    """Prune with a random plan, then assert: the checker passes, the pruned model equals the
    masked original (the oracle's tolerance), and the masks did change the original's outputs
    (beyond that tolerance)."""
    analysis = analyze(model)
    plan = random_plan(analysis, keep, seed)
    pruned_groups = sum(len(g.kept) < g.channels for g in plan.groups)
    assert pruned_groups >= min_pruned_groups, (
        f"only {pruned_groups} groups pruned; skips: {[g.skip_reasons for g in analysis.groups]}")
    pruned = apply_plan(analysis, plan)
    report = compare(model, pruned, plan, rtol=RTOL, seed=seed)
    assert report.ok, f"pruned model differs from the masked original: {report}"
    feeds = random_inputs(model, seed=seed)
    a = make_session(model).run(None, feeds)
    b = make_session(masked_model(model, plan)).run(None, feeds)
    assert any(not output_diff("", x, y).ok for x, y in zip(a, b)), \
        "masks did not change the outputs: the check would be vacuous"
    return pruned, plan, report
