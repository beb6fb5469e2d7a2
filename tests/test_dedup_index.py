"""Dedup indexes (issue 15): `curate dedup --write-index` and `--against`."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

import pipelines.dedup as dedup_mod
from curation.dedup_index import (MAX_BUCKET, DedupIndex, IndexError_, index_settings, match_bands,
                                  match_exact, read_docs, shards_for, write_docs)
from curation.exchange import partition_of
from curation.fs import LocalFS
from curation.io import read_rows
from pipelines.cli import main
from tests.remote_fs import PREFIX, ROOT

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _doc(rng, n=200):
    return " ".join(f"w{rng.randrange(10**6)}" for _ in range(n))


def corpora(tmp: Path, n_old=120, seed=5):
    """old.jsonl; new.jsonl: 10 exact copies of old documents, 10 near variants (10 of 200
    words replaced), 20 new documents and exact copies of two of those."""
    rng = random.Random(seed)
    old = [_doc(rng) for _ in range(n_old)]
    new = []
    for i in range(10):
        new.append(old[i])
    for i in range(10, 20):
        w = old[i].split()
        w[50:60] = [f"z{rng.randrange(10**6)}" for _ in range(10)]
        new.append(" ".join(w))
    new += [_doc(rng) for _ in range(20)]
    new += [new[25], new[30]]
    for name, texts, prefix in (("old", old, "o"), ("new", new, "n")):
        with open(tmp / f"{name}.jsonl", "w") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n")
    return tmp / "old.jsonl", tmp / "new.jsonl"


def clusters(out) -> dict:
    return {r["id"]: r for p in sorted(Path(out, "clusters").glob("*")) for r in read_rows(str(p))}


def manifest(out) -> dict:
    return json.loads(Path(out, "manifest.json").read_text())


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_exact_and_near_duplicates_of_the_index_are_removed_and_named(tmp_path):
    old, new = corpora(tmp_path)
    idx = tmp_path / "idx"
    assert main(["dedup", "--input", str(old), "--output", str(tmp_path / "o1"),
                 "--write-index", str(idx), *FAST]) == 0
    written = manifest(tmp_path / "o1")["index_written"]
    assert written["documents"] == 120 and written["generation"] == 0
    ix = DedupIndex(str(idx))
    assert ix.settings["num_perm"] == 128 and ix.settings["bands"] * ix.settings["rows"] <= 128
    assert ix.generations[0]["corpus"]["output"] == str(tmp_path / "o1")
    before = tree_digest(idx)

    out = tmp_path / "o2"
    assert main(["dedup", "--input", str(new), "--output", str(out), "--against", str(idx), *FAST]) == 0
    assert tree_digest(idx) == before                    # the indexed corpus is only read
    m = manifest(out)
    assert m["counts"]["removed_exact_index"] == 10 and m["counts"]["removed_near_index"] == 10
    assert m["counts"]["removed_exact"] == 2 and m["counts"]["kept"] == 20
    assert m["balance"]["ok"] and m["reconciled"]["ok"]
    assert m["against"]["exact_matches"] == 10 and m["against"]["matches_verified"] == 20
    rows = clusters(out)
    for i in range(10):
        r = rows[f"n{i}"]
        assert (r["reason"], r["matched_id"], r["matched_index"], r["jaccard"]) == \
            ("exact_duplicate_of_index", f"o{i}", str(idx), 1.0)
    for i in range(10, 20):
        r = rows[f"n{i}"]
        assert r["reason"] == "near_duplicate_of_index" and r["matched_id"] == f"o{i}"
        assert 0.8 < r["jaccard"] < 1.0 and not r["kept"]
    # duplicates inside the new data are handled as before
    assert rows["n40"]["reason"] == "exact_duplicate" and rows["n40"]["cluster_id"] == "n25"
    assert rows["n40"]["matched_id"] is None
    kept = {r["id"] for p in Path(out, "documents").glob("*") for r in read_rows(str(p))}
    assert kept == {f"n{i}" for i in range(20, 40)}


def test_generations_grow_and_each_run_is_checked_against_all_before_it(tmp_path):
    old, new = corpora(tmp_path)
    idx = tmp_path / "idx"
    # the first run of a series may name the index it starts, with nothing in it yet
    assert main(["dedup", "--input", str(old), "--output", str(tmp_path / "o1"),
                 "--write-index", str(idx), "--against", str(idx), *FAST]) == 0
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--write-index", str(idx), "--against", str(idx), *FAST]) == 0
    ix = DedupIndex(str(idx))
    assert [(g["generation"], g["documents"]) for g in ix.generations] == [(0, 120), (1, 20)]
    # a third dump: copies of one document of each generation
    third = tmp_path / "third.jsonl"
    lines = Path(old).read_text().splitlines()[50:51] + Path(new).read_text().splitlines()[21:22]
    third.write_text("".join(json.dumps({"id": f"t{k}", "text": json.loads(x)["text"]}) + "\n"
                             for k, x in enumerate(lines)))
    assert main(["dedup", "--input", str(third), "--output", str(tmp_path / "o3"),
                 "--against", str(idx), *FAST]) == 0
    rows = clusters(tmp_path / "o3")
    assert (rows["t0"]["matched_id"], rows["t0"]["matched_index"]) == ("o50", f"{idx}#0")
    assert (rows["t1"]["matched_id"], rows["t1"]["matched_index"]) == ("n21", f"{idx}#1")

    # a rerun of a finished run is skipped; the same files again, elsewhere, are refused
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--write-index", str(idx), "--against", str(idx), *FAST]) == 0
    assert len(DedupIndex(str(idx)).generations) == 2
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o4"),
                 "--write-index", str(idx), "--against", str(idx), *FAST]) == 2


def test_an_index_is_refused_naming_the_setting_that_differs(tmp_path, capsys):
    old, new = corpora(tmp_path, n_old=20)
    idx = tmp_path / "idx"
    assert main(["dedup", "--input", str(old), "--output", str(tmp_path / "o1"),
                 "--write-index", str(idx), *FAST]) == 0
    for flags, name in ((["--num-perm", "64"], "num_perm=128"), (["--ngram", "3"], "ngram=5"),
                        (["--seed", "7"], "seed=1"), (["--family", "oph"], "family='minhash'"),
                        (["--bands", "16", "--rows", "8"], "bands=")):
        capsys.readouterr()
        assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                     "--against", str(idx), *flags, *FAST]) == 2
        assert f"was built with {name}" in capsys.readouterr().err
    # appending without checking against what is there
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--write-index", str(idx), *FAST]) == 2
    assert f"also give --against {idx}" in capsys.readouterr().err
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--against", str(tmp_path / "nowhere"), *FAST]) == 2
    assert "not a dedup index" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "manifest.json").exists()
    # an index from a version that normalised text otherwise
    man = json.loads((idx / "index.json").read_text())
    man["settings"]["normalisation"] = "lower-words-v0"
    (idx / "index.json").write_text(json.dumps(man))
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--against", str(idx), *FAST]) == 2
    assert "was built with normalisation='lower-words-v0'" in capsys.readouterr().err


def test_a_generation_left_by_a_failed_run_is_ignored_and_replaced(tmp_path):
    old, new = corpora(tmp_path, n_old=30)
    idx = tmp_path / "idx"
    assert main(["dedup", "--input", str(old), "--output", str(tmp_path / "o1"),
                 "--write-index", str(idx), *FAST]) == 0
    stray = idx / "g00001" / "docs" / "00000000000000000001.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"a failed run's leftovers")
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--write-index", str(idx), "--against", str(idx), *FAST]) == 0
    assert len(DedupIndex(str(idx)).generations) == 2
    assert stray.read_bytes()[:4] == b"PAR1"


@pytest.fixture
def bucket(tmp_path):
    ROOT[:] = [str(tmp_path / "bucket")]
    (tmp_path / "bucket").mkdir()
    yield tmp_path / "bucket"
    ROOT.clear()


def test_on_an_object_store_through_the_shuffle_the_decisions_are_the_same(tmp_path, bucket, monkeypatch):
    old, new = corpora(tmp_path, n_old=40)
    assert main(["dedup", "--input", str(old), "--output", str(tmp_path / "o1"),
                 "--write-index", str(tmp_path / "idx"), *FAST]) == 0
    assert main(["dedup", "--input", str(new), "--output", str(tmp_path / "o2"),
                 "--against", str(tmp_path / "idx"), *FAST]) == 0
    monkeypatch.setattr(dedup_mod, "VERIFY_BY", "shuffle")
    assert main(["dedup", "--input", str(old), "--output", f"{PREFIX}o1",
                 "--write-index", f"{PREFIX}idx", *FAST]) == 0
    assert main(["dedup", "--input", str(new), "--output", f"{PREFIX}o2",
                 "--against", f"{PREFIX}idx", *FAST]) == 0
    local, remote = clusters(tmp_path / "o2"), clusters(bucket / "o2")
    for r in remote.values():
        if r["matched_index"]:
            r["matched_index"] = r["matched_index"].replace(f"{PREFIX}idx", str(tmp_path / "idx"))
    assert local == remote and len(local) == 24


# -- the library's parts


def test_exact_matches_need_both_halves_of_the_key():
    ix = {"k0": np.array([5, 5, 9], np.uint64), "k1": np.array([1, 2, 3], np.uint64),
          "ordinal": np.array([10, 11, 12], np.int64)}
    o, i = match_exact(np.array([5, 5, 9, 7], np.uint64), np.array([2, 3, 3, 1], np.uint64),
                       np.array([100, 101, 102, 103], np.int64), ix)
    assert o.tolist() == [100, 102] and i.tolist() == [11, 12]


def test_band_candidates_match_key_and_band_and_count_what_a_large_bucket_leaves_out():
    ix = {"key": np.array([7] * (MAX_BUCKET + 3) + [8], np.uint64),
          "band": np.array([0] * (MAX_BUCKET + 3) + [1], np.int8),
          "ordinal": np.arange(MAX_BUCKET + 4, dtype=np.int64)}
    o, i, left = match_bands(np.array([0, 0, 1], np.int8), np.array([7, 8, 8], np.uint64),
                             np.array([1, 2, 3], np.int64), ix)
    assert left == 3
    assert (o == 1).sum() == MAX_BUCKET and i[o == 1].tolist() == list(range(MAX_BUCKET))
    assert o[o != 1].tolist() == [3] and i[o != 1].tolist() == [MAX_BUCKET + 3]   # band 0 vs 1: no


@pytest.mark.parametrize("P, R", [(64, 64), (16, 64), (64, 16), (12, 8), (7, 5)])
def test_a_partition_reads_only_the_index_shards_its_keys_can_be_in(P, R):
    keys = np.random.default_rng(1).integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    mine, theirs = partition_of(keys, P), partition_of(keys, R)
    for p in range(P):
        assert set(theirs[mine == p].tolist()) <= set(shards_for(p, P, R))
    assert sum(len(shards_for(p, P, R)) for p in range(P)) == np.lcm(P, R)


def test_docs_are_read_back_by_ordinal_from_the_row_groups_that_hold_them(tmp_path):
    n = 10_000
    ords = np.arange(n, dtype=np.int64) * 3 + 1
    sig = np.random.default_rng(2).integers(0, 2**32, (n, 16), dtype=np.uint64).astype(np.uint32)
    path = str(tmp_path / "d.parquet")
    write_docs(LocalFS(), path, ords, [f"d{k}" for k in range(n)], ["s"] * n, sig)
    want = np.array([4, 3001, 29998], np.int64)
    ids, got = read_docs(LocalFS(), path, want, 16)
    k = (want - 1) // 3
    assert ids == [f"d{x}" for x in k] and np.array_equal(got, sig[k])
    with pytest.raises(IndexError_):
        read_docs(LocalFS(), path, np.array([5], np.int64), 16)


def test_settings_leave_out_the_backend():
    a = index_settings({"scheme": "s", "family": "minhash", "num_perm": 8, "seed": 1, "ngram": 5,
                        "char_ngrams": False, "signature_dtype": "uint32", "backend": "numba"}, 2, 4)
    assert "backend" not in a and a["bands"] == 2 and a["rows"] == 4


def test_drop_indexed_edges_as_a_transform():
    """Every edge with an end matched to the index goes, whichever unit each end is in."""
    from apache_beam.pvalue import AsList
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    import apache_beam as beam

    from curation.exchange import pack, unpack
    from pipelines.dedup_index import DropIndexedEdges

    # two units: ordinals 0..99 and 100..199 (the signing pass's records)
    signed = [((0, 0), "000000", 100, 0, 99, []), ((1, 0), "000001", 100, 100, 199, [])]
    edges = [pack(a=np.array([5, 6, 150, 170], np.int64), b=np.array([1, 1, 6, 120], np.int64)),
             pack(a=np.array([130], np.int64), b=np.array([2], np.int64))]
    matched = [((0, 0), pack(o=np.array([6], np.int64))), ((1, 0), pack(o=np.array([120], np.int64)))]
    with TestPipeline() as p:
        side = AsList(p | "Signed" >> beam.Create(signed))
        out = (p | "Edges" >> beam.Create(edges)
               | DropIndexedEdges(p | "Matched" >> beam.Create(matched), side)
               | beam.FlatMap(lambda c: zip(unpack(c)["a"].tolist(), unpack(c)["b"].tolist())))
        assert_that(out, equal_to([(5, 1), (130, 2)]))
