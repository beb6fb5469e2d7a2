"""WARC input: response records with an HTML body become documents with their main
text extracted; everything else is accounted for.

Parsing is FastWARC's and extraction Resiliparse's main-content mode (both from the
registry, C++ underneath). On 497 real Sphinx pages they scored word F1 0.925 against
each page's main element, next to 0.917 for Trafilatura with datatrove's settings and
0.940 with its defaults, at 15 to 18 times Trafilatura's speed (docs/inputs.md, "WARC").

A record's position (`Document.line`, the low bits of its ordinal) is its 0-based
index among all the file's WARC records. Only `response` records are candidates;
the others (warcinfo, request, metadata, revisit, ...) are not records of the corpus
and are counted apart, as blank JSON Lines are. A response becomes a document, or is
rejected: `not_html` (another content type), `undecodable_html` (its payload encoding
or its text cannot be decoded), `empty_extraction` (no main text), or the causes every
format shares (`too_large`, `nul_bytes`)."""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

# Content types taken as HTML; a response without one is sniffed.
HTML_TYPES = ("text/html", "application/xhtml+xml")
_SNIFF = (b"<!doctype html", b"<html", b"<head", b"<body")


@dataclass
class WarcResponse:
    """One response record, before extraction."""

    position: int
    record_id: str
    url: str
    date: str
    content_type: str
    charset: str | None
    payload: bytes | None      # None: the payload's encoding could not be undone
    http_status: int | None
    detail: str = ""


@dataclass
class WarcOther:
    """A record that is not a response: not a record of the corpus."""

    position: int
    record_type: str


def _text(v: Any) -> str:
    return v if isinstance(v, str) else "" if v is None else str(v)


class RangeReader:
    """The bytes [start, stop) of a seekable file, as a file object: a WARC split."""

    def __init__(self, f, start: int, stop: int):
        f.seek(start)
        self.f, self.left, self.pos = f, stop - start, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        self.left -= len(data)
        self.pos += len(data)
        return data

    def tell(self) -> int:          # FastWARC asks (and panics without it)
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass


_GZ = b"\x1f\x8b\x08"
_PROBE = 1 << 16


def record_start(f, at: int, size: int) -> int | None:
    """The offset of the first record starting at or after `at` (gzip: a member whose
    text starts a WARC record; plain: a `WARC/1.` line after a blank line), or None.
    Splits begin there, so each reads whole records only."""
    f.seek(0)
    gz = f.read(2) == _GZ[:2]
    pos = at
    while pos < size:
        f.seek(pos)
        data = f.read(_PROBE + 16)
        if not data:
            return None
        if gz:
            i = data.find(_GZ)
            while i >= 0 and i < _PROBE:
                try:
                    head = zlib.decompressobj(31).decompress(data[i:], 16)
                except zlib.error:
                    head = b""
                if head.startswith(b"WARC/"):
                    return pos + i
                i = data.find(_GZ, i + 1)
        else:
            i = data.find(b"\r\n\r\nWARC/1.")
            if 0 <= i < _PROBE:
                return pos + i + 4
        pos += _PROBE
    return None


def count_records(stream) -> int:
    """Records in a stream (the range of a split), with the truncation check."""
    return sum(1 for _ in record_kinds(stream))


class TruncatedRecord(OSError):
    """A record shorter than its Content-Length: the file ends inside it."""


def iter_warc(stream, max_payload: int) -> Iterator[WarcResponse | WarcOther]:
    """Every record of a WARC stream (plain, or gzip members: detected), in order.
    A response's block longer than `max_payload` is skipped unread (payload None,
    detail 'too_large'). Raises TruncatedRecord where the stream ends inside a record
    (FastWARC itself would end the iteration there without a word)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    it = ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=False,
                         fsspec_args=False)
    for pos, rec in enumerate(it):
        want = rec.content_length
        if rec.record_type != WarcRecordType.response or want > max_payload:
            got = rec.reader.consume()
            if got < want:
                raise TruncatedRecord(f"record {pos} has {got} of its {want} bytes")
            if rec.record_type != WarcRecordType.response:
                yield WarcOther(pos, str(rec.record_type))
                continue
            block = None
        else:
            block = rec.reader.read()
            if len(block) < want:
                raise TruncatedRecord(f"record {pos} has {len(block)} of its {want} bytes")
        h = rec.headers
        resp = WarcResponse(pos, _text(h.get("WARC-Record-ID")), _text(h.get("WARC-Target-URI")),
                            _text(h.get("WARC-Date")), "", None, None, None)
        if block is None:
            resp.detail = "too_large"
        else:
            _http_response(resp, block)
        yield resp


def record_kinds(stream) -> Iterator[bool]:
    """For each record in order, whether it is a response (a record of the corpus); the
    same framing and truncation check as `iter_warc`, without reading payloads."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    for pos, rec in enumerate(ArchiveIterator(stream, record_types=WarcRecordType.any_type,
                                              parse_http=False, fsspec_args=False)):
        want, got = rec.content_length, rec.reader.consume()
        if got < want:
            raise TruncatedRecord(f"record {pos} has {got} of its {want} bytes")
        yield rec.record_type == WarcRecordType.response


def _http_response(resp: WarcResponse, block: bytes) -> None:
    """Fill status, content type, charset and the decoded payload from an HTTP message."""
    end = block.find(b"\r\n\r\n")
    head, body = (block[:end], block[end + 4:]) if end >= 0 else block.partition(b"\n\n")[::2]
    lines = head.decode("latin-1").splitlines()
    status = lines[0].split() if lines else []
    resp.http_status = int(status[1]) if len(status) > 1 and status[1].isdigit() else None
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    ctype = fields.get("content-type", "")
    resp.content_type = ctype.split(";")[0].strip().lower()
    for param in ctype.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            resp.charset = v.strip().strip("\"'")
    try:
        resp.payload = decode_body(body, fields.get("transfer-encoding", ""),
                                   fields.get("content-encoding", ""))
    except (OSError, ValueError, EOFError, zlib.error) as e:
        resp.detail = f"{type(e).__name__}: {e}"[:500]


def _dechunk(raw: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("chunked body: no chunk size line")
        try:
            size = int(raw[pos:end].split(b";")[0].strip(), 16)
        except ValueError:
            raise ValueError(f"chunked body: bad chunk size {raw[pos:end][:20]!r}") from None
        if size == 0:
            return b"".join(out)
        out.append(raw[end + 2:end + 2 + size])
        if len(out[-1]) < size:
            raise ValueError("chunked body: truncated chunk")
        pos = end + 2 + size + 2


def decode_body(raw: bytes, transfer: str, content: str) -> bytes:
    """The HTTP body without its transfer and content encodings. Raises ValueError
    (or zlib.error) for an encoding that is malformed or not supported."""
    if "chunked" in transfer.lower():
        raw = _dechunk(raw)
    for enc in [e.strip().lower() for e in content.split(",") if e.strip()][::-1]:
        if enc in ("gzip", "x-gzip"):
            raw = gzip.decompress(raw)
        elif enc == "deflate":
            try:
                raw = zlib.decompress(raw)
            except zlib.error:                      # servers often send raw deflate
                raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        elif enc == "zstd":
            import zstandard
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        elif enc not in ("identity", "none"):
            raise ValueError(f"content encoding {enc!r} is not supported")
    return raw


def is_html(resp: WarcResponse) -> bool:
    if resp.content_type:
        return resp.content_type in HTML_TYPES
    head = (resp.payload or b"")[:1024].lstrip().lower()
    return head.startswith(_SNIFF)


def decode_html(payload: bytes, charset: str | None) -> str:
    """The payload as text: its declared charset, else the one detected (with UTF-8 and
    Windows-1252 as fallbacks). Raises UnicodeError when none decodes it."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    enc = charset
    if enc:
        try:
            "".encode(enc)
        except LookupError:
            enc = None
    return bytes_to_str(payload, enc or detect_encoding(payload), errors="strict")


def extract_text(html: str) -> str:
    """The page's main text (Resiliparse, main-content mode, block structure kept)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree
    return extract_plain_text(HTMLTree.parse(html), main_content=True).strip()


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


# Reject causes only a WARC input gives (curation.documents.REJECT_CAUSES holds them all)
WARC_CAUSES = frozenset({"not_html", "undecodable_html", "empty_extraction"})
