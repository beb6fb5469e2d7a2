"""`curate mix` holds a bounded sample per domain (issue 13): the sample is the
shortest prefix of the split rule's ranking that reaches the bound, the same whatever
the read order, and the statistics still count every document (tokens estimated from
the sample, and said so)."""
from __future__ import annotations

import json
import random

import yaml

from curation.documents import Document
from curation.mixture.data import DomainSample, load_corpus, split_hash, text_bytes
from curation.mixture.stats import domain_statistics, statistics_table
from curation.mixture.tokenizer import StatedTokenizer
from pipelines.cli import main
from tests.mixture_corpus import demo_records

BOUND = 350_000     # bytes per domain: email (5 MB) and reference (0.7 MB) are sampled, books (0.3 MB) is not


def _write(root, recs_by_domain, shuffle_seed=None, files=1):
    """One folder per domain, `files` JSONL files each; records shuffled if asked."""
    mapping = {}
    for d, recs in recs_by_domain.items():
        recs = list(recs)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(recs)
        (root / d).mkdir(parents=True)
        for k in range(files):
            part = recs[k::files]
            (root / d / f"p{k}.jsonl").write_text(
                "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in part))
        mapping[d] = str(root / d / "*.jsonl")
    return mapping


def _corpus():
    recs = demo_records()
    return {d: recs[d] for d in ("books", "email", "reference")}


def _expected_sample(domain, recs, seed, bound):
    """The shortest prefix of the groups ranked by (split hash, id) reaching `bound` bytes."""
    ranked = sorted({r["id"] for r in recs}, key=lambda i: (split_hash(seed, domain, i), i))
    size = {}
    for r in recs:
        size[r["id"]] = size.get(r["id"], 0) + text_bytes(r["text"])
    out, total = set(), 0
    for i in ranked:
        if total >= bound:
            break
        out.add(i)
        total += size[i]
    return out


def test_sample_is_bounded_order_free_and_the_counts_cover_everything(tmp_path):
    corpus = _corpus()
    a = load_corpus(domains=_write(tmp_path / "a", corpus), seed=2, max_bytes=BOUND)
    b = load_corpus(domains=_write(tmp_path / "b", corpus, shuffle_seed=5, files=3), seed=2,
                    max_bytes=BOUND)
    assert a.splits == b.splits and a.fingerprint() == b.fingerprint()   # read order does not matter
    for d, recs in corpus.items():
        held = {i for s in ("train", "valid", "test") for i in a.splits[s][d].ids}
        assert held == _expected_sample(d, recs, 2, BOUND)
        held_bytes = sum(a.splits[s][d].bytes for s in ("train", "valid", "test"))
        biggest = max(text_bytes(r["text"]) for r in recs)
        assert held_bytes < BOUND + biggest or len(held) == len(recs)
        assert a.totals[d] == {"documents": len(recs), "bytes": sum(text_bytes(r["text"]) for r in recs)}
    assert [d for d in corpus if a.sampled(d)] == ["email", "reference"]
    # a domain the bound holds whole is split exactly as without a bound
    whole = load_corpus(domains={"books": str(tmp_path / "a" / "books" / "*.jsonl")}, seed=2)
    assert all(a.splits[s]["books"] == whole.splits[s]["books"] for s in ("train", "valid", "test"))

    tok = StatedTokenizer.for_corpus(a, vocab_size=300)
    stats = domain_statistics(a, tok)
    for d, recs in corpus.items():
        v = stats["domains"][d]
        assert sum(v["splits"][s]["documents"] for s in v["splits"]) == len(recs)
        assert sum(v["splits"][s]["bytes"] for s in v["splits"]) == a.totals[d]["bytes"]
        if d == "books":
            assert "tokens_estimated" not in v and "sample" not in v
        else:
            sample_docs = sum(a.splits[s][d].documents for s in ("train", "valid", "test"))
            assert v["tokens_estimated"] is True and v["sample"]["documents"] == sample_docs
            held_tokens = sum(len(x) for s in ("train", "valid", "test")
                              for x in tok.encode_batch(list(a.splits[s][d].texts)))
            assert v["tokens"] > held_tokens        # the whole corpus's estimate, not the sample's
    table = statistics_table(stats)
    assert "~" in table and "tokens estimated from a sample" in table
    infos = {i.name: i for i in a.domain_infos(tok)}
    assert infos["email"].documents == stats["domains"]["email"]["documents"]


def test_sampler_ignores_the_order_documents_arrive_in():
    recs = demo_records()["email"]
    docs = [Document(id=r["id"], text=r["text"], domain="email") for r in recs]
    docs.append(Document(id=docs[10].id, text="a second document of one group", domain="email"))
    kept = []
    for order in (docs, docs[::-1], random.Random(1).sample(docs, len(docs))):
        s = DomainSample("email", 0, 100_000)
        for d in order:
            s.add(d)
        assert s.sampled and s.seen_documents == len(docs)
        kept.append(sorted((d.id, d.text) for d in s.documents))
    assert kept[0] == kept[1] == kept[2]
    ids = {i for i, _ in kept[0]}
    assert (docs[10].id in ids) == (sum(i == docs[10].id for i, _ in kept[0]) == 2)   # groups whole


def test_mix_says_its_statistics_are_estimated(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    mapping = _write(tmp_path / "c", _corpus())
    cfg = {"sources": mapping, "tokenizer_vocab": 300, "sample": {"max_bytes_per_domain": BOUND},
           "proxy": {"budget_tokens": 5000}, "constraints": {"min_weight": 0.01, "max_epochs": 4},
           "search": {"rounds": 1, "runs_per_round": 1, "noise_seeds": 2, "final_seeds": 3},
           "fidelity": {"enabled": False},
           "baselines": [{"name": "uniform"}, {"name": "natural"}], "proposers": [{"name": "random"}]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["mix", "--config", str(tmp_path / "mix.yaml"), "--output", str(out)]) == 0
    stats = json.loads((out / "statistics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    mixture = yaml.safe_load((out / "mixture.yaml").read_text())
    for doc in (summary["data_sample"], mixture["settings"]["data_sample"]):
        assert doc["max_bytes_per_domain"] == BOUND
        assert sorted(doc["domains"]) == ["email", "reference"]
        email = doc["domains"]["email"]
        assert email["corpus_documents"] == len(demo_records()["email"])
        assert email["sample_documents"] == stats["domains"]["email"]["sample"]["documents"]
        assert "estimated from a sample of" in email["note"]
    assert stats["domains"]["email"]["documents"] > email["sample_documents"]
