"""Block lists of domains and URL substrings, read from the user's own files.

Nothing is bundled: a crawl's block lists are a policy choice (adult, spam, link
farms, a site that opted out) and belong to whoever runs the crawl.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from curation.filters.base import (Filter, FilterInputError, FilterParamError, Params, Verdict,
                                   read_param_file)


def normalize_host(host: str) -> str:
    """Lower-cased, without a trailing dot, internationalised names in their ASCII
    (punycode) form so "bücher.de" and "xn--bcher-kva.de" are one domain."""
    host = host.strip().lower().rstrip(".")
    if host and not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            pass   # not a valid IDN: compared as written
    return host


def url_host(url: str) -> str:
    """The host of a URL: lower-cased, port and user info stripped. A URL without a
    scheme ("example.com/a") is read as if it had one."""
    url = url.strip()
    if "//" not in url.split("?", 1)[0].split("#", 1)[0]:
        url = "//" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:      # e.g. an unbalanced "[" in the authority
        host = ""
    return normalize_host(host)


def parent_domains(host: str) -> list[str]:
    """The host and every domain above it, most specific first:
    "a.b.example.com" -> [a.b.example.com, b.example.com, example.com, com].
    An IP address has no parents."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]]


def _entries(data: bytes, path: str, param: str) -> list[tuple[int, str]]:
    """(line number, entry) of a list file: one entry a line; blank lines and lines
    whose first non-space character is "#" are skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FilterParamError(f"url.{param}: {path!r} is not UTF-8 text: {e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.append((n, entry))
    return out


def _domain_entry(entry: str, where: str) -> str:
    # "*.example.com" and ".example.com" are common spellings of "example.com and below"
    d = normalize_host(entry.removeprefix("*.").lstrip("."))
    if not d or any(c in d for c in "/:@?# \t") or "*" in d:
        raise FilterParamError(f"{where}: {entry!r} is not a domain (a URL or a pattern? "
                               "put URL fragments in substrings_file)")
    return d


class URLParams(Params):
    domains_file: str | None = Field(None, min_length=1)
    substrings_file: str | None = Field(None, min_length=1)
    field: str = Field("url", min_length=1)
    on_missing: Literal["keep", "remove"] = "keep"

    @model_validator(mode="after")
    def _some_list(self):
        if self.domains_file is None and self.substrings_file is None:
            raise ValueError("give domains_file, substrings_file or both")
        return self


class URLFilter(Filter):
    """Removes documents whose URL (the ``field`` of the document, default ``url``)
    is on a block list.

    - ``blocked_domain``: the URL's host (lower-cased, port, user info and a trailing
      dot stripped; IDNs compared in punycode) is a listed domain or below one:
      ``example.com`` blocks ``example.com``, ``www.example.com`` and
      ``a.b.example.com``, never ``notexample.com``. ``www.`` is not special: list
      ``www.example.com`` and ``example.com`` stays. An IP address matches only
      itself. Entries may be written ``*.example.com`` or ``.example.com``.
    - ``blocked_substring``: a listed string occurs in the URL (case-insensitive).
    - ``missing_url``: the document has no URL (the field is absent, null or blank).
      With ``on_missing: keep`` (the default) such documents are kept with the signal
      ``missing_url: true`` and this rule never fires; ``on_missing: remove`` removes
      them. A URL that is not a string is an input error (the stage rejects the
      document with ``filter_error``).

    List files: UTF-8, one entry a line, blank lines and ``#`` comment lines skipped.
    At least one file; together they must hold at least one entry.
    """

    name = "url"
    rules = ("blocked_domain", "blocked_substring", "missing_url")
    Params = URLParams
    uses_meta = True
    reads_files = True

    def _setup(self) -> None:
        self.domains: frozenset[str] = frozenset()
        self._subs: dict[int, frozenset[str]] = {}   # substrings by length
        digest = hashlib.sha256()
        n_subs = 0
        if self.domains_file is not None:
            data = read_param_file(self.fs, self.domains_file, "domains_file", self.name)
            self.domains = frozenset(_domain_entry(e, f"url.domains_file {self.domains_file}:{n}")
                                     for n, e in _entries(data, self.domains_file, "domains_file"))
        if self.substrings_file is not None:
            data = read_param_file(self.fs, self.substrings_file, "substrings_file", self.name)
            subs = {e.lower() for _, e in _entries(data, self.substrings_file, "substrings_file")}
            n_subs = len(subs)
            by_len: dict[int, set[str]] = {}
            for s in subs:
                by_len.setdefault(len(s), set()).add(s)
            self._subs = {k: frozenset(v) for k, v in sorted(by_len.items())}
        if not self.domains and not n_subs:
            raise FilterParamError("url: the block lists hold no entries "
                                   f"(domains_file={self.domains_file!r}, "
                                   f"substrings_file={self.substrings_file!r})")
        # what was loaded, in the manifest: a changed list makes a different run
        for entry in sorted(self.domains):
            digest.update(b"d" + entry.encode("utf-8") + b"\n")
        for k in self._subs:
            for entry in sorted(self._subs[k]):
                digest.update(b"s" + entry.encode("utf-8") + b"\n")
        self.loaded = {"domains": len(self.domains), "substrings": n_subs,
                       "sha256": digest.hexdigest()}

    def config(self) -> dict:
        return {**super().config(), "loaded": self.loaded}

    def _substring(self, url: str) -> str | None:
        """The listed substring found first in `url` (leftmost, then shortest)."""
        low = url.lower()
        best: tuple[int, int, str] | None = None
        for k, subs in self._subs.items():
            for i in range(len(low) - k + 1):
                if low[i:i + k] in subs:
                    if best is None or i < best[0]:
                        best = (i, k, low[i:i + k])
                    break
        return None if best is None else best[2]

    def check(self, text: str, meta: Mapping | None = None) -> Verdict:
        url = meta.get(self.field) if meta is not None else None
        if url is None or (isinstance(url, str) and not url.strip()):
            if self.on_missing == "remove":
                return self.remove("missing_url", {"missing_url": True})
            return Verdict(True, None, {"missing_url": True})
        if not isinstance(url, str):
            raise FilterInputError(f"url: the document's {self.field!r} must be a str, "
                                   f"got {type(url).__name__}")
        host = url_host(url)
        if self.domains and host:
            for d in parent_domains(host):
                if d in self.domains:
                    return self.remove("blocked_domain", {"host": host, "domain": d})
        if self._subs:
            s = self._substring(url)
            if s is not None:
                return self.remove("blocked_substring", {"host": host, "substring": s})
        return Verdict(True, None, {"host": host})
