"""The demo's web domain as a crawl: its documents rendered as HTML pages (with the
navigation, cookie banner and footer a real site wraps them in) and written as a
.warc.gz, built at run time from the package's demo data, so `curate demo` shows
extraction, URL blocking, PII redaction and decontamination on the way in.

Deterministic: record ids, dates and bytes depend on the demo data only, and an
existing file with the same bytes is left alone (its modification time is part of
the run's fingerprint). Planted, and said so: a contact line with an e-mail
address and a phone number on every fifth page, a server address on every seventh
(the documentation ranges are avoided: the redactor may leave those), one site on
the demo block list, two pages quoted by the demo's evaluation set, and a few
responses that are not pages at all (an image, a PDF, an empty page)."""
from __future__ import annotations

import gzip
import html
import json
import uuid
from pathlib import Path

from curation.demo import DEMO_DIR
from curation.fs import default_fs, writing

WEB = DEMO_DIR / "web.jsonl.gz"
DATE = "2026-01-15T12:00:00Z"
SITES = ("fans.example.net", "notes.example.org", "shop.example.com", "spam.example.biz")
BLOCKED = "spam.example.biz"
_NS = uuid.UUID("6f1d2c3b-0000-4000-8000-00000000c0de")


def _record(rtype: str, url: str, block: bytes, extra: str = "") -> bytes:
    rid = uuid.uuid5(_NS, f"{rtype} {url}")
    head = (f"WARC/1.1\r\nWARC-Type: {rtype}\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\n"
            f"WARC-Date: {DATE}\r\nWARC-Target-URI: {url}\r\n{extra}"
            f"Content-Length: {len(block)}\r\n\r\n").encode("utf-8")
    return gzip.compress(head + block + b"\r\n\r\n", mtime=0)   # one member per record


def _http(ctype: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode("latin-1") + body)


def _page(title: str, paragraphs: list[str], site: str) -> bytes:
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in
                  ("Home", "About", "Archive", "Contact", "Login"))
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)} | {site}"
            f"</title></head><body><div class=\"cookie-banner\">We use cookies to improve your "
            f"experience. <button>Accept all</button></div><nav><ul>{nav}</ul></nav>"
            f"<main><article><h1>{html.escape(title)}</h1>{body}</article></main>"
            f"<aside><h3>Popular posts</h3><ul><li><a href=\"/p/1\">Ten tips</a></li>"
            f"<li><a href=\"/p/2\">Our story</a></li></ul></aside>"
            f"<footer><p>&copy; 2026 {site}. All rights reserved.</p><p><a href=\"/privacy\">"
            f"Privacy</a> | <a href=\"/terms\">Terms</a></p></footer></body></html>").encode("utf-8")


def _paragraphs(text: str) -> list[str]:
    paras = [p.strip() for p in text.split("\n") if p.strip()]
    return paras or [text.strip()]


def build(directory: str | Path) -> dict[str, str]:
    """Write the crawl, its block list and its evaluation set into `directory`; returns
    their paths: {"warc", "blocklist", "evals"}."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(WEB, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    records = [_record("warcinfo", "", b"software: curation demo crawl\r\n",
                       "Content-Type: application/warc-fields\r\n")]
    quoted = []
    for i, d in enumerate(docs):
        site = SITES[i % len(SITES)]
        url = f"https://{site}/{i:03d}.html"
        paras = _paragraphs(d["text"])
        if i % 5 == 2:
            paras.append(f"Questions about this page? Write to editor{i}@{site} or call "
                         f"+1 415 867 {5300 + i:04d}.")
        if i % 7 == 3:
            paras.append(f"This page was served by 81.2.69.{100 + i} for visitors in Europe.")
        if i in (10, 30):
            quoted.append({"benchmark": "demo_eval", "text": max(paras, key=len)})
        title = " ".join(paras[0].split()[:8])
        req = f"GET /{i:03d}.html HTTP/1.1\r\nHost: {site}\r\n\r\n".encode("latin-1")
        records.append(_record("request", url, req, "Content-Type: application/http; msgtype=request\r\n"))
        records.append(_record("response", url, _http("text/html; charset=utf-8", _page(title, paras, site)),
                               "Content-Type: application/http; msgtype=response\r\n"))
    for name, ctype, body in (("logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(64))),
                              ("report.pdf", "application/pdf", b"%PDF-1.4\n%demo\n"),
                              ("empty.html", "text/html; charset=utf-8",
                               b"<html><body><script>track();</script></body></html>")):
        records.append(_record("response", f"https://{SITES[0]}/static/{name}", _http(ctype, body),
                               "Content-Type: application/http; msgtype=response\r\n"))
    files = {"warc": (out / "demo_crawl.warc.gz", b"".join(records)),
             "blocklist": (out / "demo_blocklist.txt", f"# the demo's block list\n{BLOCKED}\n".encode()),
             "evals": (out / "demo_evals.jsonl",
                       "".join(json.dumps(q, sort_keys=True) + "\n" for q in quoted).encode("utf-8"))}
    for path, data in files.values():
        if not (path.is_file() and path.read_bytes() == data):
            with writing(default_fs(None), str(path)) as f:
                f.write(data)
    return {k: str(p) for k, (p, _) in files.items()}
