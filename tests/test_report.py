"""The mixture report (curation.report, `curate report`): its pieces, then a real run
directory built once by tests/report_fixture.py, then the HTML in headless Chromium."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from html import unescape as html_unescape
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curation.report import REPORT_FILES, write_report
from curation.report import svg
from curation.report.document import Diff, Excerpt, P, Section, Sub, Table, build_sections
from curation.report.funnel import choose_clusters, word_diff
from curation.report.render import md_escape, to_html, to_markdown
from curation.report.tokens import TokenCounter
from pipelines.cli import main
from tests.report_fixture import (CHROMIUM, HOSTILE_ID, HOSTILE_TEXT, SUBSET, build_run_dir,
                                  playwright_or_fail)

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("stages", "funnel", "clusters", "filters", "scores", "classifier", "mixture", "export",
            "cost", "timings")
PLOTS = ("funnel-documents", "funnel-tokens", "cluster-sizes", "filter-rules", "score-histograms",
         "fidelity", "candidate-weights", "best-so-far", "test-loss")
# a reference the browser would fetch: src=/href= naming another host
EXTERNAL_REF = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def silent(_msg):
    pass


# ------------------------------------------------------------------ pieces

def test_word_diff_marks_the_words_that_differ_and_keeps_both_texts():
    a = "the quick brown fox jumps over the lazy dog"
    b = "the quick red fox jumps over the lazy dog today"
    d = word_diff(a, b)
    assert d["left"] == [["=", "the quick"], ["-", "brown"], ["=", "fox jumps over the lazy dog"]]
    assert d["right"] == [["=", "the quick"], ["+", "red"], ["=", "fox jumps over the lazy dog"],
                          ["+", "today"]]
    assert " ".join(t for _, t in d["left"]) == a and " ".join(t for _, t in d["right"]) == b
    assert 0.8 < d["similarity"] < 1 and not d["truncated"]
    assert word_diff(a, a)["similarity"] == 1.0
    long = " ".join(f"w{i}" for i in range(400))
    cut = word_diff(long, long + " end", limit=100)
    assert cut["truncated"] and len(cut["left"][0][1].split()) == 100


def test_clusters_are_chosen_by_rule_not_by_shard_order():
    def member(i, kept, reason=None):
        return {"id": i, "kept": kept, "reason": reason, "source": "f", "line": 0}
    clusters = {
        "b": [member("b", True), member("b2", False, "near_duplicate")],
        "a": [member("a", True), member("a2", False, "near_duplicate")],
        "big-exact": [member("x", True)] + [member(f"x{i}", False, "exact_duplicate") for i in range(5)],
        "c": [member("c", True)] + [member(f"c{i}", False, "near_duplicate") for i in range(3)],
    }
    assert choose_clusters(clusters) == ["c", "a", "b"]
    assert choose_clusters(dict(reversed(list(clusters.items())))) == ["c", "a", "b"]
    assert choose_clusters(clusters, 10)[-1] == "big-exact"     # no near duplicate: last


def test_token_counter_estimate_and_tokenizer(report_run):
    est = TokenCounter()
    assert est.kind == "estimate" and "bytes / 4" in est.description
    assert est.count_many(["abcd", "abcdef", "é" * 3, ""]) == [1, 2, 2, 0]   # é is 2 bytes
    tok = TokenCounter.for_run(str(report_run / "mix"))
    assert tok.kind == "tokenizer" and "mix/tokenizer.json" in tok.description
    from tokenizers import Tokenizer
    ref = Tokenizer.from_file(str(report_run / "mix" / "tokenizer.json"))
    texts = ["Call me Ishmael.", "def f(x):\n    return x", "Call me Ishmael.", "日本語 text"]
    assert tok.count_many(texts) == [len(ref.encode(t).ids) for t in texts]
    assert tok.count_many(texts[:1]) == [len(ref.encode(texts[0]).ids)]          # from the memo
    # asked for, or chosen for a big input: the estimate, and the reason is said
    asked = TokenCounter.for_run(str(report_run / "mix"), mode="estimate")
    assert asked.kind == "estimate" and "--tokens estimate" in asked.description
    big = TokenCounter.for_run(str(report_run / "mix"), input_bytes=5 << 30)
    assert big.kind == "estimate" and "5.0 GiB" in big.description
    assert TokenCounter.for_run(str(report_run / "mix"), input_bytes=5 << 30,
                                mode="exact").kind == "tokenizer"
    assert TokenCounter.for_run(str(report_run / "mix"), input_bytes=1000).kind == "tokenizer"
    with pytest.raises(ValueError, match="auto, exact or estimate"):
        TokenCounter.for_run(str(report_run / "mix"), mode="fast")


def _parse(svg_text: str) -> ET.Element:
    root = ET.fromstring(svg_text)
    assert root.tag == "svg" and root.get("class") == "plot"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0
    assert root.find("title") is not None
    return root


def test_svg_builders_draw_what_they_are_given_and_escape_labels():
    hostile = 'a<b>&"c'
    s = svg.bar_chart("sizes", ["2", "3", hostile], [5, 0, 2], title="t<", xlabel="x", ylabel="y")
    root = _parse(s)
    assert root.get("data-plot") == "sizes"
    bars = [r for r in root.iter("rect")]
    assert len(bars) == 3 and float(bars[1].get("height")) == 0
    assert float(bars[0].get("height")) == pytest.approx(2.5 * float(bars[2].get("height")), rel=0.01)
    assert hostile in "".join(root.itertext()) and "<b>" not in s
    assert s == svg.bar_chart("sizes", ["2", "3", hostile], [5, 0, 2], title="t<", xlabel="x", ylabel="y")

    root = _parse(svg.hbar_chart("rules", ["r1", "r2"], [10, 30], title="rules"))
    widths = [float(r.get("width")) for r in root.iter("rect")]
    assert widths[1] == pytest.approx(3 * widths[0], rel=0.01)

    root = _parse(svg.stacked_hbar("funnel", ["d1", "d2"], ["kept", "removed"], [[3, 1], [0, 2]],
                                   title="f"))
    segs = [r for r in root.iter("rect") if r.find("title") is not None]   # legend swatches have none
    assert len(segs) == 3                                                 # the zero segment is not drawn
    w = [float(r.get("width")) for r in segs]
    assert w[0] == pytest.approx(3 * w[1], rel=0.01) and w[2] == pytest.approx(w[0] + w[1], rel=0.01)

    root = _parse(svg.line_chart("bsf", {"random": [(1, 2.0), (2, 1.5)], "natural": [(1, 1.8)]},
                                 title="b"))
    assert len(list(root.iter("path"))) == 1 and len(list(root.iter("circle"))) == 3

    root = _parse(svg.histograms("h", [("web", [0, 1, 4], 0.5), ("code", [2, 0, 0], None)], title="h"))
    dashed = [x for x in root.iter("line") if x.get("stroke-dasharray")]
    assert len(dashed) == 1                                               # one threshold given

    root = _parse(svg.dot_errorbars("loss", ["web", "code"],
                                    [("chosen", [1.0, 2.0], [0.1, 0.0], True),
                                     ("uniform", [1.2, float("nan")], [0.1, 0.1], False)], title="l"))
    assert len(list(root.iter("circle"))) == 3                            # NaN is skipped
    for empty in (svg.bar_chart("e", [], [], title="e"), svg.line_chart("e", {}, title="e"),
                  svg.stacked_hbar("e", [], [], [], title="e"), svg.histograms("e", [], title="e")):
        _parse(empty)


def test_scatter_labels_the_highlighted_points_and_escapes():
    s = svg.scatter("fid", [(2.1, 2.0, "uniform = unimax", True), (2.3, 2.2, "a<b", False),
                            (2.2, 2.05, "random-1", False)], title="f", xlabel="x", ylabel="y")
    root = _parse(s)
    circles = list(root.iter("circle"))
    assert len(circles) == 3 and "<b" not in s.replace("<b>", "")
    big = [c for c in circles if float(c.get("r")) > 4]
    assert len(big) == 1 and "uniform = unimax" in big[0].find("title").text
    assert "uniform = unimax" in [t.text for t in root.iter("text")]      # labelled on the plot
    assert "random-1" not in [t.text for t in root.iter("text")]          # the others in tooltips
    # lower-left to upper-right: a larger x is drawn further right, a larger y higher
    pos = {c.find("title").text.split(":")[0]: (float(c.get("cx")), float(c.get("cy"))) for c in circles}
    assert pos["a<b"][0] > pos["uniform = unimax"][0] and pos["a<b"][1] < pos["uniform = unimax"][1]
    _parse(svg.scatter("e", [], title="e"))


def test_mixture_section_leads_with_the_verdicts_and_the_fidelity_result(report_run, tmp_path):
    r = _report(report_run)
    html = (report_run / "report.html").read_text()
    m = r["mixture"]
    summary = json.loads((report_run / "mix" / "summary.json").read_text())
    f = summary["fidelity"]
    assert m["fidelity"]["ran"] and m["fidelity"]["spearman"] == pytest.approx(f["spearman"], abs=1e-6)
    assert len(m["fidelity"]["mixtures"]) == len(f["mixtures"])
    sec = re.search(r'<section id="mixture">(.*?)</section>', html, re.S).group(1)
    first = re.search(r"<p[^>]*>(.*?)</p>", sec, re.S).group(1)
    lead = html_unescape(first)
    assert "Chosen: " in lead and "against natural" in lead and "95% CI" in lead
    assert f["message"] in lead
    # the fidelity runs count in the cost section (and their seconds in the timings)
    assert r["cost"]["proxy_runs"]["fidelity_runs"] == summary["fidelity_runs"] > 0
    cost = re.search(r'<section id="cost">(.*?)</section>', html, re.S).group(1)
    assert f"{summary['fidelity_runs']:,} for the fidelity check" in cost
    timings = re.search(r'<section id="timings">(.*?)</section>', html, re.S).group(1)
    assert "for the fidelity check (" in timings
    # paired intervals beside the verdicts, not twice the noise
    assert "95% interval" in sec and "2 × seed noise" not in sec
    # the larger proxy disagrees: a warning, before the chosen weights
    run = _copy(report_run, tmp_path)
    p = run / "mix" / "summary.json"
    s = json.loads(p.read_text())
    s["fidelity"]["supported"] = False
    s["fidelity"]["message"] = ("The choice is not yet supported at the larger scale (x): the "
                                "larger proxy ranks the 5 mixtures with Spearman 0.10, below 0.8.")
    p.write_text(json.dumps(s))
    write_report(run, log=silent)
    html = (run / "report.html").read_text()
    sec = re.search(r'<section id="mixture">(.*?)</section>', html, re.S).group(1)
    first = re.search(r'<p class="warn">(.*?)</p>', sec, re.S)
    assert first and sec.index('<p class="warn">') < sec.index("<p")  + 1
    text = html_unescape(first.group(1))
    assert text.index("not yet supported") < text.index("Chosen: ")
    assert "Not yet supported by the larger proxy" in re.search(r'id="headline">(.*?)</p>', html).group(1)


def test_nice_ticks_cover_the_range():
    for lo, hi in ((0, 1), (0, 37), (2.21, 2.95), (0, 1_234_567), (5, 5)):
        t = svg.nice_ticks(lo, hi)
        assert t[0] <= lo and t[-1] >= hi and len(t) <= 8 and t == sorted(t)


def test_html_and_markdown_escape_corpus_text():
    hostile = '<script>alert(1)</script><img src="http://203.0.113.9/x.png"> | **bold** & [l](u)'
    sections = [Section("s", "S <b>", [P(hostile), Table(["h<"], [[hostile]]),
                                      Excerpt(hostile, hostile, hostile),
                                      Diff(hostile, hostile, hostile, [["=", hostile]], [["+", hostile]])])]
    html = to_html("t<script>", sections)
    assert "<script" not in html.lower() and "<img" not in html and "<b>" not in html
    assert not EXTERNAL_REF.search(html)
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    md = to_markdown("t", sections)
    assert "<script>" not in md and "<img" not in md
    assert md_escape("a|b") == "a\\|b" and md_escape("<x>") == "&lt;x&gt;" and md_escape("a&b") == "a&amp;b"


# ------------------------------------------------------------------ a real run directory

@pytest.fixture(scope="session")
def report_run(tmp_path_factory) -> Path:
    run = build_run_dir(tmp_path_factory.mktemp("report"))
    write_report(run, log=silent)
    return run


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    for name in REPORT_FILES:
        (dst / name).unlink()
    return dst


def test_funnel_balances_and_agrees_with_the_manifests(report_run):
    r = _report(report_run)
    f = r["funnel"]
    m = {s: json.loads((report_run / s / "manifest.json").read_text()) for s in ("dedup", "filter", "score")}
    rules = [k for k in f["rows"] if k.startswith("filter:")]
    assert f["stages"] == ["dedup", "filter", "score"] and set(SUBSET) < set(f["domains"])
    for d, v in f["domains"].items():
        docs = v["documents"]
        parts = (docs["exact_duplicate"] + docs["near_duplicate"] + sum(docs[k] for k in rules)
                 + docs["classifier"] + docs["rejected"] + docs["kept"])
        assert docs["input"] == parts, d
        assert v["balanced"]
    tot = f["total"]["documents"]
    assert tot["input"] == m["dedup"]["counts"]["input"] == sum(_input_records(report_run).values())
    assert tot["exact_duplicate"] == m["dedup"]["counts"]["removed_exact"] > 0
    assert tot["near_duplicate"] == m["dedup"]["counts"]["removed_near"] > 0
    assert tot["rejected"] == m["dedup"]["counts"]["rejected"] == 1
    assert f["domains"]["(none)"]["documents"]["rejected"] == 1        # the malformed record
    assert {k[len("filter:"):]: tot[k] for k in rules} == \
        {k: v for k, v in m["filter"]["removed_by_reason"].items() if v}
    assert tot["classifier"] == m["score"]["counts"]["removed"] > 0
    assert {d: f["domains"][d]["documents"]["kept"] for d in m["score"]["domains"]} == \
        {d: v["kept"] for d, v in m["score"]["domains"].items()}
    assert all(c["ok"] for c in r["checks"]), r["checks"]


def _input_records(run: Path) -> Counter:
    """Records (blank lines aside) in each input file, counted here from the raw bytes."""
    inputs = run.parent / "inputs"
    return Counter({p.name: sum(1 for x in gzip.open(p, "rt") if x.strip()) for p in inputs.iterdir()})


def test_token_counts_match_an_independent_recount(report_run):
    """Every token row, recounted from the files with the tokenizers library itself."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(report_run / "mix" / "tokenizer.json"))
    r = _report(report_run)
    f = r["funnel"]
    assert f["tokens"]["kind"] == "tokenizer" and f["tokens_partial"] == []

    def count(rows, key):
        out = defaultdict(Counter)
        for row in rows:
            out[row.get("domain") or "(none)"][key(row)] += len(tok.encode(row["text"]).ids)
        return out

    def shards(d):
        for p in sorted((report_run / d).glob("*.parquet")):
            yield from pq.read_table(p).to_pylist()

    kept = count(shards("score/documents"), lambda r: "kept")
    classifier = count(shards("score/removed"), lambda r: "classifier")
    rules = count(shards("filter/removed"), lambda r: "filter:" + r["reason"])
    # input and dedup removals: the raw input lines, joined with clusters/ on (file, line)
    removed = {(c["source"], c["line"]): c["reason"] for c in shards("dedup/clusters") if not c["kept"]}
    inp = defaultdict(Counter)
    for p in sorted((report_run.parent / "inputs").glob("*.jsonl.gz")):
        for line_no, line in enumerate(gzip.open(p, "rt", encoding="utf-8"), 1):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            n = len(tok.encode(row["text"]).ids)
            inp[row["domain"]]["input"] += n
            if (str(p), line_no) in removed:
                inp[row["domain"]][removed[(str(p), line_no)]] += n
    for d in SUBSET:
        t = f["domains"][d]["tokens"]
        assert t["kept"] == kept[d]["kept"] > 0
        assert t["classifier"] == classifier[d]["classifier"]
        assert t["input"] == inp[d]["input"]
        assert t["exact_duplicate"] == inp[d]["exact_duplicate"]
        assert t["near_duplicate"] == inp[d]["near_duplicate"]
        for k in f["rows"]:
            if k.startswith("filter:"):
                assert t[k] == rules[d][k], (d, k)
        attributed = sum(v for k, v in t.items() if k not in ("input", "not_on_file") and v)
        assert t["not_on_file"] == t["input"] - attributed
    assert sum(inp[d]["exact_duplicate"] + inp[d]["near_duplicate"] for d in SUBSET) > 0


def test_sections_plots_and_content(report_run):
    html = (report_run / "report.html").read_text()
    md = (report_run / "report.md").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert re.findall(r'data-plot="([^"]+)"', html) == list(PLOTS)
    assert not EXTERNAL_REF.search(html)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # the hostile page is shown, as text
    assert HOSTILE_ID in html and "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in html
    assert "<script>" not in md and HOSTILE_ID in md
    r = _report(report_run)
    examples = [e["id"] for e in r["filter_rules"]["examples"]["length:too_short"]]
    assert HOSTILE_ID in examples and examples == sorted(examples)
    assert r["filter_rules"]["examples"]["length:too_short"][examples.index(HOSTILE_ID)]["excerpt"] == HOSTILE_TEXT
    # clusters: sizes add up, examples carry a diff
    c = r["clusters"]
    assert sum(s * k for s, k in c["size_histogram"]) == c["documents_in_clusters"]
    assert c["examples"] and all("diff" in e["shown"] for e in c["examples"])
    # as a reader sees them: no cluster twice, and every example shows a difference
    heads = re.findall(r'<div class="diff"><h4>(Cluster [^<]*)</h4>(.*?)<p class="note">', html, re.S)
    assert len(heads) == len(c["examples"]) and len({h for h, _ in heads}) == len(heads)
    assert all("<del>" in body or "<ins>" in body for _, body in heads)
    assert "<del>" in html and "<ins>" in html
    # classifier agreement, from its metrics
    metrics = json.loads((report_run / "classifier" / "metrics.json").read_text())["held_out"]
    assert r["classifier"]["held_out"]["f1"] == pytest.approx(metrics["f1"], abs=1e-6)
    assert r["classifier"]["confusion_matrix"] == metrics["confusion_matrix"]
    # the mixture: every search run is a candidate, Claude's rationales are shown
    m = r["mixture"]
    summary = json.loads((report_run / "mix" / "summary.json").read_text())
    assert len(m["candidates"]) == sum(len(v) for v in summary["best_so_far"].values())
    chosen = [x for x in m["finalists"] if x["chosen"]]
    assert len(chosen) == 1 and chosen[0]["strategy"] == summary["chosen_strategy"]
    assert chosen[0]["target_mean"] == pytest.approx(summary["test"]["target_bpb_mean"], abs=1e-5)
    assert {x["strategy"] for x in m["finalists"] if x["baseline"]} >= {"uniform", "natural"}
    assert m["claude"]["status"] == "ran" and len(m["claude"]["rationales"]) == 2
    for x in m["claude"]["rationales"]:
        assert x["rationale"].startswith("Fake proposer") and x["rationale"] in html
    # cost: Claude's dollars from the mix summary, labelling free (heuristic)
    cost = {x["stage"]: x for x in r["cost"]["rows"]}
    assert cost["mix"]["usd"] == pytest.approx(summary["claude"]["cost_usd"]) and cost["mix"]["usd"] > 0
    assert cost["label"]["usd"] == 0
    assert r["timings"]["stages"]["dedup"]["source"] == "dedup: timings_s.total"


def test_the_same_run_dir_gives_the_same_bytes_but_for_the_timings(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    write_report(run, log=silent)
    first = {n: (run / n).read_text() for n in REPORT_FILES}
    write_report(run, log=silent)
    assert {n: (run / n).read_text() for n in REPORT_FILES} == first
    # the copy (named "run" like the original) reports the same: no absolute path inside
    assert first["report.html"] == (report_run / "report.html").read_text()

    # new times: only the timings part may change
    for stage in ("dedup", "filter", "score"):
        p = run / stage / "manifest.json"
        m = json.loads(p.read_text())
        m["timings_s"]["total"] += 100.5
        m["finished_at"] = "2099-01-01T00:00:00+00:00"
        p.write_text(json.dumps(m))
    p = run / "mix" / "summary.json"
    s = json.loads(p.read_text())
    s["timings_s"]["total"] += 7
    p.write_text(json.dumps(s))
    write_report(run, log=silent)
    after = {n: (run / n).read_text() for n in REPORT_FILES}
    a, b = json.loads(first["report.json"]), json.loads(after["report.json"])
    assert a["timings"] != b["timings"]
    a.pop("timings"), b.pop("timings")
    assert a == b

    def mask_html(h):
        return re.sub(r'<section id="timings">.*?</section>', "", h, flags=re.S)

    def mask_md(t):
        return t.split("## Time per stage")[0]

    assert first["report.html"] != after["report.html"]
    assert mask_html(first["report.html"]) == mask_html(after["report.html"])
    assert first["report.md"] != after["report.md"]
    assert mask_md(first["report.md"]) == mask_md(after["report.md"])


def test_missing_stages_say_why_and_the_rest_still_renders(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    for d in ("dedup", "label", "mix", "export"):
        shutil.rmtree(run / d)
    r = write_report(run, log=silent)
    html = (run / "report.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert "there is no dedup/ directory: the dedup stage did not run" in html
    assert "there is no mix/ directory: the mix stage did not run" in html
    assert r["mixture"] == {"ran": False, "why": "there is no mix/ directory: the mix stage did not run"}
    f = r["funnel"]
    assert f["stages"] == ["filter", "score"]
    assert f["total"]["documents"]["exact_duplicate"] is None and f["total"]["balanced"]
    filt = json.loads((run / "filter" / "manifest.json").read_text())
    assert f["total"]["documents"]["input"] == filt["counts"]["input"]
    # no mix: tokens are estimated; input tokens come from the files the filter read
    # (the original run's dedup/documents: the manifest names them by absolute path)
    assert f["tokens"]["kind"] == "estimate" and "estimated as UTF-8 bytes / 4" in html
    assert f["total"]["tokens"]["input"] > f["total"]["tokens"]["kept"] > 0
    assert any("Dedup did not run" in n for n in f["notes"])
    assert r["cost"]["rows"] == [] and "no stage that calls an API ran" in html
    assert re.findall(r'data-plot="([^"]+)"', html) == ["funnel-documents", "funnel-tokens", "filter-rules",
                                                         "score-histograms"]

    empty = tmp_path / "empty"
    empty.mkdir()
    r = write_report(empty, log=silent)
    html = (empty / "report.html").read_text()
    assert all(f'<section id="{sid}">' in html for sid in SECTIONS)
    assert not any(s["ran"] for s in r["stages"]["stages"])
    assert "none of dedup, filter and score ran" in html


def test_estimated_tokens_without_the_mix_tokenizer(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    (run / "mix" / "tokenizer.json").unlink()
    r = write_report(run, log=silent)
    f = r["funnel"]
    assert f["tokens"]["kind"] == "estimate"
    kept = sum((len(x["text"].encode()) + 2) // 4
               for p in sorted((run / "score" / "documents").glob("*.parquet"))
               for x in pq.read_table(p).to_pylist())
    assert f["total"]["tokens"]["kept"] == kept
    assert "estimated as UTF-8 bytes / 4" in (run / "report.html").read_text()
    assert "estimated as UTF-8 bytes / 4" in (run / "report.md").read_text()


def test_inputs_that_moved_leave_documents_balanced_under_unknown(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    p = run / "dedup" / "manifest.json"
    m = json.loads(p.read_text())
    for f in m["parameters"]["files"]:
        f["path"] = str(tmp_path / "moved" / os.path.basename(f["path"]))
    p.write_text(json.dumps(m))
    r = write_report(run, log=silent)
    f = r["funnel"]
    u = f["domains"]["(unknown)"]["documents"]
    assert u["exact_duplicate"] + u["near_duplicate"] == m["counts"]["removed_exact"] + m["counts"]["removed_near"]
    assert f["total"]["balanced"] and f["total"]["documents"]["input"] == m["counts"]["input"]
    assert f["total"]["tokens"]["input"] is None and f["total"]["tokens"]["near_duplicate"] is None
    assert f["total"]["tokens"]["kept"] > 0
    assert r["clusters"]["ran"] and not r["clusters"]["texts_available"]
    assert "texts not available" in (run / "report.html").read_text()


def test_a_removed_sample_makes_rule_tokens_lower_bounds(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    shutil.rmtree(run / "filter")
    assert main(["filter", "--input", str(report_run / "dedup" / "documents"), "--output", str(run / "filter"),
                 "--config", str(report_run.parent / "filters.yaml"), "--removed-sample", "1",
                 "--direct_num_workers", "1", "--direct_running_mode", "in_memory"]) == 0
    r = write_report(run, log=silent)
    f = r["funnel"]
    full = _report(report_run)["funnel"]
    assert f["total"]["documents"] == full["total"]["documents"]              # counts are whole
    capped = {k for k in f["rows"] if k.startswith("filter:") and f["total"]["documents"][k] > 1}
    assert capped and set(f["tokens_partial"]) == capped
    for k in capped:
        assert f["total"]["tokens"][k] < full["total"]["tokens"][k]
    assert any("--removed-sample 1 did not write" in n for n in f["notes"])
    assert " (≥)" in (run / "report.html").read_text()


def test_run_json_gives_time_cost_fallbacks_and_disabled_stages(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    shutil.rmtree(run / "export")
    stages = [{"name": n, "dir": d, "status": "reused" if n == "dedup" else "complete", "seconds": 10.0 + i,
               "fallback": None, "cost_usd": None, "api_tokens": None}
              for i, (n, d) in enumerate([("dedup", "dedup"), ("filter", "filter"), ("label", "label"),
                                          ("train", "classifier"), ("score", "score"), ("mix", "mix")])]
    stages[2]["fallback"] = "no ANTHROPIC_API_KEY: heuristic labels instead of Claude's"
    stages[5].update(cost_usd=0.25, api_tokens={"input": 1000, "output": 200})
    stages[0].update(peak_memory_mib={"pss": 812.4, "rss": 1500.0}, cpu_s=17.5)
    stages.append({"name": "export", "dir": "export", "status": "disabled", "seconds": 0.0,
                   "fallback": None, "cost_usd": None, "api_tokens": None})
    (run / "run.json").write_text(json.dumps({
        "command": "run", "status": "complete", "seed": 7, "config": {}, "stages": stages,
        "fallbacks": ["Labelling used the heuristic labeler: ANTHROPIC_API_KEY is not set."]}))
    r = write_report(run, log=silent)
    html = (run / "report.html").read_text()
    t = r["timings"]["stages"]
    assert t["dedup"] == {"seconds": 10.0, "source": "run.json", "run_status": "reused",
                          "finished_at": json.loads((run / "dedup" / "manifest.json").read_text())["finished_at"],
                          "peak_pss_mib": 812.4, "cpu_s": 17.5}
    assert t["filter"]["peak_pss_mib"] is None and t["filter"]["cpu_s"] is None
    assert "812" in html and "17.5" in html and "proportional set size" in html
    assert r["timings"]["total_seconds"] == pytest.approx(sum(10.0 + i for i in range(6)))
    assert r["export"]["why"] == "the export stage was disabled in the run's configuration"
    assert "heuristic labels instead of Claude" in html and "Labelling used the heuristic labeler" in html
    mix = next(x for x in r["cost"]["rows"] if x["stage"] == "mix")
    assert (mix["usd"], mix["input_tokens"], mix["output_tokens"], mix["source"]) == (0.25, 1000, 200, "run.json")
    assert r["stages"]["seed"] == 7
    # "reused" is execution detail: only the timings part shows it
    before = json.loads(json.dumps(r))
    stages[0]["status"] = "complete"
    (run / "run.json").write_text(json.dumps({"command": "run", "status": "complete", "seed": 7, "config": {},
                                              "stages": stages, "fallbacks": before["stages"]["fallbacks"]}))
    after = write_report(run, log=silent)
    assert {k: v for k, v in after.items() if k != "timings"} == \
        {k: v for k, v in before.items() if k != "timings"}


def test_claude_skipped_is_said_with_the_reason(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    p = run / "mix" / "summary.json"
    s = json.loads(p.read_text())
    s["claude"] = None
    s["skipped_proposers"] = {"claude": "skipped: ANTHROPIC_API_KEY is not set"}
    p.write_text(json.dumps(s))
    r = write_report(run, log=silent)
    assert r["mixture"]["claude"] == {"status": "skipped", "why": "skipped: ANTHROPIC_API_KEY is not set"}
    html = (run / "report.html").read_text()
    assert "Claude did not propose: skipped: ANTHROPIC_API_KEY is not set" in html
    assert "Fake proposer" not in html


def test_writing_a_report_never_imports_beam(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    code = ("import sys\n"
            "from curation.report import write_report\n"
            f"write_report({str(run)!r}, log=lambda m: None)\n"
            "assert 'apache_beam' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (run / "report.html").read_bytes() == (report_run / "report.html").read_bytes()


def test_cli_report(report_run, tmp_path, capsys):
    run = _copy(report_run, tmp_path)
    assert main(["report", str(run)]) == 0
    assert all((run / n).is_file() for n in REPORT_FILES)
    assert "every check passed" in capsys.readouterr().err
    # a usage error: no Beam options here
    assert main(["report", str(run), "--runner", "DataflowRunner"]) == 2
    assert "unknown option --runner: not a flag of this command" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ read by a reviewer (issue 12)

def _member(i, kept, reason=None, line=0):
    return {"id": i, "kept": kept, "reason": reason, "source": "f", "line": line}


def test_cluster_examples_show_each_cluster_once_and_only_differences():
    from curation.report.funnel import _cluster_examples, differs
    words = " ".join(f"w{i}" for i in range(40))
    clusters = {   # in rule order: "big" (4 members), then "same", then "small"
        "big": [_member("big", True, line=1), _member("big-a", False, "near_duplicate", 2),
                _member("big-b", False, "near_duplicate", 3), _member("big-c", False, "exact_duplicate", 4)],
        "same": [_member("same", True, line=5), _member("same-a", False, "near_duplicate", 6)],
        "small": [_member("small", True, line=7), _member("small-a", False, "near_duplicate", 8)],
    }
    texts = {("f", 1): words, ("f", 2): words + " x", ("f", 3): "y " + words[:60] + " z", ("f", 4): words,
             ("f", 5): words, ("f", 6): words, ("f", 7): words, ("f", 8): words + " tail"}
    texts = {k: {"domain": "web", "text": v} for k, v in texts.items()}
    examples, identical = _cluster_examples(clusters, texts)
    ids = [e["cluster_id"] for e in examples]
    assert ids == ["big", "small"] and identical == 1          # "same" reads identical: passed over
    assert examples[0]["shown"]["id"] == "big-b"                # the member that differs most
    assert examples[0]["removed_in_cluster"] == 3
    assert all(differs(e["shown"]["diff"]) for e in examples)
    assert not differs(word_diff(words, words))


def test_histograms_have_a_count_axis_and_a_log_one_where_one_bin_holds_most():
    root = _parse(svg.histograms("h", [("flat", [3, 5, 4, 2], None), ("spike", [900, 30, 5, 1], 0.01)],
                                 title="h"))
    axes = [g for g in root.iter("g") if g.get("class") == "count-axis"]
    assert [g.get("data-scale") for g in axes] == ["linear", "log"]
    flat = [t.text for t in axes[0].iter("text")]
    assert flat[0] == "0" and float(flat[-1]) >= 5                # from 0 to at least the tallest bin
    assert [t.text for t in axes[1].iter("text")] == ["1", "10", "100", "1000"]
    labels = "".join(root.itertext())
    assert "spike (n=936, log count axis)" in labels and "flat (n=14)" in labels
    bars = [float(r.get("height")) for r in root.iter("rect")][4:]
    assert bars[1] > bars[0] / 3                                  # 30 beside 900 still shows on a log axis
    assert svg.log_counts([900, 30]) and not svg.log_counts([3, 5, 4]) and not svg.log_counts([5, 0])


def _blocks_text(sections) -> list[str]:
    """What the report says in its own words: paragraphs, headings and table cells (not
    the corpus excerpts and diffs, which quote documents as they are)."""
    out = []
    for sec in sections:
        for b in sec.blocks:
            if isinstance(b, (P, Sub)):
                out.append(b.text if isinstance(b, P) else b.title)
            elif isinstance(b, Table):
                out += b.headers + [c for row in b.rows for c in row]
    return out


def test_no_python_dict_reprs_and_seconds_to_one_decimal(report_run):
    r = _report(report_run)
    said = _blocks_text(build_sections(r))
    reprs = [x for x in said if re.search(r"""\{\s*['"]""", x)]
    assert reprs == []
    checks = next(b for b in build_sections(r)[0].blocks if isinstance(b, Table) and b.headers[0] == "check")
    dedup = json.loads((report_run / "dedup" / "manifest.json").read_text())["counts"]
    details = {row[0]: row[2] for row in checks.rows}                  # in words, with the numbers
    assert details["dedup manifest balances (input = kept + removed + rejected)"] == \
        f"input {dedup['input']:,} = kept + removed + rejected {dedup['input']:,}"
    assert details["the inputs read again agree with the dedup manifest"] == (
        f"read {dedup['input']:,} in, {dedup['removed_exact']:,} exact duplicates, "
        f"{dedup['removed_near']:,} near duplicates, {dedup['rejected']:,} rejected; the manifest says the same")
    timings = next(b for b in build_sections(r)[-1].blocks if isinstance(b, Table))
    col = timings.headers.index("seconds")
    cells = [row[col] for row in timings.rows]
    assert cells and all(re.fullmatch(r"\d[\d,]*\.\d|—", c) for c in cells), cells
    assert any(c != "—" for c in cells)


def test_headline_gives_documents_tokens_in_and_kept_and_the_chosen_mixture(report_run):
    r = _report(report_run)
    html = (report_run / "report.html").read_text()
    md = (report_run / "report.md").read_text()
    docs, toks = r["funnel"]["total"]["documents"], r["funnel"]["total"]["tokens"]
    head = re.search(r'<header>.*?<p class="headline" id="headline">(.*?)</p>', html, re.S)
    assert head, "no headline in the header"
    text = head.group(1)
    assert (f"In: {docs['input']:,} documents ({toks['input']:,} tokens). "
            f"Kept: {docs['kept']:,} documents ({toks['kept']:,} tokens)") in text
    mixture = yaml.safe_load((report_run / "mix" / "mixture.yaml").read_text())
    strategy = r["mixture"]["chosen"]["strategy"]
    assert f"Chosen mixture, {strategy}: " in text
    for d, w in mixture["weights"].items():
        assert f"{d} {w:.3f}" in text
    assert md.split("\n\n")[1] == f"**{md_escape(html_unescape(text))}**"
    assert html.index('id="headline"') < html.index("<section")


def test_poor_agreement_is_said_before_the_selection_it_drove(report_run, tmp_path):
    run = _copy(report_run, tmp_path)
    p = run / "classifier" / "metrics.json"
    m = json.loads(p.read_text())
    assert m["held_out"]["f1"] >= 0.7                  # the fixture's classifier agrees well
    write_report(run, log=silent)
    html = (run / "report.html").read_text()
    scores = re.search(r'<section id="scores">(.*?)</section>', html, re.S).group(1)
    assert "agrees poorly" not in html and 'class="warn"' not in scores
    m["held_out"]["f1"] = 0.55
    p.write_text(json.dumps(m))
    write_report(run, log=silent)
    html = (run / "report.html").read_text()
    scores = re.search(r'<section id="scores">(.*?)</section>', html, re.S).group(1)
    warn = scores.index('<p class="warn">Warning: the quality classifier agrees poorly with its labels: '
                        'held-out F1 0.55 (below 0.7')
    assert warn < scores.index("Selection:")
    assert "agrees poorly" in re.search(r'<section id="classifier">(.*?)</section>', html, re.S).group(1)
    assert "agrees poorly" in re.search(r'id="headline">(.*?)</p>', html).group(1)
    assert "**Warning: the quality classifier agrees poorly" in (run / "report.md").read_text()


def test_the_labeler_is_spelled_one_way_and_says_what_the_heuristic_measures(report_run):
    html = (report_run / "report.html").read_text()
    md = (report_run / "report.md").read_text()
    for text in (html, md):
        assert "labeller" not in text.lower()
        assert "Labeler: heuristic (no model read the documents): a document" in text
        assert "share of 4 heuristic rule sets it passes" in text
        assert "not the rubric" in text
    assert "rubric educational" not in html
    r = _report(report_run)
    assert r["classifier"]["labeler"]["rule_sets"] == ["gopher_quality", "gopher_repetition", "c4_quality",
                                                      "fineweb_quality"]


def test_the_not_on_file_row_is_named_for_what_it_holds(report_run, tmp_path):
    r = _report(report_run)
    f = r["funnel"]
    filt = json.loads((report_run / "filter" / "manifest.json").read_text())
    assert filt["counts"]["edited"] > 0 and filt["counts"]["removed_written"] == filt["counts"]["removed"]
    # line edits, no cap, no rejects mid-chain: the row says exactly that
    assert f["labels"]["not_on_file"] == "not on file: lines cut by line-level rules"
    assert f["total"]["tokens"]["not_on_file"] > 0
    assert "unattributed" not in json.dumps(r)
    check = next(c for c in r["checks"] if c["name"].startswith("tokens:"))
    assert check["ok"]
    # the same texts but a manifest that says nothing was edited: the row cannot be
    # explained, and the check says so
    run = _copy(report_run, tmp_path)
    p = run / "filter" / "manifest.json"
    filt["counts"]["edited"] = 0
    p.write_text(json.dumps(filt))
    r = write_report(run, log=silent)
    assert r["funnel"]["labels"]["not_on_file"] == "not on file (none expected)"
    check = next(c for c in r["checks"] if c["name"].startswith("tokens:"))
    assert not check["ok"] and "tokens not on file" in check["detail"]
    assert "0 edited by line-level rules" in (run / "report.html").read_text()


def test_tables_fit_their_card_or_scroll_with_their_header_visible(tmp_path):
    sync_playwright = playwright_or_fail()
    wide = Table(["row"] + [f"a long column header {i}" for i in range(30)],
                 [[f"r{j}"] + [f"{i * j:,}" for i in range(30)] for j in range(200)])
    html = to_html("t", [Section("s", "S", [P("before"), wide, P("after")])])
    path = tmp_path / "t.html"
    path.write_text(html)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(path.as_uri())
            box = page.evaluate("""() => {
                const w = document.querySelector('div.table'), s = w.closest('section');
                const r = w.getBoundingClientRect(), sr = s.getBoundingClientRect();
                w.scrollTop = w.scrollHeight / 2; w.scrollLeft = 0;
                const th = w.querySelector('thead th').getBoundingClientRect();
                const r2 = w.getBoundingClientRect();
                return {left: r.left, right: r.right, sleft: sr.left, sright: sr.right, height: r.height,
                        sw: w.scrollWidth, cw: w.clientWidth, scrolled: w.scrollTop,
                        thTop: th.top, top: r2.top};
            }""")
        finally:
            browser.close()
    assert box["sleft"] <= box["left"] and box["right"] <= box["sright"]       # inside its card
    assert box["sw"] > box["cw"]                                               # too wide: it scrolls
    assert box["height"] <= 900 and box["scrolled"] > 0                        # too tall: it scrolls inside
    assert abs(box["thTop"] - box["top"]) <= 2                                 # with its header in view


# ------------------------------------------------------------------ in a real browser

def test_report_in_headless_chromium(report_run):
    sync_playwright = playwright_or_fail()
    url = (report_run / "report.html").resolve().as_uri()
    requests, errors = [], []
    shot = REPO / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
            page.goto(url, wait_until="load")
            for sid in SECTIONS:
                sec = page.locator(f"section#{sid}")
                assert sec.count() == 1 and sec.is_visible(), sid
                box = sec.bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0, sid
                assert sec.evaluate("e => getComputedStyle(e).display") != "none"
            plots = page.locator("svg.plot")
            assert plots.count() == len(PLOTS)
            for i in range(plots.count()):
                plot = plots.nth(i)
                name = plot.get_attribute("data-plot")
                box = plot.bounding_box()
                assert plot.is_visible() and box and box["width"] > 100 and box["height"] > 50, name
                assert plot.locator("rect, circle, path").count() > 0, name
            assert page.title().startswith("Mixture report")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert requests == [url], requests
    assert errors == [], errors
    print(f"report screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_the_largest_clusters_with_their_jaccard_spread(report_run):
    r = _report(report_run)
    html = (report_run / "report.html").read_text()
    c = r["clusters"]
    rows = [x for p in sorted((report_run / "dedup" / "clusters").glob("*"))
            for x in pq.read_table(p).to_pylist()]
    sizes = Counter(x["cluster_id"] for x in rows)
    big = c["largest"]
    assert [x["size"] for x in big] == sorted((x["size"] for x in big), reverse=True)
    assert big[0]["size"] == max(sizes.values())
    for x in big:
        js = sorted(m["jaccard"] for m in rows if m["cluster_id"] == x["cluster_id"] and not m["kept"])
        assert x["size"] == sizes[x["cluster_id"]]
        assert (x["jaccard"]["min"], x["jaccard"]["max"]) == pytest.approx((js[0], js[-1]))
        assert x["pair"]["jaccard"] == pytest.approx(js[0]) and x["pair"]["kept"] == x["kept"]
    kc = json.loads((report_run / "dedup" / "manifest.json").read_text())["kept_check"]
    assert c["kept_check"] == kc
    sec = re.search(r'<section id="clusters">(.*?)</section>', html, re.S).group(1)
    assert "The largest clusters" in sec and "Every removal was checked against the document" in sec
