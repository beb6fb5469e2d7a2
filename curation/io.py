"""Reading documents (JSONL plain/.gz/.zst, Parquet, Hugging Face `datasets`
directories) with every bad record turned into a `Rejected` with its cause, and
writing deterministic, atomically renamed shards."""
from __future__ import annotations

import gzip
import io
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import DEFAULT_MAX_DOC_BYTES
from curation.documents import Document, InputError, Rejected, make_ordinal
from curation.fs import default_fs

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSIONS = ("", ".gz", ".zst")
RAW_PREFIX_BYTES = 200


@dataclass(frozen=True)
class InputFile:
    index: int
    path: str
    format: str          # "jsonl" | "parquet" | "arrow"
    compression: str     # "" | "gz" | "zst"
    name: str            # short unique name, used for ids of records without one


@dataclass(frozen=True)
class FieldMap:
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = "domain"
    domain: str | None = None


def _format_of(path: str) -> tuple[str, str] | None:
    low = path.lower()
    for comp in COMPRESSIONS:
        for suf in JSONL_SUFFIXES:
            if low.endswith(suf + comp):
                return "jsonl", comp.lstrip(".")
    if low.endswith(".parquet"):
        return "parquet", ""
    if low.endswith(".arrow"):
        return "arrow", ""
    return None


def _hf_files(fs, path: str) -> list[str] | None:
    """Arrow files of a `save_to_disk` directory (Dataset or DatasetDict), or None."""
    state = fs.join(path, "state.json")
    if fs.exists(state):
        with fs.open_read(state) as f:
            meta = json.loads(f.read().decode("utf-8"))
        return [fs.join(path, d["filename"]) for d in meta.get("_data_files", [])]
    dd = fs.join(path, "dataset_dict.json")
    if fs.exists(dd):
        with fs.open_read(dd) as f:
            splits = json.loads(f.read().decode("utf-8")).get("splits", [])
        out = []
        for s in splits:
            out.extend(_hf_files(fs, fs.join(path, s)) or [])
        return out
    return None


def _dir_files(fs, path: str) -> list[str]:
    hf = _hf_files(fs, path)
    if hf is not None:
        return hf
    found = [p for p in fs.match(fs.join(path, "**", "*")) if _format_of(p) and not fs.isdir(p)]
    return sorted(found)


def expand_inputs(patterns: Iterable[str], fs=None) -> list[InputFile]:
    """Paths, globs and directories -> the sorted, de-duplicated list of input files."""
    fs = default_fs(fs)
    if isinstance(patterns, str):
        patterns = [patterns]
    paths: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            matches = fs.match(pat)
            if not matches:
                raise ValueError(f"input pattern {pat!r} matches no files")
        elif fs.isdir(pat):
            matches = [pat]
        elif fs.exists(pat):
            matches = [pat]
        else:
            raise ValueError(f"input {pat!r} does not exist")
        for m in matches:
            if fs.isdir(m):
                inner = _dir_files(fs, m)
                if not inner:
                    raise ValueError(f"input directory {m!r} holds no supported files "
                                     f"(.jsonl/.json/.ndjson[.gz|.zst], .parquet, datasets save_to_disk)")
                paths.extend(inner)
            elif _format_of(m):
                paths.append(m)
            elif any(ch in pat for ch in "*?["):
                raise ValueError(f"input {m!r} (from {pat!r}) is not a supported format "
                                 f"(.jsonl/.json/.ndjson[.gz|.zst], .parquet, .arrow)")
            else:
                raise ValueError(f"input {m!r} is not a supported format "
                                 f"(.jsonl/.json/.ndjson[.gz|.zst], .parquet, .arrow)")
    seen, ordered = set(), []
    for p in sorted(paths) if not any(_is_hf_arrow(p) for p in paths) else _stable_sorted(paths):
        if p not in seen:
            seen.add(p)
            ordered.append(p)
    names = _unique_names(ordered)
    out = []
    for i, p in enumerate(ordered):
        fmt, comp = _format_of(p)
        out.append(InputFile(index=i, path=p, format=fmt, compression=comp, name=names[i]))
    return out


def _is_hf_arrow(p: str) -> bool:
    return p.endswith(".arrow")


def _stable_sorted(paths: list[str]) -> list[str]:
    # Arrow shards keep the order state.json gives them within their directory.
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        by_dir.setdefault(posixpath.dirname(p), []).append(p)
    return [p for d in sorted(by_dir) for p in by_dir[d]]


def _unique_names(paths: list[str]) -> list[str]:
    base = [posixpath.basename(p.replace("\\", "/")) for p in paths]
    if len(set(base)) == len(base):
        return base
    prefix = posixpath.commonpath([posixpath.dirname(p.replace("\\", "/")) or "." for p in paths]) \
        if "://" not in paths[0] else posixpath.dirname(posixpath.commonprefix(paths))
    return [p.replace("\\", "/")[len(prefix):].lstrip("/") or b for p, b in zip(paths, base)]


# ---------------------------------------------------------------- reading

def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING = object()


def _prefix(raw: bytes) -> str:
    return raw[:RAW_PREFIX_BYTES].decode("utf-8", errors="replace")


class _Reader:
    def __init__(self, file: InputFile, fields: FieldMap, max_doc_bytes: int, strict: bool):
        self.file, self.fields = file, fields
        self.max_doc_bytes, self.strict = max_doc_bytes, strict
        self.blank_lines = 0

    def reject(self, line: int, cause: str, detail: str = "", raw: bytes = b"", size: int | None = None):
        r = Rejected(file=self.file.path, line=line, cause=cause, detail=detail,
                     raw_prefix=_prefix(raw), raw_bytes=len(raw) if size is None else size)
        if self.strict:
            raise InputError(r)
        return r

    def record(self, obj: Any, line: int, raw: bytes, size: int) -> Document | Rejected:
        f = self.fields
        if not isinstance(obj, dict):
            return self.reject(line, "not_an_object", f"got {type(obj).__name__}", raw, size)
        text = _get(obj, f.text_field)
        if text is _MISSING or text is None:
            return self.reject(line, "missing_text", f"no {f.text_field!r} field", raw, size)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                return self.reject(line, "invalid_utf8", str(e), raw, size)
        if not isinstance(text, str):
            return self.reject(line, "non_string_text", f"{f.text_field!r} is {type(text).__name__}", raw, size)
        if "\x00" in text:
            return self.reject(line, "nul_bytes", "NUL character in the text", raw, size)
        try:
            nbytes = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            return self.reject(line, "invalid_utf8", f"lone surrogate: {e.reason}", raw, size)
        if nbytes > self.max_doc_bytes:
            return self.reject(line, "too_large", f"text is {nbytes} bytes > {self.max_doc_bytes}", raw, size)
        if not text.strip():
            return self.reject(line, "empty_text", "", raw, size)
        doc_id = _get(obj, f.id_field)
        if doc_id is _MISSING or doc_id is None:
            doc_id = f"{self.file.name}:{line}"
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            return self.reject(line, "bad_id", f"{f.id_field!r} is {type(doc_id).__name__}", raw, size)
        else:
            doc_id = str(doc_id)
        if f.domain is not None:
            domain = f.domain
        else:
            d = _get(obj, f.domain_field)
            domain = d if isinstance(d, str) else None
        top = {f.text_field.split(".")[0], f.id_field.split(".")[0], f.domain_field.split(".")[0]}
        meta = {k: v for k, v in obj.items() if k not in top}
        return Document(id=doc_id, text=text, domain=domain, source=self.file.path, line=line,
                        ordinal=make_ordinal(self.file.index, line), meta=meta)


def _open_jsonl(fs, file: InputFile):
    raw = fs.open_read(file.path)
    if file.compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if file.compression == "zst":
        import zstandard
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _read_jsonl(r: _Reader, fs) -> Iterator[Document | Rejected]:
    line_no = 0
    try:
        with _open_jsonl(fs, r.file) as f:
            for line_no, line in enumerate(f, start=1):
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    r.blank_lines += 1
                    continue
                if len(raw) > r.max_doc_bytes:
                    yield r.reject(line_no, "too_large", f"record is {len(raw)} bytes > {r.max_doc_bytes}", raw)
                    continue
                if b"\x00" in raw:
                    yield r.reject(line_no, "nul_bytes", "raw NUL byte in the line", raw)
                    continue
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield r.reject(line_no, "invalid_utf8", str(e), raw)
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    try:   # orjson refuses lone surrogates that json accepts: tell them apart
                        obj = json.loads(raw)
                    except ValueError:
                        yield r.reject(line_no, "malformed_json", str(e), raw)
                        continue
                yield r.record(obj, line_no, raw, len(raw))
    except InputError:
        raise
    except (OSError, EOFError, ValueError) as e:
        yield r.reject(line_no + 1, "unreadable_file", f"{type(e).__name__}: {e}")


def _read_columnar(r: _Reader, fs) -> Iterator[Document | Rejected]:
    row = 0
    try:
        with fs.open_read(r.file.path) as f:
            if r.file.format == "parquet":
                batches = pq.ParquetFile(f).iter_batches(batch_size=1024)
            else:
                data = f.read() if not hasattr(f, "seek") else f
                try:
                    batches = iter(pa.ipc.open_stream(data))
                except pa.ArrowInvalid:
                    if hasattr(data, "seek"):
                        data.seek(0)
                    reader = pa.ipc.open_file(data)
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            for batch in batches:
                for obj in batch.to_pylist():
                    text = _get(obj, r.fields.text_field)
                    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else \
                        (len(text) if isinstance(text, bytes) else 0)
                    raw = orjson.dumps(obj, default=str)[:RAW_PREFIX_BYTES] if size <= r.max_doc_bytes else b""
                    meta_safe = {k: _jsonable(v) for k, v in obj.items()}
                    yield r.record(meta_safe, row, raw, size)
                    row += 1
    except InputError:
        raise
    except (OSError, EOFError, ValueError, pa.ArrowException) as e:
        yield r.reject(row, "unreadable_file", f"{type(e).__name__}: {e}")


def _jsonable(v):
    if isinstance(v, (str, int, float, bool, type(None), bytes)):
        return v
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def read_documents(file: InputFile, fields: FieldMap = FieldMap(), *,
                   max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES, strict: bool = False,
                   fs=None) -> Iterator[Document | Rejected]:
    """Every record of `file` as a Document or a Rejected (strict: InputError instead).

    JSONL lines are numbered from 1 (blank lines are not records); Parquet and Arrow
    rows from 0."""
    fs = default_fs(fs)
    r = _Reader(file, fields, max_doc_bytes, strict)
    if file.format == "jsonl":
        return _read_jsonl(r, fs)
    return _read_columnar(r, fs)


# ---------------------------------------------------------------- writing

DOCUMENT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("domain", pa.string()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("meta", pa.string()),
])

REJECTED_SCHEMA = pa.schema([
    pa.field("file", pa.string(), nullable=False),
    pa.field("line", pa.int64(), nullable=False),
    pa.field("cause", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("raw_prefix", pa.string()),
    pa.field("raw_bytes", pa.int64()),
])

_EXT = {"parquet": "parquet", "jsonl.gz": "jsonl.gz"}
_BATCH = 2048


def shard_name(prefix: str, index: int, fmt: str) -> str:
    if fmt not in _EXT:
        raise ValueError(f"unknown output format {fmt!r} (parquet or jsonl.gz)")
    return f"{prefix}-{index:05d}.{_EXT[fmt]}"


def _meta_json(meta: dict) -> str | None:
    if not meta:
        return None
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)


def document_row(d: Document) -> dict:
    return {"id": d.id, "text": d.text, "domain": d.domain, "source": d.source,
            "line": d.line, "meta": _meta_json(d.meta)}


def _write_stream(path: str, rows: Iterable[dict], schema: pa.Schema, fmt: str, fs) -> int:
    fs = default_fs(fs)
    parent = posixpath.dirname(path) if "://" in path else __import__("os").path.dirname(path)
    if parent:
        fs.makedirs(parent)
    tmp = path + ".inprogress"
    n = 0
    with fs.open_write(tmp) as f:
        if fmt == "parquet":
            writer = pq.ParquetWriter(f, schema, compression="zstd")
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) >= _BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    n += len(batch)
                    batch = []
            if batch or n == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
            writer.close()
        elif fmt == "jsonl.gz":
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
                for row in rows:
                    gz.write(orjson.dumps(row, default=str) + b"\n")
                    n += 1
        else:
            raise ValueError(f"unknown output format {fmt!r} (parquet or jsonl.gz)")
    fs.rename(tmp, path)
    return n


def write_documents(path: str, docs: Iterable[Document], fmt: str = "parquet", fs=None) -> int:
    return _write_stream(path, (document_row(d) for d in docs), DOCUMENT_SCHEMA, fmt, fs)


def write_rows(path: str, rows: Iterable[dict], schema: pa.Schema, fmt: str = "parquet", fs=None) -> int:
    return _write_stream(path, rows, schema, fmt, fs)


def read_rows(path: str, fs=None) -> list[dict]:
    fs = default_fs(fs)
    with fs.open_read(path) as f:
        if path.endswith(".parquet"):
            return pq.read_table(f).to_pylist()
        data = gzip.decompress(f.read()) if path.endswith(".gz") else f.read()
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
