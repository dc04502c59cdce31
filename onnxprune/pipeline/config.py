"""What a prune is asked to do: the budget, the method preset and every tunable (:class:`PruneConfig`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from onnxprune.allocate import resolve_multiples
from onnxprune.allocate.emptied import DISTANCE_TOLERANCE
from onnxprune.errors import BudgetError
from onnxprune.log import get_logger

__all__ = ["PruneConfig", "METHODS", "DEFAULT_METHOD", "DEFAULT_DATA_METHOD", "DATA_CRITERIA", "WEIGHT_CRITERIA"]

log = get_logger(__name__)

METHODS = {
    # name: (allocation, criterion, layer weights for convex/linear allocation)
    "infoconc": ("convex", "shapley", "concentration"),   # Chen & Wang: information concentration + Shapley
    "itpruner": ("convex", "l1", "nhsic"),                # ITPruner: nHSIC importance + L1 in-layer
    "uniform-l1": ("uniform", "l1", None),
    "uniform-hrank": ("uniform", "hrank", None),
}
DEFAULT_METHOD = "uniform-l1"          # no method, allocation or criterion given, no data
DEFAULT_DATA_METHOD = "infoconc"       # the same with calibration data
DATA_CRITERIA = {"shapley", "shapley-mc", "hrank"}
WEIGHT_CRITERIA = {"l1", "l2", "fpgm", "random"}


@dataclass(frozen=True)
class PruneConfig:
    """What to remove and how. Give one of the budgets (MACs and params may be combined).

    ``method`` picks a preset for allocation / criterion / weights; any of the three given
    explicitly overrides the preset. With none of method / allocation / criterion given the preset
    is ``uniform-l1`` (data-free); :meth:`Pruner.fit` picks ``infoconc`` when calibration data is
    given (see :meth:`with_default_method`). ``round_to`` is one channel multiple for every group,
    a mapping group id -> multiple, or ``"latency"``: per group, the step the ``target`` engine runs
    fast at ``batch`` (measured, see onnxprune.latency.steps); the default here is 1 (exact counts,
    nothing timed), while ``onnxprune prune`` without ``--round-to`` asks for ``"latency"``, which
    a MACs budget needs to buy time on the engine (ResNet-56 at -45.5 % MACs with exact counts ran
    slower than the original at batch 64). ``latency_reduction`` is a budget on
    the latency measured on the ``target`` engine at ``batch``, met by up to ``latency_rounds`` timed
    pruned models (onnxprune.latency.feedback). ``latency_shape`` says what shapes the allocation
    across groups: ``"macs"`` (default) searches the MACs budget whose allocation (information
    weights, per-group channel steps, branch removal) lands on the measured cut; ``"tables"`` puts
    the per-layer latency tables into the convex program as a latency budget (channels only: with
    the branches its first round chose kept, ResNet-56 lost 17 points at a 30 % cut).
    ``channel_choice`` says which channels of a group go once its count is set: ``"criterion"`` (the
    criterion's top scores) or ``"reconstruction"`` (greedy elimination on the least squares of the
    layers that read the group, onnxprune.scoring.reconstruction); None: reconstruction when the
    prune refits (``recover="reconstruct"`` with data), since the refit then makes up for what goes.
    ``latency_rounds=0`` trusts the tables' prediction alone (always the "tables" shape).
    """
    flops_reduction: float | None = None     # fraction of MACs (= of FLOPs) to remove
    params_reduction: float | None = None    # fraction of parameters to remove
    ratio: float | None = None               # fraction of channels removed from every group
    latency_reduction: float | None = None   # fraction of measured latency (target, batch) to remove
    target: str = "cpu"                      # latency engine: cpu | cuda | tensorrt
    batch: int = 1                           # batch size the latency is measured at
    method: str | None = None                # infoconc | itpruner | uniform-l1 | uniform-hrank
    allocation: str | None = None            # uniform | global | convex | linear
    criterion: str | None = None             # l1 | l2 | fpgm | random | hrank | shapley
    weights: str | None = None               # concentration | nhsic (convex/linear allocation)
    round_to: int | Mapping[int, int] | str = 1   # multiples of this (per group), or "latency"
    min_keep: float = 0.1                    # convex/linear: no group below this keep-ratio
    beta: float = 500.0                      # ITPruner's β in α = exp(-β s̃)
    fusion: str = "geometric"                # rank/entropy fusion: geometric | harmonic | convex
    shapley_permutations: int = 8            # shapley-mc: Monte-Carlo permutations per group
    shapley_mc_images: int = 32              # shapley-mc: images per coalition value
    temperatures: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)   # convex/linear: weight sharpness candidates
    select_images: int = 128                 # calibration images that pick among the candidates
    select_refit_images: int = 256           # with recover: the candidates' quick refit uses the images after those
    lam: float = 0.5                         # fusion weight λ of the rank
    seed: int = 0
    verify: bool = True
    rtol: float = 1e-5
    recover: str = "reconstruct"             # reconstruct (when calibration data is given) | none
    recover_images: int | None = None        # calibration images for the refit (None: all given)
    recover_memory_mb: int = 1024            # refit: cap on the activations stored between waves
    channel_choice: str | None = None        # reconstruction | criterion (None: reconstruction when refitted)
    simplify: bool = True                    # fold static sub-graphs, drop no-op Pad/Slice after the rewrite
    latency_rounds: int = 6                  # latency budget: measured allocate-time-correct rounds (0: tables only)
    latency_shape: str = "macs"              # latency budget met through: macs (a MACs budget searched) | tables (a latency budget)
    remove_branches: str = "auto"            # auto: with per-group latency steps, judge candidates that empty whole residual branches | off
    branch_tolerance: float = DISTANCE_TOLERANCE   # branch removal: output distance allowed above the channels-only choice's (fraction)
    max_branches: int = 8                    # branch removal: at most this many branches removed

    def resolved(self) -> tuple[str, str, str | None]:
        alloc, crit, weights = METHODS.get(self.method or DEFAULT_METHOD)
        return (self.allocation or alloc, self.criterion or crit, self.weights or weights)

    @property
    def method_unspecified(self) -> bool:
        return self.method is None and self.allocation is None and self.criterion is None

    def with_default_method(self, has_data: bool) -> "PruneConfig":
        """This config with the default preset made explicit: infoconc with data, else uniform-l1."""
        if not self.method_unspecified:
            return self
        if has_data:
            log.info("no method given: calibration data is available, using %s", DEFAULT_DATA_METHOD)
            return dataclasses.replace(self, method=DEFAULT_DATA_METHOD)
        log.info("no method given and no calibration data: using the data-free %s; calibration data "
                 "(--data) would enable %s", DEFAULT_METHOD, DEFAULT_DATA_METHOD)
        return dataclasses.replace(self, method=DEFAULT_METHOD)

    @property
    def needs_data(self) -> bool:
        alloc, crit, _ = self.resolved()
        return crit in DATA_CRITERIA or alloc in ("convex", "linear")

    def validate(self) -> None:
        given = [x for x in (self.flops_reduction, self.params_reduction, self.ratio, self.latency_reduction)
                 if x is not None]
        if len(given) == 0:
            raise BudgetError("give a budget: --flops-reduction F, --params-reduction F, --latency-reduction F "
                              "or --ratio R")
        for name in ("flops_reduction", "params_reduction", "ratio", "latency_reduction"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v < 1.0):
                raise BudgetError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.ratio is not None and len(given) > 1:
            raise BudgetError("--ratio sets every group's ratio; it cannot be combined with a reduction budget")
        if self.target not in ("cpu", "cuda", "tensorrt"):
            raise BudgetError(f"--target must be cpu, cuda or tensorrt, got {self.target!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise BudgetError(f"--batch must be a positive integer, got {self.batch!r}")
        try:
            if self.round_to != "latency":
                resolve_multiples(self.round_to, self.round_to.keys() if isinstance(self.round_to, Mapping) else [0])
        except BudgetError:
            raise BudgetError(f"--round-to must be a positive integer (or a mapping group -> positive "
                              f"integer, or 'latency'), got {self.round_to!r}") from None
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
        if self.channel_choice not in (None, "reconstruction", "criterion"):
            raise BudgetError(f"unknown channel choice {self.channel_choice!r}: choose reconstruction or criterion")
        if self.recover_images is not None and self.recover_images < 1:
            raise BudgetError(f"--recover-images must be >= 1, got {self.recover_images}")
        if isinstance(self.recover_memory_mb, bool) or not isinstance(self.recover_memory_mb, int) \
                or self.recover_memory_mb < 1:
            raise BudgetError(f"--recover-memory must be an integer >= 1 (MB), got {self.recover_memory_mb!r}")
        if isinstance(self.latency_rounds, bool) or not isinstance(self.latency_rounds, int) or self.latency_rounds < 0:
            raise BudgetError(f"--latency-rounds must be a non-negative integer, got {self.latency_rounds!r}")
        if isinstance(self.branch_tolerance, bool) or not isinstance(self.branch_tolerance, (int, float)) \
                or not 0 <= self.branch_tolerance < 10:
            raise BudgetError(f"--branch-tolerance must be a number in [0, 10), got {self.branch_tolerance!r}")
        if isinstance(self.max_branches, bool) or not isinstance(self.max_branches, int) or self.max_branches < 1:
            raise BudgetError(f"--max-branches must be a positive integer, got {self.max_branches!r}")
        if self.remove_branches not in ("auto", "off"):
            raise BudgetError(f"unknown branch removal {self.remove_branches!r}: choose auto or off")
        if self.latency_shape not in ("macs", "tables"):
            raise BudgetError(f"unknown latency shape {self.latency_shape!r}: choose macs or tables")
        if not 0 < self.min_keep <= 1:
            raise BudgetError(f"--min-keep must be in (0, 1], got {self.min_keep}")

