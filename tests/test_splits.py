"""Work below the file (curation.splits, pipelines.splits): a file read as many ranges
gives exactly the records of reading it whole (ids, lines, ordinals, text, rejections
with their lines); gzip stays whole with a warning naming the file; `curate filter`
and `curate score` with a tiny --split-bytes decide exactly as without it."""
import dataclasses
import gzip
import json
import logging
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from curation.io import (InputFile, expand_inputs, file_shard_name, read_documents, read_rows,
                         shard_name)
from curation.splits import count_range, plan_splits, ready_splits
from pipelines.cli import main
from pipelines.splits import ReadySplits

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
MAX_DOC = 300


def _jsonl_bytes() -> bytes:
    """Lines of every kind the reader tells apart, with CRLF and LF ends mixed."""
    out = []
    for i in range(60):
        k = (i + 7) % 12                # line 1 is a record: its BOM must go
        if k == 0:
            line = b""                                            # blank
        elif k == 1:
            line = b"   \t "                                      # whitespace only: blank
        elif k == 2:
            line = b'{"text": "unterminated'                      # malformed_json
        elif k == 3:
            line = json.dumps({"text": "x" * (MAX_DOC + 50)}).encode()   # too_large
        elif k == 4:
            line = b'{"text": "caf\xe9 bad utf8"}'                # invalid_utf8
        elif k == 5:
            line = json.dumps({"id": f"doc{i}", "text": f"record {i} with its own id"}).encode()
        elif k == 6:
            line = json.dumps({"text": ""}).encode()              # empty_text
        else:
            line = json.dumps({"text": f"line {i}: " + "word " * (i % 9), "domain": "web"}).encode()
        out.append(line + (b"\r\n" if i % 3 == 0 else b"\n"))
    # a BOM on the first line, and a last line without a newline
    return b"\xef\xbb\xbf" + b"".join(out) + json.dumps({"text": "the last line"}).encode()


def _records(f: InputFile, **kw) -> list:
    with read_documents(f, max_doc_bytes=MAX_DOC, **kw) as r:
        return list(r)


def _read_split(files: list[InputFile]) -> tuple[list, int]:
    recs, blanks = [], 0
    for s in files:
        with read_documents(s, max_doc_bytes=MAX_DOC) as r:
            recs.extend(r)
            blanks += r.stats.blank_lines
    return recs, blanks


@pytest.fixture
def jsonl(tmp_path) -> Path:
    path = tmp_path / "big.jsonl"
    path.write_bytes(_jsonl_bytes())
    return path


def test_jsonl_in_many_ranges_reads_exactly_as_whole(jsonl):
    data = jsonl.read_bytes()
    [whole_file] = expand_inputs([str(jsonl)])
    with read_documents(whole_file, max_doc_bytes=MAX_DOC) as r:
        whole = list(r)
        whole_blanks = r.stats.blank_lines
    causes = {x.cause for x in whole if not hasattr(x, "text")}
    assert causes == {"malformed_json", "too_large", "invalid_utf8", "empty_text"}
    assert whole_blanks == 10 and whole[0].line == 1 and hasattr(whole[0], "text") and whole[-1].line == 61
    starts_seen = {"mid_line": 0, "after_newline": 0, "on_blank": 0, "inside_crlf": 0}
    for split_bytes in (1, 2, 3, 5, 17, 64, 257, 1000, len(data) - 1):
        splits = ready_splits([whole_file], split_bytes=split_bytes)
        assert len(splits) == -(-len(data) // split_bytes) > 1
        assert [s.part for s in splits] == list(range(len(splits)))
        got, blanks = _read_split(splits)
        assert got == whole, split_bytes       # ids, lines, ordinals, text, meta, rejections
        assert blanks == whole_blanks
        for s in splits[1:]:
            before, at = data[s.start - 1:s.start], data[s.start:s.start + 1]
            if before == b"\r" and at == b"\n":
                starts_seen["inside_crlf"] += 1
            elif before == b"\n":
                starts_seen["after_newline"] += 1
                starts_seen["on_blank"] += at in (b"\n", b"\r", b" ")
            else:
                starts_seen["mid_line"] += 1
    assert all(starts_seen.values()), starts_seen


def test_first_lines_are_the_physical_line_numbers(jsonl):
    data = jsonl.read_bytes()
    line_starts = [0] + [i + 1 for i, c in enumerate(data) if c == 0x0A and i + 1 < len(data)]
    [f] = expand_inputs([str(jsonl)])
    for s in ready_splits([f], split_bytes=1):
        # 1 + the lines that start before the range: the number of its first line
        assert s.first_line == 1 + sum(1 for p in line_starts if p < s.start)


def test_count_range_counts_newlines_and_the_last_byte(jsonl):
    [f] = expand_inputs([str(jsonl)])
    splits = plan_splits([f], split_bytes=50)
    data = jsonl.read_bytes()
    for s in splits:
        chunk = data[s.start:s.stop]
        assert count_range(s) == (chunk.count(b"\n"), chunk.endswith(b"\n"))
    assert splits[1].first_line is None and splits[0].first_line == 1
    with pytest.raises(ValueError, match="first line"):
        read_documents(splits[1])


def test_a_file_at_or_below_the_split_size_is_unchanged(jsonl, tmp_path):
    files = expand_inputs([str(jsonl)])
    size = jsonl.stat().st_size
    assert plan_splits(files, split_bytes=size) == files
    assert ready_splits(files, split_bytes=size) == files
    assert not files[0].is_split
    assert file_shard_name("part", files[0], "parquet") == shard_name("part", 0, "parquet") == "part-00000.parquet"


def test_split_shard_names_sort_in_input_order():
    f = InputFile(index=3, path="x.jsonl", format="jsonl")
    names = [file_shard_name("part", dataclasses.replace(f, part=k, start=k, stop=k + 1, first_line=1),
                             "parquet") for k in (0, 1, 2, 10, 11)]
    assert names[0] == "part-00003-00000.parquet" and names[3] == "part-00003-00010.parquet"
    neighbours = ["part-00002.parquet", "part-00004.parquet"]
    assert sorted(names[::-1] + neighbours) == neighbours[:1] + names + neighbours[1:]


def _parquet(path: Path, groups: int = 5, rows: int = 7) -> list[dict]:
    recs = []
    for i in range(groups * rows):
        r = {"id": f"p{i}" if i % 4 else None, "text": f"row {i} " + "text " * (i % 5),
             "domain": "books" if i % 2 else None, "year": 1990 + i}
        if i == 9:
            r["text"] = None            # missing_text
        if i == 23:
            r["text"] = "y" * (MAX_DOC + 10)   # too_large
        recs.append(r)
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == groups
    return recs


def test_parquet_in_row_group_ranges_reads_exactly_as_whole(tmp_path):
    path = tmp_path / "big.parquet"
    _parquet(path)
    [f] = expand_inputs([str(path)])
    whole = _records(f)
    assert {x.cause for x in whole if not hasattr(x, "text")} == {"missing_text", "too_large"}
    assert any(getattr(x, "id", "").startswith("big.parquet:") for x in whole)   # default ids name:row
    md = pq.ParquetFile(path).metadata
    sizes = [sum(md.row_group(g).column(c).total_compressed_size for c in range(md.num_columns))
             for g in range(md.num_row_groups)]
    pairs = max(a + b for a, b in zip(sizes, sizes[1:]))   # two row groups a split, about
    for split_bytes, n_parts in ((1, [5]), (pairs, [3, 4])):
        splits = plan_splits([f], split_bytes=split_bytes)
        assert len(splits) in n_parts
        assert [s.first_line for s in splits] == [7 * s.start for s in splits]
        got, _ = _read_split(splits)
        assert got == whole


def test_a_gzip_file_larger_than_the_split_size_stays_whole_with_a_warning(jsonl, tmp_path, caplog):
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes(), mtime=0))
    small = tmp_path / "small.jsonl.gz"
    small.write_bytes(gzip.compress(b'{"text": "hi"}\n', mtime=0))
    files = expand_inputs([str(gz), str(small)])
    with caplog.at_level(logging.WARNING, logger="curation.splits"):
        plan = plan_splits(files, split_bytes=100)
    assert plan == files
    warned = [r.getMessage() for r in caplog.records if r.name == "curation.splits"]
    assert len(warned) == 1
    assert str(gz) in warned[0] and f"{gz.stat().st_size} bytes" in warned[0]
    assert "Parquet" in warned[0] and "several" in warned[0]


def test_ready_splits_in_beam_equal_the_library(jsonl, tmp_path):
    pqt = tmp_path / "t.parquet"
    _parquet(pqt)
    files = expand_inputs([str(jsonl), str(pqt)])
    expected = [((s.index, s.part), s) for s in ready_splits(files, split_bytes=23)]
    assert len(expected) > 20
    with BeamPipeline(argv=FAST) as p:
        got = p | ReadySplits(files, 23)
        assert_that(got, equal_to(expected))


# ---------------------------------------------------------------- the stages

def _filter_corpus(root: Path) -> Path:
    from tests.test_filter_pipeline import kinds
    root.mkdir()
    lines = []
    for k in range(40):
        for kind, text in kinds(k).items():
            lines.append(json.dumps({"id": f"{kind}{k}", "text": text}))
        if k % 7 == 0:
            lines += ["", '{"broken', json.dumps({"text": "no id, " + "; ".join(kinds(k)["good"].split("\n"))})]
    (root / "a.jsonl").write_text("\r\n".join(lines))        # CRLF, no final newline
    recs = [{"id": f"q{i}", "text": kinds(i)[kind]} for i in range(30) for kind in ("good", "short")]
    pq.write_table(pa.Table.from_pylist(recs), root / "b.parquet", row_group_size=6)
    (root / "c.jsonl.gz").write_bytes(gzip.compress("\n".join(lines[:100]).encode(), mtime=0))
    return root


def _outputs(out: Path) -> dict:
    def rows(sub):
        got = []
        for p in sorted((out / sub).glob("part-*")):   # shard names sort in input order
            got.extend(read_rows(str(p)))
        return got
    return {sub: rows(sub) for sub in ("documents", "removed", "rejected")}


def test_curate_filter_with_a_tiny_split_size_decides_as_without(tmp_path, caplog):
    src = _filter_corpus(tmp_path / "in")
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ["--preset", "c4", "--output-format", "parquet", *FAST]
    assert main(["filter", "--input", str(src), "--output", str(whole), *common]) == 0
    with caplog.at_level(logging.WARNING, logger="curation.splits"):
        assert main(["filter", "--input", str(src), "--output", str(split), "--split-bytes", "700",
                     *common]) == 0
    assert any(str(src / "c.jsonl.gz") in r.getMessage() for r in caplog.records)
    names = sorted(p.name for p in (split / "documents").iterdir())
    assert "part-00000-00003.parquet" in names and "part-00001-00002.parquet" in names
    assert "part-00002.parquet" in names                     # the gzip file: whole
    a, b = _outputs(whole), _outputs(split)
    assert len(a["documents"]) > 50 and len(a["removed"]) > 50 and len(a["rejected"]) > 3
    assert a == b
    ma = json.loads((whole / "manifest.json").read_text())
    mb = json.loads((split / "manifest.json").read_text())
    assert ma["counts"] == mb["counts"] and ma["removed_by_reason"] == mb["removed_by_reason"]
    assert mb["parts_agree"]["ok"] and mb["parts_agree"]["files_seen"] == 3
    assert mb["reconciled"]["ok"]


def test_curate_filter_removed_sample_is_the_same_with_splits(tmp_path):
    src = _filter_corpus(tmp_path / "in")
    outs = []
    for extra in ([], ["--split-bytes", "500"]):
        out = tmp_path / f"o{len(outs)}"
        assert main(["filter", "--input", str(src), "--output", str(out), "--preset", "c4",
                     "--removed-sample", "3", *extra, *FAST]) == 0
        outs.append({p.name: read_rows(str(p)) for p in sorted((out / "removed").iterdir())})
    assert outs[0] == outs[1] and outs[0]


def test_curate_score_keep_top_with_a_tiny_split_size_decides_as_without(tmp_path):
    from tests.test_fasttext_train import SMALL, synthetic_labels
    from tests.test_score_pipeline import make_corpus, score
    from classifiers.fasttext_train import train_classifier
    model_dir = tmp_path / "model"
    train_classifier(synthetic_labels(), model_dir, threshold=3, **SMALL)
    src = make_corpus(tmp_path / "in")
    pq.write_table(pq.read_table(src / "c.parquet"), src / "c.parquet", row_group_size=2)
    ma = score(src, tmp_path / "whole", model_dir, keep_top=0.3, batch_size=16)
    mb = score(src, tmp_path / "split", model_dir, keep_top=0.3, batch_size=16, split_bytes=900)
    assert len(list((tmp_path / "split" / "documents").glob("part-00000-0000*.parquet"))) > 3
    assert len(list((tmp_path / "split" / "documents").glob("part-00002-*.parquet"))) == 4
    assert _outputs(tmp_path / "whole") == _outputs(tmp_path / "split")
    assert ma["counts"] == mb["counts"] and ma["selection"]["cut"] == mb["selection"]["cut"]
    assert mb["parts_agree"]["ok"] and mb["reconciled"]["ok"]
    assert not (tmp_path / "split" / "_scores").exists()
