"""Latency benchmark (onnxprune.bench) on tiny generated models: statistics, pairs, skipped engines,
fixed-batch models, JSON/Markdown output and clear errors. Fast: every measurement is a few ms."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import types

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnx_builders import Net
import onnxprune.tools.bench as bench
from onnxprune.tools.bench import engines, machine, timing
from onnxprune.tools.bench import (BenchReport, add_bench_arguments, bench_models, parse_batches,
                             parse_engines, run_bench_from_args)
from onnxprune.errors import OnnxPruneError

FAST = dict(warmup=2, min_runs=8, min_time_s=0.01, max_runs=200)
HW = 16


@pytest.fixture
def bench_log():
    """The messages bench_models logs (a handler on its own logger, whatever the CLI configured)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())
    logger, handler = logging.getLogger("onnxprune.tools.bench.run"), Collect(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def conv_net(mid: int, batch="N", seed: int = 0) -> onnx.ModelProto:
    """x[batch,3,16,16] → Conv(3→mid) → Relu → Conv(mid→mid) → Relu → Conv(mid→8)."""
    n = Net(seed=seed)
    x = n.input("x", [batch, 3, HW, HW])
    y = n.relu(n.conv(x, 3, mid))
    y = n.relu(n.conv(y, mid, mid))
    n.output(n.conv(y, mid, 8))
    return n.model()


def conv_macs(mid: int) -> int:
    return 9 * HW * HW * (3 * mid + mid * mid + mid * 8)


def fixed_head_net(baked_reshape: bool = False) -> onnx.ModelProto:
    """Fixed batch 1: Conv → Relu → GAP → (Flatten | Reshape to a Constant [1, 8]) → Gemm."""
    n = Net(seed=1)
    x = n.input("x", [1, 3, 8, 8])
    y = n.gap(n.relu(n.conv(x, 3, 8)))
    if baked_reshape:   # a shape from a Constant node: with_dynamic_batch cannot rewrite it
        shape = n.node("Constant", [], value=numpy_helper.from_array(np.array([1, 8], np.int64)))
        y = n.node("Reshape", [y, shape])
    else:
        y = n.flatten(y)
    n.output(n.gemm(y, 8, 5))
    return n.model()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    paths = {}
    for name, model in (("big", conv_net(16)), ("small", conv_net(8)), ("fixed", fixed_head_net()),
                        ("baked", fixed_head_net(baked_reshape=True)), ("fixed_conv", conv_net(8, batch=1))):
        paths[name] = root / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    return paths


@pytest.fixture(scope="module")
def report(models) -> BenchReport:
    return bench_models([models["big"], models["small"]], batches=(1, 4), engines="ort-cpu",
                        threads=1, **FAST)


def _no_cuda(monkeypatch):
    for module in (engines, machine):
        monkeypatch.setattr(module, "available_providers", lambda prefer="auto": ["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------------
def test_stats_are_consistent(report):
    assert [(r.model, r.batch) for r in report.results] == [
        ("big.onnx", 1), ("small.onnx", 1), ("big.onnx", 4), ("small.onnx", 4)]
    for r in report.results:
        assert r.engine == "ort-cpu" and r.device == "cpu" and not r.dynamic_batch
        assert 0 < r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.iqr_ms >= 0 and r.mean_ms > 0
        assert r.images_per_s == pytest.approx(r.batch / (r.p50_ms / 1e3), rel=1e-9)
        assert FAST["min_runs"] <= r.runs <= FAST["max_runs"]
        assert r.measured_s >= FAST["min_time_s"] or r.runs == FAST["max_runs"]
        assert r.rounds >= 1


def test_stats_function():
    st = bench.latency_stats([0.001 * k for k in range(1, 101)], batch=8)   # 1 .. 100 ms
    assert st["p50_ms"] == pytest.approx(50.5)
    assert st["p90_ms"] == pytest.approx(90.1)
    assert st["p99_ms"] == pytest.approx(99.01)
    assert st["iqr_ms"] == pytest.approx(75.25 - 25.75)
    assert st["mean_ms"] == pytest.approx(50.5)
    assert st["images_per_s"] == pytest.approx(8 / 0.0505)


def test_model_figures_and_pairs(report, models):
    big, small = report.models
    assert big.macs == conv_macs(16) and small.macs == conv_macs(8)
    assert big.params > small.params > 0
    assert big.size_bytes == models["big"].stat().st_size
    assert big.fixed_batch is None and big.inputs == {"x": ["batch", 3, HW, HW]}
    assert len(report.pairs) == 2
    for p in report.pairs:
        assert (p.baseline, p.model, p.engine) == ("big.onnx", "small.onnx", "ort-cpu")
        rb = report.result("big.onnx", "ort-cpu", p.batch)
        rs = report.result("small.onnx", "ort-cpu", p.batch)
        assert p.speedup == pytest.approx(rb.p50_ms / rs.p50_ms)
        assert p.macs_ratio == pytest.approx(conv_macs(16) / conv_macs(8))
        assert p.speedup_rounds is not None and p.speedup_rounds > 0
    assert report.skipped == []
    m = report.machine
    assert m["cpu"] and m["cores"] >= 1 and m["onnxruntime"] and "CPUExecutionProvider" in m["ort_providers_working"]


def test_rounds_interleave_and_stop():
    calls = []

    def runner(tag, secs):
        def fn():
            calls.append(tag)
            time.sleep(secs)
        return engines.Runner(fn, "cpu")
    m = types.SimpleNamespace(name="m")
    a = timing.Slot(m, runner("A", 0.0005))
    b = timing.Slot(m, runner("B", 0.0))
    rounds = timing.measure_rounds([a, b], warmup=1, min_runs=5, min_time_s=0.01, max_runs=10_000)
    assert calls[:2] == ["A", "B"]                         # warm-up
    timed = calls[2:]
    assert timed[0] == "A" and "B" in timed and rounds >= 2
    switches = sum(1 for x, y in zip(timed, timed[1:]) if x != y)
    assert switches >= 2                                   # A…B…B…A rounds, not A then B
    assert len(a.samples) >= 5 and a.total >= 0.01
    assert len(b.samples) >= 5
    assert set(a.round_medians) <= set(range(rounds))
    # each round's first run of a model (after the switch) is run but not timed
    assert calls.count("A") == 1 + len(a.round_medians) + len(a.samples)
    # the cap wins over the time
    c = timing.Slot(m, runner("C", 0.0))
    timing.measure_rounds([c], warmup=0, min_runs=3, min_time_s=100.0, max_runs=7)
    assert len(c.samples) == 7


def _simulated(monkeypatch, noise: float):
    """Slots whose runs take simulated seconds (a 1 ms baseline, a 0.5 ms model; each run off by
    a random factor of sd ``noise``) and a clock that adds them up instead of timing."""
    rng = np.random.default_rng(0)
    monkeypatch.setattr(timing, "_timed", lambda fn: fn())
    m = types.SimpleNamespace(name="m")
    return [timing.Slot(m, engines.Runner(lambda s=s: s * max(0.1, 1 + noise * rng.standard_normal()), "cpu"))
            for s in (1e-3, 5e-4)]


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_precision_keeps_timing_until_the_speedup_is_precise(monkeypatch, noise):
    """After the minimums, timing goes on until the paired speed-up's standard error is at most
    ``precision`` of it, or a model has been timed ``max_time_s``; without ``precision`` it stops."""
    settings = dict(warmup=1, min_runs=5, min_time_s=0.05, max_runs=100_000)
    base, model = _simulated(monkeypatch, noise)
    timing.measure_rounds([base, model], precision=0.01, max_time_s=0.5, **settings)
    speedup, se = timing.paired_speedup(base.round_medians, model.round_medians)
    if noise == 0:                  # precise at once: the minimums decide
        assert speedup == pytest.approx(2.0) and se == pytest.approx(0.0)
        assert base.total < 0.1
    else:                           # too noisy for 1 %: timed to the cap
        assert base.total >= 0.5 or model.total >= 0.5
        assert se > 0.01 * speedup and speedup == pytest.approx(2.0, rel=0.1)
        base, model = _simulated(monkeypatch, noise)
        timing.measure_rounds([base, model], precision=None, max_time_s=0.5, **settings)
        assert base.total < 0.1     # no precision: the minimums alone


def test_failing_runner_is_skipped_not_raised(models):
    calls = {"n": 0}

    def boom():
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("device lost\nsecond line")
    m = types.SimpleNamespace(name="m")
    s = timing.Slot(m, engines.Runner(boom, "cpu"))
    timing.measure_rounds([s], warmup=1, min_runs=10, min_time_s=0.0, max_runs=100)
    assert s.error.startswith("failed while timing") and "device lost" in s.error and "\n" not in s.error


def test_unavailable_cuda_engine_is_skipped(models, monkeypatch, bench_log):
    _no_cuda(monkeypatch)
    msgs = bench_log
    rep = bench_models([models["big"], models["small"]], batches=[2], engines="ort-cuda,ort-cpu", **FAST)
    assert {r.engine for r in rep.results} == {"ort-cpu"}
    assert len(rep.skipped) == 1
    sk = rep.skipped[0]
    assert sk.engine == "ort-cuda" and sk.model is None and sk.batch is None
    assert "CUDA provider not available" in sk.reason
    line = [x for x in msgs if x.startswith("skipped ort-cuda")]
    assert len(line) == 1 and "\n" not in line[0]
    assert [p.engine for p in rep.pairs] == ["ort-cpu"]


def test_cuda_engine_follows_the_working_provider_check(models):
    """Without monkeypatching: ort-cuda measures exactly when the runtime's provider check finds a
    working CUDA provider, and is skipped with a reason otherwise (one outcome expected, not either)."""
    from onnxprune.runtime import available_providers
    cuda_works = "CUDAExecutionProvider" in available_providers("cuda")
    rep = bench_models([models["small"]], batches=[1], engines="ort-cuda", **FAST)
    if cuda_works:
        assert [r.device for r in rep.results] == ["cuda"] and not rep.skipped
    else:
        assert not rep.results
        assert [s.engine for s in rep.skipped] == ["ort-cuda"] and "CUDA" in rep.skipped[0].reason


def test_torch_engines_skipped_when_bridge_missing(models, monkeypatch, bench_log):
    monkeypatch.setitem(sys.modules, "onnxprune.torch_bridge", None)   # import raises ImportError
    msgs = bench_log
    rep = bench_models([models["big"], models["small"]], batches=[1],
                       engines="torch-cpu,torch-compile,torch-cudagraph,ort-cpu", **FAST)
    assert {r.engine for r in rep.results} == {"ort-cpu"}
    assert [s.engine for s in rep.skipped] == ["torch-cpu", "torch-compile", "torch-cudagraph"]
    for s in rep.skipped:
        assert "not importable" in s.reason and s.model is None
        assert s.message.startswith(f"skipped {s.engine}: ") and "\n" not in s.message
    assert sum(m.startswith("skipped") for m in msgs) == 3


class _FakeOnnxModule:
    """Stand-in for onnxprune.torch_bridge.OnnxModule: runs Conv/Relu graphs with torch."""

    def __new__(cls, model: onnx.ModelProto):
        import torch
        import torch.nn.functional as F

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                          for t in model.graph.initializer}
                for k, (name, t) in enumerate(self.w.items()):
                    self.register_buffer(f"t{k}", t)
                self.names = {name: f"t{k}" for k, name in enumerate(self.w)}

            def forward(self, *xs):
                env = {vi.name: x for vi, x in zip(model.graph.input, xs)}
                env.update({n: getattr(self, b) for n, b in self.names.items()})
                for node in model.graph.node:
                    if node.op_type == "Conv":
                        pads = [a for a in node.attribute if a.name == "pads"][0].ints
                        env[node.output[0]] = F.conv2d(*[env[i] for i in node.input], padding=pads[0])
                    elif node.op_type == "Relu":
                        env[node.output[0]] = torch.relu(env[node.input[0]])
                    else:
                        raise NotImplementedError(node.op_type)
                return tuple(env[o.name] for o in model.graph.output)
        return M()


def test_torch_cpu_with_a_bridge(models, monkeypatch):
    pytest.importorskip("torch")
    fake = types.ModuleType("onnxprune.torch_bridge")
    fake.OnnxModule = _FakeOnnxModule
    monkeypatch.setitem(sys.modules, "onnxprune.torch_bridge", fake)
    rep = bench_models([models["big"], models["small"], models["fixed"]], batches=[2],
                       engines="torch-cpu,torch-cuda", threads=1, **FAST)
    assert [(r.model, r.engine, r.device) for r in rep.results if r.engine == "torch-cpu"] == [
        ("big.onnx", "torch-cpu", "cpu"), ("small.onnx", "torch-cpu", "cpu")]
    # the fake bridge does not know GlobalAveragePool: that model is skipped, with the reason
    fixed_skip = [s for s in rep.skipped if s.model == "fixed.onnx" and s.engine == "torch-cpu"]
    assert len(fixed_skip) == 1 and "GlobalAveragePool" in fixed_skip[0].reason
    import torch
    if not torch.cuda.is_available():
        assert any(s.engine == "torch-cuda" and s.model is None for s in rep.skipped)
    p = rep.pair("small.onnx", "torch-cpu", 2)
    assert p.speedup > 0 and p.macs_ratio == pytest.approx(conv_macs(16) / conv_macs(8))


def test_fixed_batch_model_runs_at_batch_4(models):
    rep = bench_models([models["fixed"], models["baked"]], batches=[1, 4], engines="ort-cpu", **FAST)
    info = {m.name: m for m in rep.models}
    assert info["fixed.onnx"].fixed_batch == 1
    r1, r4 = rep.result("fixed.onnx", "ort-cpu", 1), rep.result("fixed.onnx", "ort-cpu", 4)
    assert r1 is not None and not r1.dynamic_batch
    assert r4 is not None and r4.dynamic_batch and r4.batch == 4
    assert r4.images_per_s == pytest.approx(4 / (r4.p50_ms / 1e3))
    # a Reshape to a constant [1, 8] cannot follow the batch: skipped with the reason, batch 1 works
    assert rep.result("baked.onnx", "ort-cpu", 1) is not None
    assert rep.result("baked.onnx", "ort-cpu", 4) is None
    (sk,) = rep.skipped
    assert (sk.engine, sk.model, sk.batch) == ("ort-cpu", "baked.onnx", 4)
    assert "fixes batch 1" in sk.reason and "\n" not in sk.message
    # the pair at batch 4 has the MACs ratio but no speed-up
    p4 = rep.pair("baked.onnx", "ort-cpu", 4)
    assert p4.speedup is None and p4.macs_ratio == pytest.approx(1.0)
    assert "dyn. batch" in rep.to_markdown()


def test_fixed_conv_model_dynamic_batch(models):
    rep = bench_models([models["fixed_conv"]], batches=[4], engines="ort-cpu", **FAST)
    (r,) = rep.results
    assert r.dynamic_batch and r.batch == 4 and rep.models[0].macs == conv_macs(8)


def test_json_and_markdown_written(report, tmp_path):
    js, md = report.save(tmp_path / "lat")
    assert js == tmp_path / "lat.json" and md == tmp_path / "lat.md"
    data = json.loads(js.read_text())
    assert data["schema"] == "onnxprune.bench/1"
    assert len(data["results"]) == 4 and len(data["pairs"]) == 2
    assert data["models"][0]["macs"] == conv_macs(16)
    assert data["machine"]["onnxruntime"] and "cpu" in data["machine"]
    assert json.loads(report.to_json()) == data
    text = md.read_text()
    assert text == report.to_markdown()
    assert "FLOPs = 2×MACs" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for col in ("model", "engine", "batch", "p50 ms", "p90", "p99", "IQR", "img/s", "params", "size MB",
                "speed-up vs baseline", "MACs ratio"):
        assert col in header
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:5]]
    assert all(len(r) == len(header) for r in rows)
    by = {(r[0], r[2]): dict(zip(header, r)) for r in rows}
    assert by[("big.onnx", "1")]["speed-up vs baseline"].startswith("1.00×")
    p = report.pair("small.onnx", "ort-cpu", 4)
    paired = f"{p.speedup_rounds:.2f}×" + ("" if p.speedup_rounds_se is None else f" ±{p.speedup_rounds_se:.2f}")
    assert by[("small.onnx", "4")]["speed-up vs baseline"] == paired        # the paired speed-up
    assert by[("small.onnx", "4")]["MACs ratio"] == f"{p.macs_ratio:.2f}×"
    assert float(by[("big.onnx", "4")]["p50 ms"]) == pytest.approx(
        report.result("big.onnx", "ort-cpu", 4).p50_ms, rel=1e-2, abs=1e-3)
    with pytest.raises(OnnxPruneError, match="does not exist"):
        report.save(tmp_path / "missing" / "lat")


# ----------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(models, tmp_path):
    def one_line(exc_info, *needles):
        msg = str(exc_info.value)
        assert "\n" not in msg
        for n in needles:
            assert n in msg, msg

    with pytest.raises(OnnxPruneError) as e:
        bench_models([models["big"], tmp_path / "nope.onnx"], batches=[1], **FAST)
    one_line(e, "nope.onnx", "no such file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a model at all" * 10)
    with pytest.raises(OnnxPruneError) as e:
        bench_models([junk], batches=[1], **FAST)
    one_line(e, "junk.onnx")
    with pytest.raises(OnnxPruneError) as e:
        bench_models([models["big"]], engines="ort-cpu,tensorflow", **FAST)
    one_line(e, "unknown engine 'tensorflow'", "ort-cpu")
    for bad in ("1,x", "0", "", "-4", [], [1, 2.5], "1,,2"):
        with pytest.raises(OnnxPruneError) as e:
            bench_models([models["big"]], batches=bad, **FAST)
        one_line(e, "batch")
    with pytest.raises(OnnxPruneError, match="min_runs"):
        bench_models([models["big"]], batches=[1], warmup=1, min_runs=0)
    with pytest.raises(OnnxPruneError, match="precision"):
        bench_models([models["big"]], batches=[1], precision=5)
    with pytest.raises(OnnxPruneError, match="max_time_s"):
        bench_models([models["big"]], batches=[1], max_time_s=-1)
    with pytest.raises(OnnxPruneError, match="no model"):
        bench_models([], batches=[1])
    # a dynamic spatial size must be fixed by the user
    n = Net()
    x = n.input("x", ["N", 3, "H", "W"])
    n.output(n.relu(n.conv(x, 3, 4)))
    dyn = tmp_path / "dyn.onnx"
    onnx.save(n.model(), str(dyn))
    with pytest.raises(OnnxPruneError) as e:
        bench_models([dyn], batches=[1], **FAST)
    one_line(e, "dyn.onnx", "dimension 2 is dynamic", "--input-shape")
    rep = bench_models([dyn], batches=[2], input_shapes=["x=1x3x8x8"], **FAST)
    assert rep.results[0].batch == 2 and rep.models[0].macs == 9 * 64 * 3 * 4
    assert not rep.results[0].dynamic_batch and rep.models[0].inputs == {"x": ["batch", 3, 8, 8]}
    with pytest.raises(OnnxPruneError, match="'y'"):
        bench_models([dyn], batches=[2], input_shapes=["y=1x3x8x8"], **FAST)


def test_parsers():
    assert parse_batches("1, 64,1") == [1, 64]
    assert parse_batches(8) == [8]
    assert parse_batches((32, 1)) == [32, 1]
    assert parse_engines("ORT-CPU, torch-cpu,ort-cpu") == ["ort-cpu", "torch-cpu"]
    assert parse_engines("all") == list(bench.ENGINES)
    with pytest.raises(OnnxPruneError):
        parse_engines("")


def _parser():
    p = argparse.ArgumentParser(prog="onnxprune bench")
    add_bench_arguments(p)
    return p


def _run_as_cli(args: argparse.Namespace) -> int:
    """run_bench_from_args with logging set up as ``onnxprune`` sets it (messages on stderr)."""
    from onnxprune.cli.args import verbosity
    from onnxprune.log import configure
    configure(verbosity(args))
    return run_bench_from_args(args)


def test_cli_entry(models, tmp_path, capsys, monkeypatch):
    args = _parser().parse_args([str(models["big"]), str(models["small"]), "--batch", "1,2",
                                 "--engine", "ort-cpu,ort-cuda", "--warmup", "1", "--min-runs", "5",
                                 "--min-time", "0.005", "--max-runs", "50", "-o", str(tmp_path / "b"),
                                 "--json"])
    assert args.func is run_bench_from_args
    _no_cuda(monkeypatch)
    assert _run_as_cli(args) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert len(data["results"]) == 4 and data["skipped"][0]["engine"] == "ort-cuda"
    assert "skipped ort-cuda:" in err and (tmp_path / "b.json").is_file() and (tmp_path / "b.md").is_file()
    # nothing measured: exit status 1, still a report
    args = _parser().parse_args([str(models["small"]), "--batch", "1", "--engine", "ort-cuda", "-q"])
    assert _run_as_cli(args) == 1
    out, err = capsys.readouterr()
    assert "nothing measured" in out and "nothing was measured" in err
    # errors before any work: bad output folder, bad batch list
    args = _parser().parse_args([str(models["small"]), "-o", str(tmp_path / "no" / "b")])
    with pytest.raises(OnnxPruneError, match="does not exist"):
        run_bench_from_args(args)
    args = _parser().parse_args([str(models["small"]), "--batch", "one"])
    with pytest.raises(OnnxPruneError, match="batch"):
        run_bench_from_args(args)
    # --precision: a fraction or 'off'
    assert _parser().parse_args([str(models["small"]), "--precision", "off"]).precision is None
    assert _parser().parse_args([str(models["small"])]).precision == 0.01
    for bad in ("2", "x"):
        with pytest.raises(SystemExit):
            _parser().parse_args([str(models["small"]), "--precision", bad])
    assert "fraction between 0 and 1" in capsys.readouterr().err
