"""Per-group channel steps: the multiple each group's channel count should keep on the target.

For a group of C channels and a candidate step m (the engine's block multiples, largest first) with
C a multiple of m and room for the allocator (C >= 4m; C >= 2m for the engine's smallest block), the latency of the layers that depend on the group (the others at full
width) is read from the tables at C and at counts between C and the grid point below it (C - m/2,
C - 1). When none of those in-between counts is faster than C (less a small tolerance), latency is a
staircase in steps of m: removing fewer than m channels buys no time, and m is the group's step. Else the next smaller block is tried, and 1 (exact counts) is the fallback. A 16-channel group
(ResNet-56's first stage on an AVX-512 CPU) can keep 8 or 16 channels, never only 16; a 32-channel
group is not held to 16 or 32 (measured on ResNet-56: steps of 16 there cost 6.6 points of one-shot
top-1 against exact counts at 45.5 % fewer MACs).
"""
from __future__ import annotations

from dataclasses import dataclass

from onnxprune.latency.model import LatencyModel

__all__ = ["StepChoice", "channel_steps", "staircase_step"]

MIN_GRID_POINTS = 4      # a step m needs C >= 4m (the smallest block: C >= 2m)
STAIRCASE_TOL = 0.02     # an in-between count must be this much faster than the full width to count


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
        room = 2 if m == min(blocks) else MIN_GRID_POINTS
        if channels < room * m or channels % m:
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
        step, why = staircase_step(g.channels, lm.engine.blocks,
                                   lambda n, g=g, layers=layers: _layers_time(lm, layers, g.id, n))
        if g.equal_blocks > 1 and step % g.equal_blocks and step > 1:
            why += f"; combined with its {g.equal_blocks} equal blocks"
        out[g.id] = StepChoice(g.id, g.channels, step, why)
    return out
