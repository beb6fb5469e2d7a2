"""WARC input on real HTML (Debian's Python documentation packed by warcio): every
response record becomes a document or a rejected row with its cause, the other
records are counted apart, damage is never silent, and splits read what a
whole-file read does."""
import gzip
import json

import lxml.html
import pytest

from curation.documents import InputError, Rejected
from curation.io import expand_inputs, read_documents
from curation.io.warc import WARC_CAUSES, decode_body
from curation.splits import ready_splits
from curation.verify import count_input_records
from tests.warc_fixture import html_pages, write_warc

PAGES = html_pages(40)
pytestmark = pytest.mark.skipif(not PAGES, reason="Debian's python3.11-doc is not installed "
                                "(tests/setup.sh installs it)")


@pytest.fixture(scope="module")
def warc(tmp_path_factory):
    d = tmp_path_factory.mktemp("warc")
    path = d / "crawl.warc.gz"
    recs = write_warc(path, PAGES, special=True)
    plain = d / "crawl.warc"
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    return path, plain, recs


def _read(path, **kw):
    reader = read_documents(expand_inputs([str(path)])[0], **kw)
    return list(reader), reader.stats


def test_every_response_is_a_document_or_a_rejected_row(warc):
    path, plain, recs = warc
    for p in (path, plain):
        out, stats = _read(p)
        want = {r["position"]: r for r in recs if r["expect"] is not None}
        assert [o.line for o in out] == sorted(want)            # one outcome per response, in order
        for o in out:
            r = want[o.line]
            if r["expect"] == "document":
                assert not isinstance(o, Rejected), (r, o)
                assert o.id == r["id"] and o.meta["url"] == r["url"] and o.domain == "docs.python.org"
                assert o.meta["date"] and o.text.strip()
            else:
                assert isinstance(o, Rejected) and o.cause == r["expect"], (r, o)
                assert r["url"] in o.detail
        assert stats.other_records == sum(r["expect"] is None for r in recs)   # warcinfo, requests
        assert stats.records == len(want) and stats.rejected_by_cause == {
            "not_html": 2, "undecodable_html": 1, "empty_extraction": 1}
        assert set(stats.rejected_by_cause) <= WARC_CAUSES


def test_the_main_text_is_extracted_and_the_navigation_is_not(warc):
    path, _, recs = warc
    out, _ = _read(path)
    docs = {o.meta["url"]: o.text for o in out if not isinstance(o, Rejected)}
    checked = 0
    for url, html in PAGES:
        tree = lxml.html.fromstring(html)
        h1 = [h.text_content().strip().rstrip("¶").strip() for h in tree.xpath('//div[@role="main"]//h1')]
        if not h1:
            continue
        text = docs[url]
        assert h1[0] in text, url
        # Sphinx's sidebar and footer are not main text
        assert "Navigation" not in text and "Theme" not in text.split()[:5], url
        assert "Found a bug?" not in text, url
        checked += 1
    assert checked >= 30
    latin = next(t for u, t in docs.items() if u.endswith("latin1.html"))
    assert "Café crème à la française" in latin
    assert "Compressed page" in next(t for u, t in docs.items() if u.endswith("gzipped.html"))


def test_a_truncated_or_corrupt_file_says_so(warc, tmp_path):
    path, plain, recs = warc
    data = path.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[:len(data) // 2])
    out, stats = _read(cut)
    last = out[-1]
    assert isinstance(last, Rejected) and last.cause == "truncated_file" and "of its" in last.detail
    assert stats.documents > 5
    pcut = tmp_path / "cut.warc"
    raw = plain.read_bytes()
    pcut.write_bytes(raw[:-10])                      # inside the last record
    out, _ = _read(pcut)
    assert out[-1].cause == "truncated_file" and out[-1].line == recs[-1]["position"]
    bad = bytearray(data)
    bad[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    broken = tmp_path / "broken.warc.gz"
    broken.write_bytes(bytes(bad))
    out, _ = _read(broken)
    assert out[-1].cause in ("corrupt_data", "truncated_file")
    with pytest.raises(InputError, match="truncated_file"):
        _read(cut, strict=True)
    # the reconciliation's count of positions agrees with the reader's
    for p in (path, plain, cut, pcut):
        f = expand_inputs([str(p)])[0]
        counted = count_input_records(f, 8 << 20)
        got, stats = _read(p)
        assert counted.is_record.sum() == len(got)
        assert sorted(o.line for o in got) == counted.is_record.nonzero()[0].tolist()
        assert counted.other_records == stats.other_records


@pytest.mark.parametrize("which", ["gz", "plain"])
def test_splits_read_what_the_whole_file_reads(warc, which):
    path = warc[0] if which == "gz" else warc[1]
    f = expand_inputs([str(path)])[0]
    whole = [(type(o).__name__, o.line, getattr(o, "ordinal", None), getattr(o, "text", o.__dict__.get("cause")))
             for o in read_documents(f)]
    splits = ready_splits([f], split_bytes=60_000)
    assert len(splits) >= 4 and splits[0].start == 0
    assert all(a.stop == b.start for a, b in zip(splits, splits[1:]))
    parts = [(type(o).__name__, o.line, getattr(o, "ordinal", None), getattr(o, "text", o.__dict__.get("cause")))
             for s in splits for o in read_documents(s)]
    assert parts == whole


def test_one_gzip_stream_is_read_whole_with_a_warning(warc, tmp_path, caplog):
    one = tmp_path / "one.warc.gz"
    one.write_bytes(gzip.compress(gzip.decompress(warc[0].read_bytes())))
    f = expand_inputs([str(one)])[0]
    splits = ready_splits([f], split_bytes=60_000)
    assert splits == [f] and "one gzip member per record" in caplog.text


def test_http_body_encodings():
    body = b"<p>hello</p>"
    assert decode_body(gzip.compress(body), "", "gzip") == body
    chunked = b"5\r\n<p>he\r\n7\r\nllo</p>\r\n0\r\n\r\n"
    assert decode_body(chunked, "chunked", "") == body
    import zlib
    assert decode_body(zlib.compress(body), "", "deflate") == body
    assert decode_body(zlib.compress(body)[2:-4], "", "deflate") == body   # raw deflate
    with pytest.raises(ValueError, match="not supported"):
        decode_body(body, "", "br")
    with pytest.raises(ValueError, match="chunk"):
        decode_body(b"zz\r\n", "chunked", "")


def test_dedup_counts_every_warc_record(warc, tmp_path):
    """A Beam stage reads WARC inputs like any other: the balance holds, the other
    records are counted, and the outputs reconcile with the input records."""
    from pipelines.cli import main
    path, _, recs = warc
    out = tmp_path / "dedup"
    assert main(["dedup", "--input", str(path), "--output", str(out),
                 "--direct_running_mode=in_memory", "--direct_num_workers=1"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    responses = sum(r["expect"] is not None for r in recs)
    assert c["input"] == responses and c["rejected"] == 4
    assert c["warc_records_skipped"] == len(recs) - responses
    assert c["rejected_by_cause"] == {"empty_extraction": 1, "not_html": 2, "undecodable_html": 1}
    assert m["reconciled"]["ok"] and m["reconciled"]["other_records"] == len(recs) - responses


def test_input_format_reads_a_warc_named_otherwise(warc, tmp_path):
    """--input-format warc: a crawl file whose name does not say WARC."""
    odd = tmp_path / "crawl.data"
    odd.write_bytes(warc[0].read_bytes())
    with pytest.raises(ValueError, match="--input-format"):
        expand_inputs([str(odd)])
    f = expand_inputs([str(odd)], input_format="warc")[0]
    assert f.format == "warc"
    assert [o.line for o in read_documents(f)] == [o.line for o in read_documents(expand_inputs([str(warc[0])])[0])]
    assert [x.format for x in expand_inputs([str(tmp_path)], input_format="warc")] == ["warc"]


def test_filter_counts_every_warc_record(warc, tmp_path):
    from pipelines.cli import main
    path, _, recs = warc
    out = tmp_path / "filter"
    assert main(["filter", "--input", str(path), "--output", str(out), "--preset", "minimal",
                 "--direct_running_mode=in_memory", "--direct_num_workers=1"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    responses = sum(r["expect"] is not None for r in recs)
    assert m["counts"]["input"] == responses and m["counts"]["rejected"] == 4
    assert m["counts"]["warc_records_skipped"] == len(recs) - responses
    assert m["reconciled"]["ok"]
