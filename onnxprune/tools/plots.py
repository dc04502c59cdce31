"""Human-readable plan reports (Markdown) and PNG plots; matplotlib is imported lazily."""
from __future__ import annotations

import os

from onnxprune.analysis.cost import format_count
from onnxprune.errors import OnnxPruneError
from onnxprune.rewrite.plan import Plan

__all__ = ["plan_markdown", "plot_keep_ratios", "plot_accuracy_vs_macs", "keep_ratio_title"]


def plan_markdown(plan: Plan, title: str = "Pruning report") -> str:
    """Budget requested vs achieved, per-group keep-ratios and metrics, the refit's per-layer
    errors (when the plan records a refit), and every skip with its reason."""
    b, c = plan.budget, plan.cost
    lines = [f"# {title}", ""]
    if c:
        lines += [f"- MACs: {format_count(c['macs']['original'])} → {format_count(c['macs']['pruned'])} "
                  f"per image (FLOPs = 2 × MACs)",
                  f"- parameters: {format_count(c['params']['original'])} → {format_count(c['params']['pruned'])}"]
    if b:
        lines.append("- requested: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in b.get("requested", {}).items()))
        lines.append("- achieved: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in b.get("achieved", {}).items()))
        lines += [f"- note: {n}" for n in b.get("notes", [])]
    if plan.settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in plan.settings.items() if v is not None))
    lines += ["", "## Groups", ""] + _group_table(plan)
    if plan.refit is not None:
        lines += ["", "## Refit", ""] + _refit_section(plan.refit)
    skipped = [g for g in plan.groups if not g.prunable]
    lines += ["", "## Skipped groups", ""]
    if not skipped:
        lines.append("None.")
    for g in skipped:
        lines.append(f"- group {g.id} ({g.channels} channels, {', '.join(g.producers[:2])}): "
                     + "; ".join(g.skip_reasons))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    """A Markdown table cell: pipes escaped, no line breaks."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _row(cells) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _group_table(plan: Plan) -> list[str]:
    """One row per prunable group: channels, kept, ratio, producers and every numeric metric."""
    groups = [g for g in plan.groups if g.prunable]
    if not groups:
        return ["No prunable group."]
    metric_keys = sorted({k for g in groups for k, v in g.metrics.items() if isinstance(v, (int, float))})
    header = ["group", "channels", "kept", "ratio", "producers", *metric_keys]
    rows = [_row(header), "|" + "---|" * len(header)]
    for g in groups:
        prods = ", ".join(g.producers[:2]) + (f" +{len(g.producers) - 2}" if len(g.producers) > 2 else "")
        vals = [f"{g.metrics[k]:.4g}" if isinstance(g.metrics.get(k), (int, float)) else "–" for k in metric_keys]
        rows.append(_row([g.id, g.channels, len(g.kept), f"{g.ratio:.3f}", prods, *vals]))
    return rows


def _refit_section(refit: dict) -> list[str]:
    """The refit record: a summary line, then one row per refitted layer with the initializers it
    changed and its relative reconstruction error on the calibration data before and after."""
    from onnxprune.recover.record import RefitRecord
    r = RefitRecord.from_dict(refit)
    if not r.layers:
        return ["No layer lost input channels; nothing refitted."]
    before, after = r.mean_errors()
    lines = [f"{r.method}: {len(r.layers)} layers refitted by least squares on {r.images} calibration "
             f"images; error = relative squared error of the layer's output against the unpruned "
             f"model's on the calibration data, mean {before:.4g} → {after:.4g}.", "",
             _row(["layer", "op", "initializers changed", "error before", "error after", "note"]),
             "|---|---|---|---:|---:|---|"]
    for x in r.layers:
        notes = ([] if x.target == "output" else [f"fitted to the {x.target}"]) + ([x.warning] if x.warning else [])
        lines.append(_row([x.node, x.op, ", ".join(x.initializers) or "–", f"{x.error_before:.4g}",
                           f"{x.error_after:.4g}", "; ".join(notes) or "–"]))
    return lines


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("PNG plots need matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def _save(fig, path: str | os.PathLike) -> None:
    """Write the figure as PNG atomically, with the permissions a plain file would get."""
    from onnxprune.model_io import write_atomic
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def keep_ratio_title(plan: Plan, model: str | None = None) -> str:
    """Model, requested budget and achieved MACs / params of a plan, for a plot title."""
    b, c = plan.budget or {}, plan.cost or {}
    parts = [model or "keep-ratio per channel group"]
    requested = b.get("requested", {})
    if requested:
        parts.append("budget " + ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f}%" for k, v in requested.items()))
    if c.get("macs") and c.get("params"):
        parts.append(f"MACs {format_count(c['macs']['original'])} → {format_count(c['macs']['pruned'])}, "
                     f"params {format_count(c['params']['original'])} → {format_count(c['params']['pruned'])}")
    return parts[0] + ("\n" + "; ".join(parts[1:]) if len(parts) > 1 else "")


def plot_keep_ratios(plan: Plan, path: str | os.PathLike, model: str | None = None,
                     title: str | None = None) -> None:
    """Bar chart of the kept fraction of every group, labelled kept/channels; skipped groups grey at 1.0."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    groups = plan.groups
    fig, ax = plt.subplots(figsize=(max(6.5, 0.32 * len(groups)), 3.6))
    colors = ["tab:blue" if g.prunable else "lightgrey" for g in groups]
    bars = ax.bar([g.id for g in groups], [g.ratio for g in groups], color=colors)
    if len(groups) <= 60:
        ax.bar_label(bars, labels=[f"{len(g.kept)}/{g.channels}" for g in groups], fontsize=6,
                     rotation=90 if len(groups) > 16 else 0, padding=2)
    ax.set_xlabel("channel group (graph order); bar label: kept/channels")
    ax.set_ylabel("kept / channels")
    ax.set_ylim(0, 1.25)
    ax.set_title(title or keep_ratio_title(plan, model), fontsize=9)
    ax.legend(handles=[Patch(color="tab:blue", label="prunable"),
                       Patch(color="lightgrey", label="skipped (see report)")], fontsize=7, loc="lower right")
    _save(fig, path)
    plt.close(fig)


def plot_accuracy_vs_macs(rows: list[dict], path: str | os.PathLike, key: str = "acc_lossless",
                          title: str = "one-shot top-1 vs MACs reduction") -> None:
    """Lines of accuracy against achieved MACs reduction, one per method (B1 rows)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows if "macs_reduction" in r):
        pts = sorted((r["macs_reduction"], r[key]) for r in rows if r["method"] == method and key in r)
        ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], marker="o", label=method)
    ax.set_xlabel("MACs reduction (%)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
