"""Per-group channel steps: the multiple each group's channel count should keep on the target.

Two readings, the second overriding the first where it can be measured:

1. **The tables** (:func:`channel_steps`): a group of C channels, C a multiple of the engine's
   largest block M and C >= 2M, starts at step M: layers timed alone miss what leaving the blocked
   layout costs in the network (ResNet-50 at batch 1: tables that let 512-channel groups keep 376
   channels and the stem 47 gave 1.49x at -45 % MACs, steps of 16 gave 1.8-1.9x), so only the
   network check below may lower it. Otherwise, for a candidate step m (the
   engine's block multiples, largest first) with C a multiple of m and C >= 2m (room for one cut),
   the latency of the layers that depend on the group is read at C and at counts between C and the
   grid point below it (C - m/2, C - 1). When none of those in-between counts is faster than C (less
   a small tolerance), latency is a staircase in steps of m: removing fewer than m channels buys no
   time, and m is the group's step. Else the next smaller block is tried; 1 (exact counts) is the
   fallback.
2. **The network** (:func:`network_steps`): layers timed alone miss what a count off the block grid
   costs *inside* the network. On onnxruntime CPU with AVX-512 (NCHWc blocks of 16) a convolution
   whose output channels are not a multiple of 16 leaves the blocked layout: it pays reorders and
   runs the plain kernel, so in ResNet-56 a first-stage conv cut from 16 to 11 output channels runs
   no faster than at 16 (profiled per node), although timed alone it looks 40 % cheaper. So groups
   alike in width and layer shapes are cut *together* inside the whole model (to the in-between
   count C - m/2, and to the grid point C - m), and the three models are timed interleaved: when
   the in-between count buys less than a quarter of what the grid step buys, m is the step. A class
   whose grid step is predicted to change the whole model by less than the timing noise keeps the
   tables' reading.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxprune.latency.model import LatencyModel
from onnxprune.log import get_logger

__all__ = ["StepChoice", "channel_steps", "network_steps", "staircase_step"]

log = get_logger(__name__)

MIN_GRID_POINTS = 2      # a step m needs C >= 2m: at least one cut on the grid
STAIRCASE_TOL = 0.02     # an in-between count must be this much faster than the full width to count
NETWORK_NOISE = 0.03     # a class whose grid step is predicted to change the model by less: not timed
STAIR_SHARE = 0.25       # in the network: an in-between count buying less than this share of the grid
                         # step's time is no cut at all


@dataclass(frozen=True)
class StepChoice:
    group: int
    channels: int
    step: int
    reason: str


def _layers_time(lm: LatencyModel, layers: list[int], group: int, n: int) -> float:
    times = lm.layer_latencies({group: n})
    return float(sum(times[i] for i in layers))


def staircase_step(channels: int, blocks: tuple[int, ...], time_at) -> tuple[int, str]:
    """(step, reason) for a group of ``channels`` whose dependent layers take ``time_at(n)`` seconds."""
    for m in blocks:
        if channels < MIN_GRID_POINTS * m or channels % m:
            continue
        on_grid = time_at(channels)
        between = sorted({channels - m // 2, channels - 1} - {channels - m, channels})
        fastest = min(time_at(n) for n in between) if between else on_grid
        if fastest >= on_grid * (1 - STAIRCASE_TOL):
            return m, (f"{channels} channels: {1e3 * on_grid:.3f} ms; {channels - m + 1}..{channels - 1} "
                       f"at best {1e3 * fastest:.3f} ms")
    return 1, "no block step gives a staircase (or the group is narrower than two blocks)"


def channel_steps(lm: LatencyModel, groups=None) -> dict[int, StepChoice]:
    """The step of every prunable group (or of ``groups``), from the latency tables."""
    groups = [g for g in lm.analysis.prunable] if groups is None else groups
    out = {}
    for g in groups:
        layers = lm.group_layers(g.id)
        if not layers:
            out[g.id] = StepChoice(g.id, g.channels, 1, "no timed layer depends on it")
            continue
        top = lm.engine.blocks[0]
        if g.channels >= MIN_GRID_POINTS * top and g.channels % top == 0:
            step, why = top, (f"{g.channels} channels: the engine's block ({top}); layers timed alone cannot "
                              "lower it (a count off the block leaves the blocked layout in the network)")
        else:
            step, why = staircase_step(g.channels, lm.engine.blocks,
                                       lambda n, g=g, layers=layers: _layers_time(lm, layers, g.id, n))
        if g.equal_blocks > 1 and step % g.equal_blocks and step > 1:
            why += f"; combined with its {g.equal_blocks} equal blocks"
        out[g.id] = StepChoice(g.id, g.channels, step, why)
    return out


# ----------------------------------------------------------------------------- in the network
def like_groups(lm: LatencyModel, groups) -> list[list]:
    """Groups alike in width, equal blocks and the shapes of the layers that depend on them."""
    classes: dict[tuple, list] = {}
    for g in groups:
        shapes = tuple(sorted(repr(lm.layers[i].geometry) for i in lm.group_layers(g.id)))
        if shapes:
            classes.setdefault((g.channels, g.equal_blocks, shapes), []).append(g)
    return list(classes.values())


def _network_step(lm, like, model_at, measure, table_step: StepChoice) -> tuple[int, str]:
    """(step, reason) of one class of like groups, timed inside the network."""
    channels, measured = like[0].channels, []
    if like[0].equal_blocks > 1:
        return table_step.step, table_step.reason
    for m in lm.engine.blocks:
        if channels < MIN_GRID_POINTS * m or channels % m:
            continue
        below, between = channels - m, channels - m // 2
        predicted = lm.full - lm.predict({g.id: below for g in like})
        if predicted < NETWORK_NOISE * lm.full:
            return table_step.step, (table_step.reason + f"; {len(like)} like group(s): too little time to "
                                     f"check in the network")
        full_s, between_s, below_s = measure([model_at(channels), model_at(between), model_at(below)])
        buys = full_s - below_s
        if buys < NETWORK_NOISE * full_s:
            return table_step.step, (table_step.reason + f"; in the network {channels}->{below} bought "
                                     f"{1e3 * buys:.2f} ms of {1e3 * full_s:.2f}, within noise")
        measured.append(f"{channels}/{between}/{below}: {1e3 * full_s:.2f}/{1e3 * between_s:.2f}/"
                        f"{1e3 * below_s:.2f} ms")
        if full_s - between_s < STAIR_SHARE * buys:
            return m, f"{len(like)} like group(s) cut together in the network: " + ", ".join(measured)
    if not measured:
        return table_step.step, table_step.reason
    return 1, (f"{len(like)} like group(s) cut together in the network: every count buys time ("
               + ", ".join(measured) + ")")


def network_steps(model, lm: LatencyModel, table_steps: dict[int, StepChoice], measure=None) -> dict[int, StepChoice]:
    """The tables' steps checked inside the whole network, class of like groups by class (see the
    module docstring). ``measure(models) -> seconds each`` times models interleaved (default: on
    the latency model's engine and batch)."""
    from onnxprune.latency.model import counts_model
    from onnxprune.latency.measure import measure_models
    if measure is None:
        def measure(models):
            return measure_models(models, lm.engine, lm.batch, rounds=5, runs=2)
    by_id = {g.id: g for g in lm.analysis.prunable}
    out = dict(table_steps)
    for like in like_groups(lm, [by_id[g] for g in table_steps if g in by_id]):
        def model_at(n, like=like):
            return model if n == like[0].channels else counts_model(lm.analysis, {g.id: n for g in like})
        try:
            step, why = _network_step(lm, like, model_at, measure, table_steps[like[0].id])
        except Exception as exc:  # noqa: BLE001 - a check that cannot run leaves the tables' reading
            step, why = table_steps[like[0].id].step, (table_steps[like[0].id].reason + "; not checked in the "
                                                       f"network ({str(exc).splitlines()[0][:120]})")
            log.info("channel steps: %d like group(s) of %d channels not checked in the network: %s",
                     len(like), like[0].channels, str(exc).splitlines()[0][:200])
        for g in like:
            out[g.id] = StepChoice(g.id, g.channels, step, why)
    return out
