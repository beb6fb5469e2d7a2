"""`curate score` end to end on Beam's local runner with a real fastText model: scores equal
to the library's, the --min-score split, --keep-top cut from the whole corpus (and per
domain), the tie-break that makes --keep-top exact when many documents score the same,
conservation of every record, the score readable by a later stage, byte-identical
reruns, the rerun check, the Dataflow job graph built offline, and clear errors."""
import gzip
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from classifiers.fasttext_train import QualityModel, train_classifier
from curation.config import ConfigError, FilterRunConfig, ScoreRunConfig, load_config
from curation.documents import Document
from curation.io import document_from_row, expand_inputs, read_documents
from pipelines.run_score import run_score
from pipelines.runner import UsageError
from curation.scores import (BINS, ScoreHistogram, key_bins, keep_mask, needs_tie_break, score_bins,
                             summarise, tie_break_cut, tie_histograms, tie_key, tie_keys, top_cut)
from tests.remote_fs import PREFIX, ROOT
from tests.test_fasttext_train import SMALL, synthetic_labels
from tests.test_filter_pipeline import output_files, rows_of

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TWO_PROCS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


# ---------------------------------------------------------------- model and corpus

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("score_model") / "model"
    train_classifier(synthetic_labels(), out, threshold=3, **SMALL)
    return out


@pytest.fixture(scope="module")
def model(model_dir) -> QualityModel:
    return QualityModel.load(model_dir)


def _texts(seed: int):
    """Synthetic documents by grade (0-5): high grades read like the classifier's hq class."""
    rows = synthetic_labels(700, seed=seed)
    good = [r["text"] for r in rows if r["score"] >= 4]
    bad = [r["text"] for r in rows if r["score"] <= 1]
    return good, bad


def doc(id_, text, domain=None, **extra):
    d = {"id": id_, "text": text, **extra}
    if domain is not None:
        d["domain"] = domain
    return d


BAD_RECORDS = {("a.jsonl", 62): "malformed_json", ("a.jsonl", 63): "empty_text",
               ("b.jsonl.gz", 61): "not_an_object", ("b.jsonl.gz", 72): "missing_text"}


def make_corpus(root: Path) -> Path:
    """a.jsonl: mostly good documents; b.jsonl.gz: mostly bad ones; c.parquet: a few of
    each. Domain "books" is mostly good, "forum" mostly bad; some have no domain."""
    root.mkdir(parents=True)
    good, bad = _texts(11)
    a = ([doc(f"a{i:02d}", good[i], "books", url=f"http://a.example/{i}") for i in range(40)]
         + [doc(f"a{i:02d}", good[i], "forum") for i in range(40, 50)]
         + [doc(f"a{i:02d}", bad[i], "forum") for i in range(50, 60)])
    lines = [json.dumps(d) for d in a]
    lines.insert(30, "")                                   # a blank line: not a record
    lines += ['{"id": "broken", "text": "unterminated', json.dumps({"id": "blank", "text": "  "})]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    b = ([doc(f"b{i:02d}", good[60 + i], "books") for i in range(10)]
         + [doc(f"b{i:02d}", bad[60 + i], "forum") for i in range(10, 50)]
         + [doc(f"b{i:02d}", bad[60 + i]) for i in range(50, 60)])
    lines = [json.dumps(d) for d in b]
    lines += ["[1, 2, 3]"] + [json.dumps(d) for d in
                              [doc(f"b{i:02d}", bad[60 + i], "forum") for i in range(60, 70)]]
    lines += [json.dumps({"id": "notext", "domain": "forum"})]
    (root / "b.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    c = [doc(f"c{i}", (good if i % 2 else bad)[130 + i], "books", year=2000 + i) for i in range(8)]
    pq.write_table(pa.Table.from_pylist(c), root / "c.parquet")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("score_in") / "in")


@pytest.fixture(scope="module")
def reference(corpus, model) -> dict[str, tuple[Document, float, str]]:
    """id -> (document, the library's score of it, input file name), read in this process."""
    out = {}
    for f in expand_inputs([str(corpus)]):
        for rec in read_documents(f):
            if isinstance(rec, Document):
                out[rec.id] = (rec, float(model.score([rec.text])[0]), Path(f.path).name)
    return out


def score(inputs, out: Path, model_dir, *extra, overwrite=False, **settings) -> dict:
    cfg = ScoreRunConfig(inputs=[str(i) for i in (inputs if isinstance(inputs, list) else [inputs])],
                         output=str(out), model=str(model_dir), **settings)
    return run_score(cfg, list(extra) or FAST, overwrite=overwrite)



def expected_cut(scores: list[float], fraction: float) -> float:
    """The threshold by sorting (independent of the histogram code): the lower edge of
    the 2**-20 bin that holds the ceil(F * N)-th highest score."""
    n = len(scores)
    target = math.ceil(round(fraction * n, 9))
    s = sorted(scores, reverse=True)[target - 1]
    return min(math.floor(s * BINS), BINS - 1) / BINS


@pytest.fixture(scope="module")
def min_run(corpus, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("score_min") / "out"
    return out, score(corpus, out, model_dir, min_score=0.5, batch_size=16)


@pytest.fixture(scope="module")
def top_run(corpus, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("score_top") / "out"
    return out, score(corpus, out, model_dir, keep_top=0.2, batch_size=16)


# ---------------------------------------------------------------- the histogram, alone

def test_histogram_cut_and_summary_by_hand():
    # bins are exact: s >= b / BINS iff bin(s) >= b, 1.0 in the top bin
    assert score_bins([0.0, 0.5, 1.0, (BINS - 1) / BINS, 0.5 - 2**-21]).tolist() == [
        0, BINS // 2, BINS - 1, BINS - 1, BINS // 2 - 1]
    scores = [0.02, 0.12, 0.22, 0.32, 0.42, 0.52, 0.62, 0.72, 0.82, 0.92]
    whole = ScoreHistogram.of(scores)
    parts = ScoreHistogram.of(scores[:3]).add(ScoreHistogram.of(scores[3:]))
    assert parts == whole and whole.total == 10
    cut = top_cut(whole, 0.3)                       # ceil(0.3 * 10) = 3, not 4
    assert cut["target"] == 3 and cut["kept"] == 3 and cut["threshold"] == math.floor(0.72 * BINS) / BINS
    assert top_cut(whole, 1.0)["kept"] == 10 and top_cut(ScoreHistogram(), 0.5) is None
    s = summarise(whole)
    assert s["count"] == 10 and s["mean"] == pytest.approx(0.47, abs=1e-6)
    assert s["deciles"]["p50"] == pytest.approx(0.42, abs=1e-6) and s["min"] == pytest.approx(0.02, abs=1e-6)
    assert s["per_0.05"] == [1, 0] * 10
    assert (cut["above_bin"], cut["in_bin"], cut["need"], cut["tie_break"]) == (2, 1, 1, None)
    assert not needs_tie_break(cut) and tie_break_cut(cut, ScoreHistogram()) is cut
    # the first level alone keeps every tie of the cut's bin: 4 for a target of 1
    tied = ScoreHistogram.of([0.9] * 4 + [0.1] * 6)
    first = top_cut(tied, 0.1)
    assert first["kept"] == 4 and first["achieved"] == 0.4
    assert (first["target"], first["above_bin"], first["in_bin"], first["need"]) == (1, 0, 4, 1)
    assert needs_tie_break(first)
    # a histogram with many distinct bins turns dense and still merges and pickles the same
    import pickle
    rng = np.random.default_rng(0)
    big = [rng.random(40_000), rng.random(40_000)]
    merged = ScoreHistogram.of(big[0]).add(ScoreHistogram.of(big[1]))
    assert merged == ScoreHistogram.of(np.concatenate(big)) == pickle.loads(pickle.dumps(merged))
    assert merged.total == 80_000


def test_tie_break_by_hand():
    # the key: xxh3_64 of the id's UTF-8 bytes, seed 0; its bin: the top 20 bits
    assert tie_key("doc-1") == xxhash.xxh3_64_intdigest(b"doc-1")
    assert tie_keys(["doc-1", "σ"]).tolist() == [tie_key("doc-1"), xxhash.xxh3_64_intdigest("σ".encode())]
    assert key_bins([0, 2**44 - 1, 2**44, 2**64 - 1]).tolist() == [0, 0, 1, BINS - 1]
    # 6 documents tie at 0.9, 4 score 0.1: the top 30% is 3 of the 6 tied ones, those
    # with the highest key bins; keys given by hand (bins 5, 9, 9, 2, 7, 1 for the tied)
    scores = np.array([0.9] * 6 + [0.1] * 4)
    keys = np.array([5, 9, 9, 2, 7, 1, 8, 8, 8, 8], np.uint64) << np.uint64(44)
    first = top_cut(ScoreHistogram.of(scores), 0.3)
    assert (first["target"], first["in_bin"], first["need"], first["kept"]) == (3, 6, 3, 6)
    b = first["bin"]
    # the second-level histograms, split in any way, sum to the same
    ties = tie_histograms(scores, keys, ["x"] * 10, {"x": b})["x"]
    halves = [tie_histograms(scores[i::2], keys[i::2], ["x"] * 5, {"x": b})["x"] for i in (0, 1)]
    assert ties == ScoreHistogram().add(halves[1]).add(halves[0]) and ties.total == 6
    cut = tie_break_cut(first, ties)
    assert cut["tie_break"] == {"key_bin": 7, "key_bits": 20, "scanned": 6, "kept_in_bin": 3, "remnant": 0}
    assert cut["kept"] == 3 and cut["achieved"] == 0.3 and cut["threshold"] == first["threshold"]
    assert keep_mask(scores, keys, cut).tolist() == [False, True, True, False, True] + [False] * 5
    # need 2: key bin 9 holds two documents, exactly the need
    cut2 = tie_break_cut(top_cut(ScoreHistogram.of(scores), 0.2), ties)
    assert cut2["tie_break"]["key_bin"] == 9 and cut2["kept"] == 2
    # need 1: the two documents sharing key bin 9 are both kept, the one remnant
    cut1 = tie_break_cut(top_cut(ScoreHistogram.of(scores), 0.1), ties)
    assert cut1["tie_break"]["key_bin"] == 9 and cut1["kept"] == 2 and cut1["tie_break"]["remnant"] == 1
    assert keep_mask(scores, keys, cut1).sum() == 2
    # documents above the boundary bin are kept whatever their key; NaN never
    mixed = np.array([0.95, np.nan, 0.9, 0.9, 0.1])
    mk = np.array([0, 0, 9, 1, 9], np.uint64) << np.uint64(44)
    c = top_cut(ScoreHistogram.of(mixed[np.isfinite(mixed)]), 0.5)
    c = tie_break_cut(c, tie_histograms(mixed, mk, ["x"] * 5, {"x": c["bin"]})["x"])
    assert (c["above_bin"], c["need"], c["tie_break"]["key_bin"]) == (1, 1, 9)
    assert keep_mask(mixed, mk, c).tolist() == [True, False, True, False, False]
    # a short tie scan (the scores changed under the run) is an error, not a guess
    with pytest.raises(RuntimeError, match="the scores changed during the run"):
        tie_break_cut(first, ScoreHistogram.of_bins([3, 4]))
    # without a tie-break the rule is the first level's: bin(s) >= b, i.e. s >= threshold
    plain = top_cut(ScoreHistogram.of([0.2, 0.4, 0.6, 0.8]), 0.5)
    assert keep_mask([0.2, 0.4, 0.6, 0.8], np.zeros(4, np.uint64), plain).tolist() == [False, False, True, True]


# ---------------------------------------------------------------- --min-score

@pytest.mark.parametrize("by", ["corpus", "domain"])
def test_summaries_as_a_transform(by):
    """pipelines.score.Summaries merges the per-file histograms of each domain and of the
    corpus, and puts the cut where `by` says: the library's summaries of the whole."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from curation.scores import summary_with_cut
    from pipelines.score import Summaries
    rng = np.random.default_rng(3)
    scores = {"web": [rng.random(50), rng.random(30)], "code": [rng.random(20)]}
    hists = [(d, ScoreHistogram.of(s)) for d, parts in scores.items() for s in parts]
    whole = {d: np.concatenate(parts) for d, parts in scores.items()}
    want_corpus = summary_with_cut(ScoreHistogram.of(np.concatenate(list(whole.values()))),
                                   0.25 if by == "corpus" else None)
    want_domains = {d: summary_with_cut(ScoreHistogram.of(s), 0.25 if by == "domain" else None)
                    for d, s in whole.items()}
    with TestPipeline() as p:
        corpus, domains = p | beam.Create(hists) | Summaries(0.25, by)
        assert_that(corpus, equal_to([want_corpus]), label="Corpus")
        assert_that(domains, equal_to([want_domains]), label="Domains")
    assert ("cut" in want_corpus) == (by == "corpus")


def test_min_score_splits_at_the_threshold_with_the_librarys_scores(min_run, reference):
    out, m = min_run
    docs, removed = rows_of(out, "documents"), rows_of(out, "removed")
    assert docs and removed
    assert all(r["quality_score"] >= 0.5 for r in docs)
    assert all(r["quality_score"] < 0.5 for r in removed)
    # every score is the library's score of that document, exactly
    for r in docs + removed:
        assert r["quality_score"] == reference[r["id"]][1], r["id"]
    assert {r["id"] for r in docs} == {i for i, (_, s, _) in reference.items() if s >= 0.5}
    c = m["counts"]
    assert m["status"] == "complete" and m["balance"]["ok"] and m["parts_agree"]["ok"]
    assert (c["input"], c["scored"], c["rejected"], c["blank_lines_skipped"]) == (142, 138, 4, 1)
    assert c["kept"] == len(docs) and c["removed"] == len(removed)
    assert m["selection"]["mode"] == "min_score" and m["selection"]["threshold"] == 0.5
    assert m["selection"]["kept_fraction"] == len(docs) / 138
    for key in ("input", "scored", "kept", "removed", "rejected"):
        assert m["counters"][key] == c[key], key
    # the model and its held-out metrics are in the manifest
    assert m["model"]["file"] == "model.bin" and len(m["model"]["sha256"]) == 64
    assert m["model"]["held_out"]["roc_auc"] > 0.8
    assert not (out / "score_counts.json").exists() and not (out / "_scores").exists()


def test_score_summaries_per_domain_match_the_scores(min_run, reference):
    _, m = min_run
    summaries = m["scores"]["domains"]
    by_domain: dict[str, list[float]] = {}
    for d, s, _ in reference.values():
        by_domain.setdefault(d.domain or "(none)", []).append(s)
    assert set(summaries) == set(by_domain) == {"books", "forum", "(none)"}
    for name, scores in by_domain.items():
        s = summaries[name]
        assert s["count"] == len(scores) and sum(s["per_0.05"]) == len(scores)
        assert s["mean"] == pytest.approx(np.mean(scores), abs=2e-6)
        p50 = sorted(scores)[math.ceil(0.5 * len(scores)) - 1]
        assert s["deciles"]["p50"] == pytest.approx(p50, abs=2e-6)
    assert summaries["books"]["mean"] > 0.6 > 0.3 > summaries["forum"]["mean"]
    assert m["scores"]["corpus"]["count"] == m["counts"]["scored"]


# ---------------------------------------------------------------- conservation and rejections

def test_every_record_ends_in_exactly_one_place(top_run, corpus, reference):
    out, m = top_run
    docs, removed, rejected = (rows_of(out, s) for s in ("documents", "removed", "rejected"))
    seen = Counter([(r["source"], r["line"]) for r in docs + removed]
                   + [(r["file"], r["line"]) for r in rejected])
    assert set(seen.values()) == {1}
    assert sorted(r["id"] for r in docs + removed) == sorted(reference)
    for r in docs + removed:
        d, _, _ = reference[r["id"]]
        assert (r["source"], r["line"], r["domain"], r["text"]) == (d.source, d.line, d.domain, d.text)
    # rejected records with their cause, file and physical line
    got = {(Path(r["file"]).name, r["line"]): r["cause"] for r in rejected}
    assert got == BAD_RECORDS
    assert m["counts"]["rejected_by_cause"] == dict(sorted(Counter(BAD_RECORDS.values()).items()))
    for name, v in m["domains"].items():
        assert v["input"] == v["kept"] + v["removed"] + v["rejected"], name
    assert sum(v["input"] for v in m["domains"].values()) == m["counts"]["input"]


def test_a_document_the_model_fails_on_is_rejected_not_lost(corpus, model_dir, tmp_path, monkeypatch):
    """Fault injection: the real model, except that it raises on one marked text."""
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    with open(src / "a.jsonl", "a") as f:
        f.write(json.dumps(doc("poison", "POISON " + _texts(11)[0][0], "books")) + "\n")
    real = QualityModel.score

    def flaky(self, texts):
        texts = list(texts)
        if any(t.startswith("POISON") for t in texts):
            raise ValueError("cannot score this one")
        return real(self, texts)

    monkeypatch.setattr(QualityModel, "score", flaky)
    for settings in ({"min_score": 0.5}, {"keep_top": 0.2}):
        out = tmp_path / f"out-{len(settings)}-{next(iter(settings))}"
        m = score(src, out, model_dir, batch_size=16, **settings)
        assert m["balance"]["ok"] and m["parts_agree"]["ok"]
        assert m["counts"]["rejected_by_cause"]["score_error"] == 1 and m["counts"]["scored"] == 138
        (r,) = [r for r in rows_of(out, "rejected") if r["cause"] == "score_error"]
        assert r["line"] == 64 and "cannot score this one" in r["detail"] and r["raw_prefix"].startswith("POISON")
        assert "poison" not in {x["id"] for x in rows_of(out, "documents") + rows_of(out, "removed")}
        assert m["counters"]["rejected_score_error"] == 1


# ---------------------------------------------------------------- --keep-top

def test_keep_top_cuts_the_whole_corpus_not_each_file(top_run, reference):
    out, m = top_run
    kept = {r["id"] for r in rows_of(out, "documents")}
    scores = {i: s for i, (_, s, _) in reference.items()}
    t = expected_cut(list(scores.values()), 0.2)
    assert kept == {i for i, s in scores.items() if s >= t}
    sel = m["selection"]
    assert sel["mode"] == "keep_top" and sel["asked"] == 0.2 and sel["by"] == "corpus"
    assert sel["threshold"] == t and sel["cut"]["target"] == math.ceil(0.2 * 138) == 28
    assert sel["achieved"] == len(kept) / 138 >= 0.2 and len(kept) == sel["cut"]["kept"]
    # no two documents share the boundary bin here: no tie-break, the rule is s >= t
    assert sel["cut"]["in_bin"] == sel["cut"]["need"] == 1 and sel["tie_break"] is None
    assert sel["cut"]["tie_break"] is None and m["counters"].get("tie_break_scanned", 0) == 0
    assert all(r["quality_score"] < t for r in rows_of(out, "removed"))
    for key in ("input", "scored", "kept", "removed", "rejected"):
        assert m["counters"][key] == m["counts"][key], key
    # the good file gives far more than a per-file cut would, the bad one far less
    per_file = Counter(reference[i][2] for i in kept)
    n_file = Counter(f for _, _, f in reference.values())
    assert per_file["a.jsonl"] > math.ceil(0.2 * n_file["a.jsonl"]) + 5
    assert per_file["b.jsonl.gz"] < math.ceil(0.2 * n_file["b.jsonl.gz"]) - 5
    # the scores are the library's
    for r in rows_of(out, "documents") + rows_of(out, "removed"):
        assert r["quality_score"] == scores[r["id"]]


def test_keep_top_by_domain_cuts_each_domain(corpus, model_dir, reference, top_run, tmp_path):
    out = tmp_path / "out"
    m = score(corpus, out, model_dir, keep_top=0.25, keep_top_by="domain")
    assert m["status"] == "complete" and m["parts_agree"]["ok"]
    kept = {r["id"] for r in rows_of(out, "documents")}
    by_domain: dict[str, dict[str, float]] = {}
    for i, (d, s, _) in reference.items():
        by_domain.setdefault(d.domain or "(none)", {})[i] = s
    for name, scores in by_domain.items():
        t = expected_cut(list(scores.values()), 0.25)
        want = {i for i, s in scores.items() if s >= t}
        assert kept & set(scores) == want, name
        v = m["selection"]["domains"][name]
        assert v["threshold"] == t and v["kept"] == len(want) >= math.ceil(0.25 * len(scores))
        assert v["asked"] == 0.25 and v["achieved"] == len(want) / len(scores)
        assert v["cut"]["in_bin"] == v["cut"]["need"] and v["tie_break"] is None
    # a quarter of the (low-scoring) forum survives; the corpus-wide cut keeps far fewer
    forum = by_domain["forum"]
    corpus_kept = {r["id"] for r in rows_of(top_run[0], "documents")}
    assert len(kept & set(forum)) >= math.ceil(0.25 * len(forum)) > len(corpus_kept & set(forum)) + 5


# ---------------------------------------------------------------- --keep-top with ties

def make_tie_docs(model) -> list[dict]:
    """Many documents with the same text (so the same score) and their own ids: domain
    "alpha" is 30 copies of the best-scoring text above 20 bad ones; "beta" 3 good
    texts above 24 copies of another good text, then 13 bad ones; "gamma" 20 distinct
    texts (no ties). Shuffled with a fixed seed."""
    good, bad = _texts(23)
    good = sorted(good[:40], key=lambda t: -float(model.score([t])[0]))
    docs = ([doc(f"alpha-dup-{i:02d}", good[0], "alpha") for i in range(30)]
            + [doc(f"alpha-{i:02d}", bad[i], "alpha") for i in range(20)]
            + [doc(f"beta-{i}", good[1 + i], "beta") for i in range(3)]
            + [doc(f"beta-dup-{i:02d}", good[10], "beta") for i in range(24)]
            + [doc(f"beta-{i:02d}", bad[20 + i], "beta") for i in range(13)]
            + [doc(f"gamma-{i:02d}", (good[20 + i] if i % 2 else bad[40 + i]), "gamma") for i in range(20)])
    order = np.random.default_rng(5).permutation(len(docs))
    return [docs[i] for i in order]


def expected_top(docs: list[dict], scores: dict[str, float], fraction: float) -> set[str]:
    """The top ceil(F * N) ids by (score bin, top 20 bits of xxh3_64(id)), by sorting,
    written without the library; asserts that the last kept and first left out differ."""
    key = {d["id"]: (min(math.floor(scores[d["id"]] * BINS), BINS - 1),
                     xxhash.xxh3_64_intdigest(d["id"].encode()) >> 44) for d in docs}
    ranked = sorted(key, key=lambda i: key[i], reverse=True)
    target = math.ceil(round(fraction * len(docs), 9))
    assert key[ranked[target - 1]] != key[ranked[target]]   # no hash tie at the cut
    return set(ranked[:target])


@pytest.fixture(scope="module")
def tie_corpus(model, tmp_path_factory):
    """The tie documents as one file, and the same documents in another order as three
    files; with each document's score from the library."""
    root = tmp_path_factory.mktemp("score_ties")
    docs = make_tie_docs(model)
    one = root / "one"
    one.mkdir()
    (one / "all.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    three = root / "three"
    three.mkdir()
    rev = docs[::-1]
    for k, name in enumerate(("p.jsonl", "q.jsonl", "r.jsonl")):
        (three / name).write_text("".join(json.dumps(d) + "\n" for d in rev[k::3]))
    scores = {d["id"]: float(model.score([d["text"]])[0]) for d in docs}
    assert len(set(scores[d["id"]] for d in docs if "-dup-" in d["id"])) == 2   # the tied blocks
    return one, three, docs, scores


def test_keep_top_breaks_ties_to_the_exact_target_per_domain(tie_corpus, model_dir, tmp_path):
    one, three, docs, scores = tie_corpus
    runs = {}
    for name, inputs, args in (("one", one, FAST), ("three", three, TWO_PROCS), ("again", three, FAST)):
        out = tmp_path / name
        m = score(inputs, out, model_dir, *args, keep_top=0.2, keep_top_by="domain", batch_size=16)
        assert m["status"] == "complete" and m["balance"]["ok"] and m["parts_agree"]["ok"], m["parts_agree"]
        runs[name] = (out, m)
    out, m = runs["one"]
    kept = {r["id"] for r in rows_of(out, "documents")}
    sel = m["selection"]
    assert "key_bin(id) >= t" in m["parameters"]["selection_rule"]
    for dom, n, tied, need in (("alpha", 50, 30, 10), ("beta", 40, 24, 5), ("gamma", 20, None, None)):
        members = [d for d in docs if d["domain"] == dom]
        want = expected_top(members, scores, 0.2)
        assert kept & {d["id"] for d in members} == want, dom
        v = sel["domains"][dom]
        assert v["kept"] == len(want) == math.ceil(0.2 * n) and v["achieved"] == v["asked"] == 0.2, dom
        if tied is None:                      # distinct scores: nothing changes
            assert v["tie_break"] is None and v["cut"]["in_bin"] == v["cut"]["need"] == 1
            assert want == {i for i in want if scores[i] >= v["threshold"]}
            continue
        tb = v["tie_break"]
        assert (tb["in_bin"], tb["need"], tb["target"], tb["kept"], tb["remnant"]) == (
            tied, need, math.ceil(0.2 * n), len(want), 0), dom
        assert tb["boundary_bin"] == v["cut"]["bin"] and tb["achieved"] == 0.2 and tb["asked"] == 0.2
        # the tied documents kept are those with key bins >= the cut; the others removed
        dup = [d["id"] for d in members if "-dup-" in d["id"]]
        assert {i for i in dup if tie_key(i) >> 44 >= tb["key_bin_cut"]} == want & set(dup)
        assert len(want & set(dup)) == need
    # removed documents that scored the threshold are the tie-break's, and counted
    rm = [r for r in rows_of(out, "removed") if r["quality_score"] >= sel["domains"][r["domain"]]["threshold"]]
    assert len(rm) == (30 - 10) + (24 - 5) and all("-dup-" in r["id"] for r in rm)
    assert m["counters"]["tie_break_scanned"] == 30 + 24
    # the same documents, in another order, in three files, on two workers: the same ids
    assert {r["id"] for r in rows_of(runs["three"][0], "documents")} == kept
    assert {k: v["kept"] for k, v in runs["three"][1]["selection"]["domains"].items()} == {
        "alpha": 10, "beta": 8, "gamma": 4}
    # and a rerun is byte-identical
    assert output_files(runs["again"][0]) == output_files(runs["three"][0])


def test_keep_top_breaks_ties_across_the_corpus(tie_corpus, model_dir, tmp_path):
    _, three, docs, scores = tie_corpus
    out = tmp_path / "out"
    m = score(three, out, model_dir, keep_top=0.2, batch_size=16)
    assert m["balance"]["ok"] and m["parts_agree"]["ok"] and m["parts_agree"]["kept_predicted_by_cut"] == 22
    kept = {r["id"] for r in rows_of(out, "documents")}
    assert kept == expected_top(docs, scores, 0.2) and len(kept) == 22 == math.ceil(0.2 * 110)
    tb = m["selection"]["tie_break"]
    assert tb["in_bin"] == 30 and tb["kept"] == tb["target"] == 22 and tb["remnant"] == 0
    assert tb["need"] == 22 - tb["above_bin"] and m["selection"]["achieved"] == 0.2
    # the first level alone would have kept the whole block of 30 (and everything above it)
    assert m["selection"]["cut"]["in_bin"] + m["selection"]["cut"]["above_bin"] > 22


# ---------------------------------------------------------------- the score in later stages

def test_quality_score_reaches_later_stages_with_ids_domains_and_meta(min_run, reference, model_dir, tmp_path):
    from pipelines.run_filter import run_filter
    out, _ = min_run
    shards = [str(p) for p in sorted((out / "documents").glob("*.parquet"))]
    later = {d.id: d for f in expand_inputs(shards) for d in read_documents(f) if isinstance(d, Document)}
    assert len(later) == len(rows_of(out, "documents"))
    for i, d in later.items():
        orig, s, _ = reference[i]
        assert d.meta["quality_score"] == s and d.domain == orig.domain
        # the document's own fields, plus where the first stage read it
        assert d.meta == {**orig.meta, "quality_score": s, "source": orig.source, "line": orig.line}
    for r in rows_of(out, "documents"):       # the row-level inverse agrees
        assert document_from_row(r).meta == {**reference[r["id"]][0].meta, "quality_score": r["quality_score"]}

    # the filter stage carries it on in its own meta
    fout = tmp_path / "filtered"
    fm = run_filter(FilterRunConfig(inputs=[str(out / "documents")], output=str(fout), preset="c4"), FAST)
    assert fm["balance"]["ok"] and fm["counts"]["input"] == len(later)
    frows = rows_of(fout, "documents") + rows_of(fout, "removed")
    assert len(frows) == len(later)
    for r in frows:
        assert json.loads(r["meta"])["quality_score"] == reference[r["id"]][1]

    # scored again (jsonl.gz this time): one score per row, the new column; meta keeps the rest
    again = tmp_path / "again"
    m2 = score(out / "documents", again, model_dir, output_format="jsonl.gz")
    rows = rows_of(again, "documents")
    assert m2["counts"]["kept"] == len(rows) == len(later)
    for r in rows:
        assert r["quality_score"] == reference[r["id"]][1]
        assert "quality_score" not in json.loads(r["meta"])
    back = [d for p in sorted((again / "documents").glob("*")) for d in read_documents(str(p))]
    assert all(d.meta["quality_score"] == reference[d.id][1] for d in back)


# ---------------------------------------------------------------- determinism and reruns

def test_two_runs_are_byte_identical_and_overwrite_reproduces(corpus, model_dir, top_run, tmp_path):
    out, _ = top_run
    before = output_files(out)
    assert any(k.startswith("removed/") for k in before) and any(k.startswith("documents/") for k in before)
    other = tmp_path / "other"
    score(corpus, other, model_dir, *TWO_PROCS, keep_top=0.2, batch_size=16)
    assert output_files(other) == before
    m = score(corpus, out, model_dir, keep_top=0.2, batch_size=16, overwrite=True)
    assert m["status"] == "complete" and output_files(out) == before


def test_rerun_is_skipped_unless_settings_model_or_overwrite_change(corpus, model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    out = tmp_path / "out"
    m0 = score(corpus, out, model, min_score=0.5)
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()

    assert score(corpus, out, model, min_score=0.5) == m0
    assert "already holds a complete run" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == manifest

    # a file no run of ours wrote is never deleted: the run no longer matches its
    # manifest, and clearing it for a rerun refuses, naming the file
    from curation.outputs import OutputError
    sentinel = out / "documents" / "zz-sentinel.parquet"
    sentinel.write_bytes(b"left by a test")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="zz-sentinel.parquet"):
            score(corpus, out, model, min_score=0.5, overwrite=overwrite)
    assert sentinel.exists()
    sentinel.unlink()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    score(corpus, out, model, min_score=0.5, overwrite=True)
    assert "already holds" not in capsys.readouterr().err
    assert (out / "manifest.json").stat().st_mtime_ns != stamp

    score(corpus, out, model, min_score=0.6)
    assert "already holds" not in capsys.readouterr().err

    # a retrained model at the same path is another run (its bytes are in the parameters)
    train_classifier(synthetic_labels(), model, threshold=3, **{**SMALL, "seed": 8})
    m = score(corpus, out, model, min_score=0.6)
    assert "already holds" not in capsys.readouterr().err
    assert m["model"]["sha256"] != m0["model"]["sha256"]


# ---------------------------------------------------------------- a remote model, and Dataflow

@pytest.fixture
def remote_model(model_dir, tmp_path):
    ROOT[:] = [str(tmp_path / "bucket")]
    shutil.copytree(model_dir, tmp_path / "bucket" / "models" / "q")
    yield f"{PREFIX}models/q"
    ROOT.clear()


def test_a_remote_model_is_copied_to_the_workers(corpus, remote_model, min_run, tmp_path):
    out = tmp_path / "out"
    m = score(corpus, out, remote_model, min_score=0.5, batch_size=16)
    assert m["model"]["path"] == remote_model and m["model"]["sha256"] == min_run[1]["model"]["sha256"]
    assert output_files(out) == output_files(min_run[0])


@pytest.mark.parametrize("selection", [{"keep_top": 0.1, "keep_top_by": "domain"}, {"min_score": 0.5}])
def test_dataflow_job_graph_offline(remote_model, selection):
    from apache_beam.portability.api import beam_runner_api_pb2
    from curation.demo import demo_glob
    beam_args = ["--runner", "DataflowRunner", "--project", "my-project-123",
                 "--region", "us-central1", "--temp_location", "gs://my-bucket-123/tmp",
                 "--no_save_main_session", "--dry_run=True"]
    cfg = ScoreRunConfig(inputs=[demo_glob()], output="gs://my-bucket-123/runs/score",
                         model=remote_model, **selection)
    res = run_score(cfg, beam_args)
    assert res["status"] == "dry_run" and res["runner"] == "DataflowRunner"
    assert res["parameters"]["model"]["path"] == remote_model
    transforms = res["job"].proto_pipeline.components.transforms.values()
    names = {t.unique_name for t in transforms}
    two_pass = ["ScanFiles", "SpreadScanned", "TieScan", "TieHistPerDomain", "TieHists", "CorpusCut",
                "DomainCuts", "CutFiles"]
    # the histograms' summaries are one composite transform (pipelines.score.Summaries)
    for step in ["Files", "SpreadFiles", "Summaries", "Summaries/HistPerDomain", "Summaries/CorpusHist",
                 "Summaries/CorpusSummary", "Summaries/DomainSummaries",
                 "AllCounts", "SumCounts", "WriteCounts"] + (two_pass if "keep_top" in selection else ["ScoreFiles"]):
        assert step in names, step
    if "keep_top" not in selection:
        assert not names & set(two_pass)
    # shuffles carry files, histograms and counts: document text never goes through one
    gbks = [t.unique_name for t in transforms if t.spec.urn == "beam:transform:group_by_key:v1"]
    assert all(g.startswith(("Files/", "SpreadFiles/", "SpreadScanned/", "Summaries/HistPerDomain/",
                             "Summaries/CorpusHist/", "Summaries/DomainSummaries/", "TieHistPerDomain/", "TieHists/", "SumCounts/"))
               for g in gbks), gbks
    if "keep_top" in selection:
        # the tie scan waits for the first-level cuts, the writing step for the final ones:
        # both summaries are side inputs of each
        for step in ("TieScan", "CutFiles"):
            (t,) = [t for t in transforms if t.unique_name == step]
            assert len(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).side_inputs) == 2

    # a local model directory cannot reach Dataflow workers: said before anything is built
    with pytest.raises(UsageError, match="Dataflow workers cannot read a local directory"):
        run_score(cfg.model_copy(update={"model": str(Path(ROOT[0]) / "models" / "q")}), beam_args)


# ---------------------------------------------------------------- errors

def test_model_directory_errors(corpus, tmp_path, model_dir):
    def run(model):
        return score(corpus, tmp_path / "out", model)

    with pytest.raises(UsageError, match="no such model directory"):
        run(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no model.bin or model.ftz"):
        run(empty)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(model_dir / "model.bin", half / "model.bin")
    with pytest.raises(UsageError, match="no metrics.json"):
        run(half)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.bin").write_bytes(b"not a fastText model")
    shutil.copy(model_dir / "metrics.json", junk / "metrics.json")
    with pytest.raises(UsageError, match="cannot use it as a quality model"):
        run(junk)
    # a fastText model, but a language-id style one: not P(high quality)
    import fasttext
    from classifiers.fasttext_train import _zeroed_allocations   # fastText's heap: see there
    other = tmp_path / "other"
    other.mkdir()
    train = tmp_path / "lid.txt"
    train.write_text("".join(f"__label__{'en' if i % 2 else 'de'} word{i % 7} thing{i % 3}\n" for i in range(60)))
    with _zeroed_allocations():
        lid = fasttext.train_supervised(input=str(train), dim=4, epoch=1, bucket=1000, thread=1, verbose=0)
    lid.save_model(str(other / "model.bin"))
    shutil.copy(model_dir / "metrics.json", other / "metrics.json")
    with pytest.raises(UsageError, match="not a quality model"):
        run(other)
    assert not (tmp_path / "out").exists()     # nothing was started


def test_a_model_that_changes_during_the_run_is_refused(model_dir, tmp_path):
    from classifiers.scoring import ModelChanged, ModelRef, load_quality_model
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    _, sha = load_quality_model(ModelRef(path=str(copy), file="model.bin"))
    load_quality_model(ModelRef(path=str(copy), file="model.bin", sha256=sha))
    with open(copy / "model.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelChanged, match="changed since the run started"):
        load_quality_model(ModelRef(path=str(copy), file="model.bin", sha256=sha))


@pytest.mark.parametrize("overrides, message", [
    ({"min_score": 0.5, "keep_top": 0.1}, "give min_score or keep_top, not both"),
    ({"keep_top": 0.0}, "keep_top: Input should be greater than 0"),
    ({"keep_top": 1.5}, "keep_top: Input should be less than or equal to 1"),
    ({"min_score": -0.1}, "min_score: Input should be greater than or equal to 0"),
    ({"keep_top_by": "domain"}, "keep_top_by needs keep_top"),
    ({"keep_top": 0.1, "keep_top_by": "file"}, "keep_top_by: Input should be 'corpus' or 'domain'"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
])
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ScoreRunConfig, overrides={"inputs": ["x"], "output": "o", "model": "m", **overrides})
    with pytest.raises(ConfigError, match="model: Field required"):
        load_config(ScoreRunConfig, overrides={"inputs": ["x"], "output": "o"})
