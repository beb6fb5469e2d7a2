"""Work below the file: a large input file read as several ranges (splits).

One 20 GB file must not be one worker's job. `plan_splits` cuts each input file
larger than ``split_bytes`` into ranges that `curation.io.read_documents` reads
on their own, each an `InputFile` with ``start``/``stop``/``part``:

- Parquet: runs of whole row groups (a row group is Parquet's unit of reading),
  about ``split_bytes`` of compressed data each; a file with one row group stays
  whole. The footer gives each row group's first row, so a split knows its rows'
  numbers (``line``, 0-based) without reading any data.
- uncompressed JSON Lines: byte ranges of ``split_bytes``. A split owns the lines
  that *start* inside its range (the line that straddles its start belongs to the
  split before). ``line`` stays the file's physical 1-based line, so ids
  (``name:line``) and ordinals (``make_ordinal(index, line)``) are those of a
  whole-file read; a split needs the number of its first line, which is one plus
  the lines that start before it. `count_range` counts a range's newlines;
  `resolve_first_lines` adds them up. A Beam pipeline counts the ranges in
  parallel (pipelines.splits.ReadySplits); `ready_splits` does it in turn here.
- WARC (plain, or .warc.gz of one gzip member per record, as crawlers write them):
  byte ranges of about ``split_bytes`` that begin where a record (a member) begins;
  a split reads the records that start inside it. ``line`` is the record's 0-based
  index in the file, so a split's first is the number of records before it,
  counted as JSONL's newlines are (`count_range`). A .warc.gz that is one gzip
  stream has no such boundary and is read whole, with a warning.
- gzip / zstd JSON Lines cannot be entered in the middle: such a file is read
  whole, with a warning naming it when it is larger than ``split_bytes``
  (recompress it as several shards, or as Parquet). Arrow files are read whole.

A file at or below ``split_bytes`` (and any file whose size or footer cannot be
read: the reader then rejects it as it always has) is one InputFile, exactly the
one given. Deterministic: the plan depends on the files' bytes and split_bytes only.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable

import pyarrow.parquet as pq

from curation.config import DEFAULT_SPLIT_BYTES
from curation.fs import FS, default_fs
from curation.io import MAX_SPLIT_PARTS, InputFile
from curation.io.inputs import _READ_ERRORS

__all__ = ["DEFAULT_SPLIT_BYTES", "plan_file", "plan_splits", "needs_count", "count_range",
           "resolve_first_lines", "ready_splits"]

log = logging.getLogger(__name__)
_READ = 1 << 20     # bytes read at a time when counting newlines


def _size(fs: FS, path: str) -> int:
    size = getattr(fs, "size", None)
    if size is not None:
        return int(size(path))
    with fs.open_read(path) as f:
        return f.seek(0, 2)


def _warn_unsplittable(file: InputFile, size: int, split_bytes: int) -> None:
    kind = {"gz": "gzip", "zst": "zstd"}.get(file.compression, file.format)
    how = ("recompress it into several smaller files (shards) or convert it to Parquet"
           if file.format == "jsonl" else
           "recompress it with one gzip member per record, as crawlers write WARC files"
           if file.format == "warc" else "convert it to Parquet with several row groups")
    log.warning("%s is %d bytes, more than the split size of %d, but %s data cannot be read "
                "from the middle: one worker reads all of it; to spread it over workers, %s",
                file.path, size, split_bytes, kind, how)


def _compressed_bytes(rg) -> int:
    """The bytes a row group occupies in the file (its column chunks, compressed)."""
    return sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))


def _parquet_splits(file: InputFile, fs: FS, split_bytes: int, size: int) -> list[InputFile]:
    with fs.open_read(file.path) as f:
        md = pq.ParquetFile(f).metadata
    groups = [(md.row_group(g).num_rows, _compressed_bytes(md.row_group(g)))
              for g in range(md.num_row_groups)]
    if len(groups) < 2:
        _warn_unsplittable(file, size, split_bytes)
        return [file]
    # runs of row groups of about split_bytes each (at least one group a run)
    out, first, row, first_row, acc = [], 0, 0, 0, 0
    for g, (rows, nbytes) in enumerate(groups):
        if g > first and acc + nbytes > split_bytes:
            out.append((first, g, first_row))
            first, first_row, acc = g, row, 0
        acc += nbytes
        row += rows
    out.append((first, len(groups), first_row))
    if len(out) == 1:
        return [file]
    return [dataclasses.replace(file, part=k, start=a, stop=b, first_line=r)
            for k, (a, b, r) in enumerate(out)]


def _warc_splits(file: InputFile, fs: FS, size: int, split_bytes: int) -> list[InputFile]:
    from curation.io.warc import record_start
    step = max(split_bytes, -(-size // MAX_SPLIT_PARTS))
    starts = [0]
    with fs.open_read(file.path) as f:
        for b in range(step, size, step):
            if b < starts[-1]:
                continue
            at = record_start(f, b, size)
            if at is None:
                break
            if at > starts[-1]:
                starts.append(at)
    if len(starts) == 1:
        _warn_unsplittable(file, size, split_bytes)
        return [file]
    bounds = starts + [size]
    return [dataclasses.replace(file, part=k, start=a, stop=b, first_line=0 if k == 0 else None)
            for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def _jsonl_splits(file: InputFile, size: int, split_bytes: int) -> list[InputFile]:
    step = max(split_bytes, -(-size // MAX_SPLIT_PARTS))   # never more parts than names
    bounds = list(range(0, size, step)) + [size]
    return [dataclasses.replace(file, part=k, start=a, stop=b, first_line=1 if k == 0 else None)
            for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def plan_file(file: InputFile, fs: FS | None = None,
              split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[InputFile]:
    """One input file -> its splits (or ``[file]``). JSONL splits after the first have
    ``first_line = None`` until `resolve_first_lines` sets it."""
    if split_bytes <= 0:
        raise ValueError(f"split_bytes must be positive, got {split_bytes}")
    if file.is_split:
        return [file]
    fs = default_fs(fs)
    if file.format == "arrow":
        return [file]
    try:
        size = _size(fs, file.path)
        if size <= split_bytes:
            return [file]
        if file.format == "jsonl" and file.compression:
            _warn_unsplittable(file, size, split_bytes)
            return [file]
        if file.format == "parquet":
            return _parquet_splits(file, fs, split_bytes, size)
        if file.format == "warc":
            return _warc_splits(file, fs, size, split_bytes)
    except (*_READ_ERRORS, ValueError):   # unreadable: read whole, the reader rejects it
        return [file]
    return _jsonl_splits(file, size, split_bytes)


def plan_splits(files: Iterable[InputFile], fs: FS | None = None,
                split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[InputFile]:
    """Every file's splits, in input order (see `plan_file`)."""
    fs = default_fs(fs)
    return [s for f in files for s in plan_file(f, fs, split_bytes)]


def needs_count(split: InputFile) -> bool:
    """Whether a split belongs to a JSONL or WARC file whose first lines (records) are
    to be counted."""
    return split.is_split and split.format in ("jsonl", "warc")


def count_range(split: InputFile, fs: FS | None = None) -> tuple[int, bool]:
    """(newlines in the split's byte range, whether its last byte is a newline); for
    WARC, (records in the range, False)."""
    fs = default_fs(fs)
    if split.format == "warc":
        from curation.io.warc import RangeReader, count_records
        with fs.open_read(split.path) as f:
            return count_records(RangeReader(f, split.start, split.stop)), False
    n, last, left = 0, b"", split.stop - split.start
    with fs.open_read(split.path) as f:
        f.seek(split.start)
        while left > 0:
            data = f.read(min(_READ, left))
            if not data:
                raise OSError(f"{split.path} ends before byte {split.stop}: the file changed "
                              f"since its splits were planned")
            n += data.count(b"\n")
            last = data[-1:]
            left -= len(data)
    return n, last == b"\n"


def resolve_first_lines(parts: list[InputFile], counts: list[tuple[int, bool]]) -> list[InputFile]:
    """One file's JSONL splits (all of them, any order) and their `count_range`
    results -> the splits with ``first_line`` set, in part order.

    A line starts at 0 and after every newline, so the lines starting before byte s
    are 1 + the newlines in [0, s - 1): the newlines before s, less one if byte
    s - 1 is itself one (then a line starts exactly at s)."""
    pairs = sorted(zip(parts, counts), key=lambda pc: pc[0].part)
    if [p.part for p, _ in pairs] != list(range(len(pairs))):
        raise ValueError(f"{parts[0].path if parts else '?'}: splits missing or repeated: "
                         f"{sorted(p.part for p in parts)}")
    out, newlines, ends_nl = [], 0, False
    warc = bool(pairs) and pairs[0][0].format == "warc"    # records, 0-based, counted whole
    for k, (split, (n, last_nl)) in enumerate(pairs):
        first = (newlines if warc else 1 if k == 0 else 2 + newlines - (1 if ends_nl else 0))
        out.append(dataclasses.replace(split, first_line=first))
        newlines, ends_nl = newlines + n, last_nl
    return out


def ready_splits(files: Iterable[InputFile], fs: FS | None = None,
                 split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[InputFile]:
    """`plan_splits` with every JSONL split's first line counted here, in turn: the
    splits ready for `read_documents`, in input order. (Beam: pipelines.splits.ReadySplits
    counts the ranges in parallel.)"""
    fs = default_fs(fs)
    out = []
    for f in files:
        parts = plan_file(f, fs, split_bytes)
        if any(needs_count(p) for p in parts):
            parts = resolve_first_lines(parts, [count_range(p, fs) for p in parts])
        out.extend(parts)
    return out
