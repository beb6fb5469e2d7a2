"""MinHash: the compiled and CUDA paths equal the xp reference bit for bit, the
normalisation equals its regex definition, and the datasketch-compatible
signatures equal datasketch's own."""
import re
import sys

import numpy as np
import pytest
import xxhash

from curation.minhash import MinHasher, estimate_jaccard, normalize
from curation.minhash.gpu import cupy_available
from curation.minhash.text import lower_table, word_table

from conftest import read_jsonl_gz, shared_corpus

EDGE = ["", " ", "!!!", "???", "one", "two words", "a b c d", "a b c d e", "a b c d e f",
        "x" * 5000, ("w" * 70 + " ") * 30, "ΑΣ ΣΑΣ İstanbul ΣΊΣΥΦΟΣ", "Straße ǅemal ẞ Ⱥ Ⱦ ﬃ K Å",
        "emoji 😀 x_y 🎉🎉 ok", "Ǆ ǅ ǆ Ǉ", "A\u0301B C e\u0301", "\ud800 lone surrogate", "ＡＢＣ full width",
        "Ⅻ Ⅳ ½ ² ٣ ۴", "日本語のテキスト 中文 한국어", "tab\tnew\nline\r\nend", "UPPER lower MiXeD",
        "under_score snake_case __init__", "a\u200bb zero width", "ǈ ǋ ǲ title case"]


def demo_texts(limit=400):
    from curation.demo import demo_files
    out = []
    for path in demo_files():
        out.extend(r["text"] for r in read_jsonl_gz(__import__("pathlib").Path(path), limit // 8))
    return out


def test_normalize_is_the_regex_definition():
    for t in EDGE + demo_texts(80):
        assert normalize(t) == " ".join(re.findall(r"\w+", t.lower()))
    with pytest.raises(TypeError):
        normalize(b"bytes")


def test_word_table_matches_regex_on_every_code_point():
    table = word_table()
    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    regex = np.zeros(0x110000, dtype=np.uint8)
    for m in re.finditer(r"\w", chars):
        regex[ord(m.group())] = 1
    assert np.array_equal(table, regex)


def test_lower_table_matches_str_lower():
    lt = lower_table()
    for c in range(0, 0x110000, 7):
        low = chr(c).lower()
        if len(low) == 1:
            assert lt[c] == ord(low)


@pytest.mark.parametrize("kwargs", [dict(), dict(ngram=1), dict(ngram=3, num_perm=64, seed=7),
                                    dict(char_ngrams=True, ngram=5), dict(num_perm=256, seed=2**32 - 1)])
def test_numba_equals_reference_bit_for_bit(kwargs):
    texts = EDGE + demo_texts()
    fast = MinHasher(backend="numba", **kwargs).sign_batch(texts)
    ref = MinHasher(backend="numpy", **kwargs).sign_batch(texts)
    assert fast.signatures.dtype == np.uint32
    assert np.array_equal(fast.signatures, ref.signatures)
    assert np.array_equal(fast.num_shingles, ref.num_shingles)
    assert fast.exact_keys == ref.exact_keys


def test_numba_equals_reference_on_shared_corpora():
    texts = [r["text"] for r in read_jsonl_gz(shared_corpus("web_noisy.jsonl.gz"), 300)]
    texts += [r["text"] for r in read_jsonl_gz(shared_corpus("neardup_dev.jsonl.gz"), 300)]
    fast = MinHasher(backend="numba").sign_batch(texts)
    ref = MinHasher(backend="numpy").sign_batch(texts)
    assert np.array_equal(fast.signatures, ref.signatures)
    assert fast.exact_keys == ref.exact_keys


def test_batching_does_not_change_signatures():
    texts = demo_texts(200)
    mh = MinHasher()
    whole = mh.signatures(texts)
    parts = np.concatenate([mh.signatures(texts[i:i + 17]) for i in range(0, len(texts), 17)])
    assert np.array_equal(whole, parts)


def test_exact_keys_and_shingle_counts():
    mh = MinHasher()
    b = mh.sign_batch(["Hello,   World!", "hello world", "!!!", "???", "", "a b"])
    assert b.exact_keys[0] == b.exact_keys[1] == xxhash.xxh3_128_digest(b"hello world")
    assert b.exact_keys[2] != b.exact_keys[3]          # no words: raw text decides
    assert b.exact_keys[2] == xxhash.xxh3_128_digest(b"\x00raw\x00!!!")
    assert list(b.num_shingles) == [1, 1, 0, 0, 0, 1]
    assert (b.signatures[2] == 0xFFFFFFFF).all()
    words = " ".join(f"w{i}" for i in range(20))
    assert mh.sign_batch([words]).num_shingles[0] == 16


def test_signature_is_min_over_shingle_hashes():
    mh = MinHasher(num_perm=32)
    text = demo_texts(8)[0]
    sh = mh.shingle_hashes(text).astype(np.uint64)
    expect = ((sh[:, None] * mh.a.astype(np.uint64)[None, :] + mh.b.astype(np.uint64)[None, :])
              % 2**32).min(axis=0)
    assert np.array_equal(mh.signatures([text])[0], expect.astype(np.uint32))


def test_estimates_track_exact_jaccard():
    mh = MinHasher(num_perm=256)
    base = demo_texts(40)[3].split()
    assert len(base) > 200
    edited = list(base)
    for i in range(0, len(edited), 10):
        edited[i] = "zzz"
    a, b = " ".join(base), " ".join(edited)
    sa, sb = set(mh.shingle_hashes(a)), set(mh.shingle_hashes(b))
    exact = len(sa & sb) / len(sa | sb)
    est = float(estimate_jaccard(*mh.signatures([a, b])))
    assert abs(est - exact) < 4 * np.sqrt(exact * (1 - exact) / 256) + 0.01


def test_argument_errors():
    for bad in [dict(num_perm=0), dict(ngram=0), dict(backend="gpu"), dict(seed=-1), dict(ngram=65)]:
        with pytest.raises(ValueError):
            MinHasher(**bad)
    with pytest.raises(TypeError, match="str"):
        MinHasher().signatures([1, 2])
    with pytest.raises(ValueError, match="scheme"):
        MinHasher.datasketch_compatible(scheme="affine16")
    if not cupy_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            MinHasher(backend="cupy")


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 42), (16, 0), (200, 12345)])
def test_datasketch_compatible_bit_for_bit(scheme, num_perm, seed):
    import datasketch
    rng = np.random.default_rng(seed)
    token_lists = [[b"tok1", b"tok2"], [b"x"], []]
    token_lists += [[bytes(rng.integers(0, 256, rng.integers(1, 20), dtype=np.uint8))
                     for _ in range(rng.integers(1, 60))] for _ in range(10)]
    ds = MinHasher.datasketch_compatible(num_perm=num_perm, seed=seed, scheme=scheme)
    got = ds.signatures_from_tokens(token_lists)
    for row, toks in zip(got, token_lists):
        m = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        m.update_batch(toks)
        assert row.dtype == m.hashvalues.dtype
        assert np.array_equal(row, m.hashvalues)


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
def test_datasketch_compatible_on_real_text(scheme):
    import datasketch
    ds = MinHasher.datasketch_compatible(num_perm=128, seed=3, scheme=scheme)
    texts = demo_texts(40)
    sigs = ds.signatures(texts)
    for row, t in zip(sigs, texts):
        m = datasketch.MinHash(num_perm=128, seed=3, scheme=scheme)
        m.update_batch(ds.shingles(t))
        assert np.array_equal(row, m.hashvalues)


needs_gpu = pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA device")


@needs_gpu
@pytest.mark.parametrize("kwargs", [dict(), dict(ngram=3, num_perm=64), dict(char_ngrams=True)])
def test_cupy_equals_reference_bit_for_bit(kwargs):
    import cupy
    texts = EDGE + demo_texts()
    gpu = MinHasher(backend="cupy", **kwargs)
    ref = MinHasher(backend="numpy", **kwargs)
    g, r = gpu.sign_batch(texts), ref.sign_batch(texts)
    assert np.array_equal(g.signatures, r.signatures)
    assert g.exact_keys == r.exact_keys
    # the reference itself run on CuPy arrays agrees too
    assert np.array_equal(ref.reference_signatures(texts, xp=cupy), r.signatures)
