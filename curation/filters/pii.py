"""E-mail addresses, IP addresses and phone numbers replaced by placeholders.

Patterns and validation, no model: a pre-training corpus needs a rule that is cheap,
deterministic and explainable, and that leaves alone the numbers prose is full of
(versions, dates, prices, times, ISBNs, counts). Each kind is a candidate pattern
plus a check in Python (ipaddress for IPs; digit counts, numbering-plan rules and
separators for phones). tests/test_crawl_filters.py holds the sentences that must
survive and the ones that must be replaced.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator

from curation.filters.base import Filter, Params, Verdict

KINDS = ("email", "ip_address", "phone")
# Presidio's entity names (NeMo Curator's PII modifier writes the same "<ENTITY>" form)
PLACEHOLDERS = {"email": "<EMAIL_ADDRESS>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>"}

# -- e-mail: an ASCII local part and a dotted host name ending in a letter TLD
_EMAIL = re.compile(
    r"(?<![\w.%+-])"
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})"
    r"(?![\w-])")
# "logo@2x.png", "icon@3x.webp": retina image names, not addresses (none is a TLD)
_FILE_SUFFIXES = frozenset("png jpg jpeg gif svg webp bmp ico tif tiff css js pdf".split())

# -- IPv4: a dotted quad not inside a longer dotted number and not a version
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w]|\.\w|-[A-Za-z]|\+\w)")
# what makes a quad a version: a keyword before it ("version: 1.2.3.4", "build 10.0.19041.1",
# 'sections "8.2.4.44"'), or a product token or pin ("Firefox/2.0.0.11", "novas-3.1.1.3",
# "pkg==1.2.3.4"); "v1.2.3.4" never matches (the "v" is a word character)
_VERSION_BEFORE = re.compile(r"(?i)(?:\b(?:v|ver|version|versions|release|build|firmware|"
                             r"section|sections|chapter|rfc)\b[\s:=(\"'#-]*|§\s*|[a-z][/-]|==)$")
# -- IPv6: hex groups and colons (validated by ipaddress; "::" compression and a trailing IPv4 allowed)
_IPV6 = re.compile(r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?)"
                   r"(?![\w:]|\.\d)")

# -- phones: three shapes, each checked after the match
# international: "+" and a country code, then groups (a parenthesised area code allowed)
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){0,5}[ .-]?\d{2,5}(?![\w]|[.,-]\d)")
# North American: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671, 1-800-555-0199
_PHONE_NANP = re.compile(r"(?<![\w+.,/-])(?:1([ .-]))?(?:\((\d{3})\) ?|(\d{3})([ .-]))(\d{3})([ .-])(\d{4})"
                         r"(?![\w]|[.,/-]\d)")
# national with a trunk 0 (020 7946 0958, 06 12 34 56 78, 030-12345678): one separator
# throughout, and only after a phone word (below): bare, such runs are too often table cells
_PHONE_TRUNK = re.compile(r"(?<![\w+.,/-])(?:\(0\d{1,4}\)|0\d{1,4})([ .-])\d{2,8}(?:\1\d{2,8}){0,3}"
                          r"(?![\w]|[.,/-]\d)")
_PHONE_WORD = re.compile(r"(?i)(?:\b(?:tel|telephone|phone|fax|mobile|cell|call|contact|"
                         r"hotline|whatsapp|telefon|telefax|téléphone|tél|telefono|teléfono|fon)\b\.?|[☎📞✆])"
                         r"[^\n\d]{0,24}$")


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _phone_word_before(m: re.Match) -> bool:
    return _PHONE_WORD.search(m.string, max(0, m.start() - 48), m.start()) is not None


_RUN_BEFORE = re.compile(r"\d[ \t]$")
_RUN_AFTER = re.compile(r"[ \t]\d")


def _in_number_run(m: re.Match) -> bool:
    """A space-separated match with another number right before or after it is a
    piece of a row of numbers ("... 233 377 610 987 1597 ..."), not a phone."""
    return (_RUN_BEFORE.search(m.string, max(0, m.start() - 2), m.start()) is not None
            or _RUN_AFTER.match(m.string, m.end()) is not None)


class PIIParams(Params):
    kinds: tuple[Literal["email", "ip_address", "phone"], ...] = KINDS
    placeholders: dict[str, str] = Field(default_factory=dict)
    ip_scope: Literal["global", "all"] = "global"

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v):
        if not v:
            raise ValueError("name at least one kind (email, ip_address, phone)")
        if len(set(v)) != len(v):
            raise ValueError(f"kinds repeat: {list(v)}")
        return tuple(k for k in KINDS if k in v)     # one order, whatever the YAML's

    @field_validator("placeholders")
    @classmethod
    def _placeholders(cls, v):
        unknown = sorted(set(v) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kind(s) {unknown}; kinds are {list(KINDS)}")
        for k, p in v.items():
            if not p or any(c.isdigit() or c == "@" for c in p):
                # a digit or "@" could be matched again by a later kind's pattern
                raise ValueError(f"{k}: a placeholder must be non-empty, without digits or '@' (got {p!r})")
        return dict(sorted(v.items()))


class PIIRedactor(Filter):
    """Replaces e-mail addresses, IP addresses and phone numbers with placeholders
    (``<EMAIL_ADDRESS>``, ``<IP_ADDRESS>``, ``<PHONE_NUMBER>``; ``placeholders``
    overrides them) and keeps the document with the edited text. Its signals count
    the replacements per kind; the filter stage sums them over kept documents
    (``tallies``: ``pii.email``, ``pii.ip_address``, ``pii.phone``). It removes
    nothing, so it has no rules.

    - ``email``: ASCII ``local@host.tld`` (letters in the TLD); ``x@2x.png``-style
      image names are not addresses.
    - ``ip_address``: IPv4 dotted quads that ``ipaddress`` accepts (no leading zeros,
      each part <= 255), not inside a longer dotted name or number
      (``dsl.1.2.3.4.example.net``, ``5.1.0.14.0``), not followed by a pre-release
      tag (``1.2.3.4-beta``), not after a version word (version, release, build,
      firmware, section, chapter, RFC, §) or a product token (``Firefox/2.0.0.11``,
      ``pkg-1.2.3.4``, ``pkg==1.2.3.4``); a bare quad is an address, so
      ``zlib 1.2.3.4`` is replaced. IPv6: what ``ipaddress`` accepts with at least
      three hex groups (times like 12:30:45 and MAC addresses are not IPv6). With
      ``ip_scope: global`` (the default, as datatrove's PIIFormatter) only globally
      routable addresses are replaced: private (10/8, 192.168/16, ...), loopback,
      link-local and the documentation ranges (192.0.2/24, 198.51.100/24,
      203.0.113/24, 2001:db8::/32) identify no one and fill technical documentation;
      ``all`` replaces those too.
    - ``phone``: international numbers (``+``, a country code not starting with 0,
      8 to 15 digits; one-digit groups only right after the country code; without
      any separator only after a phone word or ``tel:``), North American numbers
      (area code and exchange 2-9, groups 3-3-4 with one separator, or a
      parenthesised area code), and national numbers with a trunk ``0`` (10 to 12
      digits, one separator throughout) after a phone word (tel, phone, fax, mobile,
      call, contact, ...) on the same line. Space-separated candidates inside a row
      of numbers are not phones. Local numbers without an area code (555-0199) are
      not found.
    """

    name = "pii"
    rules = ()
    Params = PIIParams

    def _setup(self) -> None:
        self.tallies = tuple(self.kinds)
        self._ph = {**PLACEHOLDERS, **self.placeholders}

    def config(self) -> dict:
        return {**super().config(), "placeholders": dict(self._ph)}

    def _ip_ok(self, addr) -> bool:
        return self.ip_scope == "all" or addr.is_global

    def _email(self, text: str) -> tuple[str, int]:
        if "@" not in text:
            return text, 0
        ph = self._ph["email"]

        def sub(m: re.Match) -> str:
            return m.group(0) if m.group(1).lower() in _FILE_SUFFIXES else ph
        return _count_sub(_EMAIL, sub, text)

    def _ip(self, text: str) -> tuple[str, int]:
        ph = self._ph["ip_address"]

        def v4(m: re.Match) -> str:
            try:
                addr = ipaddress.IPv4Address(m.group(1))
            except ValueError:
                return m.group(0)
            if _VERSION_BEFORE.search(m.string, max(0, m.start() - 16), m.start()) or not self._ip_ok(addr):
                return m.group(0)
            return ph

        def v6(m: re.Match) -> str:
            cand, tail = m.group(1), ""
            if cand.endswith(":") and not cand.endswith("::"):    # "... fe80::1: it ..."
                cand, tail = cand[:-1], ":"
            if sum(1 for g in cand.split(":") if g) < 3:
                return m.group(0)
            try:
                addr = ipaddress.IPv6Address(cand)
            except ValueError:
                return m.group(0)
            return ph + tail if self._ip_ok(addr) else m.group(0)

        n6 = 0
        if ":" in text:
            text, n6 = _count_sub(_IPV6, v6, text)
        text, n4 = _count_sub(_IPV4, v4, text)
        return text, n4 + n6

    def _phone(self, text: str) -> tuple[str, int]:
        ph = self._ph["phone"]

        def intl(m: re.Match) -> str:
            s = m.group(0)
            # one-digit groups only right after the country code (+33 6 12 34 56 78):
            # "+12.5 13.3 14.5" is a table of signed numbers, not a phone
            groups = re.findall(r"\d+", s)
            ok = (8 <= _digits(s) <= 15 and s[1] != "0"
                  and all(len(g) > 1 for g in groups[2:]))
            # "+4294967296" without separators is a signed number unless a phone word
            # or "tel:" says otherwise ("tel:+31641044153")
            if ok and len(groups) == 1:
                ok = _phone_word_before(m)
            return ph if ok else s

        def nanp(m: re.Match) -> str:
            s = m.group(0)
            area = m.group(2) or m.group(3)
            if m.group(3) and m.group(4) != m.group(6):     # 415-555.2671: not one number
                return s
            if m.group(1) is not None and m.group(1) != m.group(6) and not m.group(2):
                return s
            if m.group(6) == " " and _in_number_run(m):
                return s
            return ph if area[0] in "23456789" and m.group(5)[0] in "23456789" else s

        def trunk(m: re.Match) -> str:
            s = m.group(0)
            if not 10 <= _digits(s) <= 12 or (m.group(1) == " " and _in_number_run(m)):
                return s
            return ph if _phone_word_before(m) else s

        n = 0
        if "+" in text:
            text, k = _count_sub(_PHONE_INTL, intl, text)
            n += k
        text, k = _count_sub(_PHONE_NANP, nanp, text)
        n += k
        text, k = _count_sub(_PHONE_TRUNK, trunk, text)
        return text, n + k

    def check(self, text: str) -> Verdict:
        # e-mail first (its host may hold digits), then IPs, then phones: a placeholder
        # holds no digit, so no later pattern can match inside an earlier replacement
        counts = {}
        out = text
        for kind, step in (("email", self._email), ("ip_address", self._ip), ("phone", self._phone)):
            if kind in self.kinds:
                out, counts[kind] = step(out)
        return Verdict(True, None, counts, out if out != text else None)


def _count_sub(pattern: re.Pattern, fn, text: str) -> tuple[str, int]:
    """pattern.sub(fn, text) and how many matches fn replaced (returned something else)."""
    n = 0

    def wrapped(m: re.Match) -> str:
        nonlocal n
        r = fn(m)
        if r != m.group(0):
            n += 1
        return r
    return pattern.sub(wrapped, text), n
