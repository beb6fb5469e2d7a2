"""Readers: every bad record becomes a Rejected with file, line and cause; input
expansion is deterministic; all formats give the same documents."""
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curation.documents import REJECT_CAUSES, Document, InputError, Rejected, make_ordinal
from curation.io.warc import WARC_CAUSES
from curation.io import (DAMAGE_CAUSES, DEFAULT_MAX_DOC_BYTES, FieldMap, InputFile, expand_inputs, input_format,
                         read_documents)

from conftest import read_jsonl_gz, shared_corpus

# (raw line, cause); every cause a record can have, in several spellings
BAD = [
    (b"{not json", "malformed_json"),
    (b'{"id": "m2", "text": "x",}', "malformed_json"),
    (b'{"id": "m3", "text": NaN}', "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b"null", "not_an_object"),
    (b'{"id": "x1", "text": 5}', "non_string_text"),
    (b'{"id": "x1b", "text": ["a", "b"]}', "non_string_text"),
    (b'{"id": "x2"}', "missing_text"),
    (b'{"id": "x2b", "text": null}', "missing_text"),
    (b'{"id": "x3", "text": " \\n\\t\\u3000 "}', "empty_text"),
    (b'{"id": "x3b", "text": ""}', "empty_text"),
    (b'{"id": "x4", "text": "a\x00b"}', "nul_bytes"),
    (b'{"id": "x4b", "text": "a\\u0000b"}', "nul_bytes"),
    (b'{"id": "x5", "text": "caf\xe9"}', "invalid_utf8"),
    (b'{"id": "x5b", "text": "\\ud800 lone"}', "invalid_utf8"),
    (b'{"id": "x5c", "text": "ok", "title": "\\udc00"}', "invalid_utf8"),
    (b'{"id": [1], "text": "x"}', "bad_id"),
    (b'{"id": 1.5, "text": "x"}', "bad_id"),
    (b'{"id": true, "text": "x"}', "bad_id"),
    (b'{"id": "big", "text": "' + b"y" * 300 + b'"}', "too_large"),
]

OPENERS = {
    ".jsonl": open,
    ".json": open,
    ".ndjson.gz": gzip.open,
    ".jsonl.gz": gzip.open,
    ".jsonl.zst": lambda p, m: zstandard.open(p, m),
}


def write(path, lines, opener=open, end=b"\n"):
    with opener(path, "wb") as f:
        for line in lines:
            f.write(line + end)
    return path


def split(records):
    records = list(records)
    return ([r for r in records if isinstance(r, Document)],
            [r for r in records if isinstance(r, Rejected)])


def one(path, **kw):
    (f,) = expand_inputs([str(path)], **kw)
    return f


# ---------------------------------------------------------------- JSON Lines

@pytest.mark.parametrize("suffix", list(OPENERS))
def test_every_bad_record_is_rejected_with_file_line_and_cause(tmp_path, suffix):
    good = b'{"id": "ok", "text": "fine text", "domain": "web", "extra": {"k": [1, 2]}}'
    lines = [good, b"", b"   \t"] + [line for line, _ in BAD] + [b'{"text": "no id here"}']
    path = write(tmp_path / f"in{suffix}", lines, OPENERS[suffix])
    f = one(path)
    reader = read_documents(f, max_doc_bytes=200)
    docs, rej = split(reader)
    assert [(d.id, d.line) for d in docs] == [("ok", 1), (f"in{suffix}:{len(lines)}", len(lines))]
    assert docs[0].domain == "web" and docs[0].meta == {"extra": {"k": [1, 2]}}
    assert docs[0].source == str(path) and docs[0].text == "fine text"
    assert [(r.line, r.cause) for r in rej] == [(i + 4, c) for i, (_, c) in enumerate(BAD)]
    assert all(r.file == str(path) and r.cause in REJECT_CAUSES for r in rej)
    assert all(len(r.raw_prefix) <= 200 and r.raw_bytes > 0 for r in rej)
    assert rej[0].raw_prefix == "{not json" and rej[0].raw_bytes == 9
    # every cause a reader can give for a record (damage causes have their own tests in
    # test_damaged_inputs.py; filter_error and score_error are the filter and score stages')
    assert {r.cause for r in rej} == set(REJECT_CAUSES) - DAMAGE_CAUSES - {"filter_error", "score_error"} - WARC_CAUSES
    # conservation: every physical line is a document, a rejection or a counted blank
    s = reader.stats
    assert (s.documents, s.rejected, s.blank_lines) == (2, len(BAD), 2)
    assert s.records + s.blank_lines == len(lines)
    assert s.rejected_by_cause["malformed_json"] == 3


def test_line_numbers_are_physical_lines(tmp_path):
    # CRLF endings, a UTF-8 byte order mark, blank lines and a last line without "\n"
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\r\n\r\n{"text": "two"}\r\n\n  \n{"text": "th\xc3\xa9"}')
    reader = read_documents(one(path))
    docs, rej = split(reader)
    assert not rej
    assert [(d.text, d.line) for d in docs] == [("one", 1), ("two", 3), ("thé", 6)]
    assert reader.stats.blank_lines == 3


def test_ids_ordinals_and_names_are_deterministic(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write(tmp_path / sub / "same.jsonl", [b'{"text": "a"}', b'{"id": 7, "text": "b"}',
                                              b'{"id": "", "text": "c"}', b'{"id": null, "text": "d"}'])
    write(tmp_path / "x" / "other.jsonl", [b'{"text": "e"}'])
    files = expand_inputs([str(tmp_path)])
    assert [f.name for f in files] == ["other.jsonl", "x/same.jsonl", "y/same.jsonl"]
    assert [f.index for f in files] == [0, 1, 2]
    first = [(d.id, d.ordinal) for f in files for d in read_documents(f)]
    again = [(d.id, d.ordinal) for f in expand_inputs([str(tmp_path)]) for d in read_documents(f)]
    assert first == again
    assert [i for i, _ in first] == ["other.jsonl:1", "x/same.jsonl:1", "7", "x/same.jsonl:3",
                                     "x/same.jsonl:4", "y/same.jsonl:1", "7", "y/same.jsonl:3",
                                     "y/same.jsonl:4"]
    assert [o for _, o in first] == [make_ordinal(0, 1)] + [make_ordinal(i, n) for i in (1, 2)
                                                            for n in (1, 2, 3, 4)]


def test_too_large_is_rejected_before_parsing(tmp_path):
    big = b'{"id": "big", "text": "' + "é".encode() * 10_000_000 + b'"}'    # 20 MB
    path = write(tmp_path / "big.jsonl.gz", [b'{"text": "before"}', big, b'{"text": "after"}'],
                 lambda p, m: gzip.open(p, m, compresslevel=1))
    f = one(path)
    assert DEFAULT_MAX_DOC_BYTES == 8 * 1024 * 1024
    docs, rej = split(read_documents(f))
    assert [(r.line, r.cause) for r in rej] == [(2, "too_large")]
    assert rej[0].raw_bytes == len(big) and rej[0].raw_prefix.startswith('{"id": "big", "text": "éé')
    assert len(rej[0].raw_prefix) == 200
    assert [(d.text, d.line) for d in docs] == [("before", 1), ("after", 3)]
    # the limit is the raw line's bytes, inclusive
    limit = len(big)
    assert len(split(read_documents(f, max_doc_bytes=limit))[0]) == 3
    assert [r.raw_bytes for r in split(read_documents(f, max_doc_bytes=limit - 1))[1]] == [limit]


def test_too_large_last_line_without_newline(tmp_path):
    path = tmp_path / "tail.jsonl"
    path.write_bytes(b'{"text": "a"}\n' + b"x" * 5000)
    docs, rej = split(read_documents(one(path), max_doc_bytes=1000))
    assert len(docs) == 1 and [(r.line, r.cause, r.raw_bytes) for r in rej] == [(2, "too_large", 5000)]


def test_strict_raises_at_the_first_problem_naming_file_and_line(tmp_path):
    path = write(tmp_path / "s.jsonl", [b'{"text": "ok"}', b"", b'{"text": 3}', b"{oops"])
    f = one(path)
    seen = []
    with pytest.raises(InputError, match=r"s\.jsonl:3: non_string_text") as e:
        for rec in read_documents(f, strict=True):
            seen.append(rec)
    assert [d.text for d in seen] == ["ok"]
    assert e.value.rejected.file == str(path) and e.value.rejected.line == 3


def _truncated(path, frac=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


@pytest.mark.parametrize("suffix,opener", [(".jsonl.gz", gzip.open),
                                           (".jsonl.zst", lambda p, m: zstandard.open(p, m))])
def test_truncated_file_keeps_what_was_read_then_one_truncated_file(tmp_path, suffix, opener):
    lines = [json.dumps({"id": i, "text": f"document {i} " * 40}).encode() for i in range(3000)]
    path = write(tmp_path / f"t{suffix}", lines, opener)
    _truncated(path)
    reader = read_documents(one(path))
    docs, rej = split(reader)
    assert 0 < len(docs) < 3000
    assert [d.id for d in docs] == [str(i) for i in range(len(docs))]   # nothing half-read
    assert [r.cause for r in rej] == ["truncated_file"]
    assert rej[0].line == len(docs) + 1 and rej[0].file == str(path)
    assert "the file ends inside" in rej[0].detail and f"{len(docs)} lines read" in rej[0].detail
    with pytest.raises(InputError, match="truncated_file"):
        list(read_documents(one(path), strict=True))


def test_corrupt_and_mislabelled_compressed_files(tmp_path):
    lines = [json.dumps({"text": f"line {i} " * 30}).encode() for i in range(3000)]
    gz = write(tmp_path / "c.jsonl.gz", lines, gzip.open)
    data = bytearray(gz.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    gz.write_bytes(bytes(data))
    docs, rej = split(read_documents(one(gz)))
    # the member's checksum fails: its data is wrong somewhere, so none of it is trusted
    assert docs == [] and [(r.line, r.cause) for r in rej] == [(1, "corrupt_data")]
    assert "decoded bytes are dropped, as its checksum failed" in rej[0].detail
    assert "no readable frame after it" in rej[0].detail

    # a second gzip member whose deflate data is invalid (zlib.error, not OSError)
    members = tmp_path / "m.jsonl.gz"
    members.write_bytes(gzip.compress(b"\n".join(lines[:2]) + b"\n")
                        + bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF, 0x07, 0, 0, 0, 0]))
    docs, rej = split(read_documents(one(members)))
    assert len(docs) == 2 and [(r.line, r.cause) for r in rej] == [(3, "corrupt_data")]
    assert "invalid block type" in rej[0].detail

    plain = write(tmp_path / "notgz.jsonl.gz", lines[:3])         # not gzip at all
    docs, rej = split(read_documents(one(plain)))
    assert docs == [] and [(r.line, r.cause) for r in rej] == [(1, "unreadable_file")]

    gone = write(tmp_path / "gone.jsonl", lines[:3])
    f = one(gone)
    gone.unlink()                                                  # vanished after planning
    assert [(r.line, r.cause) for r in read_documents(f)] == [(1, "unreadable_file")]


def test_zstd_reads_all_concatenated_frames(tmp_path):
    path = tmp_path / "multi.jsonl.zst"
    c = zstandard.ZstdCompressor()
    path.write_bytes(c.compress(b'{"text": "a"}\n{"text": "b"}\n') + c.compress(b'{"text": "c"}\n'))
    docs, rej = split(read_documents(one(path)))
    assert [d.text for d in docs] == ["a", "b", "c"] and not rej


# ---------------------------------------------------------------- Parquet / Arrow

def test_parquet_rows_field_mapping_and_rejects(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({
        "body": ["one two", None, "", "three", "nul\x00", "four"],
        "key": ["a", "b", "c", None, "e", "f"],
        "score": [0.5, 1.0, float("nan"), 2.0, 3.0, 4.0],
        "domain": ["web", "web", None, None, None, "books"],
    }), path, row_group_size=2)
    f = one(path)
    assert (f.format, f.compression) == ("parquet", "")
    docs, rej = split(read_documents(f, FieldMap(text_field="body", id_field="key", domain="news")))
    assert [(d.id, d.text, d.domain, d.line) for d in docs] == [
        ("a", "one two", "news", 0), ("p.parquet:3", "three", "news", 3), ("f", "four", "news", 5)]
    assert [d.ordinal for d in docs] == [make_ordinal(0, r) for r in (0, 3, 5)]
    # a constant domain overrides the field, whose value stays in meta
    assert docs[0].meta == {"score": 0.5, "domain": "web"} and docs[1].meta == {"score": 2.0}
    assert [(r.line, r.cause) for r in rej] == [(1, "missing_text"), (2, "empty_text"), (4, "nul_bytes")]
    assert json.loads(rej[0].raw_prefix)["key"] == "b"


def test_columnar_binary_text_bad_ids_and_too_large(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({
        "text": pa.array([b"caf\xc3\xa9", b"caf\xe9", b"z" * 5000, b"ok", b"fine"], pa.binary()),
        "id": pa.array([1.0, None, None, None, None], pa.float64()),
        "blob": pa.array([None, None, None, b"\xff\x00", None], pa.binary()),
    }), path)
    reader = read_documents(one(path), max_doc_bytes=1000)
    docs, rej = split(reader)
    assert [(r.line, r.cause) for r in rej] == [(0, "bad_id"), (1, "invalid_utf8"), (2, "too_large")]
    assert rej[2].raw_bytes == 5000 and len(rej[2].raw_prefix) <= 200
    assert [(d.text, d.line) for d in docs] == [("ok", 3), ("fine", 4)]
    assert docs[0].meta == {"blob": "base64:/wA="} and docs[1].meta == {"blob": None}
    assert reader.stats.records == 5


def test_nested_fields_with_dotted_paths(tmp_path):
    nested = write(tmp_path / "n.jsonl", [
        b'{"meta": {"content": "deep text", "uid": 7, "lang": "en"}, "src": {"site": "web"}}',
        b'{"meta": {"content": "only"}, "meta.content": "literal key wins"}',
        b'{"meta": {"uid": 8}}',
    ])
    fields = FieldMap(text_field="meta.content", id_field="meta.uid", domain_field="src.site")
    docs, rej = split(read_documents(one(nested), fields))
    assert [(d.text, d.id, d.domain) for d in docs] == [("deep text", "7", "web"),
                                                         ("literal key wins", "n.jsonl:2", None)]
    assert docs[0].meta == {"meta": {"lang": "en"}}          # used leaves removed, the rest kept
    assert docs[1].meta == {"meta": {"content": "only"}}
    assert [(r.line, r.cause) for r in rej] == [(3, "missing_text")]
    # parquet structs are reached the same way
    pq.write_table(pa.table({"meta": [{"content": "s", "uid": 9}]}), tmp_path / "s.parquet")
    (d,) = read_documents(one(tmp_path / "s.parquet"), fields)
    assert (d.text, d.id, d.meta) == ("s", "9", {})
    with pytest.raises(ValueError, match="text_field"):
        FieldMap(text_field="a..b")


def test_domain_field_values(tmp_path):
    path = write(tmp_path / "d.jsonl", [b'{"text": "a", "domain": "books"}', b'{"text": "b", "domain": 3}',
                                        b'{"text": "c"}', b'{"text": "d", "domain": null}'])
    docs = list(read_documents(one(path)))
    assert [(d.domain, d.meta) for d in docs] == [("books", {}), (None, {"domain": 3}), (None, {}), (None, {})]
    docs = list(read_documents(one(path), FieldMap(domain="fixed")))
    assert [(d.domain, d.meta) for d in docs] == [("fixed", {"domain": "books"}), ("fixed", {"domain": 3}),
                                                   ("fixed", {}), ("fixed", {})]


def test_corrupt_parquet_is_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": ["a"] * 10}), path)
    path.write_bytes(path.read_bytes()[:-20])
    docs, rej = split(read_documents(one(path)))
    assert docs == [] and [(r.line, r.cause) for r in rej] == [(0, "unreadable_file")]
    with pytest.raises(InputError, match=r"bad\.parquet:0: unreadable_file"):
        list(read_documents(one(path), strict=True))


def test_truncated_arrow_stream_keeps_earlier_rows(tmp_path):
    path = tmp_path / "s.arrow"
    table = pa.table({"text": [f"row {i} " * 20 for i in range(2000)]})
    with pa.ipc.new_stream(str(path), table.schema) as w:
        for b in table.to_batches(max_chunksize=500):
            w.write_batch(b)
    _truncated(path, 0.6)
    docs, rej = split(read_documents(one(path)))
    assert len(docs) == 1000 and docs[-1].line == 999
    assert [(r.line, r.cause) for r in rej] == [(1000, "truncated_file")]
    assert "after 1000 rows" in rej[0].detail


def test_arrow_ipc_file_format(tmp_path):
    path = tmp_path / "f.arrow"
    with pa.ipc.new_file(str(path), pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": ["x", "y"]}))
    assert [d.text for d in read_documents(one(path))] == ["x", "y"]


# ---------------------------------------------------------------- Hugging Face datasets

def test_huggingface_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"text number {i}" for i in range(30)]
    ds = datasets.Dataset.from_dict({"text": texts, "id": list(range(30)), "lang": ["en"] * 30})
    ds.save_to_disk(str(tmp_path / "single"), num_shards=3)
    files = expand_inputs([str(tmp_path / "single")])
    state = json.loads((tmp_path / "single" / "state.json").read_text())
    assert [os.path.basename(f.path) for f in files] == [x["filename"] for x in state["_data_files"]]
    assert {f.format for f in files} == {"arrow"}
    docs = [d for f in files for d in read_documents(f)]
    assert [d.text for d in docs] == texts and [d.id for d in docs] == [str(i) for i in range(30)]
    assert docs[0].line == 0 and docs[10].line == 0 and docs[0].meta == {"lang": "en"}
    assert len({d.ordinal for d in docs}) == 30

    small = datasets.Dataset.from_dict({"text": ["alpha", "beta"]})
    datasets.DatasetDict({"train": small, "test": small.map(lambda r: {"text": r["text"].upper()})}
                         ).save_to_disk(str(tmp_path / "dict"))
    files = expand_inputs([str(tmp_path / "dict")])
    assert [f.path.split(os.sep)[-2] for f in files] == ["train", "test"]   # dataset_dict.json order
    assert len({f.name for f in files}) == 2
    docs = [d for f in files for d in read_documents(f)]
    assert [d.text for d in docs] == ["alpha", "beta", "ALPHA", "BETA"]
    assert docs[0].id == f"{files[0].name}:0"

    # inside a plain directory, and matched by a glob: the metadata json is no input
    write(tmp_path / "a.jsonl", [b'{"text": "plain"}'])
    both = expand_inputs([str(tmp_path)])
    assert not any(f.path.endswith(".json") for f in both)
    assert sum(f.format == "arrow" for f in both) == 5 and sum(f.format == "jsonl" for f in both) == 1
    globbed = expand_inputs([str(tmp_path / "single" / "*")])
    assert [f.path for f in globbed] == [f.path for f in expand_inputs([str(tmp_path / "single")])]


# ---------------------------------------------------------------- expansion

def test_globs_directories_order_and_dedup(tmp_path):
    for name in ("b.jsonl", "a.jsonl.gz", "c.parquet", "README.md", ".hidden.jsonl"):
        p = tmp_path / name
        if name.endswith(".parquet"):
            pq.write_table(pa.table({"text": ["p"]}), p)
        else:
            write(p, [b'{"text": "x"}'], gzip.open if name.endswith(".gz") else open)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "a.jsonl.gz", [b'{"text": "y"}'], gzip.open)
    files = expand_inputs([str(tmp_path / "b.jsonl"), str(tmp_path / "*.jsonl*"),
                           str(tmp_path / "./b.jsonl")])
    assert [os.path.basename(f.path) for f in files] == ["a.jsonl.gz", "b.jsonl"]
    assert [f.index for f in files] == [0, 1] and [f.name for f in files] == ["a.jsonl.gz", "b.jsonl"]
    assert (files[0].format, files[0].compression) == ("jsonl", "gz")
    # a directory: recursive, supported files only, hidden skipped; names unique
    every = expand_inputs([str(tmp_path)])
    assert [f.name for f in every] == ["a.jsonl.gz", "b.jsonl", "c.parquet", "sub/a.jsonl.gz"]
    # pattern order does not matter
    assert expand_inputs([str(tmp_path / "sub"), str(tmp_path / "*.jsonl*")]) == \
        expand_inputs([str(tmp_path / "*.jsonl*"), str(tmp_path / "sub")])
    assert isinstance(every[0], InputFile)
    with pytest.raises(AttributeError):
        every[0].index = 5       # frozen


def test_directory_skips_json_documents_that_are_not_json_lines(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"n": 2, "files": ["a"]}, indent=1))
    write(tmp_path / "data.json", [b'{"text": "one"}', b'{"text": "two"}'])
    assert [f.name for f in expand_inputs([str(tmp_path)])] == ["data.json"]
    # named explicitly, it is read, and every line is accounted for
    docs, rej = split(read_documents(one(tmp_path / "manifest.json")))
    assert docs == [] and len(rej) == len((tmp_path / "manifest.json").read_text().splitlines())


def test_expansion_errors_name_the_pattern(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    (tmp_path / "empty").mkdir()
    cases = [
        (str(tmp_path / "*.parquet"), "matches no files"),
        (str(tmp_path / "missing.jsonl"), "does not exist"),
        (str(tmp_path / "x.csv"), "not a supported format"),
        (str(tmp_path / "x.*"), "not a supported format"),
        (str(tmp_path / "empty"), "holds no supported input files"),
    ]
    for pattern, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            expand_inputs([pattern])
        assert os.path.basename(pattern) in str(e.value)
    with pytest.raises(ValueError):
        expand_inputs([])


def test_input_format_by_suffix():
    assert input_format("a/b.JSONL") == ("jsonl", "")
    assert input_format("b.ndjson.zst") == ("jsonl", "zst")
    assert input_format("gs://x/b.json.gz") == ("jsonl", "gz")
    assert input_format("b.parquet") == ("parquet", "")
    assert input_format("b.jsonl.bz2") is None and input_format("b.csv") is None


# ---------------------------------------------------------------- real text

def test_real_corpus_reads_the_same_from_every_format(tmp_path):
    path = shared_corpus("web_noisy.jsonl.gz")
    rows = read_jsonl_gz(path)
    reader = read_documents(one(path))
    docs, rej = split(reader)
    # the corpus really holds pages with empty text and one with a NUL character
    expected = [(i + 1, "empty_text" if not r["text"].strip() else "nul_bytes")
                for i, r in enumerate(rows) if not r["text"].strip() or "\x00" in r["text"]]
    assert {c for _, c in expected} == {"empty_text", "nul_bytes"}
    assert [(r.line, r.cause) for r in rej] == expected
    assert reader.stats.blank_lines == 0 and reader.stats.records == len(rows)
    good = [r for i, r in enumerate(rows) if i + 1 not in dict(expected)]
    assert [(d.id, d.text) for d in docs] == [(r["id"], r["text"]) for r in good]
    assert docs[0].meta == {k: v for k, v in rows[0].items() if k not in ("id", "text", "domain")}
    assert sum(any(ord(c) > 127 for c in d.text) for d in docs) > 500   # German and English pages

    sample = good[:300]
    raw = [json.dumps(r, ensure_ascii=False).encode() for r in sample]
    write(tmp_path / "s.jsonl.zst", raw, lambda p, m: zstandard.open(p, m))
    write(tmp_path / "s.ndjson", raw)
    pq.write_table(pa.Table.from_pylist(sample), tmp_path / "s.parquet", row_group_size=64)
    want = [(r["id"], r["text"]) for r in sample]
    for name in ("s.jsonl.zst", "s.ndjson", "s.parquet"):
        assert [(d.id, d.text) for d in read_documents(one(tmp_path / name))] == want, name


def test_real_text_with_planted_bad_lines(tmp_path):
    path = shared_corpus("wiki_wikitext2.jsonl.gz")
    with gzip.open(path, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f][:40]
    planted = {5: (b'{"text": "\xff\xfe broken"}', "invalid_utf8"),
               12: (lines[12][: len(lines[12]) // 2], "malformed_json"),
               20: (lines[20].replace(b'"text"', b'"body"'), "missing_text")}
    for i, (line, _) in planted.items():
        lines[i] = line
    bad = write(tmp_path / "wiki.jsonl.gz", lines, gzip.open)
    docs, rej = split(read_documents(one(bad)))
    assert [(r.line, r.cause) for r in rej] == [(i + 1, c) for i, (_, c) in sorted(planted.items())]
    assert len(docs) == 37 and all(d.text.strip() for d in docs)
