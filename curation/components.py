"""Connected components by alternating large-star / small-star rounds
(Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Each round is a pure function of one node and its neighbour list, so the Beam
pipeline runs it after a GroupByKey and this module's in-memory driver runs the
very same functions in tests. Nodes are any totally ordered values; a component's
label is its minimum node, which is also the document the keep rule keeps.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable


def large_star(u, neighbours: Iterable) -> tuple[list[tuple], bool]:
    """Link every larger neighbour of u to the minimum of u's closed neighbourhood.

    Returns the new edges and whether they differ from the edges that went in."""
    nbrs = set(neighbours)
    nbrs.discard(u)
    if not nbrs:
        return [], False
    m = min(min(nbrs), u)
    larger = [v for v in nbrs if v > u]
    out = [(v, m) for v in sorted(larger)]
    return out, bool(larger) and m != u


def small_star(u, neighbours: Iterable) -> tuple[list[tuple], bool]:
    """Link u and its smaller neighbours to the minimum of them (edges are given
    oriented from larger to smaller node, keyed by the larger)."""
    smaller = {v for v in neighbours if v < u}
    if not smaller:
        return [], False
    m = min(smaller)
    out = [(v, m) for v in sorted(smaller) if v != m]
    out.append((u, m))
    return out, len(smaller) > 1


def _adjacency(edges: Iterable[tuple], both_ways: bool) -> dict:
    adj: dict = defaultdict(set)
    for a, b in edges:
        if a == b:
            continue
        if both_ways:
            adj[a].add(b)
            adj[b].add(a)
        else:
            hi, lo = (a, b) if a > b else (b, a)
            adj[hi].add(lo)
    return adj


class NotConverged(RuntimeError):
    pass


def connected_components(edges: Iterable[tuple], max_rounds: int = 64) -> tuple[dict, int]:
    """In-memory driver over the same round functions: {node: component minimum}
    for every node on an edge, and the number of large/small-star round pairs run
    (the last of which changed nothing)."""
    edges = [(a, b) for a, b in edges if a != b]
    for rounds in range(1, max_rounds + 1):
        changed = False
        nxt = []
        for u, nb in _adjacency(edges, both_ways=True).items():
            out, ch = large_star(u, nb)
            nxt.extend(out)
            changed |= ch
        edges = nxt
        nxt = []
        for u, nb in _adjacency(edges, both_ways=False).items():
            out, ch = small_star(u, nb)
            nxt.extend(out)
            changed |= ch
        edges = nxt
        if not changed:
            labels = {}
            for a, b in edges:
                labels[a] = b
                labels.setdefault(b, b)
            return labels, rounds
    raise NotConverged(f"connected components did not converge in {max_rounds} rounds")
