"""What a benchmark records: models, results, baseline pairs, skipped runs, and the report that holds them."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxprune.errors import OnnxPruneError
from onnxprune.model_io import write_text_atomic

__all__ = ["SCHEMA", "ModelInfo", "BenchResult", "Pair", "Skipped", "BenchReport", "check_output_prefix",
           "one_line"]

SCHEMA = "onnxprune.bench/1"


@dataclass
class ModelInfo:
    """One benchmarked model. ``macs`` is per image (FLOPs = 2 × MACs); None when not countable."""
    name: str
    path: str
    macs: float | None
    params: float | None
    size_bytes: int
    inputs: dict[str, list]            # name -> shape, "batch" at the batch axis
    fixed_batch: int | None            # the batch size baked into the file, None if dynamic
    note: str | None = None            # why MACs/params are missing, if they are


@dataclass
class BenchResult:
    """Latency statistics of one model × engine × batch (times in milliseconds)."""
    model: str
    engine: str
    batch: int
    device: str
    runs: int
    rounds: int
    measured_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    min_ms: float
    images_per_s: float
    dynamic_batch: bool                # the file had a fixed batch and was made dynamic for this run


@dataclass
class Pair:
    """Baseline (first model) against one other model on the same engine and batch."""
    engine: str
    batch: int
    baseline: str
    model: str
    speedup: float | None              # baseline p50 / model p50
    speedup_rounds: float | None       # median over interleaved rounds of the per-round p50 ratio
    macs_ratio: float | None           # baseline MACs / model MACs
    speedup_rounds_se: float | None = None   # standard error of speedup_rounds (None: under 3 rounds)


@dataclass
class Skipped:
    """An engine (model and batch None), or one model × engine × batch, that was not measured."""
    engine: str
    reason: str
    model: str | None = None
    batch: int | None = None

    @property
    def message(self) -> str:
        where = self.engine
        if self.batch is not None:
            where += f" batch {self.batch}"
        if self.model is not None:
            where += f" for {self.model}"
        return f"skipped {where}: {self.reason}"


@dataclass
class BenchReport:
    """Everything one ``bench_models`` call measured, with the machine it ran on."""
    models: list[ModelInfo]
    results: list[BenchResult]
    pairs: list[Pair]
    skipped: list[Skipped]
    machine: dict
    settings: dict = field(default_factory=dict)

    # --- look-ups -------------------------------------------------------------------------------
    def result(self, model: str, engine: str, batch: int) -> BenchResult | None:
        for r in self.results:
            if r.model == model and r.engine == engine and r.batch == batch:
                return r
        return None

    def pair(self, model: str, engine: str, batch: int) -> Pair | None:
        for p in self.pairs:
            if p.model == model and p.engine == engine and p.batch == batch:
                return p
        return None

    # --- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        from onnxprune import __version__
        return {"schema": SCHEMA, "onnxprune_version": __version__,
                "note": "times in milliseconds; MACs per image, FLOPs = 2 x MACs; speedup = baseline "
                        "p50 / model p50; speedup_rounds = median of the per-round ratios (paired, "
                        "the better estimate) with its standard error; macs_ratio = baseline MACs / model MACs",
                "machine": self.machine, "settings": self.settings,
                "models": [asdict(m) for m in self.models],
                "results": [asdict(r) for r in self.results],
                "pairs": [asdict(p) for p in self.pairs],
                "skipped": [dict(asdict(s), message=s.message) for s in self.skipped]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(_finite(self.to_dict()), indent=indent)

    def to_markdown(self) -> str:
        from onnxprune.tools.bench.markdown import report_markdown
        return report_markdown(self)

    def save(self, prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``prefix.json`` and ``prefix.md`` atomically; returns both paths."""
        prefix = Path(prefix)
        check_output_prefix(prefix)
        js, md = Path(f"{prefix}.json"), Path(f"{prefix}.md")
        write_text_atomic(js, self.to_json() + "\n")
        write_text_atomic(md, self.to_markdown())
        return js, md


def _finite(obj):
    """JSON without NaN/inf (they are not JSON): replace them by null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj



def one_line(exc: BaseException | str) -> str:
    """The first line of an error (with its type unless it is ours), at most 300 characters."""
    text = str(exc).strip() if not isinstance(exc, str) else exc.strip()
    first = text.splitlines()[0] if text else ""
    if not isinstance(exc, (str, OnnxPruneError)):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:300]


def check_output_prefix(prefix: Path) -> None:
    """Refuse an output prefix whose folder is missing or whose .json/.md would be a folder."""
    parent = prefix.parent
    if not parent.exists():
        raise OnnxPruneError(f"{prefix}: folder '{parent}' does not exist")
    if not parent.is_dir():
        raise OnnxPruneError(f"{prefix}: '{parent}' is not a folder")
    for ext in (".json", ".md"):
        if Path(f"{prefix}{ext}").is_dir():
            raise OnnxPruneError(f"{prefix}{ext}: is a folder, expected a file path")
