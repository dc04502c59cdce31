"""The analysis records: layouts and segments of channel tensors, what the rewrite must change
(``ParamSlice``, ``Update``), consumer edges, compute terms, groups, and the ``Analysis`` itself."""
from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.graph.view import GraphView

__all__ = ["Segment", "Layout", "ParamSlice", "Update", "ConsumerEdge", "ComputeTerm", "Group", "Analysis"]


@dataclass(frozen=True)
class Segment:
    """``length`` consecutive channels: positions ``start..start+length`` of union-find node
    ``node`` during the pass; after resolution, of group ``group`` (None: not a group)."""
    node: int
    start: int
    length: int
    group: int | None = None


@dataclass(frozen=True)
class Layout:
    axis: int
    block: int
    segments: tuple[Segment, ...]

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass(frozen=True)
class ParamSlice:
    """Input ``input_index`` of node ``node`` is sliced on ``axis`` by the kept channels of
    ``tensor`` (each channel owning ``block`` indices). ``groups`` > 1: a grouped-conv weight,
    whose axis-1 index is relative to the output row's conv group."""
    node: int
    input_index: int
    axis: int
    tensor: str
    block: int = 1
    groups: int = 1
    count_as_param: bool = True


@dataclass(frozen=True)
class Update:
    """An attribute or shape constant that carries a channel count: ``kind`` is one of
    conv_group, pad, slice, split, reshape, resize_sizes, shape_entry (``extra`` of a reshape:
    elements per channel, and the target entries written as 0, copying the input's dimension)."""
    node: int
    kind: str
    tensor: str          # the tensor whose kept channels decide the new value
    axis: int = 1
    extra: tuple = ()


@dataclass(frozen=True)
class ConsumerEdge:
    """Channels of ``tensor`` enter compute node ``node`` at input ``input_index``."""
    tensor: str
    node: int
    input_index: int


@dataclass(frozen=True)
class ComputeTerm:
    """MACs of one Conv/ConvTranspose/Gemm/MatMul: ``coef × channels(in) × channels(out)``;
    ``in_tensor`` None: that side's count is folded into ``coef`` (depthwise, fixed inputs)."""
    node: int
    coef: float
    in_tensor: str | None
    out_tensor: str | None
    in_fixed: int = 1     # channels on the input side when in_tensor is None


@dataclass
class Group:
    """One channel group as reported: its channels, who makes and reads them, and its status."""
    id: int
    channels: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    equal_blocks: int = 1        # grouped conv: keep the same count in each of these blocks
    producer_spans: list[tuple[int, int, int]] = field(default_factory=list)  # node, start, length

    @property
    def prunable(self) -> bool:
        return not self.skip_reasons and self.channels >= 2

    def to_dict(self) -> dict:
        return {"id": self.id, "channels": self.channels, "prunable": self.prunable,
                "producers": self.producers, "consumers": self.consumers,
                "skip_reasons": self.skip_reasons, "equal_blocks": self.equal_blocks}


@dataclass
class Analysis:
    """Everything the later stages need: groups, resolved layouts and the rewrite records."""
    view: GraphView
    groups: list[Group]
    layouts: dict[str, Layout]            # segments carry resolved group ids
    slices: list[ParamSlice]
    updates: list[Update]
    edges: list[ConsumerEdge]
    terms: list[ComputeTerm]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def layout(self, tensor: str) -> Layout | None:
        return self.layouts.get(tensor)

    def edge_groups(self, edge: ConsumerEdge) -> set[int]:
        lay = self.layouts.get(edge.tensor)
        return {s.group for s in lay.segments if s.group is not None} if lay else set()
