"""Conservation proven from what was written (curation.verify, `curate verify`, the
manifests' `reconciled`): the outputs are read back by record position and must be
exactly the input records, once each."""
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.demo import demo_files
from curation.io import FieldMap, expand_inputs, read_documents
from curation.manifest import BalanceError
from curation.verify import (InputRecords, Reconciler, ReconcileError, count_input_records,
                             verify_stage_dir)
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def demo_docs(n: int) -> list[dict]:
    docs = []
    for path in demo_files():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line, _ in zip(f, range(n // 4 + 1)))
    return docs[:n]


def reader_positions(path) -> list[int]:
    (f,) = expand_inputs([str(path)])
    return [r.line for r in read_documents(f, FieldMap(), max_doc_bytes=1000)]


def counted_positions(path) -> tuple[list[int], InputRecords]:
    (f,) = expand_inputs([str(path)])
    r = count_input_records(f, max_doc_bytes=1000)
    return np.flatnonzero(r.is_record).tolist(), r


# ---------------------------------------------------------------- the input side

def test_jsonl_records_are_the_readers_records(tmp_path):
    # blank and whitespace lines are not records; an over-long whitespace line is (too_large);
    # a BOM, CRLF and bad JSON change nothing about where records are
    lines = [b"\xef\xbb\xbf" + b'{"text": "first"}', b"", b"   \t", b'{"text": "crlf"}\r',
             b"{not json", b" " * 2000, b"\r", b'{"text": "last"}']
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"\n".join(lines))           # no final newline
    got, rec = counted_positions(p)
    assert got == reader_positions(p) == [1, 4, 5, 6, 8]
    assert rec.blank_lines == 3 and rec.damaged_at == []


def test_truncated_gzip_stops_where_the_reader_stops(tmp_path):
    body = b"".join(json.dumps({"text": f"document {i} " * 40}).encode() + b"\n" for i in range(400))
    blob = gzip.compress(body)
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(blob[: len(blob) // 2])
    got, rec = counted_positions(p)
    assert rec.damaged_at and got[-1] == rec.damaged_at[-1]
    assert got == reader_positions(p)


def test_parquet_rows_come_from_the_footer(tmp_path):
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(7)]}), p)
    got, rec = counted_positions(p)
    assert got == reader_positions(p) == list(range(7))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(p.read_bytes()[:-12])      # footer gone: the reader rejects row 0
    got, rec = counted_positions(bad)
    assert got == reader_positions(bad) == [0] and rec.damaged_at == [0]


# ---------------------------------------------------------------- the reconciliation itself

def _inputs(tmp_path, n_lines: int, blank=()) -> list[InputRecords]:
    (f,) = expand_inputs([str(_touch(tmp_path / "in.jsonl"))])
    is_record = np.ones(n_lines + 1, bool)
    is_record[0] = False
    is_record[list(blank)] = False
    return [InputRecords(f, is_record, blank_lines=len(blank))]


def _touch(p: Path) -> Path:
    p.write_text('{"text": "x"}\n')
    return p


def test_reconciler_finds_missing_twice_and_invented(tmp_path):
    inputs = _inputs(tmp_path, 10, blank=[5])
    src = inputs[0].file.path
    ok = Reconciler("filter", inputs)
    ok.add("documents/a", "kept", [src] * 6, np.array([1, 2, 3, 4, 6, 7]))
    ok.add("rejected/a", "rejected", [src] * 3, np.array([10, 9, 8]))
    res = ok.finish()
    assert (res.missing, res.twice, res.not_input, res.records) == (0, 0, 0, 9) and res.ok

    bad = Reconciler("filter", inputs)
    bad.add("documents/a", "kept", [src] * 7, np.array([1, 2, 3, 3, 5, 6, 7]))  # 3 twice, 5 blank
    bad.add("removed/a", "removed", [src, "elsewhere.jsonl", None], np.array([7, 1, -1]))
    res = bad.finish()
    assert res.missing == 4          # 4, 8, 9, 10
    assert res.twice == 2            # 3 within the batch, 7 across files
    assert res.not_input == 3        # the blank line 5, an unknown file, a row without a position
    assert not res.ok
    assert sorted(bad.to_locate.values()) == ["found twice", "found twice",
                                              "not an input record (a blank line)"]


# ---------------------------------------------------------------- stages end to end

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two JSONL files (blank lines, bad records, exact duplicates) and a Parquet file."""
    d = tmp_path_factory.mktemp("vcorpus")
    docs = demo_docs(120)
    a = [json.dumps(x) for x in docs[:50]] + ["", json.dumps(docs[3]), "{broken", "  "]
    (d / "a.jsonl").write_text("\n".join(a) + "\n")
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(x) for x in docs[50:90] + docs[10:12]) + "\n\n")
    pq.write_table(pa.Table.from_pylist([{"id": x["id"], "text": x["text"]} for x in docs[90:]]),
                   d / "c.parquet")
    return d


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    """dedup, then filter on its documents (a removed sample, JSONL output), as `curate run` chains them."""
    out = tmp_path_factory.mktemp("vrun")
    assert main(["dedup", "--input", str(corpus), "--output", str(out / "dedup"), *FAST]) == 0
    assert main(["filter", "--input", str(out / "dedup" / "documents"), "--output", str(out / "filter"),
                 "--preset", "minimal", "--removed-sample", "1", "--output-format", "jsonl.gz",
                 *FAST]) == 0
    return out


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def test_stage_manifests_record_the_reconciliation(run_dir):
    m = manifest(run_dir / "dedup")
    r, c = m["reconciled"], m["counts"]
    assert r["ok"] and r["missing"] == r["twice"] == r["not_input_records"] == 0
    assert r["records"] == c["input"] and r["blank_lines"] == c["blank_lines_skipped"] == 3
    assert r["rows"] == {"kept": c["kept"], "removed": c["removed_exact"] + c["removed_near"],
                         "rejected": c["rejected"]}
    assert c["removed_exact"] >= 3 and c["rejected"] >= 1
    f = manifest(run_dir / "filter")["reconciled"]
    fc = manifest(run_dir / "filter")["counts"]
    assert f["ok"] and f["records"] == fc["input"] == c["kept"]
    assert f["removed_sample"] == 1 and f["unsampled_removed"] == fc["removed"] - fc["removed_written"] > 0
    assert "which ones cannot be told" in f["proves"]


def test_curate_verify_passes_on_a_run_and_on_a_stage(run_dir, capsys):
    assert main(["verify", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["dedup", "filter"]
    assert all("reconciled" in line for line in out)
    assert main(["verify", str(run_dir / "filter")]) == 0


def test_a_moved_run_directory_is_verified_where_it_is_now(run_dir, tmp_path, capsys):
    # filter's manifest names its inputs at dedup/documents of the old place
    moved = tmp_path / "elsewhere"
    shutil.copytree(run_dir, moved)
    assert main(["verify", str(moved)]) == 0
    assert all("reconciled" in line for line in capsys.readouterr().out.splitlines())
    shard = moved / "dedup" / "documents" / "part-00000.parquet"
    t = pq.read_table(shard)
    pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), shard)    # one more row than filter read
    assert main(["verify", str(moved)]) == 1    # the copy's dedup documents are filter's input
    out = capsys.readouterr().out
    assert "dedup: FAILED: 0 missing, 1 twice" in out
    # filter wrote a removed sample: the extra record shows as one missing beyond the unsampled one
    assert "filter: FAILED: 2 missing" in out and "input 120 written, 119 in the manifest" in out


def _corrupt(src: Path, dst: Path, shard: str, edit) -> Path:
    shutil.copytree(src, dst)
    path = dst / shard
    t = pq.read_table(path)
    pq.write_table(edit(t), path)
    return path


def test_a_deleted_row_fails_the_check_and_curate_verify(run_dir, tmp_path, capsys):
    d = tmp_path / "dedup"
    _corrupt(run_dir / "dedup", d, "documents/part-00000.parquet",
             lambda t: pa.concat_tables([t.slice(0, 2), t.slice(3)]))
    lost = pq.read_table(run_dir / "dedup" / "documents" / "part-00000.parquet").slice(2, 1).to_pylist()[0]
    res = verify_stage_dir(str(d))
    assert not res.ok and res.missing == 1 and res.twice == 0
    assert res.discrepancies[0].startswith(f"{lost['source']} line {lost['line']}: missing")
    assert main(["verify", str(d)]) == 1
    out = capsys.readouterr().out
    assert "dedup: FAILED: 1 missing" in out and f"line {lost['line']}: missing" in out


def test_a_duplicated_row_fails_even_when_the_counts_agree(run_dir, tmp_path, capsys):
    # one row deleted and another duplicated: every count still agrees with the manifest
    d = tmp_path / "dedup"
    _corrupt(run_dir / "dedup", d, "documents/part-00001.parquet",
             lambda t: pa.concat_tables([t.slice(0, 4), t.slice(5), t.slice(7, 1)]))
    rows = pq.read_table(run_dir / "dedup" / "documents" / "part-00001.parquet").to_pylist()
    res = verify_stage_dir(str(d))
    assert res.counts_agree["ok"] and not res.ok and (res.missing, res.twice) == (1, 1)
    twice = next(m for m in res.discrepancies if "twice" in m)
    n = len(rows) - 1
    assert twice == (f"{rows[7]['source']} line {rows[7]['line']}: found twice: "
                     f"documents/part-00001.parquet row 6, documents/part-00001.parquet row {n}")
    assert main(["verify", str(d)]) == 1
    assert f"line {rows[4]['line']}: missing" in capsys.readouterr().out


def test_a_sampled_filter_output_fails_when_a_kept_row_goes(run_dir, tmp_path):
    d = tmp_path / "filter"
    shutil.copytree(run_dir / "filter", d)
    shard = d / "documents" / "part-00000.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).splitlines(keepends=True)
    shard.write_bytes(gzip.compress(b"".join(lines[1:])))
    res = verify_stage_dir(str(d))
    assert not res.ok and res.missing == res.unsampled_removed + 1
    assert "left out of the sample" in res.discrepancies[0]


def test_the_driver_fails_a_run_whose_shard_lost_a_counted_row(corpus, tmp_path, monkeypatch, capsys):
    """A writer bug after the counters: the counts balance, the reconciliation does not."""
    import pipelines.dedup as dedup
    real = dedup.write_documents

    def lossy(path, docs, **kw):
        it = iter(docs)
        next(it, None)           # drops the first kept document of every file (already counted)
        return real(path, it, **kw)

    monkeypatch.setattr(dedup, "write_documents", lossy)
    out = tmp_path / "out"
    from pipelines.run_dedup import run_dedup
    from curation.config import DedupConfig
    with pytest.raises(ReconcileError, match=r"missing") as e:
        run_dedup(DedupConfig(inputs=[str(corpus)], output=str(out)), FAST)
    assert isinstance(e.value, BalanceError)
    # the command says it in one line and fails
    assert main(["dedup", "--input", str(corpus), "--output", str(out), "--overwrite", *FAST]) == 1
    err = capsys.readouterr().err
    assert "curate: error: dedup: the outputs are not the input records once each" in err
    assert "Traceback" not in err
    m = manifest(out)
    assert m["status"] == "failed" and m["balance"]["ok"]
    assert m["reconciled"]["missing"] == 3 and not m["reconciled"]["ok"]


def test_score_output_is_reconciled_and_checked(run_dir, tmp_path, capsys):
    from classifiers.fasttext_train import train_classifier
    from tests.test_fasttext_train import SMALL, synthetic_labels
    model = tmp_path / "model"
    train_classifier(synthetic_labels(), model, threshold=3, **SMALL)
    out = tmp_path / "score"
    assert main(["score", "--input", str(run_dir / "dedup" / "documents"), "--model", str(model),
                 "--output", str(out), "--keep-top", "0.5", *FAST]) == 0
    m = manifest(out)
    r = m["reconciled"]
    assert r["ok"] and r["records"] == m["counts"]["input"] == manifest(run_dir / "dedup")["counts"]["kept"]
    assert r["rows"]["removed"] == m["counts"]["removed"] > 0
    _corrupt(out, tmp_path / "bad", "removed/part-00000.parquet", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    assert main(["verify", str(tmp_path / "bad")]) == 1
    assert "found twice: removed/part-00000.parquet row 0" in capsys.readouterr().out


def test_data_on_a_remote_location(corpus, tmp_path, capsys):
    """A stage that read and wrote a remote location (the gs:// stand-in): the driver
    reconciles there, and `curate verify` on a local folder holding only the manifest
    (as `curate run --data-output` mirrors it) reads the data where the manifest says."""
    from tests.remote_fs import PREFIX, ROOT
    root = tmp_path / "bucket"
    (root / "src").mkdir(parents=True)
    shutil.copy(corpus / "a.jsonl", root / "src" / "a.jsonl")
    ROOT[:] = [str(root)]
    try:
        assert main(["dedup", "--input", f"{PREFIX}src/a.jsonl", "--output", f"{PREFIX}out", *FAST]) == 0
        m = manifest(root / "out")
        assert m["reconciled"]["ok"] and m["reconciled"]["records"] == m["counts"]["input"] == 52
        local = tmp_path / "mirror"
        local.mkdir()
        shutil.copy(root / "out" / "manifest.json", local / "manifest.json")
        assert main(["verify", str(local)]) == 0
        assert "52 input records in 1 file reconciled" in capsys.readouterr().out
        shard = root / "out" / "documents" / "part-00000.parquet"
        pq.write_table(pq.read_table(shard).slice(1), shard)
        assert main(["verify", str(local)]) == 1
        assert f"{PREFIX}src/a.jsonl line 1: missing" in capsys.readouterr().out
    finally:
        ROOT.clear()
