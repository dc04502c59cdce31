"""Human-readable and JSON reports of an analysis, a prune run and a verification."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from onnxprune.analysis import Analysis
from onnxprune.analysis.cost import CostModel, format_count, format_macs

__all__ = ["group_macs_share", "analysis_table", "analysis_json", "prune_summary", "verify_table"]


def group_macs_share(analysis: Analysis, cost: CostModel) -> dict[int, float]:
    """Share of the model's MACs in the ops that read or write each group."""
    total = cost.macs() or 1.0
    share: dict[int, float] = defaultdict(float)
    for t in analysis.terms:
        cin = analysis.layouts[t.in_tensor].channels if t.in_tensor else t.in_fixed
        cout = analysis.layouts[t.out_tensor].channels if t.out_tensor else 1
        macs = t.coef * cin * cout
        touched = set()
        for name in (t.in_tensor, t.out_tensor):
            if name:
                touched |= {s.group for s in analysis.layouts[name].segments if s.group is not None}
        for g in touched:
            share[g] += macs / total
    return dict(share)


def _short(names: list[str], n: int = 2) -> str:
    return ", ".join(names[:n]) + (f" +{len(names) - n}" if len(names) > n else "")


def analysis_table(analysis: Analysis, cost: CostModel, title: str, verbose: bool = False) -> str:
    share = group_macs_share(analysis, cost)
    rows = [f"{title}: {len(analysis.view.nodes)} nodes, opset {analysis.view.opset}",
            f"cost: {format_macs(cost.macs())} per image, {format_count(cost.params())} parameters",
            "",
            f"{'group':>5} {'ch':>5} {'MACs%':>6}  {'status':<8} producers -> consumers / reason"]
    for g in analysis.groups:
        prods = g.producers if verbose else [_short(g.producers)]
        cons = g.consumers if verbose else [_short(g.consumers)]
        status = "prunable" if g.prunable else "skipped"
        detail = f"{', '.join(prods)} -> {', '.join(cons) or '(none)'}"
        if g.equal_blocks > 1:
            detail += f"  [grouped conv: equal count in {g.equal_blocks} blocks]"
        rows.append(f"{g.id:>5} {g.channels:>5} {100 * share.get(g.id, 0):>5.1f}%  {status:<8} {detail}")
        for reason in (g.skip_reasons if verbose else g.skip_reasons[:2]):
            rows.append(f"{'':>28}why: {reason}")
        if not verbose and len(g.skip_reasons) > 2:
            rows.append(f"{'':>28}(+{len(g.skip_reasons) - 2} more reasons, see --verbose)")
    n_skip = sum(not g.prunable for g in analysis.groups)
    prunable_share = sum(share.get(g.id, 0) for g in analysis.prunable)
    rows += ["", f"total: {len(analysis.groups)} groups, {len(analysis.prunable)} prunable, {n_skip} skipped; "
                 f"prunable groups touch {100 * min(prunable_share, 1):.1f}% of MACs (a conv between two "
                 "groups counts for both)"]
    branches = removable_branches(analysis)
    rows.append(f"removable whole (residual branches): {len(branches)} group(s)" +
                (": " + ", ".join(f"{g}" + (f" (+{'+'.join(map(str, up))})" if up else "")
                                  for g, up in branches.items()) if branches else ""))
    if verbose:
        for g, why in removable_branches(analysis, reasons=True).items():
            rows.append(f"{'':>6}group {g} not removable whole: {why}")
    reasons = Counter(re.sub(r" ?(\[[^\]]*\]→\[[^\]]*\]|'[^']*')", "", r.split(" at ")[0])
                      for g in analysis.groups for r in g.skip_reasons)
    if reasons:
        rows.append("skip reasons: " + "; ".join(f"{r} (×{n})" for r, n in reasons.most_common(6)))
    return "\n".join(rows)


def removable_branches(analysis: Analysis, reasons: bool = False) -> dict:
    """{group: its upstream groups} of the groups that may keep no channel (``reasons``: {group: why
    not} of the other prunable groups instead)."""
    from onnxprune.analysis.emptiable import Emptying, emptiable_groups
    found = emptiable_groups(analysis)
    if reasons:
        return {g: e for g, e in found.items() if isinstance(e, str)}
    return {g: e.upstream for g, e in found.items() if isinstance(e, Emptying)}


def analysis_json(analysis: Analysis, cost: CostModel) -> dict:
    share = group_macs_share(analysis, cost)
    return {"macs": cost.macs(), "flops": 2 * cost.macs(), "params": cost.params(),
            "unit": "MACs per image; FLOPs = 2 x MACs", "opset": analysis.view.opset,
            "groups": [g.to_dict() | {"macs_share": share.get(g.id, 0.0)} for g in analysis.groups],
            "removable_branches": [{"group": g, "with": list(up)} for g, up in removable_branches(analysis).items()],
            "totals": {"groups": len(analysis.groups), "prunable": len(analysis.prunable),
                       "skipped": len(analysis.groups) - len(analysis.prunable)}}


def prune_summary(result, out: Path, plan_path: Path) -> str:
    plan = result.plan
    c, b = plan.cost, plan.budget
    lines = [f"wrote {out} and {plan_path}",
             f"MACs:   {format_macs(c['macs']['original'])} -> {format_macs(c['macs']['pruned'])} "
             f"(-{100 * b['achieved']['macs_reduction']:.2f}%)",
             f"params: {format_count(c['params']['original'])} -> {format_count(c['params']['pruned'])} "
             f"(-{100 * b['achieved']['params_reduction']:.2f}%)",
             "requested: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in b["requested"].items())]
    pruned = [g for g in plan.groups if len(g.kept) < g.channels]
    skipped = [g for g in plan.groups if not g.prunable]
    lines.append(f"groups: {len(pruned)} pruned, {len(plan.groups) - len(pruned) - len(skipped)} kept whole, "
                 f"{len(skipped)} skipped (see `onnxprune analyze`)")
    if b.get("removed_branches"):
        lines.append(f"removed whole: {len(b['removed_branches'])} residual branch(es): " +
                     "; ".join(", ".join(r["removed_layers"]) for r in b["removed_branches"]))
    for note in b.get("notes", []):
        lines.append(f"note: {note}")
    if result.report is not None:
        worst = max(result.report.outputs, key=lambda o: o.max_rel)
        lines.append(f"verify: OK against the masked original ({result.report.inputs}); worst output "
                     f"'{worst.name}' max abs {worst.max_abs:.2e}, rel {worst.max_rel:.2e}")
    else:
        lines.append("verify: skipped (--no-verify)")
    lines.append("timings: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in result.timings.items()))
    return "\n".join(lines)


def verify_table(report) -> str:
    rows = [f"inputs: {report.inputs}", f"{'output':<24} {'max abs':>10} {'max rel':>10} {'scale':>10}  result"]
    for o in report.outputs:
        rows.append(f"{o.name:<24} {o.max_abs:>10.3e} {o.max_rel:>10.3e} {o.scale:>10.3e}  "
                    f"{'ok' if o.ok else 'MISMATCH'}")
    rows.append("verify: " + ("OK" if report.ok else "FAILED: pruned model differs from the masked original"))
    return "\n".join(rows)
