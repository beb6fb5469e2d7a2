"""Reading records: every JSON Lines line, Parquet row or Arrow row becomes a Document
or a Rejected naming file, line and cause."""
from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import decimal
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.config import DEFAULT_MAX_DOC_BYTES
from curation.documents import Document, InputError, Rejected, make_ordinal
from curation.fs import FS, basename, default_fs
from curation.io.inputs import _READ_ERRORS, _SUPPORTED, FieldMap, InputFile, RAW_PREFIX_CHARS, _ARROW_SLICE_ROWS, _PREFIX_BYTES, input_format
from curation.io.schemas import SCORED_DOCUMENT_SCHEMA
from curation.io.streams import _Damage, _Lines, _LostRows, _TooLarge, _open_jsonl, _plain_pieces, _size_note


# ---------------------------------------------------------------- reading

@dataclass
class ReadStats:
    """What one reader saw. ``documents + rejected`` is the number of records;
    blank (whitespace-only) JSONL lines and WARC records other than responses are not
    records and are counted apart."""

    documents: int = 0
    rejected: int = 0
    blank_lines: int = 0
    other_records: int = 0     # WARC records that are not responses: not records either
    rejected_by_cause: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.documents + self.rejected


_MISSING = object()


def _lookup(obj: dict, path: str) -> tuple[Any, tuple[str, ...] | None]:
    if path in obj:
        return obj[path], (path,)
    if "." not in path:
        return _MISSING, None
    cur: Any = obj
    parts = tuple(path.split("."))
    for part in parts:
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING, None
        cur = cur[part]
    return cur, parts


def _without(obj: dict, keys: tuple[str, ...]) -> dict:
    """A copy of `obj` without the value at `keys`; containers left empty go too.
    Only the dicts along the path are copied."""
    head = keys[0]
    if head not in obj:
        return obj
    out = dict(obj)
    if len(keys) == 1:
        del out[head]
        return out
    sub = out[head]
    if not isinstance(sub, dict):
        return obj
    sub = _without(sub, keys[1:])
    if sub:
        out[head] = sub
    else:
        del out[head]
    return out


def _has_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _prefix(raw: bytes) -> str:
    return raw[:_PREFIX_BYTES].decode("utf-8", errors="replace")[:RAW_PREFIX_CHARS]


def _jsonable(v: Any) -> Any:
    """Arrow's Python values -> JSON values (for meta and for measuring a row)."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(b).decode("ascii")
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return str(v)


def _own_row_meta(row: dict, meta: dict) -> dict:
    """A row in our own DOCUMENT_SCHEMA (a stage's output read by the next stage)
    carries its meta as a JSON string: read it back as the object it was, not nested
    as a string. The row's source and line (where the document was read before)
    stay in meta as provenance, unless the unpacked meta already has those keys, so
    the first stage's origin survives a chain of stages. A scored row's
    `quality_score` column lands in meta too (`scored_document_row` never leaves an
    older score in the packed meta)."""
    packed = meta["meta"]
    if not set(row) <= set(SCORED_DOCUMENT_SCHEMA.names) or not (packed is None or isinstance(packed, str)):
        return meta
    try:
        unpacked = {} if packed is None else orjson.loads(packed)
    except orjson.JSONDecodeError:
        return meta
    if not isinstance(unpacked, dict):
        return meta
    out = {k: v for k, v in meta.items() if k != "meta" and v is not None}
    out.update(unpacked)
    return out



class DocumentReader:
    """Iterator of `Document` and `Rejected` over one input file; see `read_documents`.

    ``stats`` (a `ReadStats`) is filled while iterating. Use as a context manager or
    call `close()` to release the file early."""

    def __init__(self, file: InputFile, fields: FieldMap, max_doc_bytes: int, strict: bool, fs: FS):
        if max_doc_bytes <= 0:
            raise ValueError(f"max_doc_bytes must be positive, got {max_doc_bytes}")
        self.file, self.fields = file, fields
        # the domain every record gets, if one is imposed: --domain, else the file's source's
        self._domain = fields.domain if fields.domain is not None else file.domain
        self.max_doc_bytes, self.strict, self.fs = max_doc_bytes, strict, fs
        self.stats = ReadStats()
        if file.is_split:
            _check_split(file)
        self._it = (self._jsonl() if file.format == "jsonl" else self._warc() if file.format == "warc"
                    else self._columnar())

    def __iter__(self) -> "DocumentReader":
        return self

    def __next__(self) -> Document | Rejected:
        return next(self._it)

    def close(self) -> None:
        self._it.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- outcomes

    def _reject(self, line: int, cause: str, detail: str = "", prefix: str = "", size: int = 0) -> Rejected:
        r = Rejected(file=self.file.path, line=line, cause=cause, detail=detail,
                     raw_prefix=prefix, raw_bytes=size)
        self.stats.rejected += 1
        self.stats.rejected_by_cause[cause] = self.stats.rejected_by_cause.get(cause, 0) + 1
        if self.strict:
            raise InputError(r)
        return r

    def _unreadable(self, line: int, e: BaseException) -> Rejected:
        detail = f"{type(e).__name__}: {e}"
        return self._reject(line, "unreadable_file", detail[:1000])

    def _record(self, obj: Any, meta_src: Any, line: int, raw: bytes | Callable[[], bytes],
                size: int) -> Document | Rejected:
        """A parsed record -> Document, or Rejected with the first problem found.
        `obj` gives text/id/domain, `meta_src` (same keys, JSON values) the meta."""

        def reject(cause, detail=""):
            data = raw() if callable(raw) else raw
            return self._reject(line, cause, detail, _prefix(data), size)

        f = self.fields
        if not isinstance(obj, dict):
            return reject("not_an_object", f"a JSON {_json_kind(obj)}, not an object")
        text, text_keys = _lookup(obj, f.text_field)
        if text is _MISSING or text is None:
            return reject("missing_text", f"no {f.text_field!r} field" if text is _MISSING
                          else f"{f.text_field!r} is null")
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                return reject("invalid_utf8", f"{f.text_field!r} byte {e.start}: {e.reason}")
        if not isinstance(text, str):
            return reject("non_string_text", f"{f.text_field!r} is a {_json_kind(text)}")
        if "\x00" in text:
            return reject("nul_bytes", f"NUL character in {f.text_field!r}")
        if not text.strip():
            return reject("empty_text", f"{f.text_field!r} is empty or whitespace")
        drop = [text_keys]

        doc_id, id_keys = _lookup(obj, f.id_field)
        if doc_id is _MISSING or doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
            doc_id = f"{self.file.name}:{line}"
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            return reject("bad_id", f"{f.id_field!r} is a {_json_kind(doc_id)}, not a string or integer")
        else:
            doc_id = str(doc_id)
        if id_keys is not None:
            drop.append(id_keys)

        value, domain_keys = _lookup(obj, f.domain_field)
        if self._domain is not None:
            domain = self._domain
            consumed = value is None        # an overridden value stays in meta
        elif isinstance(value, str):
            domain = value if value.strip() else None
            consumed = True
        else:
            domain = None
            consumed = value is None        # a non-string domain stays in meta
        if consumed and domain_keys is not None:
            drop.append(domain_keys)

        meta = meta_src
        for keys in drop:
            meta = _without(meta, keys)
        if isinstance(meta, dict) and "meta" in meta:
            meta = _own_row_meta(obj, meta)
        self.stats.documents += 1
        return Document(id=doc_id, text=text, domain=domain, source=self.file.path, line=line,
                        ordinal=make_ordinal(self.file.index, line), meta=meta)

    # -- JSON Lines

    def _jsonl_lines(self) -> Iterator[tuple[int, bytes | _Damage | None, int, bytes]]:
        """(line number, line without its end or None if over the limit, size, prefix bytes).
        Where damage cut the stream: (its own line number, the `_Damage`, size and prefix
        of the partial line it cut). After damage, line numbers count the lines read, as
        the number of lines lost is unknown."""
        cap = self.max_doc_bytes
        with contextlib.ExitStack() as stack:
            if self.file.is_split:
                f, base = self._open_range(stack)
                line_no, stop = self.file.first_line - 1, self.file.stop
            else:
                f = _open_jsonl(self.fs, self.file.path, self.file.compression, stack)
                line_no, base, stop = 0, 0, None
            self._lines = f
            while True:
                if stop is not None and base + f.decoded >= stop:
                    return       # the next line starts in the next split
                chunk, damage = f.readline(cap + 2)     # room for the record, "\r" and "\n"
                if damage is not None:
                    if stop is not None:
                        self._range_failed(damage.error)
                    line_no += 1
                    yield line_no, damage, len(chunk), chunk[:_PREFIX_BYTES]
                    if damage.resume is None:
                        return
                    continue
                if not chunk:
                    return
                line_no += 1
                if chunk.endswith(b"\n") or len(chunk) < cap + 2:
                    raw = chunk[:-1] if chunk.endswith(b"\n") else chunk
                    if raw.endswith(b"\r"):
                        raw = raw[:-1]
                    if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    if len(raw) <= cap:
                        yield line_no, raw, len(raw), b""
                    else:
                        yield line_no, None, len(raw), raw[:_PREFIX_BYTES]
                    continue
                # Longer than the limit: skip to the end of the line, counting bytes.
                head, size, last, damage = chunk[:_PREFIX_BYTES], len(chunk), chunk, None
                while not last.endswith(b"\n"):
                    more, damage = f.readline(1 << 20)
                    size += len(more)
                    if damage is not None or not more:
                        break
                    last = more
                if damage is not None:
                    if stop is not None:
                        self._range_failed(damage.error)
                    yield line_no, damage, size, head
                    if damage.resume is None:
                        return
                    continue
                size -= 2 if last.endswith(b"\r\n") else 1 if last.endswith(b"\n") else 0
                yield line_no, None, size, head

    def _open_range(self, stack: contextlib.ExitStack) -> tuple[_Lines, int]:
        """A split's lines: the file from its first line that starts at or after
        `start` (the line that straddles `start` belongs to the split before), and
        the byte offset the lines' count starts from."""
        start = self.file.start
        raw = stack.enter_context(self.fs.open_read(self.file.path))
        base = max(start - 1, 0)
        raw.seek(base)
        f = _Lines(_plain_pieces(raw))
        if start > 0:
            tail, damage = f.readline(1)          # the byte before the range
            while damage is None and tail and not tail.endswith(b"\n"):
                tail, damage = f.readline(1 << 20)   # inside a line: skip to its end
            if damage is not None:
                self._range_failed(damage.error)
        return f, base

    def _range_failed(self, error: str):
        # The planner read this file; a split cannot report a reject at a position the
        # whole-file count would agree with, so the work item fails (and is retried).
        raise OSError(f"{self.file.path}: bytes {self.file.start}-{self.file.stop} (split part "
                      f"{self.file.part}) cannot be read: {error}")

    def _damaged(self, line: int, damage: _Damage, size: int, head: bytes) -> Rejected:
        """One Rejected for damage in a compressed stream, saying what was lost in numbers."""
        lines, decoded = self._lines_read, self._lines.decoded
        parts = [damage.describe()]
        if size:
            parts.append(f"a partial line of {size} bytes cut by it is dropped")
        estimate = None
        if lines and damage.lost is not None and decoded:
            estimate = damage.lost * lines / decoded
        elif lines and damage.cause != "truncated_file" and damage.unread() and damage.good:
            estimate = damage.unread() * lines / damage.good
        if estimate is not None:
            unit = "decompressed" if damage.lost is not None else "compressed"
            parts.append(f"about {max(1, round(estimate))} lines lost (estimated from the {lines} lines "
                         f"in the {damage.good if damage.lost is None else decoded} {unit} bytes before it)")
        elif damage.cause == "truncated_file":
            parts.append("the number of lines lost is unknown")
        parts.append(f"{lines} lines read before it")
        return self._reject(line, damage.cause, "; ".join(parts)[:1000], _prefix(head), size)

    def _parse(self, line: int, raw: bytes) -> Any:
        """The JSON value of a line, or a Rejected."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            err = e
        if b"\x00" in raw:
            return self._reject(line, "nul_bytes", "raw NUL byte in the line", _prefix(raw), len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return self._reject(line, "invalid_utf8", f"byte {e.start}: {e.reason}", _prefix(raw), len(raw))
        # orjson refuses some JSON that Python accepts; tell those apart.
        try:
            obj = json.loads(text, parse_constant=_no_constants)
        except (ValueError, RecursionError):
            return self._reject(line, "malformed_json", str(err), _prefix(raw), len(raw))
        if _has_surrogate(obj):
            return self._reject(line, "invalid_utf8", "lone surrogate escape (e.g. \\ud800) in a string",
                                _prefix(raw), len(raw))
        return obj

    def _jsonl(self) -> Iterator[Document | Rejected]:
        lines = self._jsonl_lines()
        last, after_gap = 0, False
        self._lines_read = 0
        while True:
            try:
                line_no, raw, size, head = next(lines)
            except StopIteration:
                return
            except _READ_ERRORS as e:      # could not open the file
                if self.file.is_split:
                    raise
                yield self._unreadable(last + 1, e)
                return
            last = line_no
            if isinstance(raw, _Damage):
                yield self._damaged(line_no, raw, size, head)
                after_gap = True
                continue
            self._lines_read += 1
            if raw is None:
                yield self._reject(line_no, "too_large", f"record is {size} bytes > max_doc_bytes "
                                   f"{self.max_doc_bytes}", _prefix(head), size)
                continue
            if after_gap:
                after_gap = False
                if raw.strip():
                    try:
                        orjson.loads(raw)
                    except orjson.JSONDecodeError:   # most likely the tail of a line the gap cut
                        yield self._reject(line_no, "corrupt_data", "the first line after skipped damage "
                                           "does not parse: the tail of a line the damage cut",
                                           _prefix(raw), size)
                        continue
            if not raw.strip():
                self.stats.blank_lines += 1
                continue
            obj = self._parse(line_no, raw)
            if isinstance(obj, Rejected):
                yield obj
                continue
            yield self._record(obj, obj, line_no, raw, size)

    # -- WARC

    def _warc(self) -> Iterator[Document | Rejected]:
        from curation.io import warc
        first = self.file.first_line if self.file.is_split else 0
        last = first - 1
        with contextlib.ExitStack() as stack:
            try:
                f = stack.enter_context(self.fs.open_read(self.file.path))
                if self.file.is_split:
                    f = warc.RangeReader(f, self.file.start, self.file.stop)
                for rec in warc.iter_warc(f, self.max_doc_bytes):
                    rec.position += first
                    last = rec.position
                    if isinstance(rec, warc.WarcOther):
                        self.stats.other_records += 1
                        continue
                    yield self._warc_record(rec)
            except _READ_ERRORS as e:
                # no record can be framed past a damaged one: the rest of the file is lost
                if self.file.is_split:
                    # a reject row here would not stand where a whole-file read puts it
                    raise OSError(
                        f"{self.file.path}: damaged WARC data in bytes {self.file.start}-"
                        f"{self.file.stop} after record {last} ({type(e).__name__}: {e}); a file "
                        f"read whole (--split-bytes above its size) rejects the loss and goes on") from e
                cause = ("unreadable_file" if last < 0 and not isinstance(e, warc.TruncatedRecord)
                         else "truncated_file" if isinstance(e, (warc.TruncatedRecord, EOFError))
                         else "corrupt_data")
                yield self._reject(last + 1, cause, f"{type(e).__name__}: {e}; the rest of the file "
                                   f"is not read"[:1000])

    def _warc_record(self, rec) -> Document | Rejected:
        from curation.io import warc
        head = rec.payload[:_PREFIX_BYTES] if rec.payload else b""
        size = len(rec.payload) if rec.payload is not None else 0

        def reject(cause, detail):
            return self._reject(rec.position, cause, f"{rec.url}: {detail}"[:1000], _prefix(head), size)

        if rec.detail == "too_large":
            return reject("too_large", f"payload over max_doc_bytes {self.max_doc_bytes}")
        if rec.payload is None:
            return reject("undecodable_html", rec.detail)
        if not warc.is_html(rec):
            return reject("not_html", f"content type {rec.content_type or '(none)'}")
        try:
            html = warc.decode_html(rec.payload, rec.charset)
        except (UnicodeError, LookupError) as e:
            return reject("undecodable_html", f"{type(e).__name__}: {e}")
        text = warc.extract_text(html)
        if "\x00" in text:
            return reject("nul_bytes", "NUL character in the extracted text")
        if not text:
            return reject("empty_extraction", "no main text in the page")
        self.stats.documents += 1
        domain = self._domain if self._domain is not None else warc.host_of(rec.url)
        return Document(id=rec.record_id or f"{self.file.name}:{rec.position}", text=text,
                        domain=domain, source=self.file.path, line=rec.position,
                        ordinal=make_ordinal(self.file.index, rec.position),
                        meta={"url": rec.url, "date": rec.date})

    # -- Parquet and Arrow

    def _batches(self, f) -> Iterator[pa.RecordBatch | _LostRows]:
        if self.file.format == "parquet":
            yield from self._parquet_batches(f)
            return
        magic = f.read(6)
        f.seek(0)
        if magic == b"ARROW1":                  # IPC file format (Feather v2)
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:                                   # IPC stream format (datasets' .arrow)
            yield from pa.ipc.open_stream(f)

    def _parquet_batches(self, f) -> Iterator[pa.RecordBatch | _LostRows]:
        """Row group by row group: a row group that fails to decode loses only its rows
        from the failing batch on (counted from the footer), and reading goes on with the
        next one. Pages with a CRC are checked; corruption that decodes without an error
        in a page without one cannot be seen. A footer that cannot be read raises."""
        try:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
        except _READ_ERRORS as e:
            raise type(e)(f"the Parquet footer cannot be read, so no row can be located or "
                          f"counted{_size_note(f)}: {e}") from e
        md, start, groups = pf.metadata, 0, range(pf.metadata.num_row_groups)
        if self.file.is_split:      # row groups [start, stop); rows numbered from the file's first
            first, stop = self.file.start, self.file.stop
            start = sum(md.row_group(g).num_rows for g in range(min(first, md.num_row_groups)))
            if stop > md.num_row_groups or start != self.file.first_line:
                raise RuntimeError(f"{self.file.path}: a split of row groups {first}-{stop - 1} from row "
                                   f"{self.file.first_line} no longer fits the file ({md.num_row_groups} "
                                   f"row groups, row {start} at group {first}): an input changed during "
                                   f"the run")
            groups = range(first, stop)
        for g in groups:
            total, done = md.row_group(g).num_rows, 0
            try:
                for batch in pf.iter_batches(batch_size=_ARROW_SLICE_ROWS * 4, row_groups=[g]):
                    done += batch.num_rows
                    yield batch
            except _READ_ERRORS as e:
                lost = total - done
                yield _LostRows(lost, f"row group {g + 1} of {md.num_row_groups} (rows {start}-{start + total - 1}) "
                                      f"cannot be read from row {start + done}: {lost} of its {total} rows lost, "
                                      f"by the footer's count ({type(e).__name__}: {e})"[:1000])
            start += total

    def _arrow_rows(self) -> Iterator[Any]:
        with self.fs.open_read(self.file.path) as f:
            for batch in self._batches(f):
                if isinstance(batch, _LostRows):
                    yield batch
                    continue
                for off in range(0, batch.num_rows, _ARROW_SLICE_ROWS):
                    chunk = batch.slice(off, _ARROW_SLICE_ROWS)
                    sizes = _string_bytes(chunk)
                    if max(sizes, default=0) <= self.max_doc_bytes:
                        yield from chunk.to_pylist()
                        continue
                    for i, s in enumerate(sizes):
                        if s > self.max_doc_bytes:   # never materialise the whole value
                            yield _TooLarge(s, _prefix(orjson.dumps(_jsonable(_truncated_row(chunk, i)))))
                        else:
                            yield chunk.slice(i, 1).to_pylist()[0]

    def _columnar(self) -> Iterator[Document | Rejected]:
        rows = self._arrow_rows()
        row_no = self.file.first_line if self.file.is_split else 0
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except _READ_ERRORS as e:
                if self.file.is_split:   # its footer was read when it was planned
                    raise
                if row_no == 0:
                    yield self._unreadable(row_no, e)
                else:    # an Arrow stream or file that breaks off: what follows cannot be counted
                    cause = "truncated_file" if isinstance(e, EOFError) or "Expected to" in str(e) else "corrupt_data"
                    yield self._reject(row_no, cause, f"Arrow data unreadable after {row_no} rows; the rest of "
                                       f"the file is lost, its row count unknown ({type(e).__name__}: {e})"[:1000])
                return
            if isinstance(row, _LostRows):   # one rejection per lost row: conservation holds by record
                for _ in range(row.count):
                    yield self._reject(row_no, "unreadable_row_group", row.detail)
                    row_no += 1
                continue
            line, row_no = row_no, row_no + 1
            limit = f"max_doc_bytes {self.max_doc_bytes}"
            if isinstance(row, _TooLarge):
                yield self._reject(line, "too_large", f"record is at least {row.size} bytes > {limit}",
                                   row.prefix, row.size)
                continue
            jrow = _jsonable(row)
            encoded = orjson.dumps(jrow)
            if len(encoded) > self.max_doc_bytes:
                yield self._reject(line, "too_large", f"record is {len(encoded)} bytes as JSON > {limit}",
                                   _prefix(encoded), len(encoded))
                continue
            yield self._record(row, jrow, line, encoded, len(encoded))


def _check_split(file: InputFile) -> None:
    """A split must be one the reader can read as its range (see curation.splits)."""
    if file.format == "jsonl" and file.compression:
        raise ValueError(f"{file.path}: a compressed file cannot be read in ranges; read it whole")
    if file.format not in ("jsonl", "parquet", "warc"):
        raise ValueError(f"{file.path}: {file.format} files are read whole, not in ranges")
    if file.first_line is None:
        raise ValueError(f"{file.path}: split part {file.part} does not know its first line yet "
                         f"(curation.splits.ready_splits, or pipelines.splits.ReadySplits, resolve it)")
    if file.stop is None or file.stop < file.start or file.start < 0:
        raise ValueError(f"{file.path}: bad split range [{file.start}, {file.stop})")


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    if v is None:
        return "null"
    return type(v).__name__


def _stringish(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)
            or getattr(pa.types, "is_binary_view", lambda _: False)(t))


def _string_bytes(chunk: pa.RecordBatch) -> list[int]:
    """Per row, the bytes in its top-level string and binary columns: a lower bound
    on the row's size as JSON, known without building Python strings."""
    total = [0] * chunk.num_rows
    for col in chunk.columns:
        if not _stringish(col.type):
            continue
        try:
            lengths = pc.binary_length(col).fill_null(0).to_pylist()
        except pa.ArrowNotImplementedError:
            continue
        total = [a + b for a, b in zip(total, lengths)]
    return total


def _truncated_row(chunk: pa.RecordBatch, i: int) -> dict:
    row = {}
    for name, col in zip(chunk.schema.names, chunk.columns):
        v = col.slice(i, 1)
        if _stringish(v.type):
            head = pc.binary_slice(v.cast(pa.large_binary()), 0, _PREFIX_BYTES)[0].as_py()
            row[name] = None if head is None else head.decode("utf-8", errors="replace")
        else:
            row[name] = v[0].as_py()
    return row


def read_documents(file: InputFile | str, fields: FieldMap = FieldMap(), *,
                   max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES, strict: bool = False,
                   fs: FS | None = None) -> DocumentReader:
    """Every record of `file` as a `Document` or a `Rejected`, streaming.

    JSONL ``line`` is the 1-based physical line (blank lines are skipped, counted in
    ``reader.stats.blank_lines``); Parquet/Arrow ``line`` is the 0-based row.
    ``ordinal = make_ordinal(file.index, line)``. Records over `max_doc_bytes` (the
    raw line; for columnar rows, the row as compact JSON) are rejected before they
    are parsed. With ``strict=True`` the first problem raises `InputError`.

    `file` may also be a single path (then index 0, name = basename)."""
    fs = default_fs(fs)
    if not isinstance(file, InputFile):
        path = os.fspath(file)
        fmt = input_format(path)
        if fmt is None:
            raise ValueError(f"input {path!r} is not a supported format ({_SUPPORTED})")
        file = InputFile(index=0, path=path, format=fmt[0], compression=fmt[1], name=basename(path))
    return DocumentReader(file, fields, max_doc_bytes, strict, fs)
