"""Finding inputs: patterns, directories and datasets folders expanded into numbered
InputFiles, and how a record names its text, id and domain (FieldMap)."""
from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import orjson
import pyarrow as pa
import zstandard

from curation.fs import FS, basename, default_fs, dirname, is_remote, normpath


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSIONS = {"": "", ".gz": "gz", ".zst": "zst"}
RAW_PREFIX_CHARS = 200          # Rejected.raw_prefix holds at most this many characters
_PREFIX_BYTES = 4 * RAW_PREFIX_CHARS
_ARROW_SLICE_ROWS = 256         # Arrow rows turned into Python objects at a time
_HF_META = ("state.json", "dataset_info.json", "dataset_dict.json")
_SUPPORTED = (".jsonl/.json/.ndjson (optionally .gz or .zst), .parquet, .arrow, .warc/.warc.gz, "
              "or a datasets save_to_disk directory")

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
    format: str              # "jsonl" | "parquet" | "arrow" | "warc"
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
    if low.endswith((".warc", ".warc.gz")):
        return "warc", ""            # gzip members are detected by the reader
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


def _expand_dir(fs: FS, d: str, forced: str | None = None) -> list[tuple[str, SortKey]]:
    """Supported files under directory `d` (recursively; hidden names skipped).
    Saved `datasets` directories, at `d` or below it, expand to their Arrow files.
    With a `forced` format, every file under `d`."""
    hf = None if forced else _hf_files(fs, d)
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
        if any(rel.startswith(r + "/") for r in roots) or (input_format(rel) is None and not forced):
            continue
        p = normpath(prefix + rel)
        if not is_remote(p) and fs.isdir(p):   # object stores list objects only
            continue
        if not forced and p.lower().endswith(".json") and not _first_line_is_json(fs, p):
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


FORMATS = ("jsonl", "parquet", "arrow", "warc")


def _check_forced(forced: str | None) -> str | None:
    if forced in (None, "auto"):
        return None
    if forced not in FORMATS:
        raise ValueError(f"unknown input format {forced!r}; choose one of auto, {', '.join(FORMATS)}")
    return forced


def expand_inputs(patterns: Iterable[str] | str, fs: FS | None = None,
                  input_format: str | None = None) -> list[InputFile]:
    """Paths, globs and directories -> the run's input files.

    The result is sorted by path (the files of a saved `datasets` directory stay in
    the order its state.json lists them, at the directory's place), de-duplicated,
    and numbered: ``index`` = position. A pattern that matches nothing, names a
    missing path, or names / matches an unsupported file raises ValueError naming it.
    Directories are searched recursively for supported files; other files in them,
    hidden names, and ``.json`` files that are not JSON Lines (a pretty-printed
    manifest.json) are skipped. Paths and globs are taken as given. `input_format`
    (other than None or "auto") reads every file as that format, whatever its name.
    """
    fs = default_fs(fs)
    forced = _check_forced(input_format)
    keys = _collect(patterns, fs, forced)
    return _numbered(keys, {}, forced)


def expand_sources(sources: Iterable[tuple[Iterable[str], str | None]],
                   fs: FS | None = None, input_format: str | None = None) -> list[InputFile]:
    """Like `expand_inputs` over several sources, each ``(patterns, domain)``: the files
    of all sources in one sorted, numbered list, each carrying its source's domain. A
    file named by two sources with different domains raises ValueError."""
    fs = default_fs(fs)
    forced = _check_forced(input_format)
    keys: dict[str, SortKey] = {}
    domains: dict[str, str | None] = {}
    for patterns, domain in sources:
        for path, key in _collect(patterns, fs, forced).items():
            if path in domains and domains[path] != domain:
                raise ValueError(f"input {path!r} belongs to two sources with different domains "
                                 f"({domains[path]!r} and {domain!r})")
            domains[path] = domain
            keys[path] = min(keys[path], key) if path in keys else key
    return _numbered(keys, domains, forced)


def _numbered(keys: dict[str, SortKey], domains: dict[str, str | None],
              forced: str | None = None) -> list[InputFile]:
    ordered = sorted(keys, key=lambda p: keys[p])
    if not ordered:
        raise ValueError("no input patterns given")
    names = _unique_names(ordered)
    out = []
    for i, (p, name) in enumerate(zip(ordered, names)):
        fmt, comp = input_format(p) or (forced, "")
        if forced and fmt != forced:
            comp = comp if forced == "jsonl" else ""
            fmt = forced
        out.append(InputFile(index=i, path=p, format=fmt, compression=comp, name=name,
                             domain=domains.get(p)))
    return out


def _collect(patterns: Iterable[str] | str, fs: FS, forced: str | None = None) -> dict[str, SortKey]:
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
                    inner = _expand_dir(fs, m, forced)
                    if not inner:
                        raise ValueError(f"directory {m!r} (matched by {pattern!r}) holds no "
                                         f"supported input files ({_SUPPORTED})")
                    for p, k in inner:
                        add(p, k)
                    found += len(inner)
                elif forced or input_format(m) is not None:
                    if not forced and _is_hf_metadata(fs, m):
                        continue   # state.json & co. of a saved dataset are not data
                    add(m, (m, ()))
                    found += 1
                else:
                    raise ValueError(f"input {m!r} (matched by {pattern!r}) is not a supported "
                                     f"format ({_SUPPORTED}); narrow the pattern")
            if not found:
                raise ValueError(f"input pattern {pattern!r} matches no supported input files")
        elif fs.isdir(pat):
            inner = _expand_dir(fs, pat, forced)
            if not inner:
                raise ValueError(f"input directory {pattern!r} holds no supported input files "
                                 f"({_SUPPORTED})")
            for p, k in inner:
                add(p, k)
        elif fs.exists(pat):
            if input_format(pat) is None and not forced:
                raise ValueError(f"input {pattern!r} is not a supported format ({_SUPPORTED}); "
                                 f"--input-format names the format of files named otherwise")
            add(pat, (pat, ()))
        else:
            raise ValueError(f"input {pattern!r} does not exist")
    return keys
