"""Domain data for the mixture search: the split rule, the stated tokenizer, domain
statistics (curation.mixture.data / tokenizer / stats)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curation.demo import demo_glob
from curation.documents import Document
from curation.mixture.data import SPLITS, load_corpus, split_documents, split_hash
from curation.mixture.stats import domain_extras, domain_statistics, statistics_table
from curation.mixture.tokenizer import META_FILE, TOKENIZER_FILE, StatedTokenizer
from tests.mixture_corpus import demo_records, write_small_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixcorpus")
    mapping = write_small_corpus(root)
    splits = load_corpus(domains=mapping, seed=0)
    return root, mapping, splits


@pytest.fixture(scope="module")
def tok(small):
    return StatedTokenizer.for_corpus(small[2])


def _docs(domain: str, recs: list[dict]) -> list[Document]:
    return [Document(id=r["id"], text=r["text"], domain=domain,
                     meta={k: v for k, v in r.items() if k not in ("id", "text", "domain")})
            for r in recs]


# ---------------------------------------------------------------- the split rule

def test_split_is_a_partition_with_the_asked_fractions_and_ignores_input_order():
    recs = demo_records()
    by_domain = {d: _docs(d, r) for d, r in recs.items()}
    a = split_documents(by_domain, seed=0)
    shuffled = {d: random.Random(7).sample(v, len(v)) for d, v in reversed(list(by_domain.items()))}
    b = split_documents(shuffled, seed=0)
    assert a == b                                       # file / record order does not matter
    for d, docs in by_domain.items():
        got = Counter()
        for s in SPLITS:
            got.update(zip(a[s][d].ids, a[s][d].texts))
        assert got == Counter((x.id, x.text) for x in docs)   # every document exactly once
        ids = {s: set(a[s][d].ids) for s in SPLITS}
        assert not ids["valid"] & ids["test"] and not ids["train"] & (ids["valid"] | ids["test"])
        groups = len({x.id for x in docs})
        assert len(a["valid"][d].ids) >= 1 and len(a["test"][d].ids) >= 1
        assert abs(len(set(a["valid"][d].ids)) - round(0.1 * groups)) <= 1
    # reference has 1511 entries: the valid share is close to 10%
    assert len(a["valid"]["reference"].ids) == pytest.approx(151, abs=2)
    # a different seed moves documents
    c = split_documents(by_domain, seed=1)
    assert c["valid"]["reference"].ids != a["valid"]["reference"].ids


def test_same_id_and_grouped_variants_share_a_split():
    recs = demo_records()
    by_domain = {d: _docs(d, r) for d, r in recs.items()}
    plain = split_documents(by_domain, seed=3)
    grouped = split_documents(by_domain, seed=3, group_field="variant_of")

    def where(sp):
        out = {}
        for s in SPLITS:
            for d in sp[s]:
                for i in sp[s][d].ids:
                    out.setdefault((d, i), set()).add(s)
        return out

    for sp in (plain, grouped):
        assert all(len(v) == 1 for v in where(sp).values())   # duplicated ids never straddle
    w = where(grouped)
    variants = [(d, x.id, x.meta["variant_of"]) for d, docs in by_domain.items() for x in docs
                if "variant_of" in x.meta]
    assert len(variants) >= 20
    assert all(w[(d, i)] == w[(d, orig)] for d, i, orig in variants)
    # without grouping some variant lands away from its original (the leak grouping prevents)
    wp = where(plain)
    assert any(wp[(d, i)] != wp[(d, orig)] for d, i, orig in variants)


def test_small_domains_get_one_document_per_split_and_too_small_is_an_error():
    docs = [Document(id=f"c{i}", text=f"chapter {i}", domain="books") for i in range(3)]
    sp = split_documents({"books": docs}, seed=0)
    assert [len(sp[s]["books"].ids) for s in SPLITS] == [1, 1, 1]
    with pytest.raises(ValueError, match="books.*2 document group"):
        split_documents({"books": docs[:2]}, seed=0)
    with pytest.raises(ValueError, match="fractions"):
        split_documents({"books": docs}, fractions=(0.5, 0.4, 0.4))


def test_split_hash_is_the_documented_function():
    import xxhash
    assert split_hash(5, "web", "a/b") == xxhash.xxh3_64_intdigest(b"5\0web\0a/b")


# ---------------------------------------------------------------- loading

def test_load_corpus_by_domain_globs_and_by_record_field(small, tmp_path):
    root, mapping, splits = small
    assert splits.domains == sorted(mapping) == ["books", "code", "docs", "email", "reference",
                                                 "speeches", "web", "wiki"]
    n = {d: sum(splits.split(s)[d].documents for s in SPLITS) for d in splits.domains}
    lines = {d: sum(1 for _ in open(root / d / "part-0.jsonl")) for d in mapping}
    assert n == lines
    # the same files through one glob with the domain in the record: the same splits
    for d in mapping:
        src = root / d / "part-0.jsonl"
        out = tmp_path / "labelled" / f"{d}.jsonl"
        out.parent.mkdir(exist_ok=True)
        with open(src) as f, open(out, "w") as g:
            for line in f:
                g.write(json.dumps({**json.loads(line), "domain": d}) + "\n")
    again = load_corpus(str(tmp_path / "labelled" / "*.jsonl"))
    assert again.splits == splits.splits
    assert again.fingerprint() == splits.fingerprint()
    # the mapping wins over the record's field
    relabelled = load_corpus(domains={"x": str(tmp_path / "labelled" / "code.jsonl"),
                                      "y": str(tmp_path / "labelled" / "web.jsonl")})
    assert relabelled.domains == ["x", "y"]


def test_load_corpus_errors_and_rejections(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    with pytest.raises(ValueError, match="has no domain"):
        load_corpus(str(tmp_path / "a.jsonl"))
    with pytest.raises(ValueError, match="two domains"):
        load_corpus(domains={"p": str(tmp_path / "a.jsonl"), "q": str(tmp_path / "*.jsonl")})
    rows = [json.dumps({"id": str(i), "text": f"document number {i}"}) for i in range(6)]
    (tmp_path / "b.jsonl").write_text("\n".join(rows + ["{not json", '{"id": "z", "text": "  "}']) + "\n")
    sp = load_corpus(domains={"b": str(tmp_path / "b.jsonl")})
    assert sp.rejected == {"empty_text": 1, "malformed_json": 1}
    assert sum(sp.split(s)["b"].documents for s in SPLITS) == 6
    with pytest.raises(ValueError, match="unknown split"):
        sp.split("dev")


# ---------------------------------------------------------------- the tokenizer

def test_tokenizer_training_is_deterministic_in_process_and_across_processes(small, tok, tmp_path):
    splits = small[2]
    again = StatedTokenizer.for_corpus(splits)
    assert again.to_json() == tok.to_json() and again.id == tok.id
    # another process, one thread, texts in another order: the same bytes
    texts = splits.train_texts()
    random.Random(1).shuffle(texts)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = ("import json,sys; from curation.mixture.tokenizer import StatedTokenizer as T; "
              "t = T.train(json.load(open(sys.argv[1])), trained_on=sys.argv[2]); "
              "print(t.sha256)")
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "RAYON_RS_NUM_CPUS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "texts.json"), splits.fingerprint()],
                         env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tok.sha256


def test_tokenizer_is_named_round_trips_and_counts_bytes(small, tok, tmp_path):
    splits = small[2]
    assert tok.vocab_size == 4096
    assert tok.description == f"bytelevel-bpe-4096 trained on {splits.fingerprint()[:12]}"
    text = "naïve café 東京 — 🙂 def f(x):\n\treturn x ** 2\r\n\x00"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert int(tok.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    enc = splits.encoded(tok)
    for d in splits.domains:
        e = enc["valid"][d]
        per_doc = np.add.reduceat(tok.token_bytes[e.tokens], e.offsets[:-1])
        assert per_doc.tolist() == e.doc_bytes.tolist()
    # merges learnt: the text is far shorter in tokens than in bytes
    train_bytes = sum(enc["train"][d].n_bytes for d in splits.domains)
    train_tokens = sum(enc["train"][d].n_tokens for d in splits.domains)
    assert train_bytes / train_tokens > 2.5
    path = tok.save(str(tmp_path))
    assert os.path.basename(path) == TOKENIZER_FILE
    loaded = StatedTokenizer.load(str(tmp_path))
    assert loaded.id == tok.id and loaded.description == tok.description
    assert loaded.encode(text).tolist() == ids.tolist()
    import tokenizers        # a plain Hugging Face file
    assert tokenizers.Tokenizer.from_file(path).encode(text).ids == ids.tolist()
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another tokenizer.json"):
        StatedTokenizer.load(str(tmp_path))


def test_train_or_load_reuses_a_matching_tokenizer(small, tok, tmp_path, monkeypatch):
    splits = small[2]
    tok.save(str(tmp_path))
    calls = []
    real = StatedTokenizer.train.__func__

    def counting(cls, *a, **k):
        calls.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(StatedTokenizer, "train", classmethod(counting))
    assert StatedTokenizer.for_corpus(splits, str(tmp_path)).id == tok.id and calls == []
    small_vocab = StatedTokenizer.for_corpus(splits, str(tmp_path), vocab_size=512)
    assert calls == [1] and small_vocab.vocab_size == 512
    assert StatedTokenizer.load(str(tmp_path)).id == small_vocab.id


# ---------------------------------------------------------------- domain infos and statistics

def test_domain_infos_count_the_train_split(small, tok):
    splits = small[2]
    infos = splits.domain_infos(tok)
    assert [i.name for i in infos] == splits.domains
    for info in infos:
        texts = splits.texts("train", info.name)
        assert info.documents == len(texts)
        assert info.bytes == sum(len(t.encode("utf-8")) for t in texts)
        assert info.tokens == sum(len(tok.encode(t)) for t in texts)
    # merges learnt on this corpus: between 2 and 6 bytes per token in every domain
    assert all(2 < i.bytes / i.tokens < 6 for i in infos), {i.name: i.bytes / i.tokens for i in infos}


FILTER_MANIFEST = {
    "command": "filter", "status": "complete",
    "counts": {"input": 300, "kept": 240, "removed": 60, "rejected": 0},
    "domains": {
        "books": {"input": 100, "kept": 95, "edited": 0, "rejected": 0,
                  "removed": {"gopher_quality": 5, "c4_badwords": 0}},
        "code": {"input": 200, "kept": 145, "edited": 0, "rejected": 0,
                 "removed": {"gopher_quality": 40, "c4_badwords": 15}},
    },
}
SCORE_MANIFEST = {
    "command": "score", "status": "complete",
    "selection": {"kept_fraction": 0.5},
    "domains": {"books": {"input": 95, "scored": 95, "kept": 80, "removed": 15, "rejected": 0}},
    "scores": {"corpus": {"count": 95, "mean": 0.7},
               "domains": {"books": {"count": 95, "mean": 0.71, "min": 0.1, "max": 1.0,
                                     "deciles": {"p10": 0.3, "p50": 0.75, "p90": 0.95},
                                     "per_0.05": [0] * 20}}},
}
DEDUP_MANIFEST = {"command": "dedup", "status": "complete",
                  "counts": {"input": 1000, "kept": 900, "removed_exact": 60, "removed_near": 40,
                             "rejected": 0}}


def test_domain_statistics_with_and_without_stage_manifests(small, tok, tmp_path):
    splits = small[2]
    bare = domain_statistics(splits, tok)
    json.dumps(bare)                                    # JSON-serialisable
    assert bare["stages"] == {}
    assert "filtered" not in statistics_table(bare) and "quality" not in statistics_table(bare)
    d = bare["domains"]["code"]
    assert d["tokens"] == splits.encoded(tok)["train"]["code"].n_tokens
    assert d["splits"]["valid"]["documents"] == splits.split("valid")["code"].documents
    assert sum(v["token_share"] for v in bare["domains"].values()) == pytest.approx(1, abs=1e-5)

    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "manifest.json").write_text(json.dumps(FILTER_MANIFEST))
    full = domain_statistics(splits, tok, dedup=DEDUP_MANIFEST, filter=str(tmp_path / "filter"),
                             score=SCORE_MANIFEST)
    json.dumps(full)
    books, code = full["domains"]["books"], full["domains"]["code"]
    assert books["filter_removal_rate"] == 0.05 and code["filter_removal_rate"] == 0.275
    assert code["filter_removed_by_rule"] == {"c4_badwords": 0.075, "gopher_quality": 0.2}
    assert books["quality"] == {"count": 95, "mean": 0.71, "p10": 0.3, "p50": 0.75, "p90": 0.95}
    assert books["score_kept_fraction"] == round(80 / 95, 6)
    assert "quality" not in code                        # a domain the stage did not see
    assert full["stages"]["dedup"]["duplicate_rate"] == 0.1
    assert "web" in full["stages"]["filter"]["domains_missing"]
    table = statistics_table(full)
    assert "| code |" in table and "gopher_quality (20.0%)" in table and "27.5%" in table
    assert "Deduplication removed 10.0%" in table and tok.description in table
    hidden = statistics_table(full, aliases={d: f"d{i + 1}" for i, d in enumerate(splits.domains)})
    assert "| d2 |" in hidden and "code" not in hidden and "books" not in hidden
    extras = domain_extras(full)
    assert extras["books"]["quality_mean"] == 0.71 and "quality_mean" not in extras["code"]
    infos = splits.domain_infos(tok, extras)
    assert infos[0].extra["filter_removal_rate"] == 0.05
    with pytest.raises(ValueError, match="not 'dedup'"):
        domain_statistics(splits, tok, dedup=FILTER_MANIFEST)
    with pytest.raises(ValueError, match="complete"):
        domain_statistics(splits, tok, score={**SCORE_MANIFEST, "status": "failed"})


@pytest.mark.timeout(120)
def test_demo_corpus_splits_every_domain():
    """The shipped demo corpus: eight domains, each with train, valid and test."""
    sp = load_corpus(demo_glob())
    assert sp.domains == ["books", "code", "docs", "email", "reference", "speeches", "web", "wiki"]
    for s in SPLITS:
        assert all(sp.split(s)[d].documents >= 1 for d in sp.domains)
    total = sum(sp.split(s)[d].documents for s in SPLITS for d in sp.domains)
    assert total == sum(len(v) for v in demo_records().values())
