"""WARC files of real HTML for tests and benchmarks, written with warcio (a WARC writer
that is not the reader under test).

The pages are Debian's Python documentation (package python3.11-doc, PSF licence),
which tests/setup.sh installs; where it is absent the tests that need it skip. Each
page becomes a request and a response record, as a crawler writes them; `special`
adds one record of every kind the reader must turn away."""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

HTML_DIRS = ("/usr/share/doc/python3.11/html", "/usr/share/doc/python3-doc/html")
BASE_URL = "https://docs.python.org/3.11/"


def html_dir() -> Path | None:
    for d in [os.environ.get("CURATION_HTML_DIR", ""), *HTML_DIRS]:
        if d and Path(d, "index.html").is_file():
            return Path(d)
    return None


def html_pages(limit: int | None = None) -> list[tuple[str, bytes]]:
    """(url, html bytes) of the documentation's pages, sorted by path."""
    root = html_dir()
    if root is None:
        return []
    paths = sorted(p for p in root.rglob("*.html") if p.is_file())
    if limit is not None:
        paths = paths[:limit]
    return [(BASE_URL + p.relative_to(root).as_posix(), p.read_bytes()) for p in paths]


def _http(status: str, ctype: str | None, body: bytes, extra: tuple = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines += [*extra, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


SPECIAL = {
    # url tail: (status, content type, body, extra headers, what the reader must say)
    "logo.png": ("200 OK", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), (), "not_html"),
    "feed.json": ("200 OK", "application/json", b'{"items": []}', (), "not_html"),
    "broken-gzip.html": ("200 OK", "text/html; charset=utf-8", b"this is not gzip data at all",
                         ("Content-Encoding: gzip",), "undecodable_html"),
    "empty.html": ("200 OK", "text/html; charset=utf-8",
                   b"<html><head><title></title></head><body><script>var x=1;</script></body></html>",
                   (), "empty_extraction"),
    "gzipped.html": ("200 OK", "text/html; charset=utf-8",
                     gzip.compress(b"<html><body><article><h1>Compressed page</h1><p>A page sent with "
                                   b"Content-Encoding gzip still reads as its text, because the reader "
                                   b"undoes the encoding before it extracts the main content of the "
                                   b"page.</p></article></body></html>", mtime=0),
                     ("Content-Encoding: gzip",), "document"),
    "latin1.html": ("200 OK", "text/html; charset=iso-8859-1",
                    "<html><body><article><p>Caf\u00e9 cr\u00e8me \u00e0 la fran\u00e7aise: a page "
                    "declared as Latin-1 decodes with its own charset and keeps its accents in the "
                    "extracted text.</p></article></body></html>".encode("latin-1"), (), "document"),
}


def write_warc(path: str | Path, pages: list[tuple[str, bytes]], *, special: bool = False,
               gz: bool = True) -> list[dict]:
    """Write `pages` (and, with `special`, the SPECIAL records after them) as one WARC
    file; returns what each record is, in file order: {"position", "type", "url", "id",
    "expect"} where expect is "document", a reject cause, or None (not a response)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out: list[dict] = []
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)

    def add(rec, expect):
        w.write_record(rec)
        out.append({"position": len(out), "type": rec.rec_type, "url": rec.rec_headers.get_header(
            "WARC-Target-URI"), "id": rec.rec_headers.get_header("WARC-Record-ID"), "expect": expect})

    add(w.create_warcinfo_record("test.warc", {"software": "tests/warc_fixture.py"}), None)
    entries = [(u, ("200 OK", "text/html; charset=utf-8", b, (), "document")) for u, b in pages]
    if special:
        entries += [(BASE_URL + "_special/" + k, v) for k, v in SPECIAL.items()]
    for url, (status, ctype, body, extra, expect) in entries:
        req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "docs.python.org")], is_http_request=True)
        add(w.create_warc_record(url, "request", http_headers=req), None)
        raw = _http(status, ctype, body, extra)
        add(w.create_warc_record(url, "response", payload=io.BytesIO(raw), length=len(raw)), expect)
    Path(path).write_bytes(buf.getvalue())
    return out
