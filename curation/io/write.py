"""Writing rows: deterministic bytes (gzip with mtime 0 and no name, Parquet with zstd
and a fixed schema), streamed one row group at a time, through curation.fs.writing;
and reading them back."""
from __future__ import annotations

import contextlib
import gzip
from typing import Iterable, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curation.documents import Document
from curation.fs import FS, default_fs, writing
from curation.io.inputs import _SUPPORTED, input_format
from curation.io.schemas import DOCUMENT_SCHEMA, _check_format, document_row
from curation.io.streams import _open_jsonl


_ROW_GROUP_ROWS = 64 * 1024
# 8 MiB of text (~2,500 web documents): what a writer holds of a row group not yet
# written, so a stage's memory stays flat however large its shards are (issue 13;
# was 64 MiB). Smaller groups also let a later stage split the shard finer.
_ROW_GROUP_BYTES = 8 << 20
# Rows turned into Arrow at a time: the Parquet writer's write_batch_size, so a row
# group's pages end where they would if it had been converted in one piece.
_CHUNK_ROWS = 1024
_GZIP_LEVEL = 6
_PARQUET_ZSTD_LEVEL = 3


class _Sink:
    """A write-only view of a file object that knows its position (Parquet needs
    tell(); not every remote writer has one) and leaves closing to its owner."""

    def __init__(self, f):
        self._f, self._pos, self.closed = f, 0, False

    def write(self, data) -> int:
        self._f.write(data)
        n = memoryview(data).nbytes
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _rows_checked(rows: Iterable[dict], schema: pa.Schema) -> Iterator[dict]:
    names = schema.names
    allowed = set(names)
    required = [f.name for f in schema if not f.nullable]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"row {i} is a {type(row).__name__}, not a dict")
        if not allowed.issuperset(row):
            raise ValueError(f"row {i} has fields not in the schema: {sorted(set(row) - allowed)}")
        out = {n: row.get(n) for n in names}
        for n in required:
            if out[n] is None:
                raise ValueError(f"row {i}: field {n!r} is required but missing or null")
        yield out


def _row_bytes(row: dict) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, str)) + 8 * len(row)


def _chunked(rows: Iterator[dict]) -> Iterator[tuple[list[dict], bool]]:
    """Rows in lists of at most _CHUNK_ROWS, each with whether a row group ends after
    it (at _ROW_GROUP_ROWS rows or _ROW_GROUP_BYTES). A writer turns each list into
    Arrow at once, so a row group waiting to be written is held as Arrow buffers,
    not as Python rows (several times their size)."""
    buf, rows_in_group, size = [], 0, 0
    for row in rows:
        buf.append(row)
        rows_in_group += 1
        size += _row_bytes(row)
        end = rows_in_group >= _ROW_GROUP_ROWS or size >= _ROW_GROUP_BYTES
        if end or len(buf) >= _CHUNK_ROWS:
            yield buf, end
            buf = []
            if end:
                rows_in_group, size = 0, 0
    if buf or rows_in_group:     # the last row group (its last chunk may already have gone)
        yield buf, True


def _write_parquet(f, rows: Iterator[dict], schema: pa.Schema) -> int:
    n = 0
    writer = pq.ParquetWriter(pa.PythonFile(_Sink(f), mode="w"), schema, compression="zstd",
                              compression_level=_PARQUET_ZSTD_LEVEL)
    try:
        group: list[pa.RecordBatch] = []
        for chunk, end in _chunked(rows):
            group.append(pa.RecordBatch.from_pylist(chunk, schema=schema))
            n += len(chunk)
            if end:
                table = pa.Table.from_batches(group, schema=schema)
                group = []
                writer.write_table(table, row_group_size=table.num_rows)
        if n == 0:
            writer.write_table(schema.empty_table())
    finally:
        writer.close()
    return n


def _write_jsonl_gz(f, rows: Iterator[dict], schema: pa.Schema) -> int:
    n = 0
    with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0, filename="") as gz:
        for chunk, _ in _chunked(rows):
            pa.RecordBatch.from_pylist(chunk, schema=schema)    # the same type checks as Parquet
            gz.write(b"".join(orjson.dumps(r) + b"\n" for r in chunk))
            n += len(chunk)
    return n


def _write_atomic(path: str, rows: Iterable[dict], schema: pa.Schema, fmt: str, fs: FS | None) -> int:
    _check_format(fmt)
    checked = _rows_checked(rows, schema)
    with writing(fs, path) as f:
        return _write_parquet(f, checked, schema) if fmt == "parquet" else _write_jsonl_gz(f, checked, schema)


def write_rows(path: str, rows: Iterable[dict], schema: pa.Schema, fmt: str = "parquet",
               fs: FS | None = None) -> int:
    """Write `rows` (dicts keyed by the schema's field names; absent keys are null)
    to `path` as Parquet (zstd) or gzip JSON Lines, atomically; returns the count.
    A key outside the schema, or null in a non-nullable field, raises ValueError."""
    return _write_atomic(path, rows, schema, fmt, fs)


def write_documents(path: str, docs: Iterable[Document], fmt: str = "parquet", fs: FS | None = None) -> int:
    """Write Documents as DOCUMENT_SCHEMA rows; returns the count. Streams."""
    return _write_atomic(path, (document_row(d) for d in docs), DOCUMENT_SCHEMA, fmt, fs)


def iter_rows(path: str, fs: FS | None = None) -> Iterator[dict]:
    """The rows of a file written by `write_rows` / `write_documents` (Parquet or
    JSON Lines, optionally .gz/.zst), one at a time."""
    fs = default_fs(fs)
    fmt = input_format(path)
    if fmt is None:
        raise ValueError(f"cannot read rows from {path!r} ({_SUPPORTED})")
    if fmt[0] == "parquet":
        with fs.open_read(path) as f:
            for batch in pq.ParquetFile(f).iter_batches():
                yield from batch.to_pylist()
    elif fmt[0] == "jsonl":
        with contextlib.ExitStack() as stack:
            lines = _open_jsonl(fs, path, fmt[1], stack)
            while True:
                line, damage = lines.readline(1 << 62)
                if damage is not None:
                    raise OSError(f"{path}: {damage.cause}: {damage.describe()}")
                if not line:
                    return
                if line.strip():
                    yield orjson.loads(line)
    else:
        with fs.open_read(path) as f:
            for batch in pa.ipc.open_stream(f):
                yield from batch.to_pylist()


def read_rows(path: str, fs: FS | None = None) -> list[dict]:
    """All rows of `path` (see `iter_rows`)."""
    return list(iter_rows(path, fs))
