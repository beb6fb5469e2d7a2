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

import numpy as np


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


# ---------------------------------------------------------------- the same rounds on arrays
# The pipeline moves edges as int64 arrays; these apply large_star/small_star to every
# node of an array at once and give the same edge sets (tests check it on random graphs).

def _groups(u):
    """Start and end of each run of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    return starts, np.r_[starts[1:], len(u)]


def large_star_arrays(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`large_star` for every node u given as rows (u, v) of its neighbour lists:
    (new edges' ends, their targets, number of nodes whose edges changed)."""
    from curation.exchange import unique_pairs
    keep = u != v
    u, v = unique_pairs(u[keep], v[keep])
    if not len(u):
        return u, v, 0
    starts, ends = _groups(u)
    nodes = u[starts]
    m = np.minimum(nodes, v[starts])            # v is sorted inside each node's run
    has_larger = v[ends - 1] > nodes
    changed = int(np.count_nonzero(has_larger & (m != nodes)))
    m_row = np.repeat(m, ends - starts)
    larger = v > u
    return v[larger], m_row[larger], changed


def small_star_arrays(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`small_star` for every node u given as rows (u, v) with u > v."""
    from curation.exchange import unique_pairs
    keep = v < u
    u, v = unique_pairs(u[keep], v[keep])
    if not len(u):
        return u, v, 0
    starts, ends = _groups(u)
    sizes = ends - starts
    m = v[starts]
    m_row = np.repeat(m, sizes)
    other = v != m_row
    out_a = np.concatenate([v[other], u[starts]])
    out_b = np.concatenate([m_row[other], m])
    return out_a, out_b, int(np.count_nonzero(sizes > 1))
