"""Latency tables (cache key and reuse), prediction, per-group steps and the latency budget, with
fake timings: deterministic, no assertion on real time."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from onnxprune.analysis import analyze
from onnxprune.latency import model as latency_model
from onnxprune.latency.layers import Geometry, model_layers
from onnxprune.latency.steps import staircase_step
from onnxprune.latency.table import Engine, LayerTable, TableBuilder, alignment_class, grid, table_key
from onnxprune.pipeline import PruneConfig, Pruner
from tests.onnx_builders import small_resnet

ENGINE = Engine("cpu", "CPUExecutionProvider", (16, 8), 2)
GEO = Geometry("conv", 32, 32, (8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))


def fake_time(geo, cin, cout, batch, engine, repeats=5):
    """A staircase in steps of 16: off-block counts cost as much as the next block up, plus 30 %."""
    cls = alignment_class(engine.blocks, *([cin] if geo.vary_in else []), *([cout] if geo.vary_out else []))
    penalty = {16: 1.0, 8: 1.15, 1: 1.3}[cls]
    return batch * 1e-6 * (1 + cin * cout * penalty * np.prod(geo.spatial or (1,)) / 64)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, *a, **k):
        self.calls += 1
        return fake_time(*a, **k)


def test_table_cache_key_and_reuse(tmp_path):
    measure = Counting()
    first = TableBuilder(ENGINE, 4, cache=tmp_path, measure=measure)
    t1 = first.table(GEO)
    assert measure.calls == len(grid(GEO, ENGINE.blocks)) and first.measured == 1
    path = first.path(GEO)
    assert path.is_file() and path.parent == tmp_path
    assert json.loads(path.read_text())["batch"] == 4
    again = TableBuilder(ENGINE, 4, cache=tmp_path, measure=measure)
    t2 = again.table(GEO)
    assert measure.calls == len(grid(GEO, ENGINE.blocks)) and again.reused == 1 and again.measured == 0
    assert t2.points == t1.points
    # another batch, geometry, thread count or provider is another table
    keys = {table_key(GEO, 4, ENGINE), table_key(GEO, 8, ENGINE),
            table_key(dataclasses.replace(GEO, spatial=(16, 16)), 4, ENGINE),
            table_key(GEO, 4, dataclasses.replace(ENGINE, threads=1)),
            table_key(GEO, 4, dataclasses.replace(ENGINE, provider="CUDAExecutionProvider"))}
    assert len(keys) == 5


def test_grid_covers_every_alignment_class():
    pts = grid(GEO, ENGINE.blocks)
    classes = {alignment_class(ENGINE.blocks, a, b) for a, b in pts}
    assert classes == {16, 8, 1} and (32, 32) in pts


def test_prediction_is_monotone_on_the_block_grid(tmp_path):
    table = TableBuilder(ENGINE, 4, cache=tmp_path, measure=fake_time).table(GEO)
    on_grid = [table.latency(n, n) for n in (16, 32)]
    assert on_grid == sorted(on_grid)
    fine = [table.latency(n, 32) for n in range(1, 33)]
    same_class = {c: [t for n, t in zip(range(1, 33), fine) if alignment_class((16, 8), n) == c] for c in (16, 8, 1)}
    for c, ts in same_class.items():
        assert ts == sorted(ts), c
    # the staircase: 31 channels cost more than 32 on this engine
    assert table.latency(31, 32) > table.latency(32, 32)


def test_steps_from_a_synthetic_table():
    def stair(step):
        return lambda n: -(-n // step) * step * 1e-3
    assert staircase_step(64, (16, 8), stair(16))[0] == 16
    assert staircase_step(64, (16, 8), stair(8))[0] == 8
    assert staircase_step(64, (16, 8), lambda n: n * 1e-3)[0] == 1
    # 16 channels: never a step of 16 (the group would be unprunable), 8 when the table says so
    assert staircase_step(16, (16, 8), stair(16))[0] == 8
    assert staircase_step(16, (16, 8), stair(8))[0] == 8
    assert staircase_step(12, (16, 8), stair(8))[0] == 1
    # 32 channels on a staircase of 16 keep 16 or 32 (24 would cost what 32 costs)
    assert staircase_step(32, (16, 8), stair(16))[0] == 16


def _fake_model_time(model, engine, batch, repeats=10):
    """Whole-model 'measurement': the sum of the fake layer times + a constant."""
    a = analyze(model)
    layers, _ = model_layers(a)
    return 5e-5 + 1.5 * sum(fake_time(l.geometry, l.geometry.cin, l.geometry.cout, batch, engine) for l in layers)


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXPRUNE_LATENCY_CACHE", str(tmp_path))
    monkeypatch.setattr(latency_model, "measure_model", _fake_model_time)
    monkeypatch.setattr("onnxprune.latency.table.measure_layer", fake_time)
    monkeypatch.setattr("onnxprune.latency.hooks.engine_for", lambda target: ENGINE)
    monkeypatch.setattr("onnxprune.latency.measure.measure_models",
                        lambda models, engine, batch, *args, **kw: [_fake_model_time(m, engine, batch) for m in models])
    orig = TableBuilder.__init__

    def init(self, engine, batch, cache=None, repeats=5, measure=fake_time):
        orig(self, engine, batch, cache, repeats, fake_time)
    monkeypatch.setattr(TableBuilder, "__init__", init)


def test_latency_budget_is_met_on_the_prediction(fake_engine):
    model = small_resnet()
    pruner = Pruner(PruneConfig(latency_reduction=0.3, batch=2, verify=False, latency_rounds=0)).fit(model)
    rec = pruner.plan().budget["latency"]
    assert rec["requested_reduction"] == 0.3
    assert rec["predicted"]["reduction"] >= 0.3 - 1e-9
    assert pruner.latency_.scale == pytest.approx(1.5, rel=1e-3)
    lm = pruner.latency_
    assert lm.predict({}) == pytest.approx(lm.measured_full)


def test_latency_budget_out_of_reach_names_the_largest_cut(fake_engine):
    from onnxprune.errors import BudgetError
    with pytest.raises(BudgetError, match=r"at most .* %"):
        Pruner(PruneConfig(latency_reduction=0.99, batch=2, verify=False, latency_rounds=0)).fit(small_resnet())


def test_default_steps_from_the_tables_keep_the_budget(fake_engine):
    model = small_resnet()
    pruner = Pruner(PruneConfig(flops_reduction=0.3, round_to="latency", verify=False)).fit(model)
    steps = pruner.latency_steps_
    assert steps and all(c.step in (1, 8, 16) for c in steps.values())
    assert all(c.step * 2 <= c.channels or c.step == 1 for c in steps.values())
    achieved = 1 - pruner.cost_.macs(pruner.kept_) / pruner.full_["macs"]
    assert 0.3 <= achieved <= 0.31 + 1e-9


def test_unknown_target_is_one_line():
    from onnxprune.latency.table import TargetError, engine_for
    with pytest.raises(TargetError, match="'tpu'"):
        engine_for("tpu")


def test_stale_cached_tables_are_measured_again(tmp_path, monkeypatch):
    """Tables cached under other conditions (10x slower) leave a negative remainder: re-timed once."""
    monkeypatch.setattr(latency_model, "measure_model", _fake_model_time)
    model = small_resnet()
    a = analyze(model)
    slow = lambda *args, **kw: 10 * fake_time(*args, **kw)  # noqa: E731
    latency_model.build_latency_model(model, a, ENGINE, 2, TableBuilder(ENGINE, 2, cache=tmp_path, measure=slow))
    builder = TableBuilder(ENGINE, 2, cache=tmp_path, measure=fake_time)
    lm = latency_model.build_latency_model(model, a, ENGINE, 2, builder)
    assert lm.remainder >= 0 and lm.scale == pytest.approx(1.5, rel=1e-3)
    again = TableBuilder(ENGINE, 2, cache=tmp_path, measure=slow)     # the cache now holds the new timings
    lm2 = latency_model.build_latency_model(model, a, ENGINE, 2, again)
    assert again.measured == 0 and lm2.remainder >= 0


def _table_model(tmp_path, monkeypatch):
    monkeypatch.setattr(latency_model, "measure_model", _fake_model_time)
    model = small_resnet()
    lm = latency_model.build_latency_model(model, analyze(model), ENGINE, 2,
                                           TableBuilder(ENGINE, 2, cache=tmp_path, measure=fake_time))
    return model, lm


def test_network_check_overrides_the_tables_where_it_can_measure(tmp_path, monkeypatch):
    """Like groups are cut together inside the whole model: an in-between count that buys (almost)
    nothing makes the block the step; one that buys time everywhere means exact counts."""
    from onnxprune.latency.steps import StepChoice, channel_steps, like_groups, network_steps
    model, lm = _table_model(tmp_path, monkeypatch)
    table = channel_steps(lm)
    calls = []

    def timed(times):
        def measure(models):
            calls.append([len(m.graph.node) for m in models])
            assert len(models) == 3 and models[0] is model
            return list(times)
        return measure
    stair = network_steps(model, lm, table, measure=timed([1.0, 0.99, 0.8]))
    assert calls, "no class was timed"
    for like in like_groups(lm, lm.analysis.prunable):
        g = like[0]
        if g.id in stair and "in the network" in stair[g.id].reason and g.equal_blocks == 1:
            assert stair[g.id].step == max(b for b in ENGINE.blocks if g.channels >= 2 * b and g.channels % b == 0)
    linear = network_steps(model, lm, table, measure=timed([1.0, 0.9, 0.8]))
    assert any(c.step == 1 and "every count buys time" in c.reason for c in linear.values())
    noise = network_steps(model, lm, table, measure=timed([1.0, 0.999, 0.995]))
    assert {g: c.step for g, c in noise.items()} == {g: c.step for g, c in table.items()}
    # nothing worth timing: the tables' reading stands and nothing is measured
    monkeypatch.setattr("onnxprune.latency.steps.NETWORK_NOISE", 10.0)
    calls.clear()
    kept = network_steps(model, lm, table, measure=timed([1.0, 1.0, 0.5]))
    assert not calls and {g: c.step for g, c in kept.items()} == {g: c.step for g, c in table.items()}
    assert all(isinstance(c, StepChoice) for c in kept.values())


def test_network_check_that_cannot_run_keeps_the_tables(tmp_path, monkeypatch):
    from onnxprune.latency.steps import channel_steps, network_steps
    model, lm = _table_model(tmp_path, monkeypatch)
    table = channel_steps(lm)

    def broken(models):
        raise RuntimeError("engine refused the model")
    kept = network_steps(model, lm, table, measure=broken)
    assert {g: c.step for g, c in kept.items()} == {g: c.step for g, c in table.items()}
    assert any("not checked in the network (engine refused" in c.reason for c in kept.values())
