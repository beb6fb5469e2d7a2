import random

import pytest

from curation.components import NotConverged, connected_components, large_star, small_star


def union_find_labels(edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        if a == b:
            continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    nodes = {n for e in edges if e[0] != e[1] for n in e}
    comps = {}
    for n in nodes:
        comps.setdefault(find(n), []).append(n)
    return {n: min(c) for c in comps.values() for n in c}


def test_star_steps():
    out, changed = large_star(5, [1, 7, 9, 5])
    assert out == [(7, 1), (9, 1)] and changed
    out, changed = large_star(1, [5, 7])
    assert out == [(5, 1), (7, 1)] and not changed
    out, changed = small_star(9, [1, 4, 5])
    assert out == [(4, 1), (5, 1), (9, 1)] and changed
    out, changed = small_star(9, [1])
    assert out == [(9, 1)] and not changed


@pytest.mark.parametrize("seed", range(5))
def test_random_graphs_match_union_find(seed):
    rng = random.Random(seed)
    n = rng.choice([50, 500, 3000])
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randrange(1, 2 * n))]
    labels, rounds = connected_components(edges)
    assert labels == union_find_labels(edges)
    assert rounds >= 1


def test_long_path_and_tuple_nodes():
    edges = [((i, f"d{i}", False), (i + 1, f"d{i+1}", False)) for i in range(2000)]
    rng = random.Random(1)
    rng.shuffle(edges)
    labels, rounds = connected_components(edges)
    assert set(labels.values()) == {(0, "d0", False)}
    assert len(labels) == 2001


def test_non_convergence_is_loud():
    edges = [(i, i + 1) for i in range(5000)]
    with pytest.raises(NotConverged, match="did not converge in 2 rounds"):
        connected_components(edges, max_rounds=2)
