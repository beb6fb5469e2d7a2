"""Writers are deterministic and atomic; the filesystem protocol is the only way
the library touches files."""
import fnmatch
import gzip
import io
import json
import posixpath

import pyarrow.parquet as pq
import pytest

from curation.documents import Document, Rejected
from curation.fs import FS, LocalFS, basename, dirname, is_remote
from curation.io import (DOCUMENT_SCHEMA, REJECTED_SCHEMA, document_from_row, expand_inputs,
                         read_documents, read_rows, rejected_row, shard_name, write_documents,
                         write_rows)

from conftest import read_jsonl_gz, shared_corpus

FORMATS = ["parquet", "jsonl.gz"]


def sample_docs(n=3000):
    return [Document(id=str(i), text=f"text {i} – ünïcode", domain=None if i % 3 else "web",
                     source="in.jsonl", line=i + 1, meta={"k": i, "b": {"z": 1, "a": [i]}} if i % 2 else {})
            for i in range(n)]


def test_shard_name():
    assert shard_name("part", 3, "parquet") == "part-00003.parquet"
    assert shard_name("part", 3, "jsonl.gz") == "part-00003.jsonl.gz"
    with pytest.raises(ValueError, match="csv"):
        shard_name("part", 0, "csv")


@pytest.mark.parametrize("fmt", FORMATS)
def test_documents_round_trip_and_rewrite_byte_identically(tmp_path, fmt):
    docs = sample_docs()
    a = tmp_path / "a" / shard_name("part", 3, fmt)
    b = tmp_path / "b" / shard_name("part", 3, fmt)
    assert write_documents(str(a), docs, fmt=fmt) == len(docs)
    assert write_documents(str(b), iter(docs), fmt=fmt) == len(docs)
    assert a.read_bytes() == b.read_bytes()
    write_documents(str(a), docs, fmt=fmt)                      # overwrite in place
    assert a.read_bytes() == b.read_bytes()
    assert [p.name for p in a.parent.iterdir()] == [a.name]     # no temporary left behind
    rows = read_rows(str(a))
    assert rows[1]["meta"] == '{"b":{"a":[1],"z":1},"k":1}' and rows[0]["meta"] is None
    back = [document_from_row(r) for r in rows]
    for d in docs:
        d.ordinal = 0
    assert back == docs
    if fmt == "parquet":
        meta = pq.read_metadata(a)
        assert pq.read_schema(a).equals(DOCUMENT_SCHEMA)
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert set(meta.metadata) == {b"ARROW:schema"}           # nothing that varies per run
    else:
        raw = a.read_bytes()
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"   # mtime 0
        assert not raw[3] & 0x08                                   # no file name in the header
        assert json.loads(gzip.decompress(raw).splitlines()[0]) == rows[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_own_output_reads_back_with_its_domain_and_meta(tmp_path, fmt):
    """A stage's documents/ is the next stage's input: meta comes back as the object
    it was (not a JSON string), and the earlier source/line stay in it as provenance."""
    docs = sample_docs(6) + [Document(id="s", text="has its own source", domain="code",
                                      source="in.jsonl", line=99, meta={"source": "github"})]
    path = tmp_path / shard_name("part", 0, fmt)
    write_documents(str(path), docs, fmt=fmt)
    back = list(read_documents(str(path)))
    assert [(d.id, d.text, d.domain) for d in back] == [(d.id, d.text, d.domain) for d in docs]
    assert back[1].meta == {"k": 1, "b": {"z": 1, "a": [1]}, "source": "in.jsonl", "line": 2}
    assert back[0].meta == {"source": "in.jsonl", "line": 1}
    assert back[-1].meta == {"source": "github", "line": 99}       # the document's own key wins
    assert back[0].source == str(path) and back[0].line == (0 if fmt == "parquet" else 1)
    # read again after a second write: nothing nests, the first origin survives
    again = tmp_path / "again" / shard_name("part", 0, fmt)
    write_documents(str(again), back, fmt=fmt)
    assert [d.meta for d in read_documents(str(again))] == [d.meta for d in back]


def test_a_foreign_meta_string_is_left_alone(tmp_path):
    # a column set that is not DOCUMENT_SCHEMA: its "meta" string is user data
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "t", "meta": '{"a": 1}', "url": "u"}) + "\n"
                    + json.dumps({"text": "t", "meta": "[1]"}) + "\n")
    assert [d.meta for d in read_documents(str(path))] == [{"meta": '{"a": 1}', "url": "u"}, {"meta": "[1]"}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, fmt):
    path = tmp_path / "out" / shard_name("part", 0, fmt)
    write_documents(str(path), sample_docs(10), fmt=fmt)
    before = path.read_bytes()

    def exploding():
        yield from sample_docs(100_000)[:70_000]
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        write_documents(str(path), exploding(), fmt=fmt)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_rows_rejected_schema_and_checks(tmp_path, fmt):
    rejected = [Rejected(file="in.jsonl", line=3, cause="malformed_json", detail="x", raw_prefix="{oops",
                         raw_bytes=5),
                Rejected(file="in.jsonl", line=9, cause="too_large", raw_bytes=10**8)]
    path = tmp_path / shard_name("rej", 1, fmt)
    assert write_rows(str(path), [rejected_row(r) for r in rejected], REJECTED_SCHEMA, fmt=fmt) == 2
    assert [Rejected(**r) for r in read_rows(str(path))] == rejected
    with pytest.raises(ValueError, match="not in the schema"):
        write_rows(str(path), [{**rejected_row(rejected[0]), "extra": 1}], REJECTED_SCHEMA, fmt=fmt)
    with pytest.raises(ValueError, match="'cause' is required"):
        write_rows(str(path), [{"file": "f", "line": 1}], REJECTED_SCHEMA, fmt=fmt)
    with pytest.raises(Exception):
        write_rows(str(path), [{"file": "f", "line": "one", "cause": "c"}], REJECTED_SCHEMA, fmt=fmt)
    assert [Rejected(**r) for r in read_rows(str(path))] == rejected   # failures changed nothing
    empty = tmp_path / shard_name("empty", 0, fmt)
    assert write_rows(str(empty), [], REJECTED_SCHEMA, fmt=fmt) == 0 and read_rows(str(empty)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, empty.name])


def test_real_corpus_round_trips_through_both_formats(tmp_path):
    path = shared_corpus("email_spamassassin.jsonl.gz")
    docs = [d for d in read_documents(expand_inputs([str(path)])[0]) if isinstance(d, Document)]
    assert len(docs) == len(read_jsonl_gz(path))
    for fmt in FORMATS:
        out = tmp_path / shard_name("part", 0, fmt)
        write_documents(str(out), docs[:2000], fmt=fmt)
        back = [document_from_row(r, ordinal=d.ordinal) for r, d in zip(read_rows(str(out)), docs)]
        assert back == docs[:2000]
        first = out.read_bytes()
        write_documents(str(out), docs[:2000], fmt=fmt)
        assert out.read_bytes() == first


# ---------------------------------------------------------------- the FS protocol

class MemoryFS:
    """An object store in a dict: no directories, URL paths, no os calls."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def open_read(self, path):
        if path not in self.files:
            raise FileNotFoundError(path)
        return io.BytesIO(self.files[path])

    def open_write(self, path):
        fs = self

        class W(io.BytesIO):
            def close(self):
                if not self.closed:
                    fs.files[path] = self.getvalue()
                super().close()
        return W()

    def rename(self, src, dst):
        self.files[dst] = self.files.pop(src)

    def exists(self, path):
        return path in self.files

    def delete(self, path):
        del self.files[path]

    def match(self, pattern):
        if pattern.endswith("/**"):
            return sorted(p for p in self.files if p.startswith(pattern[:-2]))
        return sorted(p for p in self.files if fnmatch.fnmatchcase(p, pattern)
                      and p.count("/") == pattern.count("/"))

    def isdir(self, path):
        return any(p.startswith(path.rstrip("/") + "/") for p in self.files)

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.files if p.startswith(prefix)})

    def join(self, a, *parts):
        return posixpath.join(a, *parts)

    def makedirs(self, path):
        pass


def test_everything_goes_through_the_given_fs(tmp_path):
    mem = MemoryFS()
    assert isinstance(mem, FS) and isinstance(LocalFS(), FS)
    mem.files["mem://b/in/a.jsonl"] = b'{"id": "a", "text": "first"}\n{"text": 1}\n'
    mem.files["mem://b/in/sub/a.jsonl"] = b'{"text": "second"}\n'
    mem.files["mem://b/in/notes.txt"] = b"not data"
    files = expand_inputs(["mem://b/in"], fs=mem)
    assert [(f.path, f.name) for f in files] == [("mem://b/in/a.jsonl", "a.jsonl"),
                                                  ("mem://b/in/sub/a.jsonl", "sub/a.jsonl")]
    recs = [r for f in files for r in read_documents(f, fs=mem)]
    assert [(type(r).__name__, r.line) for r in recs] == [("Document", 1), ("Rejected", 2), ("Document", 1)]
    docs = [r for r in recs if isinstance(r, Document)]
    for fmt in FORMATS:
        out = "mem://b/out/" + shard_name("part", 0, fmt)
        assert write_documents(out, docs, fmt=fmt, fs=mem) == 2
        assert [r["id"] for r in read_rows(out, fs=mem)] == ["a", "sub/a.jsonl:1"]
    assert sorted(p for p in mem.files if "/out/" in p) == ["mem://b/out/part-00000.jsonl.gz",
                                                            "mem://b/out/part-00000.parquet"]
    assert list(tmp_path.iterdir()) == []


def test_path_helpers():
    assert dirname("gs://b/x/y.parquet") == "gs://b/x" and basename("gs://b/x/y.parquet") == "y.parquet"
    assert dirname("/a/b.jsonl") == "/a" and basename("/a/b.jsonl") == "b.jsonl"
    assert is_remote("gs://b/x") and not is_remote("/tmp/x") and not is_remote("file:///tmp/x")


def test_beam_filesystems_adapter(tmp_path):
    """The pipeline's adapter on Beam's FileSystems reads and writes the same way."""
    pytest.importorskip("apache_beam")
    from pipelines.fs import BeamFS
    fs = BeamFS()
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "b.jsonl").write_bytes(b'{"text": "b"}\n')
    (tmp_path / "in" / "sub" / "b.jsonl").write_bytes(b'{"text": "c"}\n')
    files = expand_inputs([str(tmp_path / "in")], fs=fs)
    assert files == expand_inputs([str(tmp_path / "in")])
    docs = [d for f in files for d in read_documents(f, fs=fs)]
    out = str(tmp_path / "out" / shard_name("part", 0, "parquet"))
    write_documents(out, docs, fs=fs)
    assert [r["text"] for r in read_rows(out)] == ["b", "c"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.parquet"]


def test_read_range_is_the_same_bytes_on_every_filesystem(tmp_path):
    """Work files are read by byte range (dedup's key partitions, side-file rows):
    BeamFS, LocalFS and a filesystem without read_range (open, seek, read) agree, and
    a range past the end of a file (one changed or cut short) is an error on each."""
    pytest.importorskip("apache_beam")
    from curation.fs import LocalFS, read_range
    from pipelines.fs import BeamFS
    data = bytes(range(256)) * 40
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    mem = MemoryFS()
    with mem.open_write("w.bin") as f:
        f.write(data)
    for start, length in [(0, 10), (100, 1), (5000, 5000), (10230, 10), (0, 0)]:
        want = data[start:start + length]
        assert read_range(LocalFS(), str(path), start, length) == want
        assert read_range(BeamFS(), str(path), start, length) == want
        assert read_range(mem, "w.bin", start, length) == want
    for fs, p in [(LocalFS(), str(path)), (BeamFS(), str(path)), (mem, "w.bin")]:
        with pytest.raises(OSError, match="cut short"):
            read_range(fs, p, 10230, 100)
