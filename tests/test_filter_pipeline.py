"""`curate filter` end to end on Beam's local runner: counts that balance, outputs
that conserve every record, decisions equal to the library's, the capped sample of
removed documents, filter YAML, user filters that raise, dedup -> filter, reruns."""
import gzip
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from curation.demo import demo_glob
from curation.documents import Document
from curation.filters import load_chain
from curation.io import FieldMap, expand_inputs, read_documents, read_rows
from pipelines.cli import main

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TWO_PROCS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
C4_REASONS = ["c4_quality:lorem_ipsum", "c4_quality:curly_bracket",
              "c4_quality:too_few_sentences", "c4_quality:removed_lines"]

# ---------------------------------------------------------------- a small corpus made by hand

ADJ = ["quiet", "old", "busy", "bright", "narrow", "green", "cold"]
NOUN = ["harbour", "library", "market", "bridge", "garden", "station", "river", "school",
        "museum", "forest", "village"]
VERB = ["opened early", "was repaired", "drew large crowds", "stayed closed", "changed hands"]


def sentence(k: int) -> str:
    return f"The {ADJ[k % 7]} {NOUN[k % 11]} {VERB[k % 5]} in week {k}."


def good_lines(k: int, n: int = 6) -> list[str]:
    return [sentence(100 * k + j) for j in range(n)]


JUNK = ["Click here to subscribe", "Home | About | Contact"]


def kinds(k: int) -> dict[str, str]:
    """Texts the C4 preset keeps, edits or removes for a known reason."""
    g = good_lines(k)
    return {
        "good": "\n".join(g),
        # the junk lines lack terminal punctuation: C4 drops them and keeps the rest
        "edit": "\n".join(g[:3] + [JUNK[0]] + g[3:] + [JUNK[1]]),
        "short": f"Buy cheap watches now {k}",
        "curly": "\n".join(g + ["The settings are {debug: true} for this page."]),
        "lorem": "\n".join(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."] + g),
    }


def edited_text(k: int) -> str:
    return "\n".join(good_lines(k))


class Corpus:
    """Files written line by line, remembering what is on each physical line."""

    def __init__(self, root: Path):
        self.root = root
        self.records: dict[tuple[str, int], dict | None] = {}   # (path, line) -> record (None: bad)
        self.bad: dict[tuple[str, int], str] = {}               # (path, line) -> expected cause

    def write(self, name: str, items):
        path = self.root / name
        lines = []
        for item in items:
            lineno = len(lines) + 1
            if isinstance(item, dict):
                lines.append(json.dumps(item).encode())
                self.records[(str(path), lineno)] = item
            elif item == "":
                lines.append(b"")                       # blank: not a record
            else:
                raw, cause = item
                lines.append(raw)
                self.records[(str(path), lineno)] = None
                self.bad[(str(path), lineno)] = cause
        data = b"\n".join(lines) + b"\n"
        if name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        path.write_bytes(data)
        return path

    def ids(self) -> set[str]:
        return {r["id"] for r in self.records.values() if r is not None}

    def by_id(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.records.values() if r is not None}


def doc(id_, text, domain=None, **extra):
    d = {"id": id_, "text": text, **extra}
    if domain is not None:
        d["domain"] = domain
    return d


def make_corpus(root: Path) -> Corpus:
    """Three files (sorted: a.jsonl, b.jsonl.gz, c.jsonl). Ids of the short documents
    sort differently from their input order, so "first N" cannot be confused with
    "smallest ids"."""
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    c.write("a.jsonl", [
        doc("a-good-1", kinds(1)["good"], "web"),
        doc("s-q", kinds(2)["short"], "web"),
        doc("a-edit-3", kinds(3)["edit"], "web", url="http://example.org/3"),
        doc("s-b", kinds(4)["short"], "news"),
        doc("a-curly-5", kinds(5)["curly"], "news"),
        doc("s-m", kinds(6)["short"], "web"),
        doc("a-good-7", kinds(7)["good"], "news"),
    ])
    c.write("b.jsonl.gz", [
        doc("s-a", kinds(8)["short"], "news"),
        doc("b-good-9", kinds(9)["good"], "news"),
        doc("b-lorem-10", kinds(10)["lorem"], "news"),
        "",
        (b'{"id": "b-broken", "text": "unterminated', "malformed_json"),
        doc("s-z", kinds(11)["short"], "web"),
        (json.dumps({"id": "b-notext", "domain": "news"}).encode(), "missing_text"),
        (json.dumps({"id": "b-number", "text": 12}).encode(), "non_string_text"),
        doc("b-edit-12", kinds(12)["edit"], "web"),
        doc("b-curly-13", kinds(13)["curly"], "web"),
    ])
    c.write("c.jsonl", [
        doc("c-good-14", kinds(14)["good"]),
        doc("s-c", kinds(15)["short"]),
        (b"[1, 2, 3]", "not_an_object"),
        doc("c-edit-16", kinds(16)["edit"]),
        (b"{not json at all", "malformed_json"),
    ])
    return c


EDIT_IDS = {"a-edit-3": 3, "b-edit-12": 12, "c-edit-16": 16}
SHORT_IN_ORDER = ["s-q", "s-b", "s-m", "s-a", "s-z", "s-c"]


# ---------------------------------------------------------------- helpers

def run_filter(inputs, out: Path, *extra, expect: int = 0) -> dict | None:
    argv = ["filter", "--output", str(out), *extra]
    for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs):
        argv += ["--input", str(i)]
    if not any(a.startswith("--direct") for a in extra):
        argv += FAST
    assert main(argv) == expect
    return json.loads((out / "manifest.json").read_text()) if expect == 0 else None


def rows_of(out: Path, sub: str) -> list[dict]:
    rows = []
    for p in sorted((out / sub).glob("*")):
        rows.extend(read_rows(str(p)))
    return rows


def output_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def reference(patterns, chain) -> list[tuple[Document, object]]:
    """Every readable document of the inputs, in input order, with the chain's verdict
    computed by the library in this process."""
    out = []
    for f in expand_inputs([str(p) for p in patterns]):
        for rec in read_documents(f, FieldMap()):
            if isinstance(rec, Document):
                out.append((rec, chain.check(rec.text)))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("filter_in") / "in")


@pytest.fixture(scope="module")
def c4_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("filter_c4") / "out"
    return out, run_filter(corpus.root, out, "--preset", "c4")


# ---------------------------------------------------------------- 1. counts balance

def test_counts_balance_per_rule_domain_and_counter(corpus, c4_run):
    out, m = c4_run
    c = m["counts"]
    assert m["status"] == "complete" and m["balance"]["ok"] and m["parts_agree"]["ok"]
    assert c["input"] == c["kept"] + c["removed"] + c["rejected"]
    assert "tallies" not in m and not any(k.startswith("tally_") for k in m["counters"])   # no PII filter
    n_records = len(corpus.records)
    assert c["input"] == n_records == 21 and c["blank_lines_skipped"] == 1
    assert (c["kept"], c["removed"], c["rejected"], c["edited"]) == (7, 9, 5, 3)

    # every rule of the chain, zeros included; they sum to removed
    assert m["parameters"]["reasons"] == C4_REASONS
    assert sorted(m["removed_by_reason"]) == sorted(C4_REASONS)
    assert m["removed_by_reason"] == {"c4_quality:lorem_ipsum": 1, "c4_quality:curly_bracket": 2,
                                      "c4_quality:too_few_sentences": 6, "c4_quality:removed_lines": 0}
    assert sum(m["removed_by_reason"].values()) == c["removed"]
    assert c["rejected_by_cause"] == {"malformed_json": 2, "missing_text": 1,
                                      "non_string_text": 1, "not_an_object": 1}

    # domains: each balances, and together they make the totals
    doms = m["domains"]
    assert set(doms) == {"web", "news", "(none)"}
    for d in doms.values():
        assert sorted(d["removed"]) == sorted(C4_REASONS)
        assert d["input"] == d["kept"] + sum(d["removed"].values()) + d["rejected"]
    for key in ("input", "kept", "rejected", "edited"):
        assert sum(d[key] for d in doms.values()) == c[key], key
    for r in C4_REASONS:
        assert sum(d["removed"][r] for d in doms.values()) == m["removed_by_reason"][r], r
    # the records of c.jsonl have no domain, nor do rejected records (c.jsonl: 3 + 2 bad; b: 3 bad)
    assert doms["(none)"]["input"] == 8 and doms["(none)"]["rejected"] == 5
    assert doms["web"]["removed"]["c4_quality:too_few_sentences"] == 3      # s-q, s-m, s-z
    assert doms["news"]["removed"]["c4_quality:lorem_ipsum"] == 1

    # the Beam counters say the same, one per rule
    k = m["counters"]
    for r, n in m["removed_by_reason"].items():
        assert k[r] == n, r
    for key in ("input", "kept", "removed", "rejected", "edited"):
        assert k[key] == c[key], key
    assert k["blank_lines"] == c["blank_lines_skipped"]
    for cause, n in c["rejected_by_cause"].items():
        assert k[f"rejected_{cause}"] == n

    # and so do the files
    assert len(rows_of(out, "documents")) == c["kept"]
    assert len(rows_of(out, "removed")) == c["removed"] == c["removed_written"]
    assert len(rows_of(out, "rejected")) == c["rejected"]
    # one shard per input file (every file has kept documents)
    assert sorted(p.name for p in (out / "documents").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not (out / "filter_counts.json").exists()


def test_every_record_ends_in_exactly_one_place(corpus, c4_run):
    out, _ = c4_run
    docs, removed, rejected = (rows_of(out, s) for s in ("documents", "removed", "rejected"))
    seen = Counter([(r["source"], r["line"]) for r in docs + removed]
                   + [(r["file"], r["line"]) for r in rejected])
    assert set(seen) == set(corpus.records)
    assert set(seen.values()) == {1}
    ids = [r["id"] for r in docs + removed]
    assert len(ids) == len(set(ids)) and set(ids) == corpus.ids()
    for r in docs + removed:   # the row that came from (file, line) is that record
        assert corpus.records[(r["source"], r["line"])]["id"] == r["id"]
    assert {(r["file"], r["line"]) for r in rejected} == set(corpus.bad)


# ---------------------------------------------------------------- 2. removed/ and edited text

def test_removed_rows_and_kept_text_match_the_library(corpus, c4_run):
    out, m = c4_run
    chain = load_chain(preset="c4")
    ref = {d.id: (d, v) for d, v in reference([corpus.root], chain)}
    originals = corpus.by_id()

    removed = rows_of(out, "removed")
    assert {r["id"] for r in removed} == {i for i, (_, v) in ref.items() if not v.keep}
    for r in removed:
        d, v = ref[r["id"]]
        assert r["reason"] == v.reason and r["reason"].startswith("c4_quality:")
        assert r["reason"] in m["removed_by_reason"]
        signals = json.loads(r["signals"])
        assert isinstance(signals, dict) and signals == v.signals
        assert signals and all(key.startswith("c4_quality.") for key in signals)
        assert r["text"] == originals[r["id"]]["text"]      # as it came in, not edited
        assert r["domain"] == originals[r["id"]].get("domain")
    reasons = {r["id"]: r["reason"] for r in removed}
    assert all(reasons[i] == "c4_quality:too_few_sentences" for i in SHORT_IN_ORDER)
    assert reasons["a-curly-5"] == reasons["b-curly-13"] == "c4_quality:curly_bracket"
    assert reasons["b-lorem-10"] == "c4_quality:lorem_ipsum"
    # the curly-bracket page is removed whole, with its good lines
    curly = next(r for r in removed if r["id"] == "a-curly-5")
    assert curly["text"].count("\n") == 6

    docs = {r["id"]: r for r in rows_of(out, "documents")}
    assert set(docs) == {i for i, (_, v) in ref.items() if v.keep}
    for i, r in docs.items():
        d, v = ref[i]
        assert r["text"] == (v.text if v.text is not None else d.text)
    for i, k in EDIT_IDS.items():
        text = docs[i]["text"]
        assert text == edited_text(k)
        assert not any(junk in text for junk in JUNK)
        assert originals[i]["text"] != text and JUNK[0] in originals[i]["text"]
    for i in ("a-good-1", "a-good-7", "b-good-9", "c-good-14"):
        assert docs[i]["text"] == originals[i]["text"]
    assert m["counts"]["edited"] == len(EDIT_IDS) == sum(v.text is not None for _, v in ref.values())
    assert m["domains"]["web"]["edited"] == 2 and m["domains"]["(none)"]["edited"] == 1
    # meta (fields beyond id/text/domain) rides along
    assert json.loads(docs["a-edit-3"]["meta"]) == {"url": "http://example.org/3"}


# ---------------------------------------------------------------- 8. bad input records

def test_bad_records_are_rejected_with_cause_never_lost(corpus, c4_run):
    out, m = c4_run
    rejected = rows_of(out, "rejected")
    got = {(r["file"], r["line"]): r["cause"] for r in rejected}
    assert got == corpus.bad
    assert Counter(got.values()) == Counter(m["counts"]["rejected_by_cause"])
    by_line = {(Path(r["file"]).name, r["line"]): r for r in rejected}
    assert by_line[("b.jsonl.gz", 5)]["raw_prefix"].startswith('{"id": "b-broken"')
    assert by_line[("b.jsonl.gz", 7)]["cause"] == "missing_text"
    # rejected/ has one shard per file holding bad records; a.jsonl has none
    assert sorted(p.name for p in (out / "rejected").iterdir()) == [
        "part-00001.parquet", "part-00002.parquet"]


# ---------------------------------------------------------------- 3. --removed-sample

def test_removed_sample_is_the_first_n_per_rule_in_input_order(corpus, c4_run, tmp_path):
    full_out, full = c4_run
    a, b = tmp_path / "a", tmp_path / "b"
    m = run_filter(corpus.root, a, "--preset", "c4", "--removed-sample", "4")
    run_filter(corpus.root, b, "--preset", "c4", "--removed-sample", "4", *TWO_PROCS)

    # the same decisions as without the cap; only removed/ differs
    assert m["counts"] == {**full["counts"], "removed_written": 4 + 2 + 1}
    assert m["removed_by_reason"] == full["removed_by_reason"]
    assert m["removed_sample"] == {"per_rule": 4, "written_by_reason": {
        "c4_quality:lorem_ipsum": 1, "c4_quality:curly_bracket": 2,
        "c4_quality:too_few_sentences": 4, "c4_quality:removed_lines": 0}}
    for r, n in m["removed_by_reason"].items():
        assert m["removed_sample"]["written_by_reason"][r] == min(n, 4)
    assert sorted(p.name for p in (a / "removed").iterdir()) == [
        "c4_quality.curly_bracket.parquet", "c4_quality.lorem_ipsum.parquet",
        "c4_quality.too_few_sentences.parquet"]

    short = read_rows(str(a / "removed" / "c4_quality.too_few_sentences.parquet"))
    # a.jsonl's three (in line order), then the first of b.jsonl.gz
    assert [r["id"] for r in short] == SHORT_IN_ORDER[:4] == ["s-q", "s-b", "s-m", "s-a"]
    curly = read_rows(str(a / "removed" / "c4_quality.curly_bracket.parquet"))
    assert [r["id"] for r in curly] == ["a-curly-5", "b-curly-13"]
    # each sampled row is the row the uncapped run wrote
    full_rows = {r["id"]: r for r in rows_of(full_out, "removed")}
    for r in rows_of(a, "removed"):
        assert r == full_rows[r["id"]]
    assert output_files(a) == output_files(b)   # two local workers: the same bytes
    assert output_files(a)["documents/part-00000.parquet"] == \
        output_files(full_out)["documents/part-00000.parquet"]


def test_removed_sample_on_the_demo_as_jsonl_gz(tmp_path):
    out = tmp_path / "demo"
    assert main(["filter", "--demo", "--output", str(out), "--preset", "minimal",
                 "--removed-sample", "3", "--output-format", "jsonl.gz", *FAST]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete"
    chain = load_chain(preset="minimal")
    ref = reference([demo_glob()], chain)
    first: dict[str, list] = defaultdict(list)
    totals: Counter = Counter()
    for d, v in ref:
        if not v.keep:
            totals[v.reason] += 1
            if len(first[v.reason]) < 3:
                first[v.reason].append((d, v))
    c = m["counts"]
    assert c["input"] == len(ref) and c["rejected"] == 0
    assert c["kept"] == sum(v.keep for _, v in ref) and c["removed"] == sum(totals.values())
    assert m["removed_by_reason"] == {r: totals[r] for r in chain.reasons}
    assert sum(1 for n in totals.values() if n > 3) >= 1      # the cap bites somewhere
    written = m["removed_sample"]["written_by_reason"]
    files = sorted(p.name for p in (out / "removed").iterdir())
    assert files == sorted(f"{r.replace(':', '.')}.jsonl.gz" for r in totals)
    for r in chain.reasons:
        assert written[r] == min(totals[r], 3)
        path = out / "removed" / f"{r.replace(':', '.')}.jsonl.gz"
        if not totals[r]:
            assert not path.exists()
            continue
        rows = read_rows(str(path))
        assert [(x["id"], x["source"], x["line"]) for x in rows] == \
            [(d.id, d.source, d.line) for d, _ in first[r]]
        assert all(x["reason"] == r for x in rows)
        assert [json.loads(x["signals"]) for x in rows] == [v.signals for _, v in first[r]]
        assert [x["text"] for x in rows] == [d.text for d, _ in first[r]]
    # 10. jsonl.gz output: documents/ shards in that format, one per demo file
    shards = sorted((out / "documents").iterdir())
    assert shards and all(p.name.endswith(".jsonl.gz") for p in shards)
    assert len(shards) == len(expand_inputs([demo_glob()]))
    kept = rows_of(out, "documents")
    assert len(kept) == c["kept"]
    assert [x["id"] for x in kept] == [d.id for d, v in ref if v.keep]


# ---------------------------------------------------------------- 10. jsonl.gz, uncapped

def test_jsonl_gz_output_holds_the_same_rows(corpus, c4_run, tmp_path):
    full_out, full = c4_run
    out = tmp_path / "j"
    m = run_filter(corpus.root, out, "--preset", "c4", "--output-format", "jsonl.gz")
    assert m["counts"] == full["counts"]
    for sub in ("documents", "removed", "rejected"):
        names = sorted(p.name for p in (out / sub).iterdir())
        assert names and all(n.endswith(".jsonl.gz") for n in names)
        assert rows_of(out, sub) == rows_of(full_out, sub), sub


# ---------------------------------------------------------------- 4. filter YAML

def test_config_file_with_filters_and_overrides(corpus, tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        "description: short pages out, C4's page rules without editing lines\n"
        "filters:\n"
        "  - length: {min_words: 6}\n"
        "  - c4_quality: {mode: document}\n"
        "overrides:\n"
        "  c4_quality: {min_num_sentences: 3, filter_curly_bracket: false}\n")
    out = tmp_path / "out"
    m = run_filter(corpus.root, out, "--config", str(cfg))
    assert [f["name"] for f in m["chain"]] == ["length", "c4_quality"]
    c4 = m["chain"][1]
    assert (c4["mode"], c4["min_num_sentences"], c4["filter_curly_bracket"]) == ("document", 3, False)
    assert m["chain"][0]["min_words"] == 6
    assert m["parameters"]["reasons"] == ["length:too_short", "length:too_long"] + C4_REASONS
    assert sorted(m["removed_by_reason"]) == sorted(m["parameters"]["reasons"])

    ref = {d.id: v for d, v in reference([corpus.root], load_chain(config=str(cfg)))}
    removed = {r["id"]: r["reason"] for r in rows_of(out, "removed")}
    assert removed == {i: v.reason for i, v in ref.items() if not v.keep}
    # the short pages now go by length (the first filter), curly pages stay, lorem goes
    assert {removed[i] for i in SHORT_IN_ORDER} == {"length:too_short"}
    assert removed["b-lorem-10"] == "c4_quality:lorem_ipsum" and "a-curly-5" not in removed
    docs = {r["id"]: r["text"] for r in rows_of(out, "documents")}
    assert docs["a-curly-5"] == corpus.by_id()["a-curly-5"]["text"]
    # mode: document decides without editing
    assert docs["a-edit-3"] == corpus.by_id()["a-edit-3"]["text"] and m["counts"]["edited"] == 0


def test_preset_and_config_are_mutually_exclusive(corpus, tmp_path, capsys):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("preset: gopher\n")
    with pytest.raises(SystemExit) as e:
        main(["filter", "--input", str(corpus.root), "--output", str(tmp_path / "o"),
              "--preset", "c4", "--config", str(cfg), *FAST])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--config" in err and "--preset" in err and "not allowed" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("yaml_text, expected", [
    ("filters:\n  - gopher_quality\n  - no_such_filter\n",
     ["filters[1]", "unknown filter 'no_such_filter'"]),
    ("filters:\n  - gopher_quality: {min_doc_words: -1}\n",
     ["filters[0]", "gopher_quality.min_doc_words", "-1"]),
    ("filters:\n  - gopher_quality: {min_doc_wrods: 5}\n",
     ["filters[0]", "gopher_quality.min_doc_wrods"]),
    ("filterz:\n  - gopher_quality\n", ["unknown key", "filterz"]),
    ("preset: gopher\noverrides:\n  c4_quality: {min_num_sentences: 2}\n",
     ["overrides.c4_quality", "no such filter"]),
    ("filters: [length\n", ["not valid YAML"]),
])
def test_invalid_filter_config_exits_2_naming_the_field(corpus, tmp_path, capsys, yaml_text, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "o"
    assert main(["filter", "--input", str(corpus.root), "--output", str(out),
                 "--config", str(cfg), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("curate: error:")
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert "bad.yaml" in err
    assert not out.exists()


# ---------------------------------------------------------------- 5. a user filter that raises

def explode_on_marker(text: str):
    """A user filter: raises on documents holding EXPLODE, removes those holding
    REJECTME (a bare False: rule "rejected"), keeps the rest."""
    if "EXPLODE" in text:
        raise ValueError(f"cannot handle {text.split()[0]!r}")
    return "REJECTME" not in text


def test_user_filter_errors_are_rejected_and_strict_stops(tmp_path, capsys):
    src = tmp_path / "in"
    c = Corpus(src)
    src.mkdir()
    c.write("u.jsonl", [
        doc("u1", "a perfectly fine document with enough words", "web"),
        doc("u2", "EXPLODE this one please now", "web"),
        doc("u3", "REJECTME politely if you would", "news"),
        doc("u4", "tiny", "news"),
        doc("u5", "another fine document, also long enough", "news"),
        doc("u6", "EXPLODE again here right now", "news"),
    ])
    cfg = tmp_path / "user.yaml"
    # this module is imported under whatever name pytest gave it; in-process workers see it
    cfg.write_text("filters:\n"
                   "  - length: {min_words: 3}\n"
                   f"  - user: {{path: '{__name__}:explode_on_marker', name: marker}}\n")
    out = tmp_path / "out"
    m = run_filter(src, out, "--config", str(cfg))
    c_ = m["counts"]
    assert (c_["input"], c_["kept"], c_["removed"], c_["rejected"]) == (6, 2, 2, 2)
    assert c_["rejected_by_cause"] == {"filter_error": 2}
    assert m["removed_by_reason"] == {"length:too_short": 1, "length:too_long": 0,
                                      "marker:rejected": 1}
    assert m["counters"]["rejected_filter_error"] == 2 and m["counters"]["marker:rejected"] == 1
    # a filter error is counted in the document's own domain
    assert m["domains"]["web"]["rejected"] == 1 and m["domains"]["news"]["rejected"] == 1
    rejected = rows_of(out, "rejected")
    assert [(r["line"], r["cause"]) for r in rejected] == [(2, "filter_error"), (6, "filter_error")]
    assert rejected[0]["detail"] == "ValueError: cannot handle 'EXPLODE'"
    assert rejected[0]["raw_prefix"] == "EXPLODE this one please now"
    assert all(r["file"] == str(src / "u.jsonl") for r in rejected)
    assert sorted(r["id"] for r in rows_of(out, "documents")) == ["u1", "u5"]
    assert {r["id"]: r["reason"] for r in rows_of(out, "removed")} == {
        "u3": "marker:rejected", "u4": "length:too_short"}
    capsys.readouterr()

    strict_out = tmp_path / "strict"
    rc = main(["filter", "--input", str(src), "--output", str(strict_out), "--config", str(cfg),
               "--strict", *FAST])
    assert rc == 3
    err = capsys.readouterr().err
    assert "curate: bad input (--strict)" in err
    assert f"{src / 'u.jsonl'}:2: filter_error" in err and "cannot handle" in err
    m = strict_out / "manifest.json"     # written first as "running": never a complete run
    assert not m.exists() or json.loads(m.read_text())["status"] != "complete"


# ---------------------------------------------------------------- 6. dedup -> filter

def test_dedup_documents_feed_filter_with_ids_domains_and_meta(tmp_path):
    src = tmp_path / "raw"
    c = Corpus(src)
    src.mkdir()
    c.write("raw.jsonl", [
        doc("r1", kinds(20)["good"], "news", url="http://a.example/1", tags=["x", "y"]),
        doc("r2", kinds(20)["good"], "web", url="http://a.example/2"),      # exact duplicate of r1
        doc("r3", kinds(21)["edit"], "web", url="http://a.example/3", score=0.5),
        doc("r4", kinds(22)["short"], "blog", lang="en"),
        doc("r5", kinds(23)["good"], "blog"),
    ])
    dd = tmp_path / "dedup"
    assert main(["dedup", "--input", str(src), "--output", str(dd), *FAST]) == 0
    dm = json.loads((dd / "manifest.json").read_text())
    assert dm["counts"]["kept"] == 4 and dm["counts"]["removed_exact"] == 1

    out = tmp_path / "filtered"
    m = run_filter(str(dd / "documents" / "*.parquet"), out, "--preset", "c4")
    assert m["counts"]["input"] == 4 and m["balance"]["ok"]
    docs = {r["id"]: r for r in rows_of(out, "documents")}
    removed = {r["id"]: r for r in rows_of(out, "removed")}
    assert set(docs) == {"r1", "r3", "r5"} and set(removed) == {"r4"}
    originals = c.by_id()
    for i, r in {**docs, **removed}.items():
        o = originals[i]
        assert r["domain"] == o["domain"]
        meta = json.loads(r["meta"]) if r["meta"] else {}
        extra = {k: v for k, v in o.items() if k not in ("id", "text", "domain")}
        # the document's own meta, plus where the first stage read it
        assert meta == {**extra, "source": str(src / "raw.jsonl"),
                        "line": next(ln for (_, ln), x in c.records.items() if x is o)}
        assert r["source"].startswith(str(dd / "documents"))
    assert docs["r3"]["text"] == edited_text(21)
    assert m["domains"]["blog"]["removed"]["c4_quality:too_few_sentences"] == 1
    assert set(m["domains"]) == {"news", "web", "blog"}


# ---------------------------------------------------------------- 7. determinism and reruns

def test_two_runs_are_byte_identical(corpus, c4_run, tmp_path):
    full_out, _ = c4_run
    other = tmp_path / "other"
    run_filter(corpus.root, other, "--preset", "c4", *TWO_PROCS)
    a, b = output_files(full_out), output_files(other)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("removed/") for k in a) and any(k.startswith("documents/") for k in a)
    for k in a:
        assert a[k] == b[k], k


def test_rerun_is_skipped_overwrite_reruns_and_changed_input_reruns(corpus, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(corpus.root, src)
    out = tmp_path / "out"
    args = ("--preset", "c4", "--removed-sample", "2")
    m0 = run_filter(src, out, *args)
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    sentinel = out / "documents" / "zz-sentinel.parquet"

    # the same settings again: recognised as complete, nothing touched
    run_filter(src, out, *args)
    assert "already holds a complete run" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == manifest

    # a file the run did not write is never deleted (issue 12): the rerun refuses
    sentinel.write_bytes(b"left by a test")
    run_filter(src, out, "--preset", "c4", "--removed-sample", "3", expect=2)
    assert "zz-sentinel.parquet" in capsys.readouterr().err and sentinel.exists()
    sentinel.unlink()

    # other settings are another run
    run_filter(src, out, "--preset", "c4", "--removed-sample", "3")
    assert "already holds" not in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["removed_sample"]["per_rule"] == 3

    # --overwrite reruns even with the same settings
    run_filter(src, out, "--preset", "c4", "--removed-sample", "3")
    assert "already holds" in capsys.readouterr().err
    run_filter(src, out, "--preset", "c4", "--removed-sample", "3", "--overwrite")
    err = capsys.readouterr().err
    assert "already holds" not in err and "filter: 21 in" in err

    # a changed input file is not mistaken for the finished run
    with open(src / "c.jsonl", "a") as f:
        f.write(json.dumps(doc("c-late", kinds(30)["good"])) + "\n")
    m = run_filter(src, out, "--preset", "c4", "--removed-sample", "3")
    assert "already holds" not in capsys.readouterr().err
    assert m["counts"]["input"] == m0["counts"]["input"] + 1
    assert m["counts"]["kept"] == m0["counts"]["kept"] + 1
    assert "c-late" in {r["id"] for r in rows_of(out, "documents")}


# ---------------------------------------------------------------- 9. output among the inputs

def test_output_inside_the_inputs_is_refused(corpus, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(corpus.root, src)
    before = output_files(src)
    # OUT inside an input directory: the next run would read its shards as input
    assert run_filter(src, src / "out", "--preset", "c4", expect=2) is None
    err = capsys.readouterr().err
    assert "curate: error:" in err and "inside the input directory" in err
    assert not (src / "out").exists()
    # OUT holding the input files: clearing it would delete them
    assert run_filter(str(src / "*.jsonl"), src, "--preset", "c4", expect=2) is None
    assert "holds input files" in capsys.readouterr().err
    assert run_filter(src, src, "--preset", "c4", expect=2) is None
    capsys.readouterr()
    assert output_files(src) == before
    assert not (src / "manifest.json").exists()
