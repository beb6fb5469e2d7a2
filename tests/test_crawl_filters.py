"""The filters a web crawl needs: URL block lists (read from document fields), PII
redaction (placeholders, tallies), evaluation-set decontamination (hashed n-grams);
their parameters, the chain contract they extend, real text, and `curate filter`
end to end with the tallies in manifest.json."""
from __future__ import annotations

import gzip
import ipaddress
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zstandard

from curation.config import ConfigError
from curation.documents import Document
from curation.filters import (Decontaminate, FilterChain, FilterInputError, FilterParamError,
                              LengthFilter, NgramIndex, PIIRedactor, URLFilter, UserFilter,
                              build_ngram_index, load_chain)
from curation.filters.decontaminate import ngram_hashes, word_hashes, word_spans
from curation.filters.url import url_host
from tests.conftest import read_jsonl_gz, shared_corpus

THIS = __name__


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(path: Path, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


# ================================================================ URL block lists

BLOCKLIST = """\
# a user's own list
example.com
badsub.nice.com

*.wildcard.org
.dotted.net
www.site.org
bücher.de
10.1.2.3
"""


@pytest.fixture
def url_filter(tmp_path) -> URLFilter:
    return URLFilter(domains_file=write(tmp_path / "domains.txt", BLOCKLIST),
                     substrings_file=write(tmp_path / "subs.txt", "# fragments\n/ADS/\ntracking=\n"))


@pytest.mark.parametrize("url, domain", [
    ("https://example.com/some/page?x=1", "example.com"),
    ("https://a.b.example.com/x", "example.com"),            # every level below
    ("http://www.example.com:8443/path", "example.com"),      # port stripped, www is a subdomain
    ("HTTPS://EXAMPLE.COM./", "example.com"),                 # case, trailing dot
    ("https://user:secret@example.com/", "example.com"),      # user info is not the host
    ("example.com/no/scheme", "example.com"),
    ("https://badsub.nice.com/", "badsub.nice.com"),
    ("https://sdsd.badsub.nice.com/", "badsub.nice.com"),     # below a listed subdomain too
    ("https://x.wildcard.org/", "wildcard.org"),
    ("https://wildcard.org/", "wildcard.org"),
    ("https://a.dotted.net/", "dotted.net"),
    ("https://www.site.org/", "www.site.org"),
    ("https://deep.www.site.org/", "www.site.org"),
    ("https://xn--bcher-kva.de/buch", "xn--bcher-kva.de"),    # IDN in punycode
    ("https://shop.bücher.de/buch", "xn--bcher-kva.de"),
    ("http://10.1.2.3:8080/admin", "10.1.2.3"),
])
def test_blocked_domains_include_every_subdomain(url_filter, url, domain):
    v = url_filter({"text": "a page", "url": url})
    assert v.keep is False and v.reason == "url:blocked_domain", url
    assert v.signals["domain"] == domain


@pytest.mark.parametrize("url", [
    "https://notexample.com/",              # not a label boundary
    "https://example.com.evil.org/",        # a listed name inside a longer host
    "https://evil.org/?next=example.com",   # only the host is matched against domains
    "https://nice.com/",                    # above a listed subdomain
    "https://site.org/",                    # www. is not special: site.org was not listed
    "https://ads.example.co/",              # another domain
    "http://110.1.2.3/",                    # an IP matches only itself
    "http://10.1.2.30/",
    "http://[2001:db8::1]/",
])
def test_other_urls_are_kept(url_filter, url):
    v = url_filter({"text": "a page", "url": url})
    assert v.keep is True and v.reason is None, (url, v)
    assert v.signals["host"] == url_host(url)


def test_blocked_substrings_are_case_insensitive_and_the_leftmost_is_named(url_filter):
    v = url_filter({"text": "t", "url": "https://news.site.net/Ads/banner?tracking=1"})
    assert v.reason == "url:blocked_substring" and v.signals["substring"] == "/ads/"
    v = url_filter({"text": "t", "url": "https://news.site.net/a?TRACKING=1&x=/ads/"})
    assert v.signals["substring"] == "tracking="
    assert url_filter({"text": "t", "url": "https://news.site.net/adsense"}).keep


def test_missing_url_is_kept_with_a_signal_or_removed_on_request(tmp_path, url_filter):
    for doc in ("just text", {"text": "t"}, {"text": "t", "url": None}, {"text": "t", "url": "  "},
                Document(id="d", text="t", meta={"title": "no url"})):
        v = url_filter(doc)
        assert v.keep and v.signals == {"missing_url": True}, doc
    strict = URLFilter(domains_file=write(tmp_path / "d.txt", "example.com\n"), on_missing="remove")
    v = strict({"text": "t"})
    assert (v.keep, v.reason, v.signals) == (False, "url:missing_url", {"missing_url": True})
    with pytest.raises(FilterInputError, match="'url' must be a str, got int"):
        url_filter({"text": "t", "url": 12})


def test_url_field_is_a_parameter_and_documents_pass_their_meta(tmp_path):
    f = URLFilter(domains_file=write(tmp_path / "d.txt", "example.com\n"), field="source_url")
    doc = Document(id="d", text="some text", meta={"source_url": "https://m.example.com/a"})
    assert f(doc).reason == "url:blocked_domain"
    assert f({"text": "some text", "source_url": "https://m.example.com/a"}) == f(doc)
    assert f({"text": "some text", "url": "https://m.example.com/a"}).signals == {"missing_url": True}


def test_the_chain_hands_meta_only_to_filters_that_read_it(tmp_path):
    f = URLFilter(domains_file=write(tmp_path / "d.txt", "example.com\n"))
    chain = FilterChain([LengthFilter(min_words=2), f])
    doc = Document(id="d", text="two words", meta={"url": "https://example.com/"})
    v = chain(doc)
    assert v.reason == "url:blocked_domain" and v.signals["length.chars"] == 9
    assert chain.check("two words", {"url": "https://example.com/"}) == v
    assert chain.check("two words").keep          # text only: no URL, so kept
    assert chain({"text": "two words", "url": "https://ok.org/"}).keep
    # a user filter built from a Filter class keeps reading the fields
    u = UserFilter(path="curation.filters.url:URLFilter",
                   params={"domains_file": str(tmp_path / "d.txt")}, name="blocked")
    assert u.uses_meta and u(doc).reason == "blocked:blocked_domain"


@pytest.mark.parametrize("params, says", [
    ({}, "give domains_file, substrings_file or both"),
    ({"domains_file": "/no/such/list.txt"}, "url.domains_file: cannot read '/no/such/list.txt'"),
    ({"domains_file": "EMPTY"}, "the block lists hold no entries"),
    ({"domains_file": "URLS"}, "url.domains_file URLS:2: 'https://x.org/a' is not a domain"),
    ({"domains_file": "D", "on_missing": "drop"}, "on_missing"),
    ({"domains_file": "D", "field": ""}, "field"),
    ({"domains_file": "D", "block": True}, "block"),
])
def test_bad_url_parameters_fail_at_construction(tmp_path, params, says):
    files = {"EMPTY": "# nothing\n\n", "URLS": "ok.org\nhttps://x.org/a\n", "D": "ok.org\n"}
    params = {k: (write(tmp_path / v, files[v]) if v in files else v) for k, v in params.items()}
    says = says.replace("URLS", str(tmp_path / "URLS"))
    with pytest.raises(FilterParamError) as e:
        URLFilter(**params)
    assert says in str(e.value)


def test_url_config_records_what_was_loaded(tmp_path):
    path = tmp_path / "d.txt"
    a = URLFilter(domains_file=write(path, "example.com\n# c\nexample.org\n")).config()
    assert a["loaded"]["domains"] == 2 and a["loaded"]["substrings"] == 0
    b = URLFilter(domains_file=write(path, "example.org\nexample.com\n")).config()
    assert a == b                        # order and comments do not matter
    c = URLFilter(domains_file=write(path, "example.org\n")).config()
    assert c["loaded"]["sha256"] != a["loaded"]["sha256"]


# ================================================================ PII

# (sentence, what it must become): real-looking prose, one or more kinds each
TRUE_POSITIVES = [
    ("For a refund, write to jane.doe@example.com before Friday.",
     "For a refund, write to <EMAIL_ADDRESS> before Friday."),
    ("Questions? Contact John.Smith+orders@mail.shop-online.co.uk.",
     "Questions? Contact <EMAIL_ADDRESS>."),
    ("Send the forms to HR@Company.DE or call (415) 555-2671.",
     "Send the forms to <EMAIL_ADDRESS> or call <PHONE_NUMBER>."),
    ("The attacks came from 93.184.216.34 and 8.8.4.4 last night.",
     "The attacks came from <IP_ADDRESS> and <IP_ADDRESS> last night."),
    ("A dotted quad is an address: connect to 1.2.3.4:8080 to test.",
     "A dotted quad is an address: connect to <IP_ADDRESS>:8080 to test."),
    ("Block the range 93.184.216.34-93.184.216.40 at the firewall.",
     "Block the range <IP_ADDRESS>-<IP_ADDRESS> at the firewall."),
    ("Resolve it against 2606:4700:4700::1111 or 2a00:1450:4001:81c::200e.",
     "Resolve it against <IP_ADDRESS> or <IP_ADDRESS>."),
    ("Our hotline 1-800-555-0199 is open; the office is 415.555.2671.",
     "Our hotline <PHONE_NUMBER> is open; the office is <PHONE_NUMBER>."),
    ("Call us on +44 20 7946 0958 or +1 (415) 555-2671 any time.",
     "Call us on <PHONE_NUMBER> or <PHONE_NUMBER> any time."),
    ("Appelez le +33 6 12 34 56 78 pour réserver.",
     "Appelez le <PHONE_NUMBER> pour réserver."),
    ("Tel. 020 7946 0958, Fax: 020 7946 0959",
     "Tel. <PHONE_NUMBER>, Fax: <PHONE_NUMBER>"),
    ("Telefon: 030 12345678 (Mo-Fr)",
     "Telefon: <PHONE_NUMBER> (Mo-Fr)"),
    ("Or message us on WhatsApp: +4915208649244.",
     "Or message us on WhatsApp: <PHONE_NUMBER>."),
    ("mailto:press@example.org?subject=Hello",
     "mailto:<EMAIL_ADDRESS>?subject=Hello"),
]

# sentences that must come out unchanged
FALSE_POSITIVES = [
    "Python 3.11.2 fixed the bug, and 2.0.1 was the first stable release.",
    "Upgrade to 1.2.3.4-beta or v1.2.3.4; version 10.0.19041.1 is too old.",
    "The agent string read Firefox/2.0.0.11, pinned as tool==1.2.3.4 and pkg-3.1.1.3.",
    "See section 8.2.4.44 of the specification.",
    "The vote was held on 2024-01-15, the results on 15/01/2024 and 12.03.2024.",
    "The laptop costs $1,299.99 and a coffee € 12.50 (or 12,50 €).",
    "The meeting starts at 10:30 and the race record is 2:05:09 or 14:45:30.",
    "ISBN 978-3-16-148410-0, ISBN 0-306-40615-2 and ISBN-10 0306406152.",
    "The city has a population of 1,234,567 and a budget of 12 345 678 euros.",
    "Set the router to 192.168.1.1, mask 255.255.255.0, gateway 10.0.0.1.",
    "The documentation uses 203.0.113.5, 198.51.100.7 and 2001:db8::1 as examples.",
    "In C++ write std::vector<int> and call a::b::c() from main.",
    "Winning numbers: 04 12 23 35 41 52, bonus 07.",
    "The Fibonacci numbers 8 13 21 34 55 89 144 233 377 610 987 1597 grow fast.",
    "Temperatures were +12.5 13.3 14.5 13.3 across the week.",
    "Use the logo@2x.png image, the @media rule and npm install react@18.2.0.",
    "The MAC address is 00:1A:2B:3C:4D:5E on eth0.",
    "The score was 3-2, the season 1999-2004, pages 123-456 and 1234-5678.",
    "The marathon is 42.195 km; 10.000 runners started; ratio 0.5 0.25.",
    "Coordinates 51.5074, -0.1278 are in London.",
    "a = +4294967296 and b = +10011010010 in the test.",
    "Message-Id: <5.1.0.14.0.20020829172833@mail> and dsl.206.191.151.102.evergo.net",
    "Office hours: Mon-Fri 09:00-17:30, room 0.12, floor 3.",
    "Local calls to 555-0199 are free.",
]


@pytest.mark.parametrize("text, want", TRUE_POSITIVES)
def test_pii_true_positives_are_replaced(text, want):
    v = PIIRedactor()(text)
    assert v.keep and v.reason is None and v.text == want
    assert v.signals == {"email": want.count("<EMAIL_ADDRESS>"),
                         "ip_address": want.count("<IP_ADDRESS>"),
                         "phone": want.count("<PHONE_NUMBER>")}


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_pii_false_positives_survive(text):
    v = PIIRedactor()(text)
    assert v.keep and v.text is None and not v.edited, v.text
    assert v.signals == {"email": 0, "ip_address": 0, "phone": 0}


def test_pii_kinds_placeholders_and_ip_scope():
    text = "Mail ann@example.com from 93.184.216.34 or 192.168.0.7, phone (415) 555-2671."
    v = PIIRedactor(kinds=["ip_address"])(text)
    assert v.text == "Mail ann@example.com from <IP_ADDRESS> or 192.168.0.7, phone (415) 555-2671."
    assert v.signals == {"ip_address": 1}
    f = PIIRedactor(kinds=["phone", "email"], placeholders={"email": "[email]"})
    assert f.tallies == ("email", "phone")           # one order whatever the YAML's
    assert f(text).text == "Mail [email] from 93.184.216.34 or 192.168.0.7, phone <PHONE_NUMBER>."
    v = PIIRedactor(ip_scope="all")(text)
    assert v.signals["ip_address"] == 2 and "192.168.0.7" not in v.text
    assert PIIRedactor(ip_scope="all")("see 2001:db8::1 and ::1").text == "see <IP_ADDRESS> and ::1"
    assert PIIRedactor().config()["placeholders"] == {
        "email": "<EMAIL_ADDRESS>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>"}


@pytest.mark.parametrize("params, says", [
    ({"kinds": []}, "name at least one kind"),
    ({"kinds": ["email", "email"]}, "kinds repeat"),
    ({"kinds": ["ssn"]}, "kinds.0"),
    ({"placeholders": {"credit_card": "<CC>"}}, "unknown kind(s) ['credit_card']"),
    ({"placeholders": {"phone": "PHONE-1"}}, "without digits or '@'"),
    ({"ip_scope": "private"}, "ip_scope"),
])
def test_bad_pii_parameters_fail_at_construction(params, says):
    with pytest.raises(FilterParamError) as e:
        PIIRedactor(**params)
    assert says in str(e.value) and str(e.value).startswith("pii.")


def test_pii_on_real_mail_leaves_no_address_behind():
    rows = read_jsonl_gz(shared_corpus("email_spamassassin.jsonl.gz"), limit=300)
    f = PIIRedactor()
    broad_email = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
    quad = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
    totals = {"email": 0, "ip_address": 0, "phone": 0}
    for r in rows:
        v = f(r["text"])
        out = v.text if v.edited else r["text"]
        for k in totals:
            totals[k] += v.signals[k]
        assert v.signals["email"] == out.count("<EMAIL_ADDRESS>") - r["text"].count("<EMAIL_ADDRESS>")
        assert not broad_email.findall(out), broad_email.findall(out)[:3]
        for m in quad.finditer(out):   # a global address left is part of a longer dotted name
            try:
                addr = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if addr.is_global:   # touching a longer name: "dsl.1.2.3.4.x.net", "Mutt/1.2.5.1i"
                before, after = out[max(0, m.start() - 1):m.start()], out[m.end():m.end() + 2]
                assert re.fullmatch(r"[\w./=-]", before) or re.match(r"\w|\.\w", after), \
                    out[max(0, m.start() - 30):m.end() + 10]
    assert totals["email"] > 3000 and totals["ip_address"] > 500 and totals["phone"] > 0, totals


@pytest.mark.parametrize("name", ["news_bbc.jsonl.gz", "books_mobydick.jsonl.gz",
                                  "speeches_sotu.jsonl.gz", "wiki_wikitext2.jsonl.gz"])
def test_pii_changes_nothing_in_prose_full_of_numbers(name):
    # news: prices, percentages, dates, scores; speeches: years and sums since 1790
    f = PIIRedactor()
    for r in read_jsonl_gz(shared_corpus(name)):
        v = f(r["text"])
        assert not v.edited, (r["id"], v.signals)


def test_pii_is_thread_safe_and_deterministic():
    texts = [t for t, _ in TRUE_POSITIVES] + FALSE_POSITIVES
    f = PIIRedactor()
    want = [f(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(f, texts * 5)) == want * 5


# ================================================================ decontamination

PASSAGE = ("The committee concluded that the bridge across the northern river should be "
           "rebuilt in stone before the winter floods arrived again")
BLACKSMITH = "Which metal did the old blacksmith of the valley use for the gate of the church"
TRAIN = "In which year did the first steam train carry passengers between the two northern cities"


def n_words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def eval_files(tmp_path) -> list[str]:
    a = jsonl(tmp_path / "evals" / "reading_comp.jsonl", [
        {"text": PASSAGE},
        {"text": "Too short to count."},
        {"question": "What did the committee decide about the bridge over the river?", "text": BLACKSMITH},
    ])
    b = tmp_path / "evals" / "trivia.jsonl.gz"
    b.write_bytes(gzip.compress(
        (json.dumps({"text": TRAIN, "benchmark": "trivia_qa"}) + "\n\n").encode(), mtime=0))
    return [a, str(b)]


def test_the_index_is_a_sorted_hash_array_with_benchmarks(tmp_path):
    ix = build_ngram_index(eval_files(tmp_path))
    assert ix.hashes.dtype == np.uint64 and ix.bench.dtype == np.uint16
    assert ix.hashes.shape == ix.bench.shape and np.all(ix.hashes[1:] >= ix.hashes[:-1])
    assert ix.benchmarks == ("reading_comp", "trivia_qa")     # file name, or the record's field
    windows = {t: n_words(t) - 12 for t in (PASSAGE, BLACKSMITH, TRAIN)}    # 9, 4, 3
    assert ix.stats == {"reading_comp": {"texts": 3, "ngrams": windows[PASSAGE] + windows[BLACKSMITH],
                                         "skipped_short": 1},
                        "trivia_qa": {"texts": 1, "ngrams": windows[TRAIN], "skipped_short": 0}}
    assert len(ix) == sum(s["ngrams"] for s in ix.stats.values()) and ix.lengths == (13,)
    # the hash of an n-gram is the hash of its words' hashes, whatever the spelling
    words, _ = word_spans("THE committee, concluded -- that the bridge across the northern river should be rebuilt IN")
    hit, bench = ix.find(ngram_hashes(word_hashes(words), 13))
    assert hit.tolist() == [0, 1] and bench.tolist() == [0, 0]
    # questions too, when asked for; short texts whole, when asked for
    both = build_ngram_index(eval_files(tmp_path), text_fields=["text", "question"], short_texts="whole")
    assert both.stats["reading_comp"]["texts"] == 4 and both.lengths == (4, 11, 13)


def test_the_index_saves_and_loads_the_same(tmp_path):
    ix = build_ngram_index(eval_files(tmp_path), ngram=8)
    path = str(tmp_path / "out" / "evals.npz")
    ix.save(path)
    back = NgramIndex.load(path)
    assert np.array_equal(back.hashes, ix.hashes) and np.array_equal(back.bench, ix.bench)
    assert (back.benchmarks, back.ngram, back.lengths, back.stats) == (ix.benchmarks, 8, (8,), ix.stats)
    assert back.digest() == ix.digest() and back.summary() == ix.summary()
    # the same texts zstd-compressed (two frames) build the same set
    raw = (tmp_path / "evals" / "reading_comp.jsonl").read_bytes()
    cut = raw.index(b"\n") + 1
    z = tmp_path / "zst" / "reading_comp.jsonl.zst"
    z.parent.mkdir()
    z.write_bytes(zstandard.ZstdCompressor().compress(raw[:cut]) + zstandard.ZstdCompressor().compress(raw[cut:]))
    zx = build_ngram_index([str(z), str(tmp_path / "evals" / "trivia.jsonl.gz")], ngram=8)
    assert zx.digest() == ix.digest()
    assert Path(path).stat().st_size < 10 * len(ix) + 2000     # 10 bytes an n-gram, compressed
    with np.load(path, allow_pickle=False) as z:      # never the texts
        assert sorted(z.files) == ["bench", "hashes", "meta"]
        assert "committee" not in str(z["meta"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, hashes=ix.hashes, bench=ix.bench, meta=np.array(json.dumps({"scheme": "other"})))
    with pytest.raises(ValueError, match="scheme 'other'"):
        NgramIndex.load(str(bad))


def test_a_document_holding_a_passage_is_removed_and_named(tmp_path):
    f = Decontaminate(eval_files=eval_files(tmp_path))
    quoted = ("Minutes of the meeting.\n\nAfter a long debate, the Committee concluded that the "
              "bridge across the Northern River should be rebuilt in stone. Nobody objected.")
    v = f(quoted)
    assert (v.keep, v.reason) == (False, "decontaminate:contaminated")
    # it quotes 15 words of the passage: 3 windows; the first as the document spells it, normalised
    assert v.signals == {"benchmark": "reading_comp", "matches": 3,
                         "ngram": "the committee concluded that the bridge across the northern river "
                                  "should be rebuilt"}
    v = f("Asked: " + TRAIN.upper() + "?")
    assert v.signals["benchmark"] == "trivia_qa" and not v.keep
    # twelve words of it are not enough; neither are its words in another order
    assert f("the committee concluded that the bridge across the northern river should be").keep
    assert f(" ".join(reversed(PASSAGE.split()))).keep
    assert f("").keep and f("").signals == {"matches": 0}


def test_redact_mode_cuts_the_passages_and_keeps_the_rest(tmp_path):
    f = Decontaminate(eval_files=eval_files(tmp_path), mode="redact")
    text = (f"Intro line.\n{PASSAGE}, said the report. Then, "
            "which metal did the old blacksmith of the valley use for the gate of the church? Iron.")
    v = f(text)
    assert v.keep and v.edited and v.reason is None
    assert v.text == "Intro line.\n, said the report. Then, ? Iron."
    assert v.signals["redacted_words"] == n_words(PASSAGE) + n_words(BLACKSMITH)
    assert v.signals["matches"] == (n_words(PASSAGE) - 12) + (n_words(BLACKSMITH) - 12)
    v = f(PASSAGE + ".")            # nothing left: removed
    assert v.reason == "decontaminate:contaminated" and v.signals["redacted_words"] == n_words(PASSAGE)
    assert f("Nothing to see here at all.").text is None


def test_a_saved_index_is_a_parameter_too(tmp_path):
    files = eval_files(tmp_path)
    path = str(tmp_path / "ix.npz")
    build_ngram_index(files).save(path)
    a, b = Decontaminate(eval_files=files), Decontaminate(index_file=path)
    assert a.config()["loaded"] == b.config()["loaded"]
    assert b(PASSAGE).reason == "decontaminate:contaminated"
    with pytest.raises(FilterParamError, match="holds 13-grams"):
        Decontaminate(index_file=path, ngram=8)


@pytest.mark.parametrize("params, says", [
    ({}, "give eval_files"),
    ({"eval_files": ["E"], "index_file": "x.npz"}, "not both"),
    ({"eval_files": []}, "eval_files"),
    ({"index_file": "x.npz", "text_fields": ["q"]}, "['text_fields'] apply to building from eval_files"),
    ({"eval_files": ["E"], "ngram": 0}, "ngram"),
    ({"eval_files": ["E"], "mode": "mask"}, "mode"),
    ({"eval_files": ["/no/such/evals.jsonl"]}, "decontaminate.eval_files: [Errno 2]"),
    ({"index_file": "/no/such/ix.npz"}, "decontaminate.index_file: [Errno 2]"),
    ({"eval_files": ["SHORT"]}, "give no n-grams"),
    ({"eval_files": ["BROKEN"]}, "BROKEN:2: not JSON"),
    ({"eval_files": ["NOTGZ"]}, "NOTGZ: cannot be read as compressed UTF-8 JSONL"),
])
def test_bad_decontaminate_parameters_fail_at_construction(tmp_path, params, says):
    made = {"E": eval_files(tmp_path)[0],
            "SHORT": jsonl(tmp_path / "short.jsonl", [{"text": "only a few words here"}]),
            "BROKEN": write(tmp_path / "broken.jsonl", json.dumps({"text": PASSAGE}) + "\n{oops\n"),
            "NOTGZ": write(tmp_path / "plain.jsonl.gz", json.dumps({"text": PASSAGE}) + "\n")}
    params = {k: [made.get(x, x) for x in v] if isinstance(v, list) else v for k, v in params.items()}
    says = says.replace("BROKEN", made["BROKEN"]).replace("NOTGZ", made["NOTGZ"])
    with pytest.raises(FilterParamError) as e:
        Decontaminate(**params)
    assert says in str(e.value)


def _exact_13grams(text: str) -> set[tuple[str, ...]]:
    """The reference: word 13-grams as tuples of strings (no hashing at all)."""
    w = [m.group().lower() for m in re.finditer(r"\w+", text)]
    return {tuple(w[i:i + 13]) for i in range(len(w) - 12)}


def test_decontamination_on_real_news_equals_exact_matching(tmp_path):
    """Five BBC articles as a held-out benchmark: the filter flags exactly the
    documents sharing a 13-gram with them (by an exact, unhashed reference), in the
    BBC corpus and in the near-duplicate corpus built from it, which re-publishes
    articles under other sites' navigation."""
    bbc = read_jsonl_gz(shared_corpus("news_bbc.jsonl.gz"))
    nd = [r for r in read_jsonl_gz(shared_corpus("neardup_dev.jsonl.gz")) if r["domain"] == "news_bbc"]
    truth = json.loads(gzip.decompress(shared_corpus("neardup_dev_truth.json.gz").read_bytes()))
    held = bbc[100:105]
    path = jsonl(tmp_path / "bbc_heldout.jsonl", [{"text": r["text"]} for r in held])
    f = Decontaminate(eval_files=[path])
    ref = set().union(*(_exact_13grams(r["text"]) for r in held))
    for rows in (bbc, nd):
        got = {r["id"] for r in rows if not f(r["text"]).keep}
        want = {r["id"] for r in rows if _exact_13grams(r["text"]) & ref}
        assert got == want
    bbc_got = {r["id"] for r in bbc if not f(r["text"]).keep}
    assert {r["id"] for r in held} < bbc_got and len(bbc_got) < 10     # the five, and few others
    nd_got = {r["id"] for r in nd if not f(r["text"]).keep}
    origins = {truth["origin"][i] for i in nd_got if i in truth["origin"]}
    # every re-publication of a held-out article is caught, whatever site wraps it
    copies = {i for i, o in truth["origin"].items() if o in origins}
    assert origins and copies <= nd_got


# ================================================================ the contract, the registry, `curate filter`

@pytest.fixture
def crawl_filters(tmp_path) -> dict:
    return {"url": URLFilter(domains_file=write(tmp_path / "d.txt", "example.com\n")),
            "pii": PIIRedactor(),
            "decontaminate": Decontaminate(eval_files=eval_files(tmp_path)),
            "decontaminate_redact": Decontaminate(eval_files=eval_files(tmp_path), mode="redact")}


@pytest.mark.parametrize("which", ["url", "pii", "decontaminate", "decontaminate_redact"])
def test_str_mapping_and_document_agree_and_non_text_is_an_input_error(crawl_filters, which):
    f = crawl_filters[which]
    for text in ("Mail ann@example.com about it.", f"Quoting: {PASSAGE}.", "Plain words."):
        v = f(text)
        assert f({"text": text, "id": "x"}) == v and f(Document(id="x", text=text)) == v
    assert f.reasons == tuple(f"{f.name}:{r}" for r in f.rules)
    for bad in (None, 42, b"bytes", {"content": "x"}, {"text": None}):
        with pytest.raises(FilterInputError):
            f(bad)



def test_the_three_load_by_name_from_filter_yaml(tmp_path):
    chain = load_chain(config={"filters": [
        {"url": {"domains_file": write(tmp_path / "b.txt", "example.com\n")}},
        "pii",
        {"decontaminate": {"eval_files": eval_files(tmp_path)}}]})
    assert [f.name for f in chain.filters] == ["url", "pii", "decontaminate"]
    assert chain.tallies == ("pii.email", "pii.ip_address", "pii.phone")
    assert "url:blocked_domain" in chain.reasons and "decontaminate:contaminated" in chain.reasons
    with pytest.raises(ConfigError, match=r"config.filters\[0\]: url.domains_file: cannot read"):
        load_chain(config={"filters": [{"url": {"domains_file": str(tmp_path / "none.txt")}}]})
    with pytest.raises(ConfigError, match=r"config.filters\[1\]: pii.kinds"):
        load_chain(config={"filters": ["length", {"pii": {"kinds": ["fax"]}}]})


@pytest.fixture
def bucket(tmp_path):
    """(the object-store stand-in's URL prefix, the local folder behind it)"""
    from tests.remote_fs import PREFIX, ROOT
    ROOT[:] = [str(tmp_path / "bucket")]
    yield PREFIX, Path(ROOT[0])
    ROOT.clear()


def test_curate_filter_counts_rules_and_tallies_pii(tmp_path, bucket):
    from tests.test_filter_pipeline import rows_of, run_filter
    para = ("The museum in the old town opened a new wing this spring, and visitors can now see "
            "the collection of letters and tools from the years of the canal.")
    corpus = tmp_path / "in"
    docs = [
        {"id": "blocked", "text": para, "url": "https://shop.blocked.example/x"},
        {"id": "ads", "text": para, "url": "https://news.site.org/ads/1"},
        {"id": "no-url", "text": para + " Write to ann@example.com or call (415) 555-2671."},
        {"id": "ips", "text": para + " Seen from 93.184.216.34 and 8.8.4.4, mail bob@example.org.",
         "url": "https://news.site.org/2"},
        {"id": "leak", "text": para + "\n" + PASSAGE + ".", "url": "https://blog.site.org/3"},
        {"id": "clean", "text": para, "url": "https://news.site.org/4"},
        {"id": "private", "text": para + " Router at 192.168.1.1, docs at 203.0.113.9.",
         "url": "https://news.site.org/5"},
    ]
    corpus.mkdir()
    lines = [json.dumps(d) for d in docs[:4]] + ['{"id": "broken", "text": ', json.dumps(
        {"id": "bad-url", "text": para, "url": 12})]
    write(corpus / "a.jsonl", "\n".join(lines) + "\n")
    jsonl(corpus / "b.jsonl", docs[4:])
    # the block list is local, the evaluation set is on the object-store stand-in
    blocklist = write(tmp_path / "lists" / "domains.txt", "# ours\nblocked.example\n")
    substrings = write(tmp_path / "lists" / "subs.txt", "/ads/\n")
    prefix, behind = bucket
    remote_evals = [prefix + Path(p).relative_to(behind).as_posix() for p in eval_files(behind)]
    cfg = write(tmp_path / "chain.yaml", json.dumps({"filters": [
        {"url": {"domains_file": blocklist, "substrings_file": substrings}},
        "pii",
        {"decontaminate": {"eval_files": remote_evals}}]}))
    out = tmp_path / "out"
    m = run_filter(corpus, out, "--config", cfg)

    c = m["counts"]
    assert c["input"] == c["kept"] + c["removed"] + c["rejected"] == 9
    assert (c["kept"], c["removed"], c["rejected"], c["edited"]) == (4, 3, 2, 2)
    assert c["rejected_by_cause"] == {"filter_error": 1, "malformed_json": 1}
    assert m["removed_by_reason"] == {"url:blocked_domain": 1, "url:blocked_substring": 1,
                                      "url:missing_url": 0, "decontaminate:contaminated": 1}
    assert m["tallies"] == {"pii.email": 2, "pii.ip_address": 2, "pii.phone": 1}
    for key, n in m["tallies"].items():
        assert m["counters"][f"tally_{key}"] == n
    assert m["balance"]["ok"] and m["parts_agree"]["ok"] and m["reconciled"]["ok"]
    chain = {f["name"]: f for f in m["chain"]}
    assert chain["url"]["loaded"]["domains"] == 1 and chain["decontaminate"]["loaded"]["ngrams"] > 0

    # what was written says the same: placeholders in documents/, reasons in removed/
    kept = {r["id"]: r["text"] for r in rows_of(out, "documents")}
    assert set(kept) == {"no-url", "ips", "clean", "private"}
    for kind, ph in (("email", "<EMAIL_ADDRESS>"), ("ip_address", "<IP_ADDRESS>"), ("phone", "<PHONE_NUMBER>")):
        assert sum(t.count(ph) for t in kept.values()) == m["tallies"][f"pii.{kind}"]
    assert kept["ips"].endswith("Seen from <IP_ADDRESS> and <IP_ADDRESS>, mail <EMAIL_ADDRESS>.")
    assert kept["private"] == docs[6]["text"] and kept["clean"] == para
    removed = {r["id"]: (r["reason"], json.loads(r["signals"])) for r in rows_of(out, "removed")}
    assert removed["blocked"][0] == "url:blocked_domain"
    assert removed["blocked"][1]["url.domain"] == "blocked.example"
    assert removed["ads"][0] == "url:blocked_substring"
    assert removed["leak"][0] == "decontaminate:contaminated"
    assert removed["leak"][1]["decontaminate.benchmark"] == "reading_comp"
    rejected = {r["cause"]: r for r in rows_of(out, "rejected")}
    assert "must be a str, got int" in rejected["filter_error"]["detail"]
