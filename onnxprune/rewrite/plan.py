"""The pruning plan: what is kept and removed per group, where it is consumed, and the budget.

It is written as JSON beside the pruned model (``OUT.plan.json``); see docs/plan-format.md.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.analysis import Analysis, group_edges
from onnxprune.errors import PlanError

__all__ = ["GroupPlan", "Plan", "edge_records", "file_sha256", "PLAN_FORMAT"]

PLAN_FORMAT = "onnxprune-plan/1"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def edge_records(analysis: Analysis, group: int) -> list[dict]:
    """Every consumer edge that reads channels of ``group``, with the segments it reads."""
    return [{"tensor": e.tensor, "node": analysis.view.label(e.node), "node_index": e.node,
             "input_index": e.input_index, "axis": lay.axis, "block": lay.block, "channels": lay.channels,
             "segments": [{"offset": s.offset, "length": s.length, "group_offset": s.group_offset} for s in segs]}
            for e, lay, segs in group_edges(analysis, group)]


@dataclass
class GroupPlan:
    id: int
    channels: int
    prunable: bool
    kept: list[int]
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    scores: list[float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def removed(self) -> list[int]:
        keep = set(self.kept)
        return [i for i in range(self.channels) if i not in keep]

    @property
    def ratio(self) -> float:
        return len(self.kept) / self.channels if self.channels else 1.0

    def to_dict(self) -> dict:
        d = {"id": self.id, "channels": self.channels, "prunable": self.prunable,
             "kept_count": len(self.kept), "ratio": round(self.ratio, 6),
             "kept": self.kept, "removed": self.removed, "producers": self.producers,
             "consumers": self.consumers, "skip_reasons": self.skip_reasons, "edges": self.edges}
        if self.scores is not None:
            d["scores"] = [float(f"{s:.6g}") for s in self.scores]
        if self.metrics:
            d["metrics"] = self.metrics
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GroupPlan":
        return cls(id=d["id"], channels=d["channels"], prunable=d["prunable"], kept=list(d["kept"]),
                   producers=d.get("producers", []), consumers=d.get("consumers", []),
                   skip_reasons=d.get("skip_reasons", []), edges=d.get("edges", []),
                   scores=d.get("scores"), metrics=d.get("metrics", {}))


@dataclass
class Plan:
    groups: list[GroupPlan]
    model_sha256: str = ""
    pruned_sha256: str = ""          # the pruned model file written with this plan (set by the CLI)
    settings: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    refit: dict[str, Any] | None = None      # onnxprune.recover.RefitRecord.to_dict(), when refitted

    def kept(self) -> dict[int, np.ndarray]:
        """Kept indices of every group that loses at least one channel."""
        return {g.id: np.asarray(g.kept, np.int64) for g in self.groups if len(g.kept) < g.channels}

    @classmethod
    def build(cls, analysis: Analysis, kept: dict[int, np.ndarray], **info) -> "Plan":
        groups = []
        for g in analysis.groups:
            k = kept.get(g.id)
            groups.append(GroupPlan(
                id=g.id, channels=g.channels, prunable=g.prunable,
                kept=[int(i) for i in (k if k is not None else range(g.channels))],
                producers=g.producers, consumers=g.consumers, skip_reasons=g.skip_reasons,
                edges=edge_records(analysis, g.id)))
        return cls(groups=groups, **info)

    def to_dict(self) -> dict:
        d = {"format": PLAN_FORMAT, "model_sha256": self.model_sha256, "pruned_sha256": self.pruned_sha256,
             "settings": self.settings, "budget": self.budget, "cost": self.cost,
             "groups": [g.to_dict() for g in self.groups]}
        if self.refit is not None:
            d["refit"] = self.refit
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        if d.get("format") != PLAN_FORMAT:
            raise PlanError(f"not an onnxprune plan (format {d.get('format')!r}, expected {PLAN_FORMAT!r})")
        return cls(groups=[GroupPlan.from_dict(g) for g in d["groups"]], model_sha256=d.get("model_sha256", ""),
                   pruned_sha256=d.get("pruned_sha256", ""),
                   settings=d.get("settings", {}), budget=d.get("budget", {}), cost=d.get("cost", {}),
                   refit=d.get("refit"))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        try:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlanError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise PlanError(f"{path}: not an onnxprune plan (a JSON {type(d).__name__}, expected an object)")
        try:
            return cls.from_dict(d)
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise PlanError(f"{path}: malformed plan ({type(exc).__name__}: {exc})") from None

    def validate(self, analysis: Analysis) -> None:
        """Check that the plan fits the analysed model before anything is touched."""
        if len(self.groups) != len(analysis.groups):
            raise PlanError(f"plan has {len(self.groups)} groups, the model has {len(analysis.groups)}")
        for gp, g in zip(self.groups, analysis.groups):
            if gp.channels != g.channels:
                raise PlanError(f"group {g.id}: plan says {gp.channels} channels, model has {g.channels}")
            k = np.asarray(gp.kept, dtype=np.int64)
            if len(k) == 0:
                if not g.prunable:
                    raise PlanError(f"group {g.id} cannot be pruned ({'; '.join(g.skip_reasons)})")
                continue      # emptied whole: the rewrite checks it may be (analysis.emptiable)
            if np.any(np.diff(k) <= 0) or k.min() < 0 or k.max() >= g.channels:
                raise PlanError(f"group {g.id}: kept indices must be sorted, unique and in [0, {g.channels})")
            if len(k) < g.channels and not g.prunable:
                raise PlanError(f"group {g.id} cannot be pruned ({'; '.join(g.skip_reasons)})")
            if g.equal_blocks > 1:
                per = np.bincount(k // (g.channels // g.equal_blocks), minlength=g.equal_blocks)
                if len(set(per.tolist())) != 1:
                    raise PlanError(f"group {g.id}: a grouped conv needs the same number of kept "
                                    f"channels in each of its {g.equal_blocks} groups")
