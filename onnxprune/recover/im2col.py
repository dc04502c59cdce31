"""Rows of the least-squares problem: the inputs a layer multiplies, one row per output position.

For a 2-D convolution a row holds the receptive field of one output pixel (im2col), laid out per
conv group as ``[rows, groups, C_in/groups * kh * kw]`` so that it matches the weight
``W[o, c, kh, kw]`` flattened per output channel. Positions may be subsampled per image (the same
positions are taken from the target), which bounds the work of large feature maps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["ConvGeometry", "conv_rows", "conv_targets", "sample_positions"]


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)     # top, left, bottom, right
    auto_pad: str = "NOTSET"
    groups: int = 1

    def resolved_pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.auto_pad in ("NOTSET", "VALID"):
            return self.pads if self.auto_pad == "NOTSET" else (0, 0, 0, 0)
        out = []
        for size, k, s, d in zip((h, w), self.kernel, self.strides, self.dilations):
            total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if self.auto_pad == "SAME_UPPER" else (big, small))
        return (out[0][0], out[1][0], out[0][1], out[1][1])


def _windows(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """View [B, C, Ho, Wo, kh, kw] of the padded input (no copy beyond the padding)."""
    t, l, b, r = geo.resolved_pads(x.shape[2], x.shape[3])
    if t or l or b or r:
        x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    (kh, kw), (dh, dw), (sh, sw) = geo.kernel, geo.dilations, geo.strides
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    v = sliding_window_view(x, span, axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


def sample_positions(batch: int, positions: int, per_image: int | None,
                     rng: np.random.Generator | None) -> np.ndarray | None:
    """Flat indices (image * positions + pixel) of the sampled output positions, or None for all."""
    if per_image is None or per_image >= positions or rng is None:
        return None
    picks = [i * positions + np.sort(rng.choice(positions, per_image, replace=False)) for i in range(batch)]
    return np.concatenate(picks)


def conv_rows(x: np.ndarray, geo: ConvGeometry, picks: np.ndarray | None) -> np.ndarray:
    """im2col rows [R, groups, C_in/groups * kh * kw] (float32) at the picked output positions."""
    v = _windows(x, geo)
    bsz, c, ho, wo = v.shape[:4]
    if picks is None:
        rows = v.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c, -1)
    else:
        img, pix = np.divmod(picks, ho * wo)
        r, q = np.divmod(pix, wo)
        rows = v[img, :, r, q]                                     # [R, C, kh, kw]
    return np.ascontiguousarray(rows.reshape(len(rows), geo.groups, -1), dtype=np.float32)


def conv_targets(y: np.ndarray, channels: np.ndarray, groups: int, picks: np.ndarray | None) -> np.ndarray:
    """Target rows [R, groups, C_out/groups] from an output [B, C, Ho, Wo] at the kept channels."""
    y = y[:, channels]
    bsz, c, ho, wo = y.shape
    rows = y.transpose(0, 2, 3, 1).reshape(bsz * ho * wo, c)
    if picks is not None:
        rows = rows[picks]
    return np.ascontiguousarray(rows.reshape(len(rows), groups, c // groups), dtype=np.float32)
