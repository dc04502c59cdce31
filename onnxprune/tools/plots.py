"""Human-readable plan reports (Markdown) and PNG plots; matplotlib is imported lazily."""
from __future__ import annotations

import os
from pathlib import Path

from onnxprune.analysis.cost import format_count
from onnxprune.errors import OnnxPruneError
from onnxprune.rewrite.plan import Plan

__all__ = ["plan_markdown", "plot_keep_ratios", "plot_accuracy_vs_macs"]


def plan_markdown(plan: Plan, title: str = "Pruning report") -> str:
    """Budget requested vs achieved, per-group keep-ratios and metrics, and every skip with its reason."""
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
    metric_keys = sorted({k for g in plan.groups for k, v in g.metrics.items() if isinstance(v, (int, float))})
    lines += ["", "## Groups", "",
              "| group | channels | kept | ratio | producers | " + " | ".join(metric_keys) + (" |" if metric_keys else "|"),
              "|---|---|---|---|---|" + "---|" * len(metric_keys)]
    for g in plan.groups:
        if not g.prunable:
            continue
        prods = ", ".join(g.producers[:2]) + (f" +{len(g.producers) - 2}" if len(g.producers) > 2 else "")
        vals = [f"{g.metrics[k]:.4g}" if isinstance(g.metrics.get(k), (int, float)) else "–" for k in metric_keys]
        lines.append(f"| {g.id} | {g.channels} | {len(g.kept)} | {g.ratio:.3f} | {prods} | " + " | ".join(vals)
                     + (" |" if vals else ""))
    skipped = [g for g in plan.groups if not g.prunable]
    lines += ["", "## Skipped groups", ""]
    if not skipped:
        lines.append("None.")
    for g in skipped:
        lines.append(f"- group {g.id} ({g.channels} channels, {', '.join(g.producers[:2])}): "
                     + "; ".join(g.skip_reasons))
    return "\n".join(lines) + "\n"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxPruneError("PNG plots need matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def plot_keep_ratios(plan: Plan, path: str | os.PathLike, title: str = "keep-ratio per channel group") -> None:
    """Bar chart of the kept fraction of every group (skipped groups grey at 1.0)."""
    plt = _pyplot()
    groups = plan.groups
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(groups)), 3.2))
    ax.bar([g.id for g in groups], [g.ratio for g in groups],
           color=["tab:blue" if g.prunable else "lightgrey" for g in groups])
    ax.set_xlabel("channel group (graph order)")
    ax.set_ylabel("kept / channels")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
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
