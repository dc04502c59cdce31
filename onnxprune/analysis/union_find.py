"""Union-find over channel spaces, with offsets: channel ``i`` of a node is channel ``i + offset``
of its parent, so coupling two runs of channels keeps their alignment."""
from __future__ import annotations

from collections import defaultdict

__all__ = ["OffsetUnionFind"]


class OffsetUnionFind:
    """Nodes are channel spaces; ``offset[a]`` places node a's channel 0 in its parent."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.offset: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.blocked: dict[int, list[str]] = defaultdict(list)

    def add(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.offset.append(0)
        self.lo.append(0)
        self.hi.append(size)
        return len(self.parent) - 1

    def find(self, a: int) -> tuple[int, int]:
        path = []
        while self.parent[a] != a:
            path.append(a)
            a = self.parent[a]
        root, acc = a, 0
        for n in reversed(path):  # compress: offsets relative to the root
            acc += self.offset[n]
            self.parent[n], self.offset[n] = root, acc
        return root, (self.offset[path[0]] if path else 0)

    def union(self, a: int, pa: int, b: int, pb: int) -> str | None:
        """Tie channel ``pa`` of a to channel ``pb`` of b (and the runs after them)."""
        ra, oa = self.find(a)
        rb, ob = self.find(b)
        pa, pb = pa + oa, pb + ob
        if ra == rb:
            return None if pa == pb else "channels are coupled with a shift (inconsistent alignment)"
        d = pa - pb  # rb's channel j is ra's channel j + d
        self.parent[rb], self.offset[rb] = ra, d
        self.lo[ra] = min(self.lo[ra], self.lo[rb] + d)
        self.hi[ra] = max(self.hi[ra], self.hi[rb] + d)
        if rb in self.blocked:
            self.blocked[ra].extend(self.blocked.pop(rb))
        return None
