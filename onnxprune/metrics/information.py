"""Per-group information metrics from captured activations, reduced batch by batch.

For every probe (a tensor a group's consumer reads): HRank average feature-map rank, Gaussian
channel entropy, a projected feature sketch for nHSIC, and the closed-form Shapley values of the
local reconstruction game at that consumer (φ_i = ⟨A_i, Σ_j A_j⟩, A_i the contribution of input
channel i to the consumer's pre-bias output). Results per group: a :class:`GroupMetrics` record.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from onnxprune.analysis import Analysis
from onnxprune.capture.session import Probe
from onnxprune.graph.view import attr
from onnxprune.metrics.concentration import information_concentration, normalize_across_layers, normalize_entropy
from onnxprune.metrics.hsic import ProjectedFeatures, nhsic_importance
from onnxprune.metrics.rank_entropy import EntropyAccumulator, RankAccumulator

__all__ = ["GroupMetrics", "InformationStats", "local_shapley_conv", "local_shapley_dense"]

RANK_WORK_PER_PROBE = 2e8   # ≈ flops budget of the per-probe SVDs (C·H·W·min(H,W) per image)


@dataclass
class GroupMetrics:
    """What the metrics stage learned about one group (serialises to JSON)."""
    group: int
    rank: float | None = None            # mean feature-map rank / min(H, W), over probes
    entropy: float | None = None         # mean Gaussian channel entropy (nats)
    concentration: float | None = None   # fusion of normalised rank and entropy
    nhsic_s: float | None = None         # Σ_j nHSIC(X_i, X_j) normalised
    nhsic_alpha: float | None = None     # exp(-β s̃)
    channel_rank: list[float] | None = None
    channel_entropy: list[float] | None = None
    shapley: list[float] | None = None   # Shapley value per channel (local game, or network KL game)
    shapley_stderr: list[float] | None = None
    images: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "GroupMetrics":
        return cls(**d)


# ------------------------------------------------------------------------------------------
# local reconstruction game
# ------------------------------------------------------------------------------------------
def _conv_patches(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """im2col: [N, C, H, W] -> [C·kh·kw, N·Ho·Wo] (float32)."""
    kh, kw = kernel
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    n, c, ho, wo = win.shape[:4]
    return np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3), dtype=np.float32).reshape(c * kh * kw, n * ho * wo)


def local_shapley_conv(x: np.ndarray, w: np.ndarray, strides=(1, 1), pads=(0, 0, 0, 0),
                       dilations=(1, 1), group: int = 1) -> np.ndarray:
    """Σ over images of φ_c = ⟨A_c, Y⟩ for a 2-D Conv: x [N, C, H, W], w [O, C/g, kh, kw].

    With patches P [C·K, N·P] and W [O, C·K]: Y = W P, and φ_c = Σ_k ⟨P[c,k], (Wᵀ Y)[c,k]⟩.
    """
    c = x.shape[1]
    out = np.zeros(c, np.float64)
    cg, og = c // group, w.shape[0] // group
    k = int(np.prod(w.shape[2:]))
    for gi in range(group):
        ws = w[gi * og:(gi + 1) * og].reshape(og, -1).astype(np.float32)
        p = _conv_patches(x[:, gi * cg:(gi + 1) * cg], w.shape[2:], strides, pads, dilations)
        z = ws.T @ (ws @ p)
        out[gi * cg:(gi + 1) * cg] = np.einsum("ij,ij->i", p, z).reshape(cg, k).sum(axis=1)
    return out


def local_shapley_dense(x: np.ndarray, w_in_out: np.ndarray, block: int = 1) -> np.ndarray:
    """Σ over rows of φ for a dense consumer: x [..., K], weight [K, O]; channels own ``block``."""
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
    y = x2 @ w_in_out
    z = y @ w_in_out.T
    phi = (x2 * z).sum(axis=0, dtype=np.float64)
    return phi.reshape(-1, block).sum(axis=1)


def _conv_geometry(node, x_shape, w_shape):
    k = w_shape[2:]
    strides = attr(node, "strides", [1] * len(k))
    dil = attr(node, "dilations", [1] * len(k))
    pads = attr(node, "pads", [0] * (2 * len(k)))
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 4
        for i in range(2):
            out = -(-x_shape[2 + i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - x_shape[2 + i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * 4
    return strides, pads, dil


# ------------------------------------------------------------------------------------------
class InformationStats:
    """Streams captured batches into per-group metrics (see the module docstring)."""

    def __init__(self, analysis: Analysis, probes: list[Probe], *, rank_images: int = 256,
                 hsic_images: int = 256, shapley_images: int = 128, hsic_dim: int = 4096,
                 max_probes_per_group: int = 4, seed: int = 0, want_shapley: bool = True) -> None:
        self.a = analysis
        self.limits = {"rank": rank_images, "hsic": hsic_images, "shapley": shapley_images}
        self.seen = 0
        by_group: dict[int, list[Probe]] = defaultdict(list)
        for p in probes:
            by_group[p.group].append(p)
        self.groups = sorted(by_group)
        self.stat_probes: dict[int, list[Probe]] = {}
        for g, ps in by_group.items():   # rank/entropy on a few probes spread along the graph
            idx = np.unique(np.linspace(0, len(ps) - 1, min(len(ps), max_probes_per_group)).round().astype(int))
            self.stat_probes[g] = [ps[i] for i in idx]
        self.all_probes = by_group
        self.rank = {(g, i): RankAccumulator() for g in self.groups for i, _ in enumerate(self.stat_probes[g])}
        # rank costs O(C·H·W·min(H, W)) per image: big early maps (ResNet-50 at 224) get fewer images
        self.rank_limit = {}
        for g in self.groups:
            for i, p in enumerate(self.stat_probes[g]):
                shape = analysis.view.shape(p.tensor) or []
                work = p.length * int(np.prod([d or 1 for d in shape[2:]])) * min([d or 1 for d in shape[2:]] or [1])
                self.rank_limit[(g, i)] = int(np.clip(RANK_WORK_PER_PROBE // max(work, 1), 16, rank_images))
        self.entropy = {(g, i): EntropyAccumulator("gaussian") for g in self.groups
                        for i, _ in enumerate(self.stat_probes[g])}
        self.hsic = {g: ProjectedFeatures(dim=hsic_dim, seed=seed + g) for g in self.groups}
        self.want_shapley = want_shapley
        self.shapley = {g: np.zeros(analysis.groups[g].channels) for g in self.groups}
        self._edge_cache: dict[tuple[int, int], np.ndarray] = {}

    @property
    def tensors(self) -> list[str]:
        return sorted({p.tensor for ps in self.all_probes.values() for p in ps})

    @staticmethod
    def _channels(x: np.ndarray, p: Probe) -> np.ndarray:
        a = p.offset * p.block
        sl = [slice(None)] * x.ndim
        sl[p.axis] = slice(a, a + p.length * p.block)
        return x[tuple(sl)]

    def _edge_phi(self, x: np.ndarray, p: Probe) -> np.ndarray | None:
        node = self.a.view.nodes[p.node]
        w = self.a.view.constant(node.input[1])
        if node.op_type == "Conv" and x.ndim == 4 and w is not None and w.ndim == 4:
            strides, pads, dil = _conv_geometry(node, x.shape, w.shape)
            return local_shapley_conv(x, w, strides, pads, dil, int(attr(node, "group", 1)))
        if node.op_type == "Gemm" and w is not None:
            w2 = w.T if attr(node, "transB", 0) else w
            return local_shapley_dense(x, w2.astype(np.float32), p.block)
        if node.op_type == "MatMul" and w is not None and w.ndim == 2:
            return local_shapley_dense(x, w.astype(np.float32), p.block)
        return None

    def update(self, outs: dict[str, np.ndarray]) -> None:
        n = next(iter(outs.values())).shape[0]
        take = {k: max(0, min(n, lim - self.seen)) for k, lim in self.limits.items()}
        for g in self.groups:
            for i, p in enumerate(self.stat_probes[g]):
                x = self._channels(outs[p.tensor], p)
                r_take = max(0, min(n, self.rank_limit[(g, i)] - self.seen))
                if x.ndim == 4 and p.axis == 1 and r_take:
                    self.rank[(g, i)].update(x[:r_take])
                if p.axis == 1 and p.block == 1 and 2 <= x.ndim <= 4:
                    self.entropy[(g, i)].update(x.reshape(x.shape + (1,) * (4 - x.ndim)))
            if take["hsic"]:
                p0 = self.all_probes[g][0]
                self.hsic[g].update(self._channels(outs[p0.tensor], p0)[:take["hsic"]])
            if self.want_shapley and take["shapley"]:
                cache: dict[tuple[int, int], np.ndarray | None] = {}
                for p in self.all_probes[g]:
                    key = (p.node, p.input_index)
                    if key not in cache:
                        cache[key] = self._edge_phi(outs[p.tensor][:take["shapley"]], p)
                    phi = cache[key]
                    if phi is not None:
                        self.shapley[g][p.group_offset:p.group_offset + p.length] += \
                            phi[p.offset:p.offset + p.length]
        self.seen += n

    def result(self, beta: float = 500.0, fusion: str = "geometric", lam: float = 0.5) -> dict[int, GroupMetrics]:
        out: dict[int, GroupMetrics] = {}
        for g in self.groups:
            rank, channel_rank = self._pool(g, self.rank, lambda r: r._count > 0, "layer_norm")
            entropy, channel_entropy = self._pool(g, self.entropy, lambda e: e._images > 0, "layer")
            out[g] = GroupMetrics(
                group=g, rank=rank, entropy=entropy, channel_rank=channel_rank, channel_entropy=channel_entropy,
                shapley=self.shapley[g].tolist() if self.want_shapley else None,
                images={"rank": min(self.seen, max(self.rank_limit[(g, i)] for i, _ in enumerate(self.stat_probes[g]))),
                        "hsic": min(self.seen, self.limits["hsic"]),
                        "shapley": min(self.seen, self.limits["shapley"]), "entropy": self.seen})
        self._fuse(out, fusion, lam)
        self._nhsic(out, beta)
        return out

    def _pool(self, g: int, accs: dict, has_data, layer_field: str):
        """Mean layer value over a group's probes, and per-channel values averaged over the probes
        that see each channel; (None, None) when no probe has data."""
        c = self.a.groups[g].channels
        layer, total, count = [], np.zeros(c), np.zeros(c)
        for i, p in enumerate(self.stat_probes[g]):
            if not has_data(accs[(g, i)]):
                continue
            s = accs[(g, i)].result()
            layer.append(float(getattr(s, layer_field)))
            sl = slice(p.group_offset, p.group_offset + p.length)
            total[sl] += np.asarray(s.channel)
            count[sl] += 1
        if not layer:
            return None, None
        return float(np.mean(layer)), (total / np.maximum(count, 1)).tolist()

    def _fuse(self, out, fusion, lam) -> None:
        gs = [g for g in self.groups if out[g].entropy is not None]
        if not gs:
            return
        ent = normalize_entropy(np.array([out[g].entropy for g in gs]), "gaussian")
        rank = np.array([out[g].rank if out[g].rank is not None else np.nan for g in gs])
        if np.all(np.isnan(rank)):
            rank = np.ones(len(gs))
        rank = np.where(np.isnan(rank), np.nanmean(rank), rank)   # groups seen only as vectors
        conc = information_concentration(normalize_across_layers(rank), ent, fusion=fusion, lam=lam)
        for g, v in zip(gs, np.asarray(conc)):
            out[g].concentration = float(v)

    def _nhsic(self, out, beta) -> None:
        gs = [g for g in self.groups if self.hsic[g].num_images > 1]
        if len(gs) < 2:
            return
        grams = [self.hsic[g].gram() for g in gs]
        imp = nhsic_importance(grams, beta)
        for g, s, a in zip(gs, imp.s_norm, imp.alpha):
            out[g].nhsic_s, out[g].nhsic_alpha = float(s), float(a)
