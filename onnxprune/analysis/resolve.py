"""Resolution: union-find roots become numbered groups, layouts get group ids, grouped convs
add their equal-block constraints; ``analyze`` runs the pass and the resolution."""
from __future__ import annotations

import math
from collections import defaultdict

import onnx

from onnxprune.analysis.channel_pass import ChannelPass
from onnxprune.analysis.records import Analysis, Group, Layout, Segment
from onnxprune.graph.view import GraphView

__all__ = ["analyze"]


def resolve(p: ChannelPass) -> Analysis:
    uf, v = p.uf, p.v
    roots: dict[int, list[int]] = defaultdict(list)
    for n in range(len(uf.parent)):
        roots[uf.find(n)[0]].append(n)
    # a root becomes a reported group when a producer lives in it; number them in graph order
    order = []
    for r, members in roots.items():
        prod = [m for m in members if p.node_kind[m][0] == "producer"]
        if prod:
            order.append((min(p.node_kind[m][1] for m in prod), r))
    order.sort()
    gid = {r: i for i, (_, r) in enumerate(order)}
    groups: list[Group] = []
    for _, r in order:
        lo = uf.lo[r]
        g = Group(id=gid[r], channels=uf.hi[r] - lo, skip_reasons=list(uf.blocked.get(r, [])))
        for m in sorted(roots[r]):
            kind, node = p.node_kind[m]
            if kind == "producer":
                g.producers.append(v.label(node))
                g.producer_spans.append((node, uf.find(m)[1] - lo, uf.hi[m] - uf.lo[m]))
        groups.append(g)

    def seg(s: Segment) -> Segment:
        r, off = uf.find(s.node)
        if r in gid:
            return Segment(s.node, s.start + off - uf.lo[r], s.length, gid[r])
        return Segment(s.node, s.start, s.length, None)

    layouts = {t: Layout(l.axis, l.block, tuple(seg(s) for s in l.segments)) for t, l in p.layouts.items()}
    for e in p.edges:
        for gi in {s.group for s in layouts[e.tensor].segments if s.group is not None}:
            label = v.label(e.node)
            if label not in groups[gi].consumers:
                groups[gi].consumers.append(label)
    for lay, ngroups, node in p.multiples:
        segs = [seg(s) for s in lay.segments]
        gids = {s.group for s in segs}
        if len(segs) != 1 or None in gids or segs[0].length != groups[segs[0].group].channels:
            why = (f"grouped Conv {v.label(node)} reads {len(gids - {None})} groups (a Concat): its conv "
                   f"groups would need equal kept counts across them, which is not supported"
                   if len(gids - {None}) > 1 else f"grouped Conv {v.label(node)} reads only part of the group")
            for gi in gids - {None}:
                groups[gi].skip_reasons.append(why)
            continue
        g = groups[segs[0].group]
        g.equal_blocks = g.equal_blocks * ngroups // math.gcd(g.equal_blocks, ngroups)
    for g in groups:
        if g.channels < 2 and not g.skip_reasons:
            g.skip_reasons.append("a single channel")
    return Analysis(v, groups, layouts, p.slices, p.updates, p.edges, p.terms)


def analyze(model: onnx.ModelProto) -> Analysis:
    """Find the channel groups of a model (see the module docstring)."""
    view = GraphView(model)
    p = ChannelPass(view)
    p.run()
    return resolve(p)
