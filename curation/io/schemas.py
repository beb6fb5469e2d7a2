"""What is written: the document, scored and rejected schemas, rows from Documents and
back, and shard names."""
from __future__ import annotations

import json

import pyarrow as pa

from curation.documents import Document, Rejected
from curation.io.inputs import InputFile


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
