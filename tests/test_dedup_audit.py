"""`curate dedup-audit` (curation.audit): a real dedup run over demo text with planted
near duplicates, the sample drawn from it, its page in headless Chromium (choices made,
kept across a reload, saved), and the scores of saved choices."""
from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.audit import (CHOICE_VALUES, allocate, candidate_bands, make_strata, score_audit,
                            wilson)
from curation.demo import demo_files
from curation.io import read_rows
from curation.minhash import MinHasher, estimate_jaccard
from pipelines.cli import main
from tests.report_fixture import CHROMIUM, playwright_or_fail

REPO = Path(__file__).resolve().parents[1]
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
EXTERNAL_REF = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
HOSTILE = ('<script>alert(1)</script> <img src="http://203.0.113.9/x.png" onerror=alert(2)> '
           '</textarea></article> "quoted" & <b>bold</b>')


def _write_jsonl_gz(path: Path, rows) -> None:
    with gzip.open(path, "wb") as f:
        for r in rows:
            f.write((json.dumps(r) + "\n").encode())


def _edit(text: str, target: float, tag: str, offset: int = 0) -> str:
    """`text` with words replaced at even spacing so that its word-5-gram Jaccard with
    the original is about `target` (each replaced word changes 5 shingles)."""
    w = text.split()
    k = max(1, round(len(w) * (1 - target) / (5 * (1 + target))))
    for i, p in enumerate(np.linspace(3 + offset, len(w) - 4, k).astype(int)):
        w[p] = f"{tag}{i}q"
    return " ".join(w)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Demo text in a.jsonl.gz; planted variants in b.jsonl.gz and c.parquet (read
    after a, so every original is the document its cluster keeps)."""
    d = tmp_path_factory.mktemp("audit_corpus")
    docs = []
    for path in demo_files():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f)
    long = [x for x in docs if 400 <= len(x["text"].split()) <= 1500
            and x["domain"] in ("email", "reference", "docs", "web", "wiki", "speeches")]
    short = [x for x in docs if len(x["text"].split()) < 400 and x["domain"] in ("reference", "email")]
    base = long[:240] + short[:200]
    hostile = dict(long[240])
    words = hostile["text"].split()
    hostile["text"] = " ".join([HOSTILE] + words[:200] + [HOSTILE] + words[200:])
    hostile["id"] = "hostile-<b>&"
    base.append(hostile)
    variants, planted = [], {}

    def plant(src, text, kind, suffix):
        v = {"id": f"{src['id']}#{suffix}", "text": text, "domain": src.get("domain")}
        variants.append(v)
        planted[v["id"]] = (kind, src["id"])

    for i in range(3):
        plant(long[i], _edit(long[i]["text"], 0.98, "lt"), "light", "light")
        plant(long[10 + i], _edit(long[10 + i]["text"], 0.9, "md"), "medium", "medium")
        plant(long[20 + i], _edit(long[20 + i]["text"], 0.84, "hv"), "heavy", "heavy")
    for i in range(4):
        plant(long[30 + i], _edit(long[30 + i]["text"], 0.66, "nm"), "near_miss", "nearmiss")
    for i in range(2):
        plant(long[40 + i], long[40 + i]["text"].upper(), "exact", "exact")
    plant(hostile, _edit(hostile["text"], 0.98, "hs"), "light", "light")
    # a chain A-B-C-D-E-F: each step's edits sit between the last one's and share an LSH
    # band with the next (checked for 12x10 and 9x13 bands); A-F is far below the threshold
    a, chain = long[50], []
    text = a["text"]
    for step in range(5):
        text = _edit(text, 0.9, f"c{step}x", 11 * step)
        plant(a, text, "chain", f"chain{step + 1}")
        chain.append(f"{a['id']}#chain{step + 1}")
    _write_jsonl_gz(d / "a.jsonl.gz", base)
    half = len(variants) // 2
    _write_jsonl_gz(d / "b.jsonl.gz", variants[:half])
    pq.write_table(pa.Table.from_pylist(variants[half:]), d / "c.parquet")
    texts = {x["id"]: x["text"] for x in base + variants}
    return {"dir": d, "texts": texts, "planted": planted, "chain": [a["id"], *chain]}


def _dedup(corpus, out: Path, *extra) -> dict:
    inputs = ["--input", str(corpus["dir"] / "*.jsonl.gz"), "--input", str(corpus["dir"] / "*.parquet")]
    assert main(["dedup", *inputs, "--output", str(out), *extra, *FAST]) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> dict:
    """The default dedup run and an audit of every pair it offers."""
    root = tmp_path_factory.mktemp("audit_run")
    out = root / "dedup"
    manifest = _dedup(corpus, out)
    audit = root / "audit"
    assert main(["dedup-audit", str(out), "--output", str(audit), "--sample", "400",
                 "--near-miss-share", "0.5"]) == 0
    return {"root": root, "out": out, "manifest": manifest, "audit": audit,
            "pairs": json.loads((audit / "pairs.json").read_text())}


def _clusters(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "clusters").glob("*")):
        rows.extend(read_rows(str(p)))
    return rows


# ------------------------------------------------------------------ pieces

def test_allocation_is_equal_with_leftovers_passed_on():
    assert allocate(10, [100, 100, 100]) == [4, 3, 3]
    assert allocate(10, [1, 0, 100, 2]) == [1, 0, 7, 2]
    assert allocate(10, [2, 3]) == [2, 3]
    assert allocate(0, [5]) == [0]


def test_strata_cover_every_estimate_once():
    strata = make_strata(0.8, 0.7293)
    removed = [s for s in strata if s["group"] == "removed"]
    assert [(s["lo"], s["hi"]) for s in removed] == [(0.0, 0.7293), (0.7293, 0.8), (0.8, 0.875),
                                                     (0.875, 0.95), (0.95, 1.0)]
    assert [s["id"] for s in strata if s["group"] == "unmatched"] == ["unmatched[0.65,0.729)",
                                                                     "unmatched[0.729,1]"]
    # --verify exact / none: the threshold is where verification cut
    assert [s["lo"] for s in make_strata(0.8, 0.8, near_miss=False)] == [0.0, 0.8, 0.875, 0.95]


def test_wilson_and_candidate_bands():
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.73          # all agree: the interval still has width
    assert wilson(0, 0) is None
    b, r, p = candidate_bands(0.65, 128)
    assert b * r <= 128 and p >= 0.99


# ------------------------------------------------------------------ the audit of a real run

def test_strata_add_up_and_every_pair_is_the_right_documents(run, corpus):
    doc, m = run["pairs"], run["manifest"]
    removed = [s for s in doc["strata"] if s["group"] == "removed"]
    assert sum(s["population"] for s in removed) == m["counts"]["removed_near"] > 0
    assert doc["exact_duplicates"] == {**doc["exact_duplicates"], "removed": m["counts"]["removed_exact"],
                                       "sampled": 0}
    assert m["counts"]["removed_exact"] >= 2
    # --sample 400 is more than there are pairs: every one was drawn
    assert all(s["sampled"] == s["available"] for s in doc["strata"])
    assert len(doc["pairs"]) == sum(s["available"] for s in doc["strata"])
    assert len({p["id"] for p in doc["pairs"]}) == len(doc["pairs"])

    rows = _clusters(run["out"])
    by_id = {r["id"]: r for r in rows}
    mh = MinHasher(num_perm=128, seed=1)
    strata = {s["id"]: s for s in doc["strata"]}
    for p in doc["pairs"]:
        a, b = p["a"], p["b"]
        for side in (a, b):
            assert side["text"] == corpus["texts"][side["id"]].strip() and not side["truncated"]
        est = estimate_jaccard(*mh.signatures([corpus["texts"][a["id"]], corpus["texts"][b["id"]]]))
        assert p["estimated_jaccard"] == pytest.approx(est, abs=1e-6)
        s = strata[p["stratum"]]
        assert s["lo"] <= est < s["hi"] or (s["hi"] == 1.0 and est == 1.0)
        if p["group"] == "removed":
            # a removed near duplicate beside the document its cluster keeps
            rb = by_id[b["id"]]
            assert rb["reason"] == "near_duplicate" and rb["cluster_id"] == a["id"]
            assert by_id[a["id"]]["kept"] and (rb["source"], rb["line"]) == (b["source"], b["line"])
        else:
            ca = by_id.get(a["id"], {}).get("cluster_id", a["id"])
            cb = by_id.get(b["id"], {}).get("cluster_id", b["id"])
            assert ca != cb and est >= 0.65
    # the planted variants are where their edits put them
    stratum_of = {p["b"]["id"]: p["stratum"] for p in doc["pairs"] if p["group"] == "removed"}
    found = {(p["a"]["id"], p["b"]["id"]) for p in doc["pairs"] if p["group"] == "unmatched"}
    for vid, (kind, src) in corpus["planted"].items():
        if kind == "light":
            assert stratum_of[vid] == "removed[0.95,1]", vid
        elif kind == "medium":
            assert stratum_of[vid] in ("removed[0.875,0.95)", "removed[0.95,1]"), vid
        elif kind == "heavy":     # or missed by LSH (about one in eight at 0.84): then found apart
            assert stratum_of.get(vid) in ("removed[0.8,0.875)", "removed[0.875,0.95)",
                                           "removed[0.729,0.8)") or (src, vid) in found, vid
        elif kind == "near_miss":
            assert vid not in stratum_of
    near_misses = [(src, vid) for vid, (kind, src) in corpus["planted"].items() if kind == "near_miss"]
    assert sum(pair in found for pair in near_misses) >= 3
    s = doc["unmatched_search"]
    assert s["documents_sampled"] == s["documents"] == m["counts"]["input_documents"]
    assert s["pair_scale"] == 1.0


def test_a_chain_lands_in_the_stratum_below_the_threshold(corpus, tmp_path):
    """--verify none keeps what LSH chained: the chain's far end is removed beside a kept
    document it shares far fewer shingles with. JSONL output here."""
    out = tmp_path / "dedup"
    _dedup(corpus, out, "--verify", "none", "--output-format", "jsonl.gz")
    audit = tmp_path / "audit"
    assert main(["dedup-audit", str(out), "--output", str(audit), "--sample", "400",
                 "--near-miss-docs", "0"]) == 0
    doc = json.loads((audit / "pairs.json").read_text())
    assert [s["group"] for s in doc["strata"]] == ["removed"] * 4      # no search, no unmatched strata
    a, *chain = corpus["chain"]
    got = {p["b"]["id"]: p for p in doc["pairs"]}
    far = got[chain[-1]]
    assert far["a"]["id"] == a and far["stratum"] == "removed[0,0.8)"
    assert far["estimated_jaccard"] < 0.72
    assert main(["dedup-audit", str(audit), "--score"]) == 2            # nothing saved yet


def test_the_sample_is_seeded_and_stratified(run, tmp_path):
    out = run["out"]
    argv = ["dedup-audit", str(out), "--sample", "9", "--near-miss-share", "0.34"]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 0
    assert main([*argv, "--output", str(tmp_path / "b")]) == 0
    assert main([*argv, "--output", str(tmp_path / "c"), "--seed", "1"]) == 0
    a, b, c = ((tmp_path / x / "pairs.json").read_bytes() for x in "abc")
    assert a == b
    assert (tmp_path / "a" / "audit.html").read_bytes() == (tmp_path / "b" / "audit.html").read_bytes()
    assert a != c
    da, dc = json.loads(a), json.loads(c)
    assert da["fingerprint"] != dc["fingerprint"]
    keys = [{(p["a"]["id"], p["b"]["id"]) for p in d["pairs"]} for d in (da, dc)]
    assert keys[0] != keys[1]
    sampled = {s["id"]: s["sampled"] for s in da["strata"]}
    unmatched = sum(v for k, v in sampled.items() if k.startswith("unmatched"))
    assert unmatched == 3 and sum(sampled.values()) == 9
    rem = [s for s in da["strata"] if s["group"] == "removed" and s["available"]]
    # equal shares over the non-empty removed strata, as far as each has pairs
    assert max(s["sampled"] for s in rem) - min(s["sampled"] for s in rem if s["available"] > 1) <= 1
    assert Counter(p["stratum"] for p in da["pairs"]) == Counter({k: v for k, v in sampled.items() if v})


def test_the_page_escapes_corpus_text_and_fetches_nothing(run):
    html = (run["audit"] / "audit.html").read_text(encoding="utf-8")
    assert HOSTILE not in html and "<img" not in html and "<b>bold" not in html
    assert html.lower().count("<script") == 1                            # the page's own
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2
    assert "hostile-&lt;b&gt;&amp;" in html
    assert not EXTERNAL_REF.search(html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    doc = run["pairs"]
    assert any(HOSTILE in p["a"]["text"] for p in doc["pairs"])         # it was drawn, and shown
    assert "exact duplicates" in html


def test_building_and_scoring_never_import_beam(run, tmp_path):
    code = ("import sys\n"
            "from curation.audit import build_audit\n"
            f"build_audit({str(run['out'])!r}, {str(tmp_path / 'a')!r}, sample=5)\n"
            "assert 'apache_beam' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_usage_errors_are_named(run, tmp_path, capsys):
    out = str(run["out"])
    assert main(["dedup-audit", out]) == 2
    assert "needs --output AUDIT" in capsys.readouterr().err
    assert main(["dedup-audit", out, "--output", str(tmp_path / "x"), "--runner", "DataflowRunner"]) == 2
    assert "not a flag of this command" in capsys.readouterr().err
    assert main(["dedup-audit", out, "--output", str(run["out"] / "audit")]) == 2
    assert "inside the dedup output" in capsys.readouterr().err
    assert main(["dedup-audit", str(run["audit"]), "--score", "--sample", "5"]) == 2
    assert "--sample belong to drawing the sample" in capsys.readouterr().err
    assert main(["dedup-audit", str(tmp_path), "--output", str(tmp_path / "y")]) == 2
    assert "no readable manifest.json" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["dedup-audit", out, "--output", str(foreign)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert main(["dedup-audit", out, "--output", str(tmp_path / "z"), "--near-miss-share", "2"]) == 2


def test_inputs_changed_since_the_run_are_refused(corpus, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(list(corpus["texts"].values())[:40])]
    docs.append({"id": "copy", "text": _edit(docs[0]["text"], 0.98, "x")})
    _write_jsonl_gz(d / "a.jsonl.gz", docs)
    out = tmp_path / "dedup"
    assert main(["dedup", "--input", str(d / "a.jsonl.gz"), "--output", str(out), *FAST]) == 0
    _write_jsonl_gz(d / "a.jsonl.gz", docs + [{"id": "late", "text": "one more document"}])
    assert main(["dedup-audit", str(out), "--output", str(tmp_path / "audit")]) == 1
    assert "changed since the dedup run" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()


# ------------------------------------------------------------------ scoring

def _choices_file(path: Path, fingerprint: str, choices: dict) -> Path:
    path.write_text(json.dumps({"audit": fingerprint, "choices": choices}))
    return path


def _expected(doc: dict, choices: dict) -> tuple[float, float]:
    """Precision and recall by the formulas of docs/audit.md, computed apart."""
    tally = defaultdict(Counter)
    for p in doc["pairs"]:
        tally[p["stratum"]][choices.get(p["id"], "none")] += 1
    num = den = 0.0
    fn = 0.0
    for s in doc["strata"]:
        t = tally[s["id"]]
        n = t["same"] + t["different"]
        if s["group"] == "removed" and s["population"] and n:
            num += s["population"] * t["same"] / n
            den += s["population"]
        if s["group"] == "unmatched" and s["population"]:
            fn += s["population"] * t["same"] / n
    precision = num / den
    removed = sum(s["population"] for s in doc["strata"] if s["group"] == "removed")
    tp = removed * precision
    return precision, tp / (tp + fn)


def test_all_removed_pairs_judged_same_give_precision_one(run, tmp_path, capsys):
    doc = run["pairs"]
    choices = {p["id"]: "same" if p["group"] == "removed" else "different" for p in doc["pairs"]}
    path = _choices_file(tmp_path / "c.json", doc["fingerprint"], choices)
    assert main(["dedup-audit", str(run["audit"]), "--score", "--choices", str(path)]) == 0
    err = capsys.readouterr().err
    score = json.loads((run["audit"] / "score.json").read_text())
    assert score["precision"]["estimate"] == 1.0 and score["precision"]["interval_95"] == [1.0, 1.0]
    assert score["precision"]["conservative_range"][0] < 1.0
    assert score["recall"]["estimate"] == 1.0
    assert "precision of the" in err and "1.000" in err and "not sampled" in err


def test_choices_of_another_audit_are_refused(run, tmp_path, capsys):
    doc = run["pairs"]
    path = _choices_file(tmp_path / "c.json", "0123456789abcdef", {doc["pairs"][0]["id"]: "same"})
    assert main(["dedup-audit", str(run["audit"]), "--score", "--choices", str(path)]) == 2
    assert "another audit" in capsys.readouterr().err
    path = _choices_file(tmp_path / "d.json", doc["fingerprint"], {"p999999": "same"})
    assert main(["dedup-audit", str(run["audit"]), "--score", "--choices", str(path)]) == 2
    assert "p999999" in capsys.readouterr().err
    path = _choices_file(tmp_path / "e.json", doc["fingerprint"], {doc["pairs"][0]["id"]: "yes"})
    assert main(["dedup-audit", str(run["audit"]), "--score", "--choices", str(path)]) == 2
    assert "'yes'" in capsys.readouterr().err


def test_a_new_sample_does_not_overwrite_choices_of_another(run, tmp_path, capsys):
    audit = tmp_path / "audit"
    assert main(["dedup-audit", str(run["out"]), "--output", str(audit), "--sample", "5"]) == 0
    fp = json.loads((audit / "pairs.json").read_text())["fingerprint"]
    _choices_file(audit / "choices.json", fp, {})
    # the same sample again: its choices stay valid
    assert main(["dedup-audit", str(run["out"]), "--output", str(audit), "--sample", "5"]) == 0
    assert main(["dedup-audit", str(run["out"]), "--output", str(audit), "--sample", "6"]) == 2
    assert "holds choices for the audit" in capsys.readouterr().err


# ------------------------------------------------------------------ in a real browser

def _scripted(doc: dict) -> dict:
    """A mix: a third of the removed pairs below 0.95 different, one unsure, the
    unmatched pairs alternately same and different."""
    out, seen = {}, Counter()
    for p in doc["pairs"]:
        i = seen[p["stratum"]]
        seen[p["stratum"]] += 1
        if p["group"] == "removed":
            out[p["id"]] = "different" if i % 3 == 0 and p["stratum"] != "removed[0.95,1]" else "same"
        else:
            out[p["id"]] = "same" if i % 2 == 0 else "different"
    first_high = next(p["id"] for p in doc["pairs"] if p["stratum"] == "removed[0.95,1]")
    out[first_high] = "unsure"
    return out


def test_the_page_in_headless_chromium_keeps_and_saves_choices(run, tmp_path, capsys):
    sync_playwright = playwright_or_fail()
    doc = run["pairs"]
    page_path = tmp_path / "audit.html"
    page_path.write_bytes((run["audit"] / "audit.html").read_bytes())
    url = page_path.resolve().as_uri()
    want = _scripted(doc)
    requests, errors = [], []
    saved = tmp_path / "audit_dir"
    saved.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
            page.goto(url, wait_until="load")
            n = len(doc["pairs"])
            assert page.locator("article.pair").count() == n
            assert page.locator("#progress").text_content() == f"0 of {n} judged"
            first = page.locator("article.pair").first
            assert first.locator(".doc").count() == 2 and first.locator(".doc").first.is_visible()
            assert page.locator("del, ins").count() > 0
            for pid, choice in want.items():
                page.locator(f"#{pid} input[value={choice}]").check()
            assert page.locator("#progress").text_content() == f"{n} of {n} judged"
            assert "not saved" in page.locator("#unsaved").text_content()
            # a fold opens and closes
            btn = page.locator("button.whole").first
            btn.click()
            assert btn.text_content() == "Show differences only"
            page.reload(wait_until="load")
            got = page.evaluate("""() => Object.fromEntries(Array.from(
                document.querySelectorAll('article.pair')).map(a => {
                    const c = a.querySelector('input:checked'); return [a.id, c ? c.value : null]; }))""")
            assert got == want                                   # kept across the reload
            assert page.locator("#progress").text_content() == f"{n} of {n} judged"
            with page.expect_download() as dl:
                page.locator("#save").click()
            download = dl.value
            assert download.suggested_filename == "choices.json"
            download.save_as(str(saved / "choices.json"))
            assert page.locator("#unsaved").text_content() == ""
            # a file from another audit is refused by the page too
            other = tmp_path / "other.json"
            other.write_text(json.dumps({"audit": "ffff", "choices": {}}))
            page.locator("#load").set_input_files(str(other))
            page.wait_for_function("document.getElementById('status').textContent.includes('another audit')")
            page.screenshot(path=str(REPO / "test-artifacts" / "dedup-audit.png"))
        finally:
            browser.close()
    assert set(requests) == {url}, requests                    # the page, loaded twice: nothing else
    assert errors == [], errors
    saved_choices = json.loads((saved / "choices.json").read_text())
    assert saved_choices == {"audit": doc["fingerprint"], "choices": want}

    (saved / "pairs.json").write_bytes((run["audit"] / "pairs.json").read_bytes())
    assert main(["dedup-audit", str(saved), "--score"]) == 0
    capsys.readouterr()
    score = json.loads((saved / "score.json").read_text())
    precision, recall = _expected(doc, want)
    assert score["precision"]["estimate"] == pytest.approx(precision)
    assert score["recall"]["estimate"] == pytest.approx(recall)
    assert 0 < precision < 1 and 0 < recall < 1
    lo, hi = score["precision"]["interval_95"]
    assert lo <= precision <= hi and hi - lo > 0
    lo, hi = score["recall"]["interval_95"]
    assert lo <= recall <= hi
    assert score["judged"]["unsure"] == 1 and score["judged"]["unjudged"] == 0
    for s in score["strata"]:
        if s["judged"]:
            assert s["wilson_95"][0] <= s["share_same"] <= s["wilson_95"][1]
    # the same choices through the library give the same figures
    again = score_audit(str(saved))
    assert again["precision"] == score["precision"] and again["recall"] == score["recall"]
    assert set(CHOICE_VALUES) >= set(want.values())
    assert math.isclose(sum(s["population"] for s in score["strata"] if s["group"] == "removed"),
                        run["manifest"]["counts"]["removed_near"])
