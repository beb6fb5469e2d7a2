"""Documents and rejected records: the two things every stage passes along."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# An ordinal packs (file index, record index) into one int: a document's identity
# inside a run, and the order the keep rule uses ("first occurrence wins").
RECORD_BITS = 40
MAX_RECORDS_PER_FILE = 1 << RECORD_BITS


def make_ordinal(file_index: int, record_index: int) -> int:
    if record_index >= MAX_RECORDS_PER_FILE:
        raise ValueError(f"record index {record_index} exceeds {MAX_RECORDS_PER_FILE}")
    return (file_index << RECORD_BITS) | record_index


def split_ordinal(ordinal: int) -> tuple[int, int]:
    return ordinal >> RECORD_BITS, ordinal & (MAX_RECORDS_PER_FILE - 1)


@dataclass
class Document:
    """One input document.

    `line` is 1-based for JSONL (the physical line) and the 0-based row for
    Parquet and Arrow inputs; `ordinal` orders documents across the run.
    """

    id: str
    text: str
    domain: str | None = None
    source: str | None = None
    line: int | None = None
    ordinal: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


# Causes a record can be rejected for; the manifest counts each one.
NO_DOMAIN = "(none)"   # how counts and samples name documents without a domain

REJECT_CAUSES = (
    "malformed_json",   # the line is not valid JSON
    "not_an_object",    # valid JSON but not an object
    "invalid_utf8",     # bytes that are not UTF-8 (or text with lone surrogates)
    "missing_text",     # the text field is absent or null
    "non_string_text",  # the text field is a number, list, ...
    "empty_text",       # only whitespace
    "nul_bytes",        # raw NUL bytes in the line or the text
    "too_large",        # over max_doc_bytes
    "bad_id",           # the id field is present but not a string or integer
    "unreadable_file",  # the file could not be opened, or its layout (a Parquet footer) read
    "truncated_file",   # the file ends early (inside a gzip member / zstd frame / Arrow stream)
    "corrupt_data",     # compressed bytes that do not decode; skipped to the next frame or the end
    "unreadable_row_group",  # one row of a Parquet row group (or its tail) that cannot be decoded
    "not_html",         # a WARC response whose content type is not HTML
    "undecodable_html", # a WARC response whose body's encoding or charset cannot be undone
    "empty_extraction", # an HTML page with no main text
    "filter_error",     # a filter raised on the document (the message is in the detail)
    "score_error",      # the quality model failed on the document (curate score)
)


@dataclass
class Rejected:
    """An input record that could not become a Document, with where and why."""

    file: str
    line: int
    cause: str
    detail: str = ""
    raw_prefix: str = ""   # the first bytes of the raw record, for a person to look at
    raw_bytes: int = 0


class InputError(ValueError):
    """Raised in strict mode at the first bad record, naming file and line."""

    def __init__(self, rejected: Rejected):
        self.rejected = rejected
        super().__init__(
            f"{rejected.file}:{rejected.line}: {rejected.cause}"
            + (f" ({rejected.detail})" if rejected.detail else "")
        )
