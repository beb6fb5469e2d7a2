"""`curate dedup` end to end on Beam's local runner, checked against the library
computing the same decisions in memory."""
import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.components import connected_components
from curation.demo import demo_files
from curation.documents import Document
from curation.io import FieldMap, expand_inputs, read_documents, read_rows
from curation.lsh import LSHParams, band_keys, bucket_min_edges
from curation.minhash import MinHasher, estimate_jaccard
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def write_jsonl_gz(path: Path, rows, raw_lines=()):
    with gzip.open(path, "wb") as f:
        for r in rows:
            f.write((json.dumps(r) + "\n").encode())
        for line in raw_lines:
            f.write(line + b"\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real demo text split over three files, with planted exact duplicates (also
    across files), near duplicates and one bad record of each kind."""
    d = tmp_path_factory.mktemp("corpus")
    docs = []
    for path in demo_files():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f)
    docs = [x for x in docs if x["domain"] in ("web", "reference", "docs", "email")][:900]
    rng = np.random.default_rng(0)
    extra = []
    for i in rng.choice(len(docs), 25, replace=False):
        src = docs[int(i)]
        extra.append({"id": src["id"] + "#copy", "text": "  " + src["text"].upper() + "\n"})
    for i in rng.choice(len(docs), 25, replace=False):
        src = docs[int(i)]
        words = src["text"].split(" ")
        if len(words) < 200:
            continue
        words[len(words) // 2] = "CHANGED"
        extra.append({"id": src["id"] + "#edit", "text": " ".join(words)})
    bad = [b"{not json", b"[1, 2]", b'{"id": "x1", "text": 5}', b'{"id": "x2"}',
           b'{"id": "x3", "text": "   "}', b'{"id": "x4", "text": "a\x00b"}',
           b'{"id": "x5", "text": "caf\xe9"}', b'{"id": "x6", "text": "' + b"y" * 300_000 + b'"}']
    third = len(docs) // 3
    write_jsonl_gz(d / "a.jsonl.gz", docs[:third] + extra[:20])
    write_jsonl_gz(d / "b.jsonl.gz", docs[third:2 * third], raw_lines=bad)
    write_jsonl_gz(d / "c.jsonl.gz", docs[2 * third:] + extra[20:])
    return d


def run_dedup(corpus, out, *extra):
    argv = ["dedup", "--input", str(corpus / "*.jsonl.gz"), "--output", str(out),
            "--max-doc-bytes", "200000", *extra]
    assert main(argv + ([] if any(a.startswith("--direct") for a in extra) else FAST)) == 0
    return json.loads((out / "manifest.json").read_text())


def clusters_of(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "clusters").glob("*")):
        rows.extend(read_rows(str(p)))
    return rows


def reference_decisions(corpus, threshold=0.8, num_perm=128):
    """The same decisions from library calls in one process."""
    files = expand_inputs([str(corpus / "*.jsonl.gz")])
    docs = [r for f in files for r in read_documents(f, FieldMap(), max_doc_bytes=200000)
            if isinstance(r, Document)]
    mh = MinHasher(num_perm=num_perm, seed=1)
    b = mh.sign_batch([d.text for d in docs])
    node = {i: (d.ordinal, d.id) for i, d in enumerate(docs)}
    groups = defaultdict(list)
    for i, k in enumerate(b.exact_keys):
        groups[k].append(i)
    edges, reps, exact_removed = [], [], set()
    for members in groups.values():
        members.sort(key=lambda i: docs[i].ordinal)
        reps.append(members[0])
        for m in members[1:]:
            edges.append((node[m], node[members[0]]))
            exact_removed.add(node[m])
    lsh = LSHParams.for_threshold(threshold, num_perm)
    keys = band_keys(b.signatures, lsh.bands, lsh.rows)
    live = [i for i in reps if b.num_shingles[i] > 0]
    ords = np.array([docs[i].ordinal for i in live])
    for j in range(lsh.bands):
        for x, m in zip(*bucket_min_edges(keys[live, j], ords)):
            ix, im = live[x], live[m]
            if estimate_jaccard(b.signatures[ix], b.signatures[im]) >= lsh.verify_threshold:
                edges.append((node[ix], node[im]))
    labels, _ = connected_components(edges)
    return {n[1]: (root[1], n == root, None if n == root else
                   ("exact_duplicate" if n in exact_removed else "near_duplicate"))
            for n, root in labels.items()}


def test_dedup_matches_library_and_balances(corpus, tmp_path):
    out = tmp_path / "out"
    m = run_dedup(corpus, out)
    c = m["counts"]
    assert m["status"] == "complete" and m["balance"]["ok"]
    assert c["input"] == c["kept"] + c["removed_exact"] + c["removed_near"] + c["rejected"]
    assert c["rejected"] == 8
    assert c["removed_exact"] >= 25 and c["removed_near"] >= 10

    got = {r["id"]: (r["cluster_id"], r["kept"], r["reason"]) for r in clusters_of(out)}
    assert got == reference_decisions(corpus)

    kept_ids = set()
    for p in sorted((out / "documents").glob("*.parquet")):
        kept_ids.update(pq.read_table(p, columns=["id"]).column("id").to_pylist())
    assert len(kept_ids) == c["kept"]
    removed = {i for i, (_, kept, _) in got.items() if not kept}
    assert not (kept_ids & removed)
    # each planted copy shares a cluster with its original; the earlier one is kept
    copies = [i for i in got if i.endswith("#copy")]
    assert len(copies) == 25
    for copy in copies:
        orig = copy[: -len("#copy")]
        assert got[copy][0] == got[orig][0] and got[copy][0] in kept_ids
        removed_one = got[copy] if not got[copy][1] else got[orig]
        assert removed_one[2] == "exact_duplicate"

    rejected = []
    for p in sorted((out / "rejected").glob("*")):
        rejected.extend(read_rows(str(p)))
    causes = sorted(r["cause"] for r in rejected)
    assert causes == sorted(["malformed_json", "not_an_object", "non_string_text", "missing_text",
                             "empty_text", "nul_bytes", "invalid_utf8", "too_large"])
    assert all(r["file"].endswith("b.jsonl.gz") and r["line"] > 0 for r in rejected)
    assert sum(m["counts"]["rejected_by_cause"].values()) == 8
    assert m["connected_components"]["rounds_until_no_change"] is not None


def test_rerun_is_byte_identical_and_resumes(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_dedup(corpus, a)
    run_dedup(corpus, b, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "manifest.json")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # same settings again: the complete run is recognised and skipped
    before = (a / "manifest.json").read_bytes()
    run_dedup(corpus, a)
    assert (a / "manifest.json").read_bytes() == before
    # a changed input is not mistaken for the finished run
    import os, shutil
    changed = tmp_path / "changed"
    shutil.copytree(corpus, changed)
    run_dedup(changed, a)
    before = (a / "manifest.json").read_bytes()
    with open(changed / "c.jsonl.gz", "ab") as f:
        f.write(gzip.compress(b'{"text": "one more document at the end"}\n', mtime=0))
    run_dedup(changed, a)
    m = json.loads((a / "manifest.json").read_text())
    assert (a / "manifest.json").read_bytes() != before
    assert m["counts"]["kept"] == json.loads(before)["counts"]["kept"] + 1


def test_strict_names_file_and_line(corpus, tmp_path, capsys):
    rc = main(["dedup", "--input", str(corpus / "b.jsonl.gz"), "--output", str(tmp_path / "o"),
               "--strict", *FAST])
    assert rc == 3
    err = capsys.readouterr().err
    assert "b.jsonl.gz:" in err and "malformed_json" in err


def test_jsonl_output_and_flags(corpus, tmp_path):
    out = tmp_path / "j"
    m = run_dedup(corpus, out, "--output-format", "jsonl.gz", "--threshold", "0.7",
                  "--num-perm", "64", "--verify", "exact")
    assert m["parameters"]["lsh"]["bands"] * m["parameters"]["lsh"]["rows"] <= 64
    assert list((out / "documents").glob("*.jsonl.gz"))
    assert m["balance"]["ok"]


def test_bad_usage_is_clear(tmp_path, capsys):
    assert main(["dedup", "--input", str(tmp_path / "nothing*.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main(["dedup", "--demo", "--output", str(tmp_path / "o"), "--thresold", "0.5"]) == 2
    assert "--thresold" in capsys.readouterr().err
    assert main(["dedup", "--demo", "--output", str(tmp_path / "o"), "--threshold", "1.5"]) == 2
    assert "threshold" in capsys.readouterr().err


def test_output_inside_the_inputs_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text('{"id": "1", "text": "one two three four five six"}\n')
    for out in (src / "out", src):
        assert main(["dedup", "--input", str(src), "--output", str(out)]) == 2
        assert "outside the inputs" in capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == ["a.jsonl"]


def test_split_inputs_decide_as_whole_files(corpus, tmp_path):
    """Plain JSONL and Parquet inputs read in many small ranges (--split-bytes) give the
    same kept documents and cluster rows as read whole; a split file's shards are
    part-<file>-<part>."""
    import pyarrow as pa
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        raw = gzip.decompress((corpus / f"{name}.jsonl.gz").read_bytes())
        if name == "b":        # one file as Parquet with small row groups (its valid rows)
            rows = []
            for line in raw.splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and isinstance(r.get("text"), str) and r["text"].strip() \
                        and "\x00" not in r["text"] and len(r["text"]) < 200000:
                    rows.append({"id": r["id"], "text": r["text"]})
            pq.write_table(pa.Table.from_pylist(rows), plain / "b.parquet", row_group_size=40)
        else:
            (plain / f"{name}.jsonl").write_bytes(raw)

    def run(out, *extra):
        argv = ["dedup", "--input", str(plain), "--output", str(out), "--max-doc-bytes", "200000",
                *extra, *FAST]
        assert main(argv) == 0
        kept = sorted(r["id"] for p in sorted((out / "documents").glob("*")) for r in read_rows(str(p)))
        clusters = sorted((r["id"], r["cluster_id"], r["reason"], r["line"]) for r in clusters_of(out))
        return kept, clusters

    whole = run(tmp_path / "whole")
    split = run(tmp_path / "split", "--split-bytes", "60000")
    assert split == whole and whole[1]
    names = sorted(p.name for p in (tmp_path / "split" / "documents").iterdir())
    assert any(n.startswith("part-00000-00003") for n in names), names
    assert any(n.startswith("part-00001-00002") for n in names), names
    assert not (tmp_path / "split" / "_work").exists()


@pytest.mark.parametrize("verify", ["estimate", "exact"])
def test_verification_through_the_shuffle_decides_as_through_reads(corpus, tmp_path, monkeypatch, verify):
    """On an object store verification takes two hops through the shuffle (the first
    document's signature or shingles travel to the second's unit) instead of ranged
    reads: the same candidates, the same verified edges, the same decisions."""
    import pipelines.dedup as dedup

    def run(out, how):
        monkeypatch.setattr(dedup, "VERIFY_BY", how)
        argv = ["dedup", "--input", str(corpus / "*.jsonl.gz"), "--output", str(out),
                "--max-doc-bytes", "200000", "--verify", verify, *FAST]
        assert main(argv) == 0
        kept = sorted(r["id"] for p in sorted((out / "documents").glob("*")) for r in read_rows(str(p)))
        clusters = sorted((r["id"], r["cluster_id"], r["reason"], r["line"]) for r in clusters_of(out))
        c = json.loads((out / "manifest.json").read_text())["counters"]
        return kept, clusters, {k: c.get(k) for k in ("near_candidate_edges", "near_edges_verified",
                                                       "near_edges_below_threshold")}

    reads = run(tmp_path / "reads", "reads")
    shuffle = run(tmp_path / "shuffle", "shuffle")
    assert shuffle == reads
    assert reads[2]["near_edges_verified"] and reads[1]
