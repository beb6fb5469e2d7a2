"""Reading and writing documents.

Reading: JSON Lines (plain, .gz, .zst), Parquet, and Hugging Face `datasets`
directories written by ``save_to_disk`` (read as Arrow IPC streams; `datasets` is
not imported). Every record becomes a `Document` or a `Rejected` naming file, line
and cause; nothing is dropped silently and nothing malformed crashes the reader.
A damaged file yields everything still readable (`DAMAGE_CAUSES` name the loss):
a truncated or corrupt .gz/.zst is decoded up to the damage and resumes at the next
gzip member / zstd frame that decodes (one ``truncated_file`` or ``corrupt_data``
rejection per gap, its detail giving bytes read, skipped and, where the format
records it, lost; lines after a gap are numbered by lines read, as the number lost
is unknown); Parquet is read row group by row group, and each row a corrupt row
group loses is one ``unreadable_row_group`` rejection (the footer counts them, so
conservation holds by record); a file that cannot be opened, or a Parquet file
without a readable footer, is one ``unreadable_file`` rejection.

Writing: deterministic bytes (gzip with mtime 0 and no name, Parquet with zstd and
a fixed schema) and atomic (written under a hidden temporary name in the target
directory, then renamed into place).

An InputFile may be one range of a file (``start``/``stop``, planned by
curation.splits): the lines that start in a byte range of uncompressed JSONL, or a
run of Parquet row groups, with the same lines, ids and ordinals as a whole read.

Everything streams: a reader holds one line (at most ``max_doc_bytes``) or one
small slice of Arrow rows at a time; writers hold one row group.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import decimal
import gzip
import io
import json
import math
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from curation.config import DEFAULT_MAX_DOC_BYTES
from curation.documents import Document, InputError, Rejected, make_ordinal
from curation.fs import FS, basename, default_fs, dirname, is_remote, normpath, writing

__all__ = [
    "DAMAGE_CAUSES", "DEFAULT_MAX_DOC_BYTES", "DOCUMENT_SCHEMA", "REJECTED_SCHEMA", "OUTPUT_FORMATS",
    "SCORE_FIELD", "SCORED_DOCUMENT_SCHEMA", "scored_document_row",
    "InputFile", "FieldMap", "ReadStats", "DocumentReader",
    "input_format", "expand_inputs", "read_documents",
    "shard_name", "shard_stem", "file_shard_name", "MAX_SPLIT_PARTS", "document_row", "document_from_row", "rejected_row",
    "write_documents", "write_rows", "iter_rows", "read_rows",
]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSIONS = {"": "", ".gz": "gz", ".zst": "zst"}
RAW_PREFIX_CHARS = 200          # Rejected.raw_prefix holds at most this many characters
_PREFIX_BYTES = 4 * RAW_PREFIX_CHARS
_ARROW_SLICE_ROWS = 256         # Arrow rows turned into Python objects at a time
_HF_META = ("state.json", "dataset_info.json", "dataset_dict.json")
_SUPPORTED = ".jsonl/.json/.ndjson (optionally .gz or .zst), .parquet, .arrow, or a datasets save_to_disk directory"

# Reject causes that mean "the input file is damaged and data was lost" (each
# Rejected's detail says how much, in bytes or rows); drivers report them apart.
DAMAGE_CAUSES = frozenset({"unreadable_file", "truncated_file", "corrupt_data", "unreadable_row_group"})

# Errors that mean "the bytes of this file cannot be read any further".
_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, pa.ArrowException)


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class InputFile:
    """One input file of a run. `index` is its position in the sorted input list and
    the high bits of every ordinal read from it; `name` is short and unique within
    the run and makes ids (``name:line``) for records without one."""

    index: int
    path: str
    format: str              # "jsonl" | "parquet" | "arrow"
    compression: str = ""    # "" | "gz" | "zst" (jsonl only)
    name: str = ""
    domain: str | None = None   # every document's domain (a `curate run` source's), unless FieldMap.domain
    # A split (curation.splits) reads one range of the file: part `part` of it, [start,
    # stop) in bytes (uncompressed JSONL: the lines that start in the range) or in row
    # groups (Parquet). `first_line` is the number of its first line (1-based) or row
    # (0-based): records keep their true line, id and ordinal. start None: the whole file.
    part: int = 0
    start: int | None = None
    stop: int | None = None
    first_line: int | None = None

    @property
    def is_split(self) -> bool:
        return self.start is not None


@dataclass(frozen=True)
class FieldMap:
    """Where a record keeps its text, id and domain. Dotted paths ("meta.content")
    reach into nested objects (a top-level key that itself contains the dot wins).
    `domain`, when set, is the domain of every document (CLI ``--domain``)."""

    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = "domain"
    domain: str | None = None

    def __post_init__(self):
        for name in ("text_field", "id_field", "domain_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or any(not p for p in value.split(".")):
                raise ValueError(f"FieldMap.{name} must be a non-empty field name or dotted path, got {value!r}")


def input_format(path: str) -> tuple[str, str] | None:
    """``(format, compression)`` from the file name, or None if unsupported."""
    low = path.lower()
    for suffix, comp in COMPRESSIONS.items():
        for base in JSONL_SUFFIXES:
            if low.endswith(base + suffix):
                return "jsonl", comp
    if low.endswith(".parquet"):
        return "parquet", ""
    if low.endswith(".arrow"):
        return "arrow", ""
    return None


def _has_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _read_json(fs: FS, path: str) -> Any:
    with fs.open_read(path) as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        return None


def _hf_files(fs: FS, d: str) -> list[tuple[str, tuple[int, ...]]] | None:
    """Arrow files of a ``save_to_disk`` directory in the order its state.json lists
    them (a DatasetDict: splits in dataset_dict.json order), each with its position;
    None if `d` is not such a directory."""
    state = fs.join(d, "state.json")
    if fs.exists(state):
        meta = _read_json(fs, state)
        if isinstance(meta, dict) and isinstance(meta.get("_data_files"), list):
            names = [x.get("filename") if isinstance(x, dict) else None for x in meta["_data_files"]]
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{state}: _data_files lists no usable file names")
            out = [(normpath(fs.join(d, n)), (i,)) for i, n in enumerate(names)]
            for p, _ in out:
                if not fs.exists(p):
                    raise ValueError(f"{state} lists {p!r}, which does not exist")
            return out
    dd = fs.join(d, "dataset_dict.json")
    if fs.exists(dd):
        meta = _read_json(fs, dd)
        if isinstance(meta, dict) and isinstance(meta.get("splits"), list):
            out = []
            for si, split in enumerate(meta["splits"]):
                sub = _hf_files(fs, fs.join(d, str(split)))
                if sub is None:
                    raise ValueError(f"{dd} names split {split!r}, but {fs.join(d, str(split))!r} "
                                     f"is not a saved dataset")
                out.extend((p, (si,) + k) for p, k in sub)
            return out
    return None


def _is_hf_metadata(fs: FS, path: str) -> bool:
    name = basename(path)
    if name not in _HF_META:
        return False
    parent = dirname(path)
    if name == "dataset_dict.json":
        meta = _read_json(fs, path)
        return isinstance(meta, dict) and "splits" in meta
    state = fs.join(parent, "state.json") if parent else "state.json"
    if not fs.exists(state):
        return False
    meta = _read_json(fs, state)
    return isinstance(meta, dict) and "_data_files" in meta


SortKey = tuple[str, tuple[int, ...]]


def _expand_dir(fs: FS, d: str) -> list[tuple[str, SortKey]]:
    """Supported files under directory `d` (recursively; hidden names skipped).
    Saved `datasets` directories, at `d` or below it, expand to their Arrow files."""
    hf = _hf_files(fs, d)
    if hf is not None:
        return [(p, (d, k)) for p, k in hf]
    prefix = d.rstrip("/") + "/"
    rels = []
    for p in fs.match(fs.join(d, "**")):
        for form in (p, normpath(p)):
            if form.startswith(prefix):
                rel = form[len(prefix):].rstrip("/")
                break
        else:
            continue
        if rel and not any(part.startswith(".") for part in rel.split("/")):
            rels.append(rel)
    rels = sorted(set(rels))
    # saved datasets inside d: the topmost directory holding state.json / dataset_dict.json
    roots: list[str] = []
    candidates = sorted({r.rsplit("/", 1)[0] if "/" in r else "" for r in rels
                         if basename(r) in ("state.json", "dataset_dict.json")})
    for r in candidates:
        if r and not any(r.startswith(t + "/") for t in roots) and _hf_files(fs, prefix + r) is not None:
            roots.append(r)
    out: list[tuple[str, SortKey]] = []
    for r in roots:
        root = normpath(prefix + r)
        out.extend((p, (root, k)) for p, k in _hf_files(fs, root))
    for rel in rels:
        if any(rel.startswith(r + "/") for r in roots) or input_format(rel) is None:
            continue
        p = normpath(prefix + rel)
        if not is_remote(p) and fs.isdir(p):   # object stores list objects only
            continue
        if p.lower().endswith(".json") and not _first_line_is_json(fs, p):
            continue                           # a pretty-printed manifest.json & co.
        out.append((p, (p, ())))
    return out


def _first_line_is_json(fs: FS, path: str) -> bool:
    """Whether a .json file found in a directory is JSON Lines: its first non-blank
    line is a whole JSON value (a pretty-printed document's first line is not)."""
    try:
        with fs.open_read(path) as f:
            for _ in range(100):
                line = f.readline(1 << 20)
                if not line:
                    return True
                if line.strip():
                    orjson.loads(line)
                    return True
    except (orjson.JSONDecodeError, *_READ_ERRORS):
        return False
    return True


def _common_dir(paths: list[str]) -> list[str]:
    dirs = [p.split("/")[:-1] for p in paths]
    common = dirs[0]
    for d in dirs[1:]:
        n = 0
        while n < min(len(common), len(d)) and common[n] == d[n]:
            n += 1
        common = common[:n]
    return common


def _unique_names(paths: list[str]) -> list[str]:
    """Basenames, except where two files share one: those get their path relative
    to the inputs' common parent directory."""
    bases = [basename(p) for p in paths]
    counts = Counter(bases)
    if all(c == 1 for c in counts.values()):
        return bases
    n = len(_common_dir(paths))
    return [b if counts[b] == 1 else "/".join(p.split("/")[n:]) for p, b in zip(paths, bases)]


def expand_inputs(patterns: Iterable[str] | str, fs: FS | None = None) -> list[InputFile]:
    """Paths, globs and directories -> the run's input files.

    The result is sorted by path (the files of a saved `datasets` directory stay in
    the order its state.json lists them, at the directory's place), de-duplicated,
    and numbered: ``index`` = position. A pattern that matches nothing, names a
    missing path, or names / matches an unsupported file raises ValueError naming it.
    Directories are searched recursively for supported files; other files in them,
    hidden names, and ``.json`` files that are not JSON Lines (a pretty-printed
    manifest.json) are skipped. Paths and globs are taken as given.
    """
    fs = default_fs(fs)
    keys = _collect(patterns, fs)
    return _numbered(keys, {})


def expand_sources(sources: Iterable[tuple[Iterable[str], str | None]],
                   fs: FS | None = None) -> list[InputFile]:
    """Like `expand_inputs` over several sources, each ``(patterns, domain)``: the files
    of all sources in one sorted, numbered list, each carrying its source's domain. A
    file named by two sources with different domains raises ValueError."""
    fs = default_fs(fs)
    keys: dict[str, SortKey] = {}
    domains: dict[str, str | None] = {}
    for patterns, domain in sources:
        for path, key in _collect(patterns, fs).items():
            if path in domains and domains[path] != domain:
                raise ValueError(f"input {path!r} belongs to two sources with different domains "
                                 f"({domains[path]!r} and {domain!r})")
            domains[path] = domain
            keys[path] = min(keys[path], key) if path in keys else key
    return _numbered(keys, domains)


def _numbered(keys: dict[str, SortKey], domains: dict[str, str | None]) -> list[InputFile]:
    ordered = sorted(keys, key=lambda p: keys[p])
    if not ordered:
        raise ValueError("no input patterns given")
    names = _unique_names(ordered)
    out = []
    for i, (p, name) in enumerate(zip(ordered, names)):
        fmt, comp = input_format(p)
        out.append(InputFile(index=i, path=p, format=fmt, compression=comp, name=name,
                             domain=domains.get(p)))
    return out


def _collect(patterns: Iterable[str] | str, fs: FS) -> dict[str, SortKey]:
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    keys: dict[str, SortKey] = {}

    def add(path: str, key: SortKey):
        keys[path] = min(keys[path], key) if path in keys else key

    for pattern in patterns:
        pat = normpath(os.fspath(pattern))
        if _has_glob(pat):
            matches = [normpath(m) for m in fs.match(pat)]
            if not matches:
                raise ValueError(f"input pattern {pattern!r} matches no files")
            found = 0
            for m in matches:
                if not is_remote(m) and fs.isdir(m):
                    inner = _expand_dir(fs, m)
                    if not inner:
                        raise ValueError(f"directory {m!r} (matched by {pattern!r}) holds no "
                                         f"supported input files ({_SUPPORTED})")
                    for p, k in inner:
                        add(p, k)
                    found += len(inner)
                elif input_format(m) is not None:
                    if _is_hf_metadata(fs, m):
                        continue   # state.json & co. of a saved dataset are not data
                    add(m, (m, ()))
                    found += 1
                else:
                    raise ValueError(f"input {m!r} (matched by {pattern!r}) is not a supported "
                                     f"format ({_SUPPORTED}); narrow the pattern")
            if not found:
                raise ValueError(f"input pattern {pattern!r} matches no supported input files")
        elif fs.isdir(pat):
            inner = _expand_dir(fs, pat)
            if not inner:
                raise ValueError(f"input directory {pattern!r} holds no supported input files "
                                 f"({_SUPPORTED})")
            for p, k in inner:
                add(p, k)
        elif fs.exists(pat):
            if input_format(pat) is None:
                raise ValueError(f"input {pattern!r} is not a supported format ({_SUPPORTED})")
            add(pat, (pat, ()))
        else:
            raise ValueError(f"input {pattern!r} does not exist")
    return keys


# ---------------------------------------------------------------- reading

@dataclass
class ReadStats:
    """What one reader saw. ``documents + rejected`` is the number of records;
    blank (whitespace-only) JSONL lines are not records and are counted apart."""

    documents: int = 0
    rejected: int = 0
    blank_lines: int = 0
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


class _LostRows:
    """Rows of a Parquet row group that could not be decoded (counted from the footer)."""

    __slots__ = ("count", "detail")

    def __init__(self, count: int, detail: str):
        self.count, self.detail = count, detail


def _size_note(f) -> str:
    try:
        return f" (the file is {f.seek(0, 2)} bytes)"
    except (OSError, ValueError, AttributeError):
        return ""


class _TooLarge:
    """An Arrow row already known to be over the limit, kept only as a prefix."""

    __slots__ = ("size", "prefix")

    def __init__(self, size: int, prefix: str):
        self.size, self.prefix = size, prefix


@dataclass
class _Damage:
    """Where a compressed stream stopped decoding, and what is known of the loss."""

    cause: str                # truncated_file | corrupt_data | unreadable_file
    error: str                # what went wrong
    frame: int                # 1-based gzip member / zstd frame it happened in
    at: int                   # compressed offset of the read that failed
    good: int                 # compressed bytes decoded cleanly before it (whole file so far)
    resume: int | None        # where decoding resumed (the next frame that decodes), None: nowhere
    end: int | None           # the file's size, when reading reached its end
    lost: int | None = None   # decompressed bytes known lost (a zstd frame header's content size)
    step: int = 0             # compressed bytes in the read that failed
    dropped: int = 0          # decoded bytes of the frame dropped because its checksum failed

    def unread(self) -> int | None:
        stop = self.resume if self.resume is not None else self.end
        return None if stop is None else stop - self.at

    def describe(self) -> str:
        kind = "gzip member" if self.error.startswith("gzip") else "zstd frame"
        if self.cause == "truncated_file":
            out = f"the file ends inside {kind} {self.frame} after {self.at} compressed bytes"
            out += (f"; its header says {self.lost} more decompressed bytes were due" if self.lost is not None
                    else "; how much followed is not recorded in the file")
            return out
        out = f"{self.error} in {kind} {self.frame} within compressed bytes {self.at}-{self.at + self.step}"
        if self.dropped:
            out += f"; its {self.dropped} decoded bytes are dropped, as its checksum failed"
        if self.resume is not None:
            return out + f"; {self.unread()} compressed bytes skipped to the next readable frame at byte {self.resume}"
        return out + f"; {self.unread()} compressed bytes of {self.end} unread (no readable frame after it)"


_CHUNK = 1 << 16          # compressed bytes fed to a decoder at a time
_HOLD = 8 << 20           # a frame's output held until its checksum is checked, up to this size
_RESYNC_CHECK = 1 << 16   # decompressed bytes a frame found by scanning must yield cleanly (or end)
_MAGIC = {"gz": b"\x1f\x8b\x08", "zst": b"\x28\xb5\x2f\xfd"}


def _decoder(comp: str):
    return zlib.decompressobj(16 + zlib.MAX_WBITS) if comp == "gz" else zstandard.ZstdDecompressor().decompressobj()


class _Decoded:
    """The decompressed bytes of a .gz or .zst file, as pieces (bytes, or a `_Damage`).

    Decoding stops at damage instead of raising, after yielding everything decoded
    before it. Gzip members and zstd frames each start with a magic number, so after
    corrupt bytes the rest of the file is scanned for the next one that decodes
    cleanly for 64 KiB (or to its end), and reading resumes there; a deflate or
    zstd stream cannot be resumed inside a member/frame. Deterministic: the same
    bytes give the same pieces. Concatenated members/frames are read in turn (gzip's
    zero padding between members is skipped, as Python's gzip does)."""

    def __init__(self, src, comp: str):
        self.src, self.comp = src, comp
        self.buf, self.base, self.eof = bytearray(), 0, False

    def _fill_to(self, end: int) -> None:
        while not self.eof and self.base + len(self.buf) < end:
            data = self.src.read(max(_CHUNK, end - self.base - len(self.buf)))
            if not data:
                self.eof = True
            self.buf += data

    def _drop(self, off: int) -> None:
        if off > self.base:
            del self.buf[:off - self.base]
            self.base = off

    def _peek(self, off: int, n: int) -> bytes:
        self._fill_to(off + n)
        return bytes(self.buf[off - self.base:off - self.base + n])

    def _take(self, off: int, n: int) -> bytes:
        self._drop(off)
        return self._peek(off, n)

    def _find(self, p: int) -> int:
        magic = _MAGIC[self.comp]
        while True:
            self._drop(p)
            j = self.buf.find(magic)
            if j >= 0:
                return self.base + j
            if self.eof:
                return -1
            p = max(p, self.base + len(self.buf) - len(magic) + 1)
            self._fill_to(self.base + len(self.buf) + _CHUNK)

    def _decodes(self, off: int) -> bool:
        """Whether a frame starting at `off` decodes cleanly (for _RESYNC_CHECK bytes or to its end)."""
        d, n = _decoder(self.comp), 0
        while True:
            chunk = self._peek(off, _CHUNK)
            if not chunk:
                return n > 0
            try:
                n += len(d.decompress(chunk))
            except (zlib.error, zstandard.ZstdError):
                return False
            if d.eof or n >= _RESYNC_CHECK:
                return True
            off += len(chunk)

    def pieces(self) -> Iterator[bytes | _Damage]:
        d, fed, frame, good, content, frame_out, produced = None, 0, 0, 0, None, 0, 0
        step = _CHUNK if self.comp == "gz" else _CHUNK // 4   # zstd output is lost by the step
        # A frame's output is held until its checksum passes, while it is under _HOLD bytes:
        # corrupt deflate data can decode into wrong bytes that only the checksum notices.
        held: list[bytes] | None = None
        held_n = 0
        while True:
            if d is None:
                if self.comp == "gz":           # zero padding between members
                    while (b := self._take(fed, 1)) == b"\x00":
                        fed += 1
                if not self._take(fed, 1):
                    return
                d, frame, frame_out, content = _decoder(self.comp), frame + 1, 0, None
                held, held_n = [], 0
                if self.comp == "zst":
                    with contextlib.suppress(zstandard.ZstdError):
                        size = zstandard.get_frame_parameters(self._take(fed, 18)).content_size
                        content = size if 0 <= size < zstandard.CONTENTSIZE_UNKNOWN else None
            chunk = self._take(fed, step)
            if not chunk:
                lost = content - frame_out if content is not None else None
                yield from held or ()
                yield _Damage("truncated_file", f"{'gzip' if self.comp == 'gz' else 'zstd'}: stream ends early",
                              frame, fed, good, None, fed, lost)
                return
            saved = d.copy() if self.comp == "gz" else None
            try:
                out = d.decompress(chunk)
            except (zlib.error, zstandard.ZstdError) as e:
                err = f"{'gzip' if self.comp == 'gz' else 'zstd'} data is corrupt ({type(e).__name__}: {e})"
                dropped = 0
                if held is not None and ("incorrect data check" in str(e) or "checksum" in str(e)):
                    # wrong somewhere in the frame: none of it is trusted
                    dropped = held_n + (len(_salvage(saved, chunk)) if saved is not None else 0)
                else:
                    for piece in held or ():
                        produced += len(piece)
                        yield piece
                    if saved is not None and (head := _salvage(saved, chunk)):
                        produced += len(head)
                        yield head
                held = None
                p = fed + 1
                while (nxt := self._find(p)) >= 0 and not self._decodes(nxt):
                    p = nxt + 1
                resume = nxt if nxt >= 0 else None
                cause = "unreadable_file" if produced == dropped == 0 and resume is None else "corrupt_data"
                end = None if resume is not None else self.base + len(self.buf)
                yield _Damage(cause, err, frame, fed, good, resume, end, step=len(chunk), dropped=dropped)
                if resume is None:
                    return
                d, fed = None, resume
                continue
            used = len(chunk) - len(d.unused_data) if d.eof else len(chunk)
            fed += used
            good += used
            frame_out += len(out)
            if out:
                if held is not None and held_n + len(out) <= _HOLD:
                    held.append(out)
                    held_n += len(out)
                else:
                    pending, held = (held or []) + [out], None
                    for piece in pending:
                        produced += len(piece)
                        yield piece
            if d.eof:
                for piece in held or ():
                    produced += len(piece)
                    yield piece
                d, held = None, None


def _salvage(d, chunk: bytes) -> bytes:
    """What a (copied) zlib decoder yields from `chunk` before the error in it."""
    out = []
    for i in range(0, len(chunk), 256):
        try:
            out.append(d.decompress(chunk[i:i + 256]))
        except zlib.error:
            break
    return b"".join(out)


def _plain_pieces(src) -> Iterator[bytes | _Damage]:
    pos = 0
    while True:
        try:
            data = src.read(_CHUNK)
        except OSError as e:
            yield _Damage("unreadable_file", f"{type(e).__name__}: {e}", 1, pos, pos, None, None)
            return
        if not data:
            return
        pos += len(data)
        yield data


class _Lines:
    """`readline` over pieces: returns ``(bytes, damage)``; `damage` is set when the
    line was cut by damage (bytes is then its partial start, possibly empty).
    ``(b"", None)`` at the end."""

    def __init__(self, pieces: Iterator[bytes | _Damage]):
        self._pieces, self._buf, self._pos = pieces, b"", 0
        self.decoded = 0          # decompressed bytes handed out

    def readline(self, limit: int) -> tuple[bytes, _Damage | None]:
        pos = self._pos
        nl = self._buf.find(b"\n", pos, pos + limit)
        if nl >= 0:                        # the common case: the whole line is buffered
            self._pos = nl + 1
            self.decoded += nl + 1 - pos
            return self._buf[pos:nl + 1], None
        parts, n = [], 0
        while n < limit:
            if self._pos >= len(self._buf):
                piece = next(self._pieces, None)
                if piece is None:
                    break
                if isinstance(piece, _Damage):
                    line = b"".join(parts)
                    self.decoded += len(line)
                    return line, piece
                self._buf, self._pos = piece, 0
            nl = self._buf.find(b"\n", self._pos, self._pos + limit - n)
            stop = nl + 1 if nl >= 0 else min(len(self._buf), self._pos + limit - n)
            parts.append(self._buf[self._pos:stop])
            n += stop - self._pos
            self._pos = stop
            if nl >= 0:
                break
        line = b"".join(parts)
        self.decoded += len(line)
        return line, None


def _open_jsonl(fs: FS, path: str, compression: str, stack: contextlib.ExitStack) -> _Lines:
    raw = stack.enter_context(fs.open_read(path))
    return _Lines(_Decoded(raw, compression).pieces() if compression else _plain_pieces(raw))


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
        self._it = self._jsonl() if file.format == "jsonl" else self._columnar()

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
    if file.format not in ("jsonl", "parquet"):
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


# ---------------------------------------------------------------- writing

DOCUMENT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("domain", pa.string()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("meta", pa.string()),        # JSON object, sorted keys; null when empty
])

# `curate score` writes the document columns plus the classifier's P(high quality).
# Read back (read_documents), the score is Document.meta["quality_score"], so every
# later stage carries it in its own meta.
SCORE_FIELD = "quality_score"
SCORED_DOCUMENT_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + [
    pa.field(SCORE_FIELD, pa.float64(), nullable=False),
])

REJECTED_SCHEMA = pa.schema([
    pa.field("file", pa.string(), nullable=False),
    pa.field("line", pa.int64(), nullable=False),
    pa.field("cause", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("raw_prefix", pa.string()),
    pa.field("raw_bytes", pa.int64()),
])

OUTPUT_FORMATS = ("parquet", "jsonl.gz")
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


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r} (expected one of {', '.join(OUTPUT_FORMATS)})")


MAX_SPLIT_PARTS = 100_000   # a split's part number has five digits: names sort in input order


def shard_stem(prefix: str, index: int, part: int | None = None) -> str:
    """``part-00003``, or for part 2 of a split file ``part-00003-00002``: names that
    sort in input order (a file's parts after one another, before the next file)."""
    if part is None:
        return f"{prefix}-{index:05d}"
    if not 0 <= part < MAX_SPLIT_PARTS:
        raise ValueError(f"split part {part} out of range 0..{MAX_SPLIT_PARTS - 1}")
    return f"{prefix}-{index:05d}-{part:05d}"


def shard_name(prefix: str, index: int, fmt: str, part: int | None = None) -> str:
    """``shard_name("part", 3, "parquet") == "part-00003.parquet"``; with ``part=2``,
    ``"part-00003-00002.parquet"``."""
    _check_format(fmt)
    return f"{shard_stem(prefix, index, part)}.{fmt}"


def file_shard_name(prefix: str, file: InputFile, fmt: str) -> str:
    """The output shard of one work item: ``part-<index>`` for a whole input file,
    ``part-<index>-<part>`` for a split of one."""
    return shard_name(prefix, file.index, fmt, file.part if file.is_split else None)


def _meta_json(meta: dict | None) -> str | None:
    if not meta:
        return None
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def document_row(d: Document) -> dict:
    """A Document as a DOCUMENT_SCHEMA row (meta as sorted-key JSON)."""
    return {"id": d.id, "text": d.text, "domain": d.domain, "source": d.source,
            "line": d.line, "meta": _meta_json(d.meta)}


def document_from_row(row: dict, ordinal: int = 0) -> Document:
    """The inverse of `document_row` (the schema holds no ordinal; pass it if known).
    A scored row's score goes to meta, as `read_documents` puts it."""
    packed = row.get("meta")
    meta = json.loads(packed) if packed else {}
    if row.get(SCORE_FIELD) is not None:
        meta[SCORE_FIELD] = row[SCORE_FIELD]
    return Document(id=row["id"], text=row["text"], domain=row.get("domain"), source=row.get("source"),
                    line=row.get("line"), ordinal=ordinal, meta=meta)


def scored_document_row(d: Document, score: float) -> dict:
    """A Document and its score as a SCORED_DOCUMENT_SCHEMA row. A score already in
    its meta (from an earlier scoring, read back) is dropped: a row holds one score."""
    meta = {k: v for k, v in d.meta.items() if k != SCORE_FIELD} if SCORE_FIELD in d.meta else d.meta
    return {"id": d.id, "text": d.text, "domain": d.domain, "source": d.source,
            "line": d.line, "meta": _meta_json(meta), SCORE_FIELD: float(score)}


def rejected_row(r: Rejected) -> dict:
    """A Rejected as a REJECTED_SCHEMA row."""
    return {"file": r.file, "line": r.line, "cause": r.cause, "detail": r.detail,
            "raw_prefix": r.raw_prefix, "raw_bytes": r.raw_bytes}


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
