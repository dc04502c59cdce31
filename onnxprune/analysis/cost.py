"""Cost model: MACs and parameters of a model as a function of the channels kept per group.

MACs are counted per image on Conv, ConvTranspose, Gemm and MatMul (``k_h·k_w·(C_in/g)·C_out·H_out·W_out``
for a Conv); element-wise ops, BatchNorm and pooling are not counted, as thop, fvcore and ptflops do
not count them either. FLOPs = 2 × MACs. Parameters are the elements of every float initializer
and of every weight stored in another dtype behind a DequantizeLinear (int8 weights, int32 biases
of a QDQ model: as many parameters as the float model's), except BatchNormalization running mean
and variance (buffers, not parameters, in every framework) and the scales and zero-points of
QuantizeLinear / DequantizeLinear (quantization metadata). A weight stored behind a Cast or
DequantizeLinear is counted as sliced by its reader.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx

from onnxprune.analysis.edges import kept_positions, segments_of
from onnxprune.analysis.records import Analysis
from onnxprune.errors import AnalysisError

__all__ = ["CostModel", "format_macs", "format_count"]


@dataclass
class CostModel:
    """MACs and parameter counts of one analysed model; see the module docstring."""
    analysis: Analysis

    def __post_init__(self) -> None:
        a = self.analysis
        bad = [a.view.label(t.node) for t in a.terms if math.isnan(t.coef)]
        if bad:
            raise AnalysisError(
                f"MACs need static spatial sizes, unknown at {', '.join(bad[:3])}"
                f"{' …' if len(bad) > 3 else ''}; pass --input-shape NAME=1x3xHxW")
        self._param_slices = defaultdict(list)
        for s in a.slices:
            name = a.view.nodes[s.node].input[s.input_index]
            stored = a.view.stored_weight(name)
            self._param_slices[stored.data if stored is not None else name].append(s)
        self._quantized, self._quant_params = set(), set()
        for node in a.view.nodes:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx"):
                self._quant_params.update(node.input[1:3])
                if node.op_type == "DequantizeLinear" and node.input:
                    self._quantized.add(node.input[0])

    def _parameters(self):
        """(dims, slices) of every initializer that counts as parameters."""
        for name, tensor in self.analysis.view.initializers.items():
            if name in self._quant_params or (tensor.data_type not in _FLOAT_TYPES and name not in self._quantized):
                continue
            slices = self._param_slices.get(name, [])
            if slices and not slices[0].count_as_param:
                continue
            yield list(tensor.dims), slices

    # --- exact counts for a concrete selection -------------------------------------------
    def _count(self, tensor, kept) -> int:
        return len(kept_positions(self.analysis, tensor, kept)) if kept else \
            self.analysis.layouts[tensor].channels

    def macs(self, kept: Mapping[int, np.ndarray] | None = None) -> float:
        kept = kept or {}
        total = 0.0
        for t in self.analysis.terms:
            cin = self._count(t.in_tensor, kept) if t.in_tensor else t.in_fixed
            cout = self._count(t.out_tensor, kept) if t.out_tensor else 1
            total += t.coef * cin * cout
        return total

    def params(self, kept: Mapping[int, np.ndarray] | None = None) -> float:
        kept = kept or {}
        total = 0.0
        for dims, slices in self._parameters():
            for s in {(s.axis, s.tensor, s.block, s.groups) for s in slices}:
                axis, t, block, groups = s
                dims[axis] = self._count(t, kept) * block // groups
            total += float(np.prod(dims)) if dims else 1.0
        return total

    # --- posynomials for the allocator ---------------------------------------------------
    def _form(self, tensor: str | None, prunable: set[int], fixed: int = 1) -> list[tuple[float, tuple[int, ...]]]:
        if tensor is None:
            return [(float(fixed), ())]
        parts: dict[tuple[int, ...], float] = defaultdict(float)
        for s in segments_of(self.analysis.layouts[tensor]):
            key = (s.group,) if s.group in prunable else ()
            parts[key] += s.length
        return [(c, k) for k, c in parts.items()]

    @staticmethod
    def _product(coef, *forms):
        terms: dict[tuple[int, ...], float] = defaultdict(float)
        terms[()] = 0.0
        acc = [(coef, ())]
        for f in forms:
            acc = [(c1 * c2, tuple(sorted(k1 + k2))) for c1, k1 in acc for c2, k2 in f]
        for c, k in acc:
            terms[k] += c
        return terms

    def macs_terms(self, prunable: set[int]) -> dict[tuple[int, ...], float]:
        """MACs as ``{group ids: coefficient}`` in the keep-ratios x_g (() is the constant)."""
        total: dict[tuple[int, ...], float] = defaultdict(float)
        for t in self.analysis.terms:
            fin = self._form(t.in_tensor, prunable, t.in_fixed)
            fout = self._form(t.out_tensor, prunable)
            for k, c in self._product(t.coef, fin, fout).items():
                total[k] += c
        return dict(total)

    def params_terms(self, prunable: set[int]) -> dict[tuple[int, ...], float]:
        total: dict[tuple[int, ...], float] = defaultdict(float)
        for dims, slices in self._parameters():
            forms, coef = [], 1.0
            sliced = {}
            for s in slices:
                sliced[s.axis] = s
            for axis, d in enumerate(dims):
                if axis in sliced:
                    s = sliced[axis]
                    coef *= s.block / s.groups
                    forms.append(self._form(s.tensor, prunable))
                else:
                    coef *= d
            for k, c in self._product(coef, *forms).items():
                total[k] += c
        return dict(total)


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}


def format_macs(macs: float) -> str:
    """'125.49 M MACs (250.98 M FLOPs)'."""
    return f"{format_count(macs)} MACs ({format_count(2 * macs)} FLOPs)"


def format_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"
