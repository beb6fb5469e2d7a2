"""Reading and writing documents, one module per job: finding inputs (inputs),
reading records (read; damaged compressed streams in streams), the written
schemas and rows (schemas), writing and reading back rows (write).

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

from curation.config import DEFAULT_MAX_DOC_BYTES
from curation.io.inputs import (COMPRESSIONS, DAMAGE_CAUSES, JSONL_SUFFIXES, RAW_PREFIX_CHARS, FieldMap,
                                InputFile, expand_inputs, expand_sources, input_format)
from curation.io.read import DocumentReader, ReadStats, read_documents
from curation.io.schemas import (DOCUMENT_SCHEMA, MAX_SPLIT_PARTS, OUTPUT_FORMATS, REJECTED_SCHEMA,
                                 SCORE_FIELD, SCORED_DOCUMENT_SCHEMA, document_from_row, document_row,
                                 file_shard_name, rejected_row, scored_document_row, shard_name,
                                 shard_stem)
from curation.io.write import iter_rows, read_rows, write_documents, write_rows

__all__ = [
    "DAMAGE_CAUSES", "DEFAULT_MAX_DOC_BYTES", "DOCUMENT_SCHEMA", "REJECTED_SCHEMA", "OUTPUT_FORMATS",
    "SCORE_FIELD", "SCORED_DOCUMENT_SCHEMA", "scored_document_row",
    "COMPRESSIONS", "JSONL_SUFFIXES", "RAW_PREFIX_CHARS",
    "InputFile", "FieldMap", "ReadStats", "DocumentReader",
    "input_format", "expand_inputs", "expand_sources", "read_documents",
    "shard_name", "shard_stem", "file_shard_name", "MAX_SPLIT_PARTS", "document_row", "document_from_row", "rejected_row",
    "write_documents", "write_rows", "iter_rows", "read_rows",
]
