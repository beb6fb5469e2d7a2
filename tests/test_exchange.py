"""The dedup work files (curation.exchange) and the array form of the star rounds."""
import numpy as np
import pytest

from curation.components import (_adjacency, large_star, large_star_arrays, small_star,
                                 small_star_arrays)
from curation.exchange import (SideFile, SideFileWriter, pack, partition_of, split_by,
                               unique_pairs, unpack)
from curation.fs import LocalFS


def test_pack_round_trips_named_arrays():
    a = np.arange(7, dtype=np.int64)
    b = np.array([[1, 2], [3, 4]], dtype=np.uint64)
    c = np.zeros(0, dtype=np.int8)
    out = unpack(pack(a=a, b=b, c=c))
    assert list(out) == ["a", "b", "c"]
    assert out["a"].tolist() == a.tolist() and out["b"].tolist() == b.tolist()
    assert out["b"].dtype == np.uint64 and out["c"].shape == (0,)
    with pytest.raises(ValueError, match="magic"):
        unpack(b"XXXX" + pack(a=a)[4:])


def test_split_by_keeps_every_row_once():
    rng = np.random.default_rng(1)
    part = rng.integers(0, 5, 100)
    vals = np.arange(100)
    seen = []
    for p, a in split_by(part, v=vals):
        assert set(part[a["v"]]) == {p}
        seen.extend(a["v"].tolist())
    assert sorted(seen) == vals.tolist()
    assert list(split_by(np.zeros(0, np.int64), v=np.zeros(0))) == []
    keys = rng.integers(0, 2**63, 1000, dtype=np.int64).astype(np.uint64)
    parts = partition_of(keys, 7)
    assert parts.min() >= 0 and parts.max() < 7 and len(set(parts.tolist())) == 7


def test_side_file_reads_only_the_rows_asked(tmp_path):
    fs, k = LocalFS(), 8
    rng = np.random.default_rng(2)
    w = SideFileWriter(fs, str(tmp_path / "u"), k, shingles=True)
    ords = np.arange(10, 3010, 3, dtype=np.int64)           # sorted, with gaps
    sigs = rng.integers(0, 2**32, (len(ords), k), dtype=np.uint64).astype(np.uint32)
    ids = [f"doc-{i}-é" for i in range(len(ords))]
    sh = [np.sort(rng.choice(10**6, int(rng.integers(0, 20)), replace=False)).astype(np.uint32)
          for _ in ords]
    for lo in range(0, len(ords), 333):                       # written in several batches
        w.add(ords[lo:lo + 333], ids[lo:lo + 333], sigs[lo:lo + 333], sh[lo:lo + 333])
    assert w.close() == len(ords)
    side = SideFile(fs, str(tmp_path / "u"), k)
    pick = np.array([5, 999, 0, 6, 7, 400, 998], dtype=np.int64)
    assert side.signatures(ords[pick]).tolist() == sigs[pick].tolist()
    assert side.ids(ords[pick]) == [ids[i] for i in pick]
    assert [s.tolist() for s in side.shingles(ords[pick])] == [sh[i].tolist() for i in pick]
    for missing in (11, 9, 3010, 5000):       # a gap, before the first, past the last
        with pytest.raises(KeyError, match="not in this side file"):
            side.signatures(np.array([missing], dtype=np.int64))
    # knowing the unit's first ordinal, signatures need no index: verification reads
    # rows only, however many units its edges touch
    (tmp_path / "u.idx").rename(tmp_path / "u.idx.away")
    blind = SideFile(fs, str(tmp_path / "u"), k, first=10)
    assert blind.signatures(ords[pick]).tolist() == sigs[pick].tolist()
    with pytest.raises(KeyError, match="not in this side file"):
        blind.signatures(np.array([13, 14], dtype=np.int64))
    with pytest.raises(FileNotFoundError):
        blind.ids(ords[:1])


def test_side_file_refuses_ordinals_out_of_order(tmp_path):
    w = SideFileWriter(LocalFS(), str(tmp_path / "u"), 4, shingles=False)
    w.add(np.array([5, 7]), ["a", "b"], np.ones((2, 4), np.uint32))
    with pytest.raises(ValueError, match="increasing order"):
        w.add(np.array([6]), ["c"], np.ones((1, 4), np.uint32))


def _edges(arrays):
    a, b = unique_pairs(np.asarray(arrays[0], np.int64), np.asarray(arrays[1], np.int64))
    return set(zip(a.tolist(), b.tolist()))


@pytest.mark.parametrize("seed", range(20))
def test_star_rounds_on_arrays_equal_the_per_node_functions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    m = int(rng.integers(1, 3 * n))
    edges = [(int(a), int(b)) for a, b in rng.integers(0, n, (m, 2))]
    want, changed = set(), 0
    for u, nb in _adjacency(edges, both_ways=True).items():
        out, ch = large_star(u, nb)
        want.update(out)
        changed += ch
    u = np.array([e[0] for e in edges] + [e[1] for e in edges], np.int64)
    v = np.array([e[1] for e in edges] + [e[0] for e in edges], np.int64)
    a, b, got_changed = large_star_arrays(u, v)
    assert _edges((a, b)) == want and got_changed == changed
    large = sorted(want)
    want, changed = set(), 0
    for u_, nb in _adjacency(large, both_ways=False).items():
        out, ch = small_star(u_, nb)
        want.update(out)
        changed += ch
    hi = np.array([max(e) for e in large], np.int64)
    lo = np.array([min(e) for e in large], np.int64)
    a, b, got_changed = small_star_arrays(hi, lo)
    assert _edges((a, b)) == want and got_changed == changed
