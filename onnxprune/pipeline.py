"""The prune job end to end: analysis → budget allocation → channel selection → rewrite → verify.

``prune(model, PruneConfig(...))`` returns a :class:`PruneResult` holding the pruned model, the
plan and the verification report; the CLI writes them to disk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, asdict
from typing import Callable

import numpy as np
import onnx

from onnxprune.allocate.core import AllocationProblem, Budget, Posynomial, allocate, check_feasible
from onnxprune.analysis.groups import Analysis, analyze
from onnxprune.analysis.cost import CostModel
from onnxprune.errors import BudgetError, VerificationError
from onnxprune.rewrite.plan import Plan
from onnxprune.rewrite.apply import apply_plan
from onnxprune.scoring.selection import group_scores, select_all
from onnxprune.verify.oracle import VerifyReport, compare

__all__ = ["PruneConfig", "PruneResult", "Pruner", "prune", "budget_problem", "METHODS"]


METHODS = {
    # name: (allocation, criterion, layer weights for convex/linear allocation)
    "infoconc": ("convex", "shapley", "concentration"),   # Chen & Wang: information concentration + Shapley
    "itpruner": ("convex", "l1", "nhsic"),                # ITPruner: nHSIC importance + L1 in-layer
    "uniform-l1": ("uniform", "l1", None),
    "uniform-hrank": ("uniform", "hrank", None),
}
DATA_CRITERIA = {"shapley", "shapley-mc", "hrank"}
WEIGHT_CRITERIA = {"l1", "l2", "fpgm", "random"}


@dataclass(frozen=True)
class PruneConfig:
    """What to remove and how. Give one of the budgets (MACs and params may be combined).

    ``method`` picks a preset for allocation / criterion / weights; any of the three given
    explicitly overrides the preset.
    """
    flops_reduction: float | None = None     # fraction of MACs (= of FLOPs) to remove
    params_reduction: float | None = None    # fraction of parameters to remove
    ratio: float | None = None               # fraction of channels removed from every group
    method: str | None = None                # infoconc | itpruner | uniform-l1 | uniform-hrank
    allocation: str | None = None            # uniform | global | convex | linear
    criterion: str | None = None             # l1 | l2 | fpgm | random | hrank | shapley
    weights: str | None = None               # concentration | nhsic (convex/linear allocation)
    round_to: int = 1                        # kept channel counts are multiples of this
    min_keep: float = 0.1                    # convex/linear: no group below this keep-ratio
    beta: float = 500.0                      # ITPruner's β in α = exp(-β s̃)
    fusion: str = "geometric"                # rank/entropy fusion: geometric | harmonic | convex
    shapley_permutations: int = 8            # shapley-mc: Monte-Carlo permutations per group
    shapley_mc_images: int = 32              # shapley-mc: images per coalition value
    temperatures: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)   # convex/linear: weight sharpness candidates
    select_images: int = 128                 # calibration images that pick among the candidates
    lam: float = 0.5                         # fusion weight λ of the rank
    seed: int = 0
    verify: bool = True
    rtol: float = 1e-5
    recover: str = "reconstruct"             # reconstruct (when calibration data is given) | none
    recover_images: int | None = None        # calibration images for the refit (None: all given)

    def resolved(self) -> tuple[str, str, str | None]:
        alloc, crit, weights = METHODS.get(self.method or "uniform-l1")
        return (self.allocation or alloc, self.criterion or crit, self.weights or weights)

    @property
    def needs_data(self) -> bool:
        alloc, crit, _ = self.resolved()
        return crit in DATA_CRITERIA or alloc in ("convex", "linear")

    def validate(self) -> None:
        given = [x for x in (self.flops_reduction, self.params_reduction, self.ratio) if x is not None]
        if len(given) == 0:
            raise BudgetError("give a budget: --flops-reduction F, --params-reduction F or --ratio R")
        for name in ("flops_reduction", "params_reduction", "ratio"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v < 1.0):
                raise BudgetError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.ratio is not None and len(given) > 1:
            raise BudgetError("--ratio sets every group's ratio; it cannot be combined with a reduction budget")
        if self.round_to < 1:
            raise BudgetError(f"--round-to must be >= 1, got {self.round_to}")
        if self.method is not None and self.method not in METHODS:
            raise BudgetError(f"unknown method {self.method!r}: choose {', '.join(METHODS)}")
        alloc, crit, weights = self.resolved()
        if alloc not in ("uniform", "global", "convex", "linear"):
            raise BudgetError(f"unknown allocation {alloc!r}: choose uniform, global, convex or linear")
        if crit not in DATA_CRITERIA | WEIGHT_CRITERIA:
            raise BudgetError(f"unknown criterion {crit!r}: choose {', '.join(sorted(DATA_CRITERIA | WEIGHT_CRITERIA))}")
        if alloc in ("convex", "linear") and weights not in ("concentration", "nhsic"):
            raise BudgetError(f"{alloc} allocation needs --weights concentration or nhsic")
        if self.recover not in ("reconstruct", "none"):
            raise BudgetError(f"unknown recovery {self.recover!r}: choose reconstruct or none")
        if self.recover_images is not None and self.recover_images < 1:
            raise BudgetError(f"--recover-images must be >= 1, got {self.recover_images}")
        if not 0 < self.min_keep <= 1:
            raise BudgetError(f"--min-keep must be in (0, 1], got {self.min_keep}")


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    analysis: Analysis
    report: VerifyReport | None
    timings: dict[str, float] = field(default_factory=dict)


def _posynomial(terms: dict[tuple[int, ...], float]) -> Posynomial:
    return Posynomial(terms=tuple((c, k) for k, c in terms.items() if k and c > 0),
                      constant=float(terms.get((), 0.0)))


def budget_problem(analysis: Analysis, cost: CostModel, config: PruneConfig) -> AllocationProblem:
    """The allocation problem for the prunable groups under the configured budgets."""
    prunable = {g.id for g in analysis.prunable}
    budgets = []
    if config.flops_reduction is not None:
        budgets.append(Budget("macs", _posynomial(cost.macs_terms(prunable)),
                              cost.macs() * (1 - config.flops_reduction)))
    if config.params_reduction is not None:
        budgets.append(Budget("params", _posynomial(cost.params_terms(prunable)),
                              cost.params() * (1 - config.params_reduction)))
    multiple = {}
    for g in analysis.prunable:
        m = config.round_to * g.equal_blocks // math.gcd(config.round_to, g.equal_blocks)
        multiple[g.id] = m
    channels = {g.id: g.channels for g in analysis.prunable}
    return AllocationProblem(channels=channels, budgets=tuple(budgets), multiple=multiple)


def _ratio_counts(analysis: Analysis, config: PruneConfig) -> dict[int, int]:
    counts = {}
    for g in analysis.prunable:
        m = config.round_to * g.equal_blocks // math.gcd(config.round_to, g.equal_blocks)
        n = int(round(g.channels * (1 - config.ratio) / m)) * m
        counts[g.id] = min(g.channels, max(m, n))
    return counts


def _exact_repair(analysis, cost, problem, counts, scores, targets, full):
    """The allocator works on expected counts; a group seen only in part by a tensor (e.g. a
    residual width that grows through channel Pad) can land a little off. Step counts by their
    multiple until the exact cost meets every target, then add back what still fits."""
    def exact(c):
        kept = select_all(analysis, c, scores)
        return {"macs": cost.macs(kept), "params": cost.params(kept)}

    def ok(values):
        return all(values[name] <= t * (1 + 1e-9) for name, t in targets.items())

    mult = problem.multiple
    mins = {g: max(mult.get(g, 1), 1) for g in counts}
    values = exact(counts)
    for _ in range(4 * len(counts) + 50):
        if ok(values):
            break
        best = None
        for g, n in counts.items():
            if n - mult[g] < mins[g]:
                continue
            trial = {**counts, g: n - mult[g]}
            v = exact(trial)
            gain = sum((values[k] - v[k]) / full[k] for k in targets)
            loss = math.log(n / (n - mult[g]))
            score = gain / loss if loss > 0 else gain
            if best is None or score > best[0]:
                best = (score, trial, v)
        if best is None:
            reached = ", ".join(f"{k} -{100 * (1 - values[k] / full[k]):.2f} %" for k in targets)
            wanted = ", ".join(f"{k} -{100 * (1 - targets[k] / full[k]):.2f} %" for k in targets)
            raise BudgetError(f"the budget ({wanted}) is out of reach with the kept channels every tensor "
                              f"needs; at most {reached}")
        _, counts, values = best
    # add back, one multiple at a time, what still fits (smallest groups first: cheapest)
    def slack(v):
        return min((targets[k] - v[k]) / full[k] for k in targets)

    changed = ok(values)
    while changed and slack(values) > 0.003:
        changed = False
        for g in sorted(counts, key=lambda g: (problem.channels[g], g)):
            n = counts[g]
            if n + mult[g] > problem.channels[g] or slack(values) <= 0.003:
                continue
            trial = {**counts, g: n + mult[g]}
            v = exact(trial)
            if ok(v):
                counts, values, changed = trial, v, True
    # still more than a point under target: trade one multiple between two groups (small models)
    for _ in range(20):
        if not ok(values) or slack(values) <= 0.01 or len(counts) > 64:
            break
        best = None
        for up in counts:
            if counts[up] + mult[up] > problem.channels[up]:
                continue
            for down in counts:
                if down == up or counts[down] - mult[down] < mins[down]:
                    continue
                trial = {**counts, up: counts[up] + mult[up], down: counts[down] - mult[down]}
                v = exact(trial)
                if ok(v) and slack(v) < slack(values) and (best is None or slack(v) < best[0]):
                    best = (slack(v), trial, v)
        if best is None:
            break
        _, counts, values = best
    return counts, values


def _data_batches(data, batch_size: int):
    """Batches of images from an ndarray or an onnxprune.data.Dataset."""
    if isinstance(data, np.ndarray):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
    else:
        for x, _ in data.batches(batch_size):
            yield x


def _first_images(data, n: int) -> np.ndarray:
    """The first ``n`` calibration images as one array."""
    out, have = [], 0
    for x in _data_batches(data, min(n, 64)):
        out.append(np.asarray(x, np.float32)[:n - have])
        have += len(out[-1])
        if have >= n:
            break
    return np.concatenate(out)


class Pruner:
    """``Pruner(config).fit(model, data)`` learns groups, metrics, allocation and scores;
    ``.transform(model)`` returns a :class:`PruneResult` with the pruned model.

    Fitted attributes: ``analysis_``, ``cost_``, ``metrics_`` (group → GroupMetrics),
    ``scores_`` (group → channel scores), ``allocation_`` (group → kept count), ``kept_``.
    """

    def __init__(self, config: PruneConfig, progress: Callable[[str], None] | None = None,
                 provider: str = "auto", calib_batch_mb: float = 256.0,
                 rank_images: int = 256, hsic_images: int = 256, shapley_images: int = 128) -> None:
        config.validate()
        self.config = config
        self.say = progress or (lambda msg: None)
        self.provider, self.calib_batch_mb = provider, calib_batch_mb
        self.limits = dict(rank_images=rank_images, hsic_images=hsic_images, shapley_images=shapley_images)
        self.timings: dict[str, float] = {}
        self.metrics_: dict = {}
        self.notes: list[str] = []

    # --- stages ---------------------------------------------------------------------------
    def _metrics(self, model, data) -> None:
        from onnxprune.capture.session import CaptureSession, batch_size_for, probes_for
        from onnxprune.metrics.information import InformationStats
        alloc, crit, weights = self.config.resolved()
        t0 = time.perf_counter()
        probes = probes_for(self.analysis_, [g.id for g in self.analysis_.prunable])
        stats = InformationStats(self.analysis_, probes, seed=self.config.seed,
                                 want_shapley=crit == "shapley", **self.limits)
        tensors = stats.tensors
        bs = batch_size_for(self.analysis_, tensors, self.calib_batch_mb, cap=64)
        session = CaptureSession(model, tensors, self.provider, log=self.say)
        self.provider_used = session.provider
        total = len(data)
        self._mc_images = []
        kept_images = 0
        for x, outs in session.stream_with_inputs(_data_batches(data, bs), total=total):
            stats.update(outs)
            if crit == "shapley-mc" and kept_images < self.config.shapley_mc_images:
                self._mc_images.append(x[:self.config.shapley_mc_images - kept_images])
                kept_images += len(self._mc_images[-1])
        self.timings["capture_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.metrics_ = stats.result(beta=self.config.beta, fusion=self.config.fusion, lam=self.config.lam)
        self.timings["metrics_s"] = time.perf_counter() - t0
        self.say(f"metrics: {len(self.metrics_)} groups from {stats.seen} images")

    def _scores(self) -> dict[int, np.ndarray]:
        _, crit, _ = self.config.resolved()
        scores = {}
        for g in self.analysis_.groups:
            m = self.metrics_.get(g.id)
            if crit == "shapley-mc" and g.prunable:
                from onnxprune.scoring.coalitions import network_shapley
                est = network_shapley(self.model_, self.analysis_, g.id, np.concatenate(self._mc_images),
                                      permutations=self.config.shapley_permutations, seed=self.config.seed)
                scores[g.id] = np.asarray(est.values)
                if m is not None:
                    m.shapley, m.shapley_stderr = est.values.tolist(), est.stderr.tolist()
                self.say(f"shapley-mc: group {g.id} ({g.channels} channels), {est.num_evaluations} coalitions")
            elif crit == "shapley" and m is not None and m.shapley is not None:
                scores[g.id] = np.asarray(m.shapley)
            elif crit == "hrank" and m is not None and m.channel_rank is not None:
                scores[g.id] = np.asarray(m.channel_rank)
            else:
                scores[g.id] = group_scores(self.analysis_, g, crit if crit in WEIGHT_CRITERIA else "l1",
                                            self.config.seed)
        return scores

    def _agreement_and_kl(self, kept, images, ref_logp) -> float:
        """Top-1 agreement with the unpruned model and mean KL(unpruned ‖ pruned) on calibration images."""
        from onnxprune.scoring.coalitions import _log_softmax
        from onnxprune.tools.evaluate import predict
        plan = Plan.build(self.analysis_, kept)
        pruned = apply_plan(self.analysis_, plan, check=False)
        logp = _log_softmax(predict(pruned, [images]))
        kl = float((np.exp(ref_logp) * (ref_logp - logp)).sum(axis=1).mean())
        agree = float(np.mean(np.argmax(logp, 1) == np.argmax(ref_logp, 1)))
        return agree, kl

    def _select_allocation(self, problem, data, targets, alloc) -> dict[int, int]:
        """Solve for every weight sharpness t (weights w^t; t = 0 leaves only the cost elasticity)
        and for the uniform allocation; keep the one whose pruned model's outputs stay closest
        (KL) to the unpruned model's on calibration images. Label-free."""
        from onnxprune.scoring.coalitions import _log_softmax
        from onnxprune.tools.evaluate import predict
        images = _first_images(data, self.config.select_images)
        ref_logp = _log_softmax(predict(self.model_, [images]))
        base = self._weights(problem, raw=True)
        candidates = []
        for t in self.config.temperatures:
            w = self._scaled(problem, {g: v ** t for g, v in base.items()})
            result = allocate(problem, alloc, weights=w, x_min=self.config.min_keep)
            candidates.append((f"{alloc} t={t:g}", dict(result.counts), result.notes))
        if len(self.config.temperatures) > 1:
            result = allocate(problem, "uniform")
            candidates.append(("uniform", dict(result.counts), result.notes))
        scored = []
        for name, counts, notes in candidates:
            counts, _ = _exact_repair(self.analysis_, self.cost_, problem, counts, self.scores_, targets, self.full_)
            agree, kl = self._agreement_and_kl(select_all(self.analysis_, counts, self.scores_), images, ref_logp)
            scored.append(((-agree, kl), name, counts, notes))
        scored.sort(key=lambda r: r[0])
        (agree, kl), name, counts, notes = scored[0]
        self.notes.extend(notes)
        if len(scored) > 1:
            self.notes.append("allocation chosen by agreement with the unpruned model's top-1 on %d "
                              "calibration images (then KL): %s" % (len(images), ", ".join(
                                  f"{n} {100 * -a:.1f}%/{k:.3f}" for (a, k), n, _, _ in sorted(scored, key=lambda r: r[1]))))
            self.say(f"allocation: {name} (agreement {100 * -agree:.1f}%, KL {kl:.3f})")
        self.allocation_choice_ = name
        return counts

    def _scaled(self, problem, w: dict[int, float]) -> dict[int, float]:
        """Σ w_g log x_g counts every group alike; scale each by its cost elasticity
        (∂ log cost / ∂ log x_g at x = 1) so that equal weights give a near-uniform cut and a
        group that touches many layers (a residual width) is not sacrificed for being one variable."""
        budget = problem.budgets[0].cost
        total = budget.full()
        elasticity = dict.fromkeys(w, 0.0)
        for coef, groups in budget.terms:
            for g in groups:
                if g in elasticity:
                    elasticity[g] += coef / total
        return {g: w[g] * max(elasticity[g], 1e-9) for g in w}

    def _weights(self, problem, raw: bool = False) -> dict[int, float]:
        _, _, kind = self.config.resolved()
        w = {}
        for g in problem.channels:
            m = self.metrics_.get(g)
            v = None if m is None else (m.concentration if kind == "concentration" else m.nhsic_alpha)
            w[g] = v
        known = [v for v in w.values() if v is not None and v > 0]
        if not known:
            raise BudgetError(f"no {kind} measured for any group; cannot weight the allocation")
        fill = float(np.median(known))
        missing = [g for g, v in w.items() if v is None or v <= 0]
        if missing:
            self.notes.append(f"{len(missing)} group(s) had no {kind} value; given the median")
        w = {g: (v if v is not None and v > 0 else fill) for g, v in w.items()}
        mean = float(np.mean(list(w.values())))
        w = {g: v / mean for g, v in w.items()}
        return w if raw else self._scaled(problem, w)

    # --- public -----------------------------------------------------------------------------
    def fit(self, model: onnx.ModelProto, data=None, metrics: dict | None = None) -> "Pruner":
        """Learn everything needed to prune; ``metrics`` from an earlier fit on the same model
        and data skip activation capture (e.g. when sweeping budgets)."""
        config = self.config
        t0 = time.perf_counter()
        self.model_, self.data_ = model, data
        self.analysis_ = analyze(model)
        self.cost_ = CostModel(self.analysis_)
        self.timings["analysis_s"] = time.perf_counter() - t0
        self.say(f"analysis: {len(self.analysis_.groups)} channel groups, {len(self.analysis_.prunable)} prunable")
        if not self.analysis_.prunable:
            raise BudgetError("no channel group can be pruned in this model (run `onnxprune analyze` to see why)")
        if metrics is not None:
            self.metrics_ = metrics
        elif config.needs_data:
            if data is None:
                alloc, crit, _ = config.resolved()
                raise BudgetError(f"allocation '{alloc}' / criterion '{crit}' need calibration data (--data)")
            self._metrics(model, data)
        t0 = time.perf_counter()
        self.scores_ = self._scores()
        self.timings["scoring_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        alloc, _, _ = config.resolved()
        a, cost = self.analysis_, self.cost_
        self.full_ = {"macs": cost.macs(), "params": cost.params()}
        problem = budget_problem(a, cost, config)
        if config.ratio is not None:
            counts = _ratio_counts(a, config)
        else:
            check_feasible(problem)
            targets = {b.name: b.target for b in problem.budgets}
            if alloc in ("convex", "linear") and data is not None:
                counts = self._select_allocation(problem, data, targets, alloc)
            else:
                kwargs = {}
                if alloc == "global":
                    kwargs["scores"] = {g: self.scores_[g] for g in problem.channels}
                if alloc in ("convex", "linear"):
                    kwargs["weights"] = self._weights(problem)
                    kwargs["x_min"] = config.min_keep
                result = allocate(problem, alloc, **kwargs)
                self.notes.extend(result.notes)
                counts, _ = _exact_repair(a, cost, problem, dict(result.counts), self.scores_, targets, self.full_)
        self.allocation_ = counts
        self.kept_ = select_all(a, counts, self.scores_)
        self.timings["allocation_s"] = time.perf_counter() - t0
        return self

    def plan(self) -> Plan:
        config, cost = self.config, self.cost_
        alloc, crit, weights = config.resolved()
        achieved = {"macs": cost.macs(self.kept_), "params": cost.params(self.kept_)}
        requested = {}
        if config.flops_reduction is not None:
            requested["macs_reduction"] = config.flops_reduction
        if config.params_reduction is not None:
            requested["params_reduction"] = config.params_reduction
        if config.ratio is not None:
            requested["channel_ratio"] = config.ratio
        settings = {k: v for k, v in asdict(config).items() if k not in ("verify", "rtol", "recover", "recover_images")}
        settings |= {"allocation": "ratio" if config.ratio is not None else alloc, "criterion": crit,
                     "weights": weights}
        plan = Plan.build(
            self.analysis_, self.kept_, settings=settings,
            budget={"requested": requested,
                    "achieved": {"macs_reduction": 1 - achieved["macs"] / self.full_["macs"],
                                 "params_reduction": 1 - achieved["params"] / self.full_["params"]},
                    "notes": list(self.notes)},
            cost={"unit": "MACs per image; FLOPs = 2 x MACs",
                  "macs": {"original": self.full_["macs"], "pruned": achieved["macs"]},
                  "params": {"original": self.full_["params"], "pruned": achieved["params"]}})
        for gp in plan.groups:
            if gp.prunable:
                gp.scores = [float(s) for s in self.scores_[gp.id]]
            m = self.metrics_.get(gp.id)
            if m is not None:
                gp.metrics = {k: v for k, v in m.to_dict().items()
                              if k not in ("channel_rank", "channel_entropy", "shapley", "group")}
        return plan

    def transform(self, model: onnx.ModelProto) -> "PruneResult":
        plan = self.plan()
        t0 = time.perf_counter()
        pruned = apply_plan(self.analysis_, plan)
        self.timings["rewrite_s"] = time.perf_counter() - t0
        report = None
        if self.config.verify:
            t0 = time.perf_counter()
            report = compare(model, pruned, plan, rtol=self.config.rtol, seed=self.config.seed)
            self.timings["verify_s"] = time.perf_counter() - t0
            if not report.ok:
                bad = [o for o in report.outputs if not o.ok]
                raise VerificationError(
                    f"pruned model differs from the masked original at output '{bad[0].name}' "
                    f"(max abs {bad[0].max_abs:.3g}, rel {bad[0].max_rel:.3g}); nothing written")
        if self.config.recover == "reconstruct" and getattr(self, "data_", None) is not None:
            from onnxprune.recover.hook import refit_after_rewrite
            pruned = refit_after_rewrite(self, model, pruned, plan)
        return PruneResult(pruned, plan, self.analysis_, report, dict(self.timings))

    def save(self, path) -> None:
        """Save the fitted records (groups, metrics, allocation, scores) as JSON."""
        from onnxprune.model_io import write_json_atomic
        write_json_atomic(path, {"config": asdict(self.config), "plan": self.plan().to_dict(),
                                 "metrics": {str(g): m.to_dict() for g, m in self.metrics_.items()},
                                 "allocation": {str(g): n for g, n in self.allocation_.items()},
                                 "timings": self.timings})


def prune(model: onnx.ModelProto, config: PruneConfig, data=None,
          progress: Callable[[str], None] | None = None, **kwargs) -> PruneResult:
    """Prune ``model`` under ``config`` (see :class:`Pruner`)."""
    return Pruner(config, progress, **kwargs).fit(model, data).transform(model)
