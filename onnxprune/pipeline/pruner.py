"""The prune job end to end: analysis → budget allocation → channel selection → rewrite → verify.

:class:`Pruner` holds the stages in order; branch removal (``branches``), a latency budget met by
measurement (``measured_latency``), the config (``config``) and calibration data (``calibration``)
live beside it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, asdict
from typing import Mapping

import numpy as np
import onnx

from onnxprune.allocate import (AllocationProblem, ExactCosts, allocate, budget_problem, check_feasible,
                                ratio_counts, repair)
from onnxprune.allocate.candidates import Candidate, Choice, ChoiceRule, choose_candidate, recipe_name
from onnxprune.allocate.emptied import overshoots, without_groups
from onnxprune.analysis import Analysis, analyze
from onnxprune.analysis.cost import CostModel
from onnxprune.errors import BudgetError, PlanError, VerificationError
from onnxprune.log import get_logger, quieted
from onnxprune.pipeline.calibration import check_calibration, data_batches, first_images
from onnxprune.pipeline.config import WEIGHT_CRITERIA, PruneConfig
from onnxprune.rewrite.plan import Plan
from onnxprune.rewrite.apply import apply_plan
from onnxprune.scoring.selection import group_scores, select_all, span_floors
from onnxprune.verify.oracle import VerifyReport, compare

__all__ = ["PruneResult", "Pruner", "prune", "QUICK_REFIT_POSITIONS"]

log = get_logger(__name__)

QUICK_REFIT_POSITIONS = 32     # the candidates' quick refit: output positions per image (the prune's refit: 64)


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    analysis: Analysis
    report: VerifyReport | None
    timings: dict[str, float] = field(default_factory=dict)


class Pruner:
    """``Pruner(config).fit(model, data)`` learns groups, metrics, allocation and scores;
    ``.transform()`` returns a :class:`PruneResult` with the pruned model.

    Fitted attributes: ``analysis_``, ``cost_``, ``metrics_`` (group → GroupMetrics),
    ``scores_`` (group → channel scores), ``allocation_`` (group → kept count), ``kept_``,
    ``choice_`` (the candidate allocation chosen with calibration data, or None).
    Progress goes to the ``onnxprune.pipeline`` logger (see :mod:`onnxprune.log`).
    """

    def __init__(self, config: PruneConfig, provider: str = "auto", calib_batch_mb: float = 256.0,
                 rank_images: int = 256, hsic_images: int = 256, shapley_images: int = 128) -> None:
        config.validate()
        self.config = config
        self.provider, self.calib_batch_mb = provider, calib_batch_mb
        self.limits = dict(rank_images=rank_images, hsic_images=hsic_images, shapley_images=shapley_images)
        self.provider_used: str | None = None
        self.timings: dict[str, float] = {}
        self.metrics_: dict = {}
        self.notes: list[str] = []
        self.choice_: Choice | None = None
        self.scored_by_reconstruction_: set[int] = set()   # groups whose channels the refit's error chose
        self.latency_ = None
        self.latency_steps_: dict = {}
        self.latency_feedback_: list = []
        self.latency_located_: list = []    # the brief rounds that located the budget before the choice
        self._branch_ranking: dict = {}     # emptiable group -> (harm, time saved), for this fit's images

    @property
    def settings(self) -> dict:
        """The run settings outside the config (recorded by :meth:`save`)."""
        return {"provider": self.provider, "provider_used": self.provider_used,
                "calib_batch_mb": self.calib_batch_mb, **self.limits}

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
        session = CaptureSession(model, tensors, self.provider)
        self.provider_used = session.provider
        total = len(data)
        self._mc_images = []
        kept_images = 0
        for x, outs in session.stream_with_inputs(data_batches(data, bs), total=total):
            stats.update(outs)
            if crit == "shapley-mc" and kept_images < self.config.shapley_mc_images:
                self._mc_images.append(x[:self.config.shapley_mc_images - kept_images])
                kept_images += len(self._mc_images[-1])
        self.timings["capture_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.metrics_ = stats.result(beta=self.config.beta, fusion=self.config.fusion, lam=self.config.lam)
        self.timings["metrics_s"] = time.perf_counter() - t0
        log.info("metrics: %d groups from %d images", len(self.metrics_), stats.seen)

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
                log.info("shapley-mc: group %d (%d channels), %d coalitions", g.id, g.channels,
                         est.num_evaluations)
            elif crit == "shapley" and m is not None and m.shapley is not None:
                scores[g.id] = np.asarray(m.shapley)
            elif crit == "hrank" and m is not None and m.channel_rank is not None:
                scores[g.id] = np.asarray(m.channel_rank)
            else:
                scores[g.id] = group_scores(self.analysis_, g, crit if crit in WEIGHT_CRITERIA else "l1",
                                            self.config.seed)
        return scores

    def _choice_by_reconstruction(self, data) -> bool:
        """Whether channels are chosen by the consumers' reconstruction error: asked for, or by
        default when the prune refits (then the choice anticipates the refit). Not with global
        ranking, which compares scores across groups."""
        alloc, _, _ = self.config.resolved()
        choice = self.config.channel_choice
        if choice is None:
            choice = "reconstruction" if self.config.recover == "reconstruct" and data is not None \
                and alloc != "global" else "criterion"
        if choice == "reconstruction" and (data is None or alloc == "global"):
            raise BudgetError("--channel-choice reconstruction needs calibration data (--data) and an "
                              "allocation other than global ranking")
        self.config = dataclasses.replace(self.config, channel_choice=choice)
        return choice == "reconstruction"

    def _reconstruction_scores(self, model, data) -> None:
        """Replace the scores of every group whose consumers can be scored (onnxprune.scoring.
        reconstruction) by their greedy elimination order, on the refit's first images."""
        from onnxprune.scoring.reconstruction import CHOICE_IMAGES, reconstruction_scores
        t0 = time.perf_counter()
        images = first_images(data, min(self.config.recover_images or len(data), CHOICE_IMAGES))
        found = reconstruction_scores(model, self.analysis_, images, provider=self.provider,
                                      batch_mb=self.calib_batch_mb, seed=self.config.seed)
        self.scores_.update(found)
        self.scored_by_reconstruction_ = set(found)
        self.timings["choice_s"] = time.perf_counter() - t0

    def _exact_repair(self, problem: AllocationProblem, counts: dict[int, int],
                      emptied: tuple[int, ...] = (), full: AllocationProblem | None = None) -> dict[int, int]:
        """The allocator prices expected counts; a group seen only in part by a tensor (e.g. a
        residual width that grows through channel Pad) can land a little off. Repair against the
        exact cost of the channels the selection keeps (``emptied`` groups keep none; ``problem``
        is then ``full`` without them, and a latency budget keeps ``full``'s units)."""
        def exact(c):
            c = {**c, **dict.fromkeys(emptied, 0)}
            kept = select_all(self.analysis_, c, self.scores_)
            out = {"macs": self.cost_.macs(kept), "params": self.cost_.params(kept)}
            if any(b.name == "latency" for b in problem.budgets):
                from onnxprune.latency.hooks import exact_latency
                out["latency"] = exact_latency(full or problem, self.latency_, c, kept)
            return out
        out = repair(problem, counts, ExactCosts(problem, exact), fill="smallest-first", trade=True)
        return {**out, **dict.fromkeys(emptied, 0)}

    def _candidate_refit_images(self, data, images: np.ndarray) -> np.ndarray | None:
        """The images a candidate is refitted on before it is judged (None without recovery): the
        ones after the selection images, so that the judgement is on images the refit did not see;
        the selection images themselves when the data holds too few others."""
        if self.config.recover != "reconstruct" or self.config.select_refit_images <= 0:
            return None
        rest = first_images(data, self.config.select_refit_images, skip=len(images))
        if len(rest) >= min(32, self.config.select_refit_images):
            return rest
        log.info("allocation: only %d calibration images besides the %d that judge the candidates; "
                 "their quick refit uses those same images", len(rest), len(images))
        return images

    def _pruned_model(self, counts: Mapping[int, int]) -> tuple[Plan, onnx.ModelProto]:
        """The plan keeping ``counts`` channels per group (selected by the fitted scores) and the
        rewritten model, unchecked."""
        plan = Plan.build(self.analysis_, select_all(self.analysis_, dict(counts), self.scores_))
        return plan, apply_plan(self.analysis_, plan, check=False)

    def _pruned_outputs(self, counts: Mapping[int, int], images: np.ndarray,
                        refit_images: np.ndarray | None = None) -> list[np.ndarray]:
        """Every output of the model pruned to ``counts`` (selected by the fitted scores) on
        ``images``; refitted first on ``refit_images`` when given (the prune's own recovery)."""
        from onnxprune.runtime import AnyBatchSession
        plan, pruned = self._pruned_model(counts)
        if refit_images is not None:
            from onnxprune.recover.reconstruct import reconstruct
            with quieted("onnxprune.recover"):
                pruned, _ = reconstruct(self.model_, pruned, self.analysis_, plan, refit_images, seed=self.config.seed,
                                        positions_per_image=QUICK_REFIT_POSITIONS,
                                        max_memory_mb=self.config.recover_memory_mb)
        return AnyBatchSession(pruned).run(images)

    def _candidates(self, problem: AllocationProblem, alloc: str, only: str | None = None,
                    emptied: tuple[int, ...] = (), suffix: str = "") -> list[Candidate]:
        """One allocation per weight sharpness t (weights w^t; t = 0 leaves only the cost
        elasticity) and the uniform one, each repaired against the exact cost; ``only``: just the
        candidate of that name; ``emptied``: groups that keep no channel (their terms leave the
        problem, the budget's remainder goes to the others; ``suffix`` ends the candidates' names)."""
        full = problem
        if emptied:
            problem = without_groups(problem, emptied)
            check_feasible(problem)
        base = self._weights(problem, raw=True)
        out = []
        for t in self.config.temperatures:
            if only in (None, recipe_name(alloc, t)):
                w = self._scaled(full, {g: v ** t for g, v in base.items()})
                result = allocate(problem, alloc, weights=w, x_min=self.config.min_keep)
                out.append(Candidate(recipe_name(alloc, t), dict(result.counts), result.notes))
        if len(self.config.temperatures) > 1 and only in (None, "uniform"):
            result = allocate(problem, "uniform")
            out.append(Candidate("uniform", dict(result.counts), result.notes))
        return [Candidate(c.name + suffix, self._exact_repair(problem, c.counts, tuple(emptied), full), c.notes,
                          tuple(emptied), c.name) for c in out]

    def _select_allocation(self, problem: AllocationProblem, data, alloc: str,
                           rule: ChoiceRule = ChoiceRule()) -> dict[int, int]:
        """Keep the candidate whose pruned model's outputs stay closest to the unpruned model's on
        calibration images (label-free; every output counts, see onnxprune.allocate.candidates);
        ``rule`` narrows what is judged (the measured latency loop's rounds)."""
        from onnxprune.runtime import AnyBatchSession
        if rule.keep is not None:
            fixed, emptied = rule.keep, rule.keep.emptied        # same recipe and branches
            if emptied and overshoots(problem, emptied):
                self.notes.append(f"at this internal budget removing the branches of {fixed.name} alone cuts more "
                                  "than asked: channels only")
                emptied = ()
            return self._candidates(problem, alloc, only=fixed.recipe, emptied=emptied,
                                    suffix=fixed.suffix if emptied else "")[0].counts
        images = first_images(data, self.config.select_images)
        refit_images = self._candidate_refit_images(data, images)
        session = AnyBatchSession(self.model_)
        reference = session.run(images)
        candidates = self._candidates(problem, alloc, only=rule.recipe)
        from onnxprune.pipeline.branches import with_branch_candidates
        branches = self.config.remove_branches == "auto" and bool(self.latency_steps_) and not (
            self.config.latency_reduction is not None and self.config.latency_shape == "tables")
        if refit_images is not None and len(candidates) > 1:
            log.info("allocation: judging %d candidates on %d images, each after a quick refit on %d images",
                     len(candidates), len(images), len(refit_images))
        judge = lambda counts: self._pruned_outputs(counts, images, refit_images)  # noqa: E731
        after = None if refit_images is None else f"a refit on {len(refit_images)} images"
        choice = choose_candidate(candidates, judge, reference, session.output_names, after=after)
        if branches:
            choice = with_branch_candidates(self, problem, alloc, choice, judge, images, reference,
                                            session.output_names, after, target=rule.target)
        self.choice_ = choice
        self.notes.extend(choice.candidate.notes)
        if len(candidates) > 1:
            self.notes.append(f"allocation chosen on {len(images)} calibration images by {choice.criterion} "
                              "(agreement/distance): " + ", ".join(f"{n} {100 * (1 - a):.1f}%/{d:.3f}"
                                                                  for n, (a, d) in choice.scores.items()))
            a, d = choice.scores[choice.candidate.name]
            log.info("allocation: %s (agreement %.1f%%, distance %.3f)", choice.candidate.name, 100 * (1 - a), d)
        return choice.candidate.counts

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
        and data skip activation capture (e.g. when sweeping budgets). With no method, allocation
        or criterion configured, calibration data selects ``infoconc`` (else ``uniform-l1``)."""
        if data is not None:
            check_calibration(model, data)
        self.config = config = self.config.with_default_method(data is not None)
        t0 = time.perf_counter()
        self.model_, self.data_ = model, data
        self._branch_ranking = {}
        self.analysis_ = analyze(model)
        self.cost_ = CostModel(self.analysis_)
        self.timings["analysis_s"] = time.perf_counter() - t0
        log.info("analysis: %d channel groups, %d prunable", len(self.analysis_.groups),
                 len(self.analysis_.prunable))
        if not self.analysis_.prunable:
            raise BudgetError("no channel group can be pruned in this model (run `onnxprune analyze` to see why)")
        self._latency_setup(model)
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
        if self._choice_by_reconstruction(data):
            self._reconstruction_scores(model, data)
        t0 = time.perf_counter()
        self.full_ = {"macs": self.cost_.macs(), "params": self.cost_.params()}
        self._allocate_in_steps(data)
        self.timings["allocation_s"] = time.perf_counter() - t0
        return self

    def _latency_setup(self, model) -> None:
        """The latency model when a latency budget or per-group steps need one (``latency_``)."""
        from onnxprune.latency.hooks import latency_setup
        self.latency_, self.config, self.latency_steps_ = latency_setup(model, self.analysis_, self.config,
                                                                          self.timings)

    def _allocate_in_steps(self, data) -> None:
        """Allocate; per-group latency steps that cannot land the MACs/params budget within a point
        (or at all) give way to finer steps (16 -> 8 -> 1). A latency budget is met by measurement
        (onnxprune.latency.feedback) unless ``latency_rounds`` is 0."""
        from onnxprune.latency.hooks import OVERSHOOT, overshoot, relaxed_steps
        if self.config.latency_reduction is not None and self.config.latency_rounds > 0:
            from onnxprune.pipeline.measured_latency import allocate_measured
            return allocate_measured(self, data)
        relax = bool(self.latency_steps_) and self.config.latency_reduction is None
        while True:
            finer = relaxed_steps(self.config.round_to) if relax else None
            try:
                self.allocation_ = self._allocate(data)
                self.kept_ = select_all(self.analysis_, self.allocation_, self.scores_)
                achieved = {"macs": self.cost_.macs(self.kept_), "params": self.cost_.params(self.kept_)}
                over = overshoot(self.config, self.full_, achieved)
                if finer is None or over <= OVERSHOOT:
                    return
                why = f"overshoot the budget by {100 * over:.1f} points"
            except BudgetError as exc:
                if finer is None:
                    raise
                why = f"cannot meet the budget ({exc})"
            log.info("channel steps %s; trying finer steps", why)
            self.config = dataclasses.replace(self.config, round_to=finer)

    def _allocate(self, data, latency_budget: float | None = None, macs_budget: float | None = None,
                  rule: ChoiceRule = ChoiceRule()) -> dict[int, int]:
        """Counts per group under the config's budgets. The measured feedback's internal budget is
        either ``latency_budget`` (replaces the latency cut asked of the tables) or ``macs_budget``
        (a MACs cut, at least the config's, in place of the tables' latency budget); ``rule``: how
        the candidates are judged (see ChoiceRule)."""
        config = self.config
        alloc, _, _ = config.resolved()
        if config.ratio is not None:
            return ratio_counts(self.analysis_, config.ratio, config.round_to, span_floors(self.analysis_))
        problem = self._problem(latency_budget, macs_budget)
        check_feasible(problem)
        if alloc in ("convex", "linear") and data is not None:
            return self._select_allocation(problem, data, alloc, rule)
        kwargs = {}
        if alloc == "global":
            kwargs["scores"] = {g: self.scores_[g] for g in problem.channels}
        if alloc in ("convex", "linear"):
            kwargs["weights"] = self._weights(problem)
            kwargs["x_min"] = config.min_keep
        result = allocate(problem, alloc, **kwargs)
        self.notes.extend(result.notes)
        return self._exact_repair(problem, dict(result.counts))

    def _problem(self, latency_budget: float | None = None, macs_budget: float | None = None) -> AllocationProblem:
        """The allocation problem under the config's budgets (see :meth:`_allocate` for the two
        internal budgets); every group keeps at least one channel per tensor."""
        config = self.config
        flops = config.flops_reduction if macs_budget is None else max(macs_budget, config.flops_reduction or 0.0)
        problem = budget_problem(self.analysis_, self.cost_, flops_reduction=flops,
                                 params_reduction=config.params_reduction, round_to=config.round_to,
                                 min_channels=span_floors(self.analysis_))
        if config.latency_reduction is not None and macs_budget is None:
            from onnxprune.latency.hooks import with_latency_budget
            problem = with_latency_budget(problem, self.latency_, config.latency_reduction
                                          if latency_budget is None else latency_budget)
        return problem

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
        if config.latency_reduction is not None:
            requested["latency_reduction"] = config.latency_reduction
        settings = {k: v for k, v in asdict(config).items()
                    if k not in ("verify", "rtol", "recover", "recover_images", "recover_memory_mb")}
        settings |= {"allocation": "ratio" if config.ratio is not None else alloc, "criterion": crit,
                     "weights": weights,
                     "scored_by_reconstruction": sorted(self.scored_by_reconstruction_)}
        removed = self._removed_branches()
        plan = Plan.build(
            self.analysis_, self.kept_, settings=settings,
            budget={"requested": requested,
                    "achieved": {"macs_reduction": 1 - achieved["macs"] / self.full_["macs"],
                                 "params_reduction": 1 - achieved["params"] / self.full_["params"]},
                    "notes": list(self.notes),
                    **({"removed_branches": removed} if removed else {}),
                    **({"latency": self._latency_record()} if self.latency_ is not None else {}),
                    **({"allocation_choice": self.choice_.to_dict()} if self.choice_ else {})},
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

    def _removed_branches(self) -> list[dict]:
        """The groups this prune empties whole, with the layers that go."""
        from onnxprune.analysis.emptiable import emptying_of
        gone = [g for g, k in self.kept_.items() if len(k) == 0]
        view = self.analysis_.view
        return [{"group": g, "removed_layers": [view.label(i) for i in e.writers + e.readers]}
                for g, e in emptying_of(self.analysis_, gone).items()]

    def _latency_record(self) -> dict:
        from onnxprune.latency.hooks import latency_record
        rec = latency_record(self.latency_, self.kept_, self.config, self.latency_steps_)
        if self.latency_feedback_:
            rec["feedback"] = list(self.latency_feedback_)
        if self.latency_located_:
            rec["located"] = list(self.latency_located_)
        return rec

    @property
    def allocation_choice_(self) -> str | None:
        """Name of the chosen candidate allocation (None when no choice was made)."""
        return self.choice_.candidate.name if self.choice_ else None

    def transform(self, model: onnx.ModelProto | None = None) -> "PruneResult":
        """Rewrite the fitted model and verify it against the masked original.

        ``model`` may be omitted; when given it must be the model passed to :meth:`fit` (the same
        object or an identical copy): the plan's node and group ids refer to that graph, so any
        other model is refused with a PlanError rather than verified against the wrong reference.
        """
        if not hasattr(self, "kept_"):
            raise PlanError("transform() before fit(): call Pruner.fit(model, data) first")
        if model is not None and model is not self.model_ and \
                model.SerializeToString(deterministic=True) != self.model_.SerializeToString(deterministic=True):
            raise PlanError(f"transform(model): graph '{model.graph.name}' is not the model this Pruner "
                            f"was fitted on (graph '{self.model_.graph.name}'); fit it first")
        plan = self.plan()
        t0 = time.perf_counter()
        pruned = apply_plan(self.analysis_, plan)
        written = self._simplified(pruned)
        self.timings["rewrite_s"] = time.perf_counter() - t0
        report = None
        if self.config.verify:
            t0 = time.perf_counter()
            report = compare(self.model_, written, plan, rtol=self.config.rtol, seed=self.config.seed)
            self.timings["verify_s"] = time.perf_counter() - t0
            if not report.ok:
                bad = [o for o in report.outputs if not o.ok]
                raise VerificationError(
                    f"pruned model differs from the masked original at output '{bad[0].name}' "
                    f"(max abs {bad[0].max_abs:.3g}, rel {bad[0].max_rel:.3g}); nothing written")
        if self.config.recover == "reconstruct" and getattr(self, "data_", None) is not None:
            # the refit works on the plain rewrite (simplification would hide the residual
            # structure it fits against); the same simplification follows it
            from onnxprune.recover.hook import refit_after_rewrite
            written = self._simplified(refit_after_rewrite(self, self.model_, pruned, plan))
        return PruneResult(written, plan, self.analysis_, report, dict(self.timings))

    def _simplified(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` with the post-rewrite clean-up applied when the config asks for it."""
        if not self.config.simplify:
            return model
        from onnxprune.rewrite.simplify import simplify
        return simplify(model)[0]

    def save(self, path) -> None:
        """Save the fitted records (config, run settings, groups, metrics, allocation, scores) as JSON."""
        from onnxprune.model_io import write_json_atomic
        write_json_atomic(path, {"config": asdict(self.config), "settings": self.settings,
                                 "plan": self.plan().to_dict(),
                                 "metrics": {str(g): m.to_dict() for g, m in self.metrics_.items()},
                                 "allocation": {str(g): n for g, n in self.allocation_.items()},
                                 "timings": self.timings})


def prune(model: onnx.ModelProto, config: PruneConfig, data=None,
          **kwargs) -> PruneResult:
    """Prune ``model`` under ``config`` (see :class:`Pruner`); stage messages go to the
    ``onnxprune.pipeline`` logger."""
    return Pruner(config, **kwargs).fit(model, data).transform()
