"""The Markdown rendering of a :class:`BenchReport` and the number formats it uses."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxprune.tools.bench.records import BenchReport

__all__ = ["report_markdown", "format_ms", "format_ratio", "format_count"]


def report_markdown(report: "BenchReport") -> str:
    """The report as Markdown: machine, settings, one row per result, the models, what was skipped."""
    m = report.machine
    lines = ["# Latency benchmark", ""]
    cpu = f"{m.get('cpu', '?')}, {m.get('cores_available', '?')} of {m.get('cores', '?')} cores"
    lines.append(f"Machine: {cpu}; GPU: {m.get('gpu') or 'none'}; onnxruntime "
                 f"{m.get('onnxruntime', '?')} ({', '.join(m.get('ort_providers_working', []))}); "
                 f"torch {m.get('torch') or 'not installed'}; Python {m.get('python', '?')}.")
    s = report.settings
    if s:
        until = (f", then until each speed-up's standard error is at most {100 * s['precision']:g} % of it or "
                 f"a model has been timed {s.get('max_time_s')} s" if s.get("precision") else "")
        lines.append(f"Settings: warm-up {s.get('warmup')}, at least {s.get('min_runs')} runs and "
                     f"{s.get('min_time_s')} s per model (at most {s.get('max_runs')} runs){until}; models "
                     f"interleaved in short rounds; threads {s.get('threads') or 'default'}; seed {s.get('seed')}.")
    lines += ["", "MACs are per image; FLOPs = 2×MACs. Speed-up vs baseline = the median over rounds of "
              "baseline time / model time in that round, ± its standard error (paired: a slow spell slows "
              "both sides of a round; same engine, batch and session); MACs ratio = baseline MACs / model MACs. "
              "Times in ms; on a shared machine quote ratios and medians.", ""]
    head = ["model", "engine", "batch", "p50 ms", "mean", "p90", "p99", "IQR", "runs", "img/s",
            "MACs (FLOPs = 2×MACs)", "params", "size MB", "speed-up vs baseline", "MACs ratio"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    info = {mi.name: mi for mi in report.models}
    base = report.models[0].name if report.models else None
    for r in report.results:
        mi = info.get(r.model)
        p = report.pair(r.model, r.engine, r.batch)
        if r.model == base:
            sp, mr = "1.00× (baseline)", "1.00×"
        else:
            sp = format_ratio(p.speedup_rounds if p else None)
            if p and p.speedup_rounds_se is not None and sp != "–":
                sp += f" ±{p.speedup_rounds_se:.2f}"
            mr = format_ratio(p.macs_ratio if p else None)
        lines.append("| " + " | ".join([
            r.model + (" (dyn. batch)" if r.dynamic_batch else ""), f"{r.engine} ({r.device})",
            str(r.batch), format_ms(r.p50_ms), format_ms(r.mean_ms), format_ms(r.p90_ms), format_ms(r.p99_ms),
            format_ms(r.iqr_ms), str(r.runs), f"{r.images_per_s:,.1f}",
            format_count(mi.macs if mi else None), format_count(mi.params if mi else None),
            f"{mi.size_bytes / 1e6:.2f}" if mi else "–", sp, mr]) + " |")
    if not report.results:
        lines.append("| (nothing measured) |" + " |" * (len(head) - 1))
    lines += ["", "| model | file | MACs | FLOPs | params | size MB | note |",
              "|---|---|---|---|---|---|---|"]
    for mi in report.models:
        note = (mi.note or "").replace("|", "/")
        lines.append(f"| {mi.name} | {mi.path} | {format_count(mi.macs)} | "
                     f"{format_count(2 * mi.macs if mi.macs is not None else None)} | {format_count(mi.params)} | "
                     f"{mi.size_bytes / 1e6:.2f} | {note} |")
    if report.skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"* {sk.message}" for sk in report.skipped]
    return "\n".join(lines) + "\n"


def format_ms(v: float) -> str:
    """Milliseconds with 3 significant-ish digits."""
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


def format_ratio(v: float | None) -> str:
    """``1.23×``, or a dash when unknown."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.2f}×"


def format_count(n: float | None) -> str:
    """``1.2M``-style count, or a dash when unknown."""
    if n is None:
        return "–"
    from onnxprune.analysis.cost import format_count as count_text
    return count_text(n)
