"""Readers turn every bad record into a Rejected with file, line and cause;
writers are deterministic and atomic."""
import gzip
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curation.documents import Document, InputError, Rejected
from curation.io import (DOCUMENT_SCHEMA, FieldMap, expand_inputs, read_documents, read_rows,
                         shard_name, write_documents)

from conftest import read_jsonl_gz, shared_corpus

BAD = [
    (b"{not json", "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"id": "x1", "text": 5}', "non_string_text"),
    (b'{"id": "x2"}', "missing_text"),
    (b'{"id": "x2b", "text": null}', "missing_text"),
    (b'{"id": "x3", "text": " \\n\\t "}', "empty_text"),
    (b'{"id": "x4", "text": "a\x00b"}', "nul_bytes"),
    (b'{"id": "x4b", "text": "a\\u0000b"}', "nul_bytes"),
    (b'{"id": "x5", "text": "caf\xe9"}', "invalid_utf8"),
    (b'{"id": "x5b", "text": "\\ud800 lone"}', "invalid_utf8"),
    (b'{"id": [1], "text": "x"}', "bad_id"),
]


def write(path, lines, opener=open):
    with opener(path, "wb") as f:
        for line in lines:
            f.write(line + b"\n")


def docs_and_rejects(file, **kw):
    out = list(read_documents(file, **kw))
    return [r for r in out if isinstance(r, Document)], [r for r in out if isinstance(r, Rejected)]


@pytest.mark.parametrize("suffix,opener", [(".jsonl", open), (".jsonl.gz", gzip.open),
                                           (".jsonl.zst", lambda p, m: zstandard.open(p, m))])
def test_every_bad_record_is_rejected_with_line_and_cause(tmp_path, suffix, opener):
    good = b'{"id": "ok", "text": "fine text", "domain": "web", "extra": 1}'
    lines = [good, b""] + [line for line, _ in BAD] + [b'{"text": "no id here"}']
    path = tmp_path / f"in{suffix}"
    write(path, lines, opener)
    (f,) = expand_inputs([str(path)])
    docs, rej = docs_and_rejects(f)
    assert [d.id for d in docs] == ["ok", f"in{suffix}:{len(lines)}"]
    assert docs[0].domain == "web" and docs[0].meta == {"extra": 1} and docs[0].line == 1
    assert [(r.line, r.cause) for r in rej] == [(i + 3, c) for i, (_, c) in enumerate(BAD)]
    assert all(r.file == str(path) for r in rej)
    assert len(docs) + len(rej) == len(lines) - 1   # the blank line is no record


def test_too_large_is_rejected_before_parsing(tmp_path):
    path = tmp_path / "big.jsonl"
    write(path, [b'{"id": "big", "text": "' + b"y" * 20_000_000 + b'"}', b'{"text": "after"}'])
    (f,) = expand_inputs([str(path)])
    t = time.perf_counter()
    docs, rej = docs_and_rejects(f)
    assert time.perf_counter() - t < 5
    assert [(r.line, r.cause) for r in rej] == [(1, "too_large")]
    assert rej[0].raw_bytes > 20_000_000 and len(rej[0].raw_prefix) <= 200
    assert [d.text for d in docs] == ["after"]
    docs, rej = docs_and_rejects(f, max_doc_bytes=30_000_000)
    assert len(docs) == 2


def test_strict_names_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    write(path, [b'{"text": "ok"}', b"{oops"])
    (f,) = expand_inputs([str(path)])
    with pytest.raises(InputError, match=r"s\.jsonl:2: malformed_json"):
        list(read_documents(f, strict=True))


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    write(path, [json.dumps({"text": f"doc {i} " * 50}).encode() for i in range(2000)], gzip.open)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (f,) = expand_inputs([str(path)])
    docs, rej = docs_and_rejects(f)
    assert 0 < len(docs) < 2000
    assert [r.cause for r in rej] == ["unreadable_file"] and rej[0].line == len(docs) + 1


def test_parquet_and_field_mapping(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["one two", None, "", "three"], "key": ["a", "b", "c", None],
                             "meta": [{"lang": "en"}] * 4}), path)
    (f,) = expand_inputs([str(path)])
    docs, rej = docs_and_rejects(f, fields=FieldMap(text_field="body", id_field="key", domain="news"))
    assert [(d.id, d.text, d.domain, d.line) for d in docs] == [("a", "one two", "news", 0),
                                                                 ("p.parquet:3", "three", "news", 3)]
    assert [(r.line, r.cause) for r in rej] == [(1, "missing_text"), (2, "empty_text")]
    nested = tmp_path / "n.jsonl"
    write(nested, [b'{"meta": {"content": "deep text", "uid": 7}}'])
    (f,) = expand_inputs([str(nested)])
    (d,) = read_documents(f, FieldMap(text_field="meta.content", id_field="meta.uid"))
    assert (d.text, d.id) == ("deep text", "7")


def test_huggingface_datasets_directories(tmp_path):
    import datasets
    ds = datasets.Dataset.from_dict({"text": ["alpha beta", "gamma"], "id": ["1", "2"]})
    ds.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))
    (f,) = expand_inputs([str(tmp_path / "single")])
    assert f.format == "arrow"
    assert [d.text for d in read_documents(f)] == ["alpha beta", "gamma"]
    files = expand_inputs([str(tmp_path / "dict")])
    assert len(files) == 2 and len({f.name for f in files}) == 2
    assert sum(1 for f in files for _ in read_documents(f)) == 4


def test_globs_directories_and_errors(tmp_path):
    for name in ("b.jsonl", "a.jsonl.gz"):
        write(tmp_path / name, [b'{"text": "x"}'], gzip.open if name.endswith(".gz") else open)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "a.jsonl.gz", [b'{"text": "y"}'], gzip.open)
    files = expand_inputs([str(tmp_path / "*.jsonl*"), str(tmp_path / "b.jsonl")])
    assert [f.index for f in files] == [0, 1] and files[0].path.endswith("a.jsonl.gz")
    both = expand_inputs([str(tmp_path)])
    assert len(both) == 3 and len({f.name for f in both}) == 3   # names stay unique
    with pytest.raises(ValueError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.parquet")])
    with pytest.raises(ValueError, match="does not exist"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="not a supported format"):
        expand_inputs([str(tmp_path / "x.csv")])


def test_real_corpus_reads_cleanly():
    path = shared_corpus("email_spamassassin.jsonl.gz")
    (f,) = expand_inputs([str(path)])
    docs, rej = docs_and_rejects(f)
    assert len(docs) + len(rej) == len(read_jsonl_gz(path))
    assert len(docs) > 6000


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.gz"])
def test_writers_are_deterministic_and_atomic(tmp_path, fmt):
    docs = [Document(id=str(i), text=f"text {i}", domain="web", source="s", line=i, meta={"k": i})
            for i in range(5000)]
    a = tmp_path / "a" / shard_name("part", 3, fmt)
    b = tmp_path / "b" / shard_name("part", 3, fmt)
    assert write_documents(str(a), docs, fmt=fmt) == 5000
    write_documents(str(b), iter(docs), fmt=fmt)
    assert a.read_bytes() == b.read_bytes()
    assert a.name == f"part-00003.{fmt}"
    assert [p.name for p in a.parent.iterdir()] == [a.name]     # no temporary left behind
    rows = read_rows(str(a))
    assert len(rows) == 5000 and rows[7]["id"] == "7" and json.loads(rows[7]["meta"]) == {"k": 7}
    if fmt == "parquet":
        assert pq.read_schema(a).equals(DOCUMENT_SCHEMA)
    empty = tmp_path / "e" / shard_name("part", 0, fmt)
    assert write_documents(str(empty), [], fmt=fmt) == 0 and read_rows(str(empty)) == []
