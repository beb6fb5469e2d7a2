"""The fast proxy backend: the Kneser-Ney n-gram model, sampling a mixture, the target,
and the result cache (curation.mixture.ngram / proxy)."""
from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict

import numpy as np
import pytest

from curation.mixture.data import load_corpus
from curation.mixture.ngram import KneserNeyLM, loss_and_bpb
from curation.mixture.proxy import (NGramBackend, ResultCache, Target, draw_documents, gather,
                                   run_identity, token_shares)
from curation.mixture.tokenizer import StatedTokenizer
from curation.mixture.types import mixture_key
from tests.mixture_corpus import Counting, write_small_corpus


@pytest.fixture(scope="module")
def mapping(tmp_path_factory):
    return write_small_corpus(tmp_path_factory.mktemp("mixcorpus"))


@pytest.fixture(scope="module")
def corpus(mapping):
    splits = load_corpus(domains=mapping, seed=0)
    return splits, StatedTokenizer.for_corpus(splits)


@pytest.fixture(scope="module")
def backend(corpus):
    return NGramBackend(*corpus)


def uniform(domains):
    return {d: 1 / len(domains) for d in domains}


def natural(backend):
    return {d: float(backend.encoded["train"][d].n_tokens) for d in backend.domains}


# ---------------------------------------------------------------- the n-gram model

def _docs(rng, vocab, n_docs, max_len):
    """Random documents with a skewed token distribution (so counts of 1, 2, 3+ occur)."""
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    lens = rng.integers(1, max_len, size=n_docs)
    toks = rng.choice(vocab, size=int(lens.sum()), p=p).astype(np.int32)
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return toks, offs


def _reference_kn(tokens, offsets, vocab, order=3):
    """Interpolated modified Kneser-Ney with plain dicts and loops (Chen & Goodman),
    written apart from the NumPy model: P(w | history) for a given history."""
    BOS = vocab
    counts = [None] * (order + 1)          # counts[k]: {k-gram tuple: count}
    top = Counter()
    for i in range(len(offsets) - 1):
        doc = [BOS] * (order - 1) + [int(t) for t in tokens[offsets[i]:offsets[i + 1]]]
        for j in range(order - 1, len(doc)):
            top[tuple(doc[j - order + 1:j + 1])] += 1
    counts[order] = top
    for k in range(order - 1, 0, -1):      # continuation counts: distinct left extensions
        counts[k] = Counter(g[1:] for g in counts[k + 1])

    def discounts(c):
        n = Counter(min(v, 5) for v in c.values())
        n1, n2, n3, n4 = (n.get(i, 0) for i in (1, 2, 3, 4))
        y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        d1 = min(max(1 - 2 * y * n2 / n1 if n1 else 0.5, 0), 1)
        d2 = min(max(2 - 3 * y * n3 / n2 if n2 else 1.0, d1), 2)
        d3 = min(max(3 - 4 * y * n4 / n3 if n3 else 1.5, d2), 3)
        return lambda c_: 0.0 if c_ == 0 else d1 if c_ == 1 else d2 if c_ == 2 else d3

    D = {k: discounts(counts[k]) for k in range(1, order + 1)}
    by_ctx = {k: defaultdict(list) for k in range(1, order + 1)}
    for k in range(1, order + 1):
        for g, c in counts[k].items():
            by_ctx[k][g[:-1]].append(c)

    def prob(history, w):
        h = ([BOS] * (order - 1) + list(history))[-(order - 1):] if order > 1 else []
        total1 = sum(by_ctx[1][()])
        gamma1 = sum(D[1](c) for c in by_ctx[1][()])
        p = (max(counts[1].get((w,), 0) - D[1](counts[1].get((w,), 0)), 0) + gamma1 / vocab) / total1
        for k in range(2, order + 1):
            ctx = tuple(h[len(h) - (k - 1):])
            cs = by_ctx[k].get(ctx)
            if not cs:
                continue
            c = counts[k].get(ctx + (w,), 0)
            p = (max(c - D[k](c), 0) + sum(D[k](x) for x in cs) * p) / sum(cs)
        return p

    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kneser_ney_matches_a_loop_reference_and_sums_to_one(order):
    rng = np.random.default_rng(order)
    vocab = 40
    toks, offs = _docs(rng, vocab, 60, 30)
    lm = KneserNeyLM.fit(toks, offs, vocab, order)
    ref = _reference_kn(toks, offs, vocab, order)
    for history in ([], [int(toks[0])], [int(toks[3]), int(toks[4])], [int(toks[5]), 39, 38],
                    [int(toks[7]), int(toks[8]), int(toks[9])]):
        dist = lm.next_distribution(history)
        assert math.fsum(dist.tolist()) == pytest.approx(1.0, abs=1e-12)
        assert (dist > 0).all()
        want = np.array([ref(history, w) for w in range(vocab)])
        np.testing.assert_allclose(dist, want, rtol=1e-12, atol=0)
    # log probabilities of held-out documents agree with the reference token by token
    ht, ho = _docs(np.random.default_rng(99), vocab, 5, 12)
    lp = lm.logprobs(ht, ho)
    want = []
    for i in range(len(ho) - 1):
        doc = [int(t) for t in ht[ho[i]:ho[i + 1]]]
        want += [math.log(ref(doc[:j], doc[j])) for j in range(len(doc))]
    np.testing.assert_allclose(lp, want, rtol=1e-12)


def test_unseen_tokens_get_a_finite_loss_even_on_repeated_data():
    vocab = 50
    rng = np.random.default_rng(0)
    toks, offs = _docs(rng, 10, 20, 15)                   # only ids 0..9 ever seen
    rep = 8                                               # eight epochs: counts of 1 and 2 vanish
    toks = np.tile(toks, rep)
    offs = np.concatenate([offs[:-1] + i * offs[-1] for i in range(rep)] + [[rep * offs[-1]]])
    lm = KneserNeyLM.fit(toks, offs, vocab, 3)
    lp = lm.logprobs(np.array([45, 46, 3, 49, 0], np.int32), np.array([0, 5]))
    assert np.isfinite(lp).all() and (lp < 0).all()
    for history in ([], [1], [1, 2], [45, 46]):
        assert math.fsum(lm.next_distribution(history).tolist()) == pytest.approx(1, abs=1e-12)
    with pytest.raises(ValueError, match="token ids"):
        lm.logprobs(np.array([50]), np.array([0, 1]))
    with pytest.raises(ValueError, match="int64"):
        KneserNeyLM.fit(toks, offs, 2 ** 21, 3)


def test_bits_per_byte_is_per_byte_not_per_token():
    # "abcd" (4 bytes) as two tokens with p = 1/2 each, or one token with p = 1/4:
    # 2 bits either way, so 0.5 bits per byte; the loss per token differs.
    two = np.log([0.5, 0.5])
    one = np.log([0.25])
    l2, b2 = loss_and_bpb(two, 4)
    l1, b1 = loss_and_bpb(one, 4)
    assert b1 == b2 == pytest.approx(0.5, rel=1e-15)
    assert l2 == pytest.approx(math.log(2)) and l1 == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        loss_and_bpb(np.zeros(0), 4)


# ---------------------------------------------------------------- sampling

def test_token_shares_add_up_to_the_budget_and_follow_rounded_weights():
    s = token_shares({"a": 1, "b": 1, "c": 1}, 1000)
    assert s == {"a": 334, "b": 333, "c": 333}
    s = token_shares({"a": 0.123456789, "b": 0.876543211}, 1_000_003)
    assert sum(s.values()) == 1_000_003
    assert token_shares({"a": 0.1234561, "b": 0.8765439}, 10 ** 7) == \
        token_shares({"a": 0.1234559, "b": 0.8765441}, 10 ** 7)      # one mixture_key, one run
    assert token_shares({"a": 0.0, "b": 2.0}, 10) == {"a": 0, "b": 10}
    with pytest.raises(ValueError):
        token_shares({"a": 1}, 0)


def test_epochs_see_every_document_before_repeating_and_land_on_the_share():
    lengths = np.array([5, 7, 3, 9, 4], np.int64)
    rng = np.random.default_rng(0)
    docs, take = draw_documents(lengths, 2 * 28 + 10, rng, "epochs")
    assert int(take.sum()) == 66
    assert sorted(docs[:5].tolist()) == sorted(docs[5:10].tolist()) == [0, 1, 2, 3, 4]
    assert (take[:-1] == lengths[docs[:-1]]).all() and 0 < take[-1] <= lengths[docs[-1]]
    d2, t2 = draw_documents(lengths, 66, np.random.default_rng(0), "replacement")
    assert int(t2.sum()) == 66
    with pytest.raises(ValueError):
        draw_documents(np.zeros(0, np.int64), 3, rng)


def test_sample_is_deterministic_per_domain_and_exact(backend):
    doms = backend.domains
    w = uniform(doms)
    t1, o1, s1 = backend.sample(w, 5, 40_000)
    t2, o2, s2 = backend.sample(w, 5, 40_000)
    assert np.array_equal(t1, t2) and np.array_equal(o1, o2) and len(t1) == 40_000
    assert sum(v["tokens"] for v in s1.values()) == 40_000
    # common random numbers: raising one domain's weight leaves the others' draws' starts alone
    w2 = {**w, "code": w["code"] * 3}
    t3, o3, s3 = backend.sample(w2, 5, 40_000)
    books = 0                                             # books is drawn first (sorted order)
    n = min(s1["books"]["tokens"], s3["books"]["tokens"])
    assert np.array_equal(t1[books:books + n], t3[books:books + n])
    # a sampled document is a real span of a train document
    enc = backend.encoded["train"]["books"]
    first = t1[o1[0]:o1[1]]
    hay = enc.tokens
    starts = np.flatnonzero(hay[:len(hay) - len(first) + 1] == first[0])
    assert any(np.array_equal(hay[s:s + len(first)], first) for s in starts)
    t4, _, _ = backend.sample(w, 6, 40_000)
    assert not np.array_equal(t1, t4)


def test_gather_takes_prefixes_of_documents(backend):
    enc = backend.encoded["train"]["code"]
    toks, offs = gather(enc, np.array([2, 0, 2]), np.array([3, 1, 2]))
    want = np.concatenate([enc.tokens[enc.offsets[2]:enc.offsets[2] + 3], enc.tokens[enc.offsets[0]:][:1],
                           enc.tokens[enc.offsets[2]:enc.offsets[2] + 2]])
    assert np.array_equal(toks, want) and offs.tolist() == [0, 3, 4, 6]


# ---------------------------------------------------------------- the backend

def test_proxy_run_is_deterministic_to_the_bit(corpus, backend):
    w = natural(backend)
    a = backend.run(w, 3, 60_000)
    b = backend.run(w, 3, 60_000)
    c = NGramBackend(*corpus).run(dict(reversed(list(w.items()))), 3, 60_000)
    for r in (b, c):
        assert (r.loss, r.bpb, r.target) == (a.loss, a.bpb, a.target)
    assert a.mixture_key == mixture_key({d: v / sum(w.values()) for d, v in w.items()})
    assert set(a.bpb) == set(backend.domains) and a.split == "valid" and a.backend == "ngram"
    assert a.target == pytest.approx(sum(a.bpb.values()) / len(a.bpb), rel=1e-15)
    other = backend.run(w, 4, 60_000)
    assert other.target != a.target                      # the seed matters
    assert a.detail["drawn"]["code"]["tokens"] == token_shares(w, 60_000)["code"]
    test = backend.run(w, 3, 60_000, split="test")
    assert test.bpb != a.bpb
    with pytest.raises(ValueError, match="split"):
        backend.run(w, 3, 60_000, split="train")
    with pytest.raises(ValueError, match="unknown domains"):
        backend.run({"nope": 1.0}, 3, 60_000)


def test_a_model_of_one_domain_fits_that_domain_best(backend):
    only = {d: {x: float(x == d) for x in backend.domains} for d in ("code", "books", "email")}
    res = {d: backend.run(w, 0, 30_000) for d, w in only.items()}
    for d in only:
        for other in only:
            if other != d:
                assert res[d].loss[d] < res[other].loss[d] - 0.1, (d, other)
                assert res[d].bpb[d] < res[other].bpb[d]


def test_more_budget_lowers_the_loss(backend):
    w = natural(backend)                                 # both budgets within one epoch
    assert all(backend.encoded["train"][d].n_tokens > 0 for d in w)
    small = backend.run(w, 0, 20_000)
    large = backend.run(w, 0, 160_000)
    assert large.target < small.target - 0.05
    assert sum(large.loss.values()) < sum(small.loss.values())


def test_target_kinds():
    bpb = {"a": 1.0, "b": 2.0, "c": 4.0}
    assert Target.parse(None).value(bpb) == pytest.approx(7 / 3)
    assert Target.parse({"kind": "worst"}).value(bpb) == 4.0
    t = Target.parse({"kind": "weighted", "weights": {"a": 3, "c": 1}})
    assert t.value(bpb) == pytest.approx((3 * 1 + 4) / 4)
    assert t.spec() == {"kind": "weighted", "weights": {"a": 3.0, "c": 1.0}}
    for bad in ({"kind": "median"}, {"kind": "weighted"}, {"kind": "weighted", "weights": {"a": -1}},
                {"kind": "average", "weights": {"a": 1}}, {"kind": "average", "extra": 1}):
        with pytest.raises(ValueError):
            Target.parse(bad)
    with pytest.raises(ValueError, match="unknown domains"):
        t.check(["a", "b"])


def test_weighted_target_is_used_by_the_backend(corpus):
    be = NGramBackend(*corpus, target={"kind": "weighted", "weights": {"code": 1.0}})
    r = be.run(uniform(be.domains), 0, 20_000)
    assert r.target == r.bpb["code"]
    with pytest.raises(ValueError, match="unknown domains"):
        NGramBackend(*corpus, target={"kind": "weighted", "weights": {"klingon": 1.0}})


# ---------------------------------------------------------------- the cache


def test_cache_never_reruns_and_survives_a_restart(corpus, backend, tmp_path):
    be = Counting(backend)
    cache = ResultCache(str(tmp_path))
    w = uniform(backend.domains)
    r1, hit1 = cache.run(be, w, 0, 20_000, "valid")
    r2, hit2 = cache.run(be, dict(w), 0, 20_000, "valid")
    assert (hit1, hit2, be.calls) == (False, True, 1)
    assert r2 == r1
    # a new process (a resumed search) reads the file: still no run, the same floats
    again = ResultCache(str(tmp_path))
    r3, hit3 = again.run(be, w, 0, 20_000, "valid")
    assert hit3 and be.calls == 1
    assert (r3.loss, r3.bpb, r3.target, r3.detail) == (r1.loss, r1.bpb, r1.target, r1.detail)
    # each part of the key matters
    for args in ((w, 1, 20_000, "valid"), (w, 0, 30_000, "valid"), (w, 0, 20_000, "test"),
                 ({**w, "code": 0.5}, 0, 20_000, "valid")):
        again.run(be, *args)
    assert be.calls == 5 and len(again) == 5
    other_target = Counting(NGramBackend(*corpus, target={"kind": "worst"}))
    again.run(other_target, w, 0, 20_000, "valid")
    assert other_target.calls == 1
    bigram = Counting(NGramBackend(*corpus, order=2))
    again.run(bigram, w, 0, 20_000, "valid")
    assert bigram.calls == 1
    assert run_identity(bigram, w, 0, 20_000, "valid")["params"]["order"] == 2
    # the file: sorted, complete lines, no temporaries left beside it
    path = tmp_path / "proxy_cache.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and [json.loads(x)["key"] for x in lines] == sorted(
        json.loads(x)["key"] for x in lines)
    assert os.listdir(tmp_path) == ["proxy_cache.jsonl"]
    # an entry whose identity was edited no longer matches its key
    e = json.loads(lines[0])
    e["identity"]["seed"] = 99
    path.write_text("\n".join([json.dumps(e)] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="does not match"):
        ResultCache(str(tmp_path))


def test_cache_key_names_tokenizer_and_data(corpus, backend, mapping):
    ident = run_identity(backend, uniform(backend.domains), 0, 1000, "valid")
    splits, tok = corpus
    assert ident["tokenizer"] == tok.id and ident["data"] == splits.fingerprint()
    assert ident["backend"] == "ngram" and ident["version"] and ident["target"] == {"kind": "average"}
    # another split seed is other data, so another key, even with the same tokenizer
    moved = load_corpus(domains=mapping, seed=1)
    assert moved.fingerprint() != splits.fingerprint()
    other = run_identity(NGramBackend(moved, tok), uniform(backend.domains), 0, 1000, "valid")
    assert other["data"] != ident["data"]
