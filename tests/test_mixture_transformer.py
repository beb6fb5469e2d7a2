"""The small-transformer proxy backend (curation.mixture.transformer).

The tests that train need PyTorch (the optional extra ``curation[transformer]``) and are
skipped without it; the packing tests and the ImportError test run either way. The
models here are tiny (d_model 32, one layer, context 32) and the budgets a few thousand
tokens, so the file runs in seconds on two cores."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from curation.mixture.data import EncodedDomain, load_corpus
from curation.mixture.proxy import NGramBackend, ResultCache, run_identity
from curation.mixture.tokenizer import StatedTokenizer
from curation.mixture.transformer import (IGNORE, TransformerBackend, lr_at, pack_evaluation,
                                          pack_training)
from tests.mixture_corpus import Counting, write_small_corpus

TORCH_REASON = "PyTorch is an optional extra: pip install 'curation[transformer]'"
TINY = dict(d_model=32, n_layers=1, n_heads=2, context=32, batch_size=8, lr=1e-2, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    splits = load_corpus(domains=write_small_corpus(tmp_path_factory.mktemp("mixcorpus")), seed=0)
    return splits, StatedTokenizer.for_corpus(splits)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.fixture(scope="module")
def backend(corpus, torch):
    return TransformerBackend(*corpus, **TINY)


def uniform(domains):
    return {d: 1 / len(domains) for d in domains}


# ---------------------------------------------------------------- without torch

def test_without_torch_the_library_imports_and_the_backend_names_the_extra(corpus, monkeypatch):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import curation.mixture.transformer, curation.mixture.proxy, curation.mixture.run\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    monkeypatch.setitem(sys.modules, "torch", None)          # `import torch` now fails
    with pytest.raises(ImportError, match=r"pip install 'curation\[transformer\]'"):
        TransformerBackend(*corpus)


# ---------------------------------------------------------------- packing (NumPy)

def _docs(lengths, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return rng.integers(0, vocab, size=int(offs[-1])).astype(np.int32), offs


def test_training_rows_predict_every_sampled_token_once_within_its_document():
    lengths = [5, 40, 1, 0, 70, 3]
    toks, offs = _docs(lengths)
    order = np.array([4, 0, 2, 3, 5, 1])
    bos, ctx = 50, 16
    r = pack_training(toks, offs, order, bos, ctx)
    x, y, seg, pos = (r[k].reshape(-1) for k in ("inputs", "targets", "segments", "positions"))
    assert r["inputs"].shape[1] == ctx and len(x) == math.ceil((sum(lengths) + len(lengths)) / ctx) * ctx
    # the stream is [BOS] + document, in `order`; targets are the next element, never BOS
    want = np.concatenate([np.r_[bos, toks[offs[i]:offs[i + 1]]] for i in order])
    assert np.array_equal(x[:len(want)], want) and (x[len(want):] == bos).all()
    assert np.array_equal(np.sort(y[y != IGNORE]), np.sort(toks.astype(np.int64)))
    real = y != IGNORE
    assert np.array_equal(y[:-1][real[:-1]], x[1:][real[:-1]])
    assert (x[1:][~real[:-1]] == bos).all()          # an ignored target: BOS or padding next
    # a target's input is in the same document (segment) as the target itself
    nxt_seg = np.r_[seg[1:], -1]
    assert (seg[real] == nxt_seg[real]).all()
    # positions restart at each BOS and at each row start, and count up in between
    for i in range(len(x)):
        if x[i] == bos or i % ctx == 0:
            assert pos[i] == 0
        else:
            assert pos[i] == pos[i - 1] + 1 and seg[i] == seg[i - 1]


def test_evaluation_windows_start_at_the_document_start_and_cover_every_token():
    lengths = [3, 50, 31, 32, 1, 64, 10]
    toks, offs = _docs(lengths, seed=1)
    enc = EncodedDomain(toks, offs, np.array(lengths, np.int64) * 3)
    bos, ctx = 50, 32
    r = pack_evaluation(enc, bos, ctx)
    x, y, seg, pos = (r[k] for k in ("inputs", "targets", "segments", "positions"))
    assert x.shape[1] == ctx
    assert int((y != IGNORE).sum()) == sum(lengths)
    # rebuild each document from its windows: BOS, then its tokens, each target once
    got, cur = [], None
    for row_x, row_y, row_s in zip(x, y, seg):
        for a, b, s in zip(row_x, row_y, row_s):
            if s < 0:
                continue                                  # padding
            if a == bos:
                cur = []
                got.append(cur)
            if b != IGNORE:
                cur.append(int(b))
    assert got == [toks[offs[i]:offs[i + 1]].tolist() for i in range(len(lengths))]
    # a long document's second window starts at position 0, mid-document, at a row start
    long_doc = x[:, 0] != bos
    assert long_doc.any() and (pos[:, 0] == 0).all()
    # no window crosses a row: each row's segments are contiguous runs
    for row_s in seg:
        runs = [s for i, s in enumerate(row_s) if i == 0 or s != row_s[i - 1]]
        assert len(runs) == len(set(runs))


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    steps, lr = 100, 1.0
    lrs = [lr_at(s, steps, lr) for s in range(steps)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)   # 5 warm-up steps
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.1)
    assert lr_at(0, 1, 3e-3) == pytest.approx(3e-3)


# ---------------------------------------------------------------- the backend

def test_the_model_has_the_stated_size_with_a_tied_embedding(torch, corpus):
    from curation.mixture.transformer import _model_class
    m = _model_class()(4096, 128, 4, 4, 128)
    assert sum(p.numel() for p in m.parameters()) == 1_334_144
    assert m.tok.weight.shape == (4097, 128)                  # + BOS; the output layer is tied
    assert not any("head" in n for n, _ in m.named_parameters())
    be = TransformerBackend(*corpus, device="cpu")
    assert be.parameter_count() == (be.vocab + 1) * 128 + 128 * 128 + 4 * 198_272 + 256


def test_the_training_sample_is_the_ngram_backends(corpus, backend):
    ng = NGramBackend(*corpus)
    w = {**uniform(backend.domains), "code": 0.4}
    for a, b in zip(backend.sample(w, 3, 5_000), ng.sample(w, 3, 5_000)):
        if isinstance(a, dict):
            assert a == b
        else:
            assert np.array_equal(a, b)


def test_a_run_is_deterministic_to_the_bit_and_leaves_torch_as_it_was(torch, corpus, backend):
    w = uniform(backend.domains)
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    a = backend.run(w, 1, 4_000)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)
    assert not torch.are_deterministic_algorithms_enabled()
    b = backend.run(w, 1, 4_000)
    c = TransformerBackend(*corpus, **TINY).run(dict(reversed(list(w.items()))), 1, 4_000)
    for r in (b, c):
        assert (r.loss, r.bpb, r.target) == (a.loss, a.bpb, a.target)
    assert a.backend == "transformer" and a.split == "valid" and set(a.bpb) == set(backend.domains)
    assert a.target == pytest.approx(sum(a.bpb.values()) / len(a.bpb), rel=1e-14)
    assert all(math.isfinite(v) and v > 0 for v in a.loss.values())
    # bits per byte: the n-gram backend's convention (total bits / UTF-8 bytes)
    enc = backend.encoded["valid"]["code"]
    assert a.bpb["code"] == pytest.approx(a.loss["code"] * enc.n_tokens / math.log(2) / enc.n_bytes,
                                          rel=1e-12)
    assert a.detail["parameters"] == backend.parameter_count()
    assert a.detail["drawn"] == NGramBackend(*corpus).sample(w, 1, 4_000)[2]
    assert backend.run(w, 2, 4_000).target != a.target       # the seed matters
    assert backend.run(w, 1, 4_000, split="test").bpb != a.bpb
    with pytest.raises(ValueError, match="split"):
        backend.run(w, 1, 4_000, split="train")
    with pytest.raises(ValueError, match="unknown domains"):
        backend.run({"nope": 1.0}, 1, 4_000)


def test_a_document_is_scored_alone_whatever_its_neighbours(torch, corpus, backend):
    """The document mask: a document's log probabilities do not depend on the documents
    packed beside it (it is scored the same alone in its row)."""
    from curation.mixture.transformer import _model_class
    ref = backend.encoded["train"]["reference"]            # the first 3..19 tokens of each entry:
    take = np.minimum(ref.lengths, 3 + np.arange(ref.documents) % 17)   # several to a row
    toks = np.concatenate([ref.tokens[ref.offsets[i]:ref.offsets[i] + k] for i, k in enumerate(take)])
    enc = EncodedDomain(toks, np.r_[0, np.cumsum(take)].astype(np.int64), take * 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _model_class()(backend.vocab, 32, 1, 2, 32)
    rows = pack_evaluation(enc, backend.vocab, 32)
    shared = [len(set(s[s >= 0].tolist())) > 1 for s in rows["segments"]]
    assert sum(shared) >= 20
    together = backend._logprobs(model, rows)
    alone = []
    for i in range(enc.documents):
        one = EncodedDomain(enc.tokens[enc.offsets[i]:enc.offsets[i + 1]],
                            np.array([0, enc.lengths[i]]), enc.doc_bytes[i:i + 1])
        if one.n_tokens:
            alone.append(backend._logprobs(model, pack_evaluation(one, backend.vocab, 32)))
    np.testing.assert_allclose(together, np.concatenate(alone), rtol=1e-5, atol=1e-5)


def test_a_model_of_one_domain_fits_that_domain_best(backend):
    only = {d: {x: float(x == d) for x in backend.domains} for d in ("code", "books", "email")}
    res = {d: backend.run(w, 0, 8_000) for d, w in only.items()}
    for d in only:
        for other in only:
            if other != d:
                assert res[d].loss[d] < res[other].loss[d] - 0.1, (d, other)
                assert res[d].bpb[d] < res[other].bpb[d]


def test_the_cache_keys_on_backend_and_settings(torch, corpus, backend, tmp_path):
    be = Counting(backend)
    cache = ResultCache(str(tmp_path))
    w = uniform(backend.domains)
    r1, hit1 = cache.run(be, w, 0, 3_000, "valid")
    r2, hit2 = ResultCache(str(tmp_path)).run(be, w, 0, 3_000, "valid")     # a resumed search
    assert (hit1, hit2, be.calls) == (False, True, 1)
    assert (r2.loss, r2.bpb, r2.target, r2.detail) == (r1.loss, r1.bpb, r1.target, r1.detail)
    ident = run_identity(backend, w, 0, 3_000, "valid")
    json.dumps(ident)
    assert ident["backend"] == "transformer" and ident["params"]["d_model"] == 32
    assert ident["params"]["threads"] == 1 and ident["params"]["device"] == "cpu"
    assert ident["tokenizer"] == corpus[1].id and ident["data"] == corpus[0].fingerprint()
    # another backend, or other settings, are other runs
    ng = Counting(NGramBackend(*corpus))
    cache.run(ng, w, 0, 3_000, "valid")
    other_lr = Counting(TransformerBackend(*corpus, **{**TINY, "lr": 3e-3}))
    cache.run(other_lr, w, 0, 3_000, "valid")
    assert (ng.calls, other_lr.calls, len(cache)) == (1, 1, 3)


def test_settings_are_checked(torch, corpus):
    with pytest.raises(ValueError, match="divide"):
        TransformerBackend(*corpus, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="context"):
        TransformerBackend(*corpus, context=1)
    with pytest.raises(ValueError, match="sampling"):
        TransformerBackend(*corpus, sampling="shuffle")
    with pytest.raises(ValueError, match="unknown domains"):
        TransformerBackend(*corpus, target={"kind": "weighted", "weights": {"klingon": 1.0}})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            TransformerBackend(*corpus, device="cuda")
        assert TransformerBackend(*corpus).device.type == "cpu"      # "auto"
