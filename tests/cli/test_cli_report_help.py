"""`report` writes valid Markdown for every plan and a labelled PNG; every `--help` teaches."""
from __future__ import annotations

import argparse
import re

import pytest

from onnxprune.rewrite.plan import GroupPlan, Plan


def table_shapes(markdown: str) -> list[tuple[int, int, list[int]]]:
    """(header cells, separator cells, [cells of every row]) of each pipe table, checked strictly:
    a table is a header row, a separator row of ---, then rows; every row starts and ends with '|'."""
    def cells(line: str) -> int:
        assert line.startswith("|") and line.endswith("|"), line
        return len(re.split(r"(?<!\\)\|", line[1:-1]))
    lines = markdown.splitlines()
    tables, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            header, sep = lines[i], lines[i + 1]
            assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", sep), sep
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            assert i == len(lines) or lines[i] == "", "a table ends with a blank line"
            tables.append((cells(header), cells(sep), rows))
        else:
            i += 1
    return tables


def _plan(metrics: bool, prunable: bool = True) -> Plan:
    groups = [GroupPlan(id=i, channels=16, prunable=prunable, kept=list(range(8 if prunable else 16)),
                        producers=[f"conv|{i}"], consumers=["fc"],
                        skip_reasons=[] if prunable else ["reaches graph output 'y'"],
                        metrics={"rank": 3.0, "entropy": 1.5} if metrics else {}) for i in range(3)]
    return Plan(groups=groups, budget={"requested": {"macs_reduction": 0.5}, "achieved": {"macs_reduction": 0.5}},
                cost={"macs": {"original": 2e6, "pruned": 1e6}, "params": {"original": 1e4, "pruned": 5e3}})


@pytest.mark.parametrize("metrics,prunable", [(False, True), (True, True), (False, False)])
def test_plan_markdown_tables_are_well_formed(metrics, prunable):
    from onnxprune.tools.plots import plan_markdown
    text = plan_markdown(_plan(metrics, prunable))
    tables = table_shapes(text)
    if not prunable:
        assert tables == [] and "No prunable group." in text
        return
    (header, sep, rows), = tables
    assert header == sep == (7 if metrics else 5)
    assert rows == [header] * 3
    assert "conv\\|0" in text                       # a pipe in a node name does not split the cell


def _refit(layers: int) -> dict:
    from onnxprune.recover.record import LayerRefit, RefitRecord
    rows = [LayerRefit(node=f"conv|{i}", output=f"y{i}", op="Conv", initializers=[f"w{i}", f"b{i}"], rows=640,
                       unknowns=73, error_before=0.2 + i, error_after=0.05 + i, ridge=1e-3,
                       warning="too few rows\nuse more images" if i == 1 else None,
                       target="residual" if i == 2 else "output") for i in range(layers)]
    return RefitRecord(images=64, layers=rows, initializers={f"w{i}": "0" * 64 for i in range(layers)}).to_dict()


def test_plan_markdown_shows_the_refit_per_layer():
    from onnxprune.tools.plots import plan_markdown
    plan = _plan(metrics=True)
    plan.refit = _refit(3)
    text = plan_markdown(plan)
    groups, refit = table_shapes(text)
    assert groups[0] == 7
    header, sep, rows = refit
    assert header == sep == 6 and rows == [6] * 3
    table = text[text.index("## Refit"):text.index("## Skipped")]
    assert "| layer | op | initializers changed | error before | error after | note |" in table
    assert "| conv\\|0 | Conv | w0, b0 | 0.2 | 0.05 | – |" in table
    assert "fitted to the residual" in table and "too few rows use more images" in table
    assert "mean 1.2 → 1.05" in table
    plan.refit = _refit(0)
    text = plan_markdown(plan)
    assert len(table_shapes(text)) == 1 and "nothing refitted" in text
    plan.refit = None
    assert "## Refit" not in plan_markdown(plan)


def test_report_of_a_real_plan(cli, pruned, tmp_path):
    _, _, plan = pruned
    rc, out, err = cli("report", plan)
    assert rc == 0, err
    (header, sep, rows), = table_shapes(out)
    assert header == sep and set(rows) == {header}


def test_keep_ratio_png_has_title_legend_and_counts(pruned, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from onnxprune.tools import plots
    _, _, plan_path = pruned
    plan = Plan.load(plan_path)
    seen = {}
    real_close = plt.close

    def keep(fig):
        ax = fig.axes[0]
        seen.update(title=ax.get_title(), legend=[t.get_text() for t in ax.get_legend().get_texts()],
                    labels=[t.get_text() for t in ax.texts])
        real_close(fig)
    monkeypatch.setattr(plt, "close", keep)
    plots.plot_keep_ratios(plan, tmp_path / "k.png", model="net.onnx")
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["title"].startswith("net.onnx") and "budget" in seen["title"] and "MACs" in seen["title"] \
        and "params" in seen["title"]
    assert seen["legend"] == ["prunable", "skipped (see report)"]
    assert seen["labels"] == [f"{len(g.kept)}/{g.channels}" for g in plan.groups]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_every_command_examples():
    from onnxprune.cli.main import build_parser
    for name, sub in _subparsers(build_parser()).items():
        assert sub.epilog and sub.epilog.startswith("examples:") and f"onnxprune {name}" in sub.epilog, name
        for action in sub._actions:
            assert action.help, (name, action.option_strings or action.dest)
        formatter = sub._get_formatter()
        for action in sub._actions:
            default = action.default
            if action.option_strings and isinstance(default, (int, float, str)) and not isinstance(default, bool) \
                    and action.nargs != 0:
                text = formatter._expand_help(action)        # the help line as --help prints it
                assert "default" in text, (name, action.option_strings, text)
        sub.format_help()


def test_input_shape_is_declared_once():
    import onnxprune.cli as package
    from pathlib import Path
    sources = [p.read_text() for p in Path(package.__file__).parent.glob("*.py")]
    assert sum(s.count('"--input-shape"') for s in sources) == 1


def test_config_from_namespace():
    from onnxprune.cli.args import config_from_namespace
    from onnxprune.pipeline import PruneConfig
    ns = argparse.Namespace(flops_reduction=0.4, ratio=None, params_reduction=None, method="infoconc",
                            shapley_mc_images=16, verify=False, seed=3, data="x", round_to="auto")
    cfg = config_from_namespace(PruneConfig, ns, round_to=8)
    assert (cfg.flops_reduction, cfg.method, cfg.shapley_mc_images, cfg.verify, cfg.seed, cfg.round_to) == \
        (0.4, "infoconc", 16, False, 3, 8)
