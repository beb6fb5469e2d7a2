"""MinHash: the normalisation equals its regex definition on every code point; the
compiled CPU loop and the CUDA kernels equal the xp reference bit for bit; the
reference computes the documented math; datasketch-compatible signatures equal
datasketch's own in each of its schemes."""
from __future__ import annotations

import ctypes
import gzip
import json
import pickle
import random
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import xxhash

import curation.minhash as mhmod
from curation.minhash import MinHasher, estimate_jaccard, normalize
from curation.minhash import gpu
from curation.minhash import reference as ref
from curation.minhash.text import encode_batch, fold_table, lower_table, word_table

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def regex_normalize(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def read_jsonl_gz(path: Path, limit: int) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) >= limit:
                break
    return out


def shared_texts(name: str, limit: int) -> list[str]:
    path = CORPORA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/corpora is not beside this clone)")
    return read_jsonl_gz(path, limit)


def demo_texts(per_file: int = 12) -> list[str]:
    from curation.demo import demo_files
    out = []
    for path in demo_files():
        out.extend(read_jsonl_gz(Path(path), per_file))
    return out


EDGE = [
    "", " ", "\n\t ", "!!!", "???", "one", "two words", "a b c d", "a b c d e", "a b c d e f",
    "x" * 5000, ("w" * 70 + " ") * 30, "y" * 63 + " " + "z" * 64 + " " + "q" * 65 + " short",
    "é" * 40 + " " + "ß" * 70,                                   # long non-ASCII words
    "ΑΣ ΣΑΣ İstanbul ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ",                           # context lowering (final sigma, dotted I)
    "Straße ǅemal ẞ Ⱥ Ⱦ ﬃ K Å Ω",                                 # lowering changes byte length
    "ÀÉÎÕÜ àéîõü ÿ µ ª º ¹ ² ³ ¼ ½ ¾ × ÷ « » ¿ ¡",                # Latin-1 only
    "emoji 😀 x_y 🎉🎉 ok 👍🏽 family 👨‍👩‍👧", "Ǆ ǅ ǆ Ǉ ǈ ǉ ǲ ǳ",
    "A\u0301B C e\u0301 n\u0303 \u0915\u093f \u0e01\u0e34",      # combining marks
    "\ud800 lone surrogate \udfff end", "ＡＢＣ full width ｆｕｌｌ", "Ⅻ Ⅳ ½ ² ٣ ۴ ⑦",
    "日本語のテキスト 中文 한국어 ไทย العربية עברית", "tab\tnew\nline\r\nend\x00nul\x0bvt",
    "UPPER lower MiXeD", "under_score snake_case __init__ _", "a\u200bb zero\u00a0width\u2028sep",
    "12 345 6.7 8,9 0x1F", "word-with-hyphens and apostrophe's", "\U0001d400\U0001d401 math bold",
]


# -- normalisation -------------------------------------------------------------

def test_normalize_is_the_regex_definition():
    for t in EDGE + demo_texts(4):
        assert normalize(t) == regex_normalize(t)
    with pytest.raises(TypeError, match="str"):
        normalize(b"bytes")


def test_word_table_is_regex_word_on_every_code_point():
    table = word_table()
    isalnum = np.array([chr(c).isalnum() or c == 0x5F for c in range(0x110000)], dtype=np.uint8)
    assert np.array_equal(table, isalnum)          # \w = str.isalnum() or "_"
    rng = np.random.default_rng(0)
    for c in rng.integers(0, 0x110000, 3000).tolist() + list(range(0x300)):
        assert bool(table[c]) == bool(re.fullmatch(r"\w", chr(c)))


def test_lower_table_is_str_lower_and_idempotent():
    lt = lower_table()
    multi = [c for c in range(0x110000) if len(chr(c).lower()) != 1]
    assert multi == [0x130]                        # the only code point that lowers to two
    for c in range(0x110000):
        if c not in (0x130, 0x3A3):
            assert lt[c] == ord(chr(c).lower())
    assert np.array_equal(lt[lt], lt)              # lowering lowered text changes nothing
    ft = fold_table()
    assert np.array_equal(ft >= 0, word_table()[lt] == 1)


def _all_code_point_texts():
    cps = list(range(0x110000))
    texts = []
    for s in range(0, 0x110000, 2048):
        chunk = cps[s:s + 2048]
        texts.append("".join(map(chr, chunk)))                       # adjacent
        texts.append(" ".join(map(chr, chunk)))                      # one per word
        texts.append("A" + "Ab".join(map(chr, chunk[::7])) + "É")    # inside words
    latin = "".join(map(chr, range(256)))
    texts += [latin, latin[::-1], " ".join(latin), latin.upper(), latin + "Σ", "İ" + latin]
    return texts


def _fast_normalized(texts):
    mh = MinHasher(backend="numba")
    enc, latin1 = encode_batch(texts)
    buf, offsets = mhmod._concat(enc)
    norm, norm_off = mh._normalize_numba(buf, offsets, latin1)
    return [bytes(norm[norm_off[i]:norm_off[i + 1]]) for i in range(len(texts))]


def test_compiled_normalisation_equals_regex_on_every_code_point():
    texts = _all_code_point_texts()
    expect = [regex_normalize(t).encode("utf-8") for t in texts]
    assert _fast_normalized(texts) == expect
    # the fused signing loop writes the same bytes: its exact keys say so
    keys = MinHasher(backend="numba", num_perm=4).sign_batch(texts).exact_keys
    assert keys == [xxhash.xxh3_128_digest(e) if e else mhmod.exact_key(b"", t)
                    for e, t in zip(expect, texts)]


def test_compiled_normalisation_on_real_and_adversarial_text():
    texts = EDGE + demo_texts(6)
    rng = random.Random(5)
    alphabet = "aZ_9 .,-'\t\nßÀéΣσςİıiIǅΩ\u0301\u200b😀日\ud800ⅫＡ"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(500)]
    assert _fast_normalized(texts) == [regex_normalize(t).encode("utf-8") for t in texts]


def test_compiled_normalisation_on_shared_corpora():
    texts = []
    for name in ("web_noisy.jsonl.gz", "neardup_dev.jsonl.gz", "email_spamassassin.jsonl.gz",
                 "news_bbc.jsonl.gz", "code_python_stdlib.jsonl.gz", "wiki_wikitext2.jsonl.gz"):
        texts += shared_texts(name, 150)
    assert _fast_normalized(texts) == [regex_normalize(t).encode("utf-8") for t in texts]


# -- the reference computes the documented math ----------------------------------

M64 = (1 << 64) - 1


def _fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def _doc_math(text, ngram, char_ngrams, a, b, probes=None):
    """The module docstring of reference.py, in plain Python integers."""
    norm = regex_normalize(text)
    toks = list(norm) if char_ngrams else norm.split()
    wh = []
    for tok in toks:
        acc = 0
        for j, c in enumerate(tok.encode("utf-8")):
            acc += _fmix64((((c + 1) * 0x9E3779B97F4A7C15) & M64) ^ (((j + 1) * 0xC2B2AE3D27D4EB4F) & M64))
        wh.append(_fmix64(acc & M64))
    m = min(ngram, len(toks))
    starts = range(len(toks) - ngram + 1) if len(toks) >= ngram else range(1 if toks else 0)
    sh = [_fmix64(sum(wh[s + k] * int(ref.SHINGLE_C[k]) for k in range(m)) & M64) >> 32 for s in starts]
    if probes is None:
        sig = [min([(int(ap) * s + int(bp)) & 0xFFFFFFFF for s in sh], default=0xFFFFFFFF)
               for ap, bp in zip(a, b)]
        return sorted(set(sh)), sig
    k = len(probes)
    bins = {}
    for s in sh:
        v = (int(a[0]) * s + int(b[0])) & 0xFFFFFFFF
        bins[(v * k) >> 32] = min(v, bins.get((v * k) >> 32, v))
    sig = []
    for p in range(k):
        order = [int(j) for j in probes[p]] + [(p + d) % k for d in range(1, k)]
        src = p if p in bins else next((j for j in order if j in bins), None)
        sig.append(0xFFFFFFFF if src is None else bins[src])
    return sorted(set(sh)), sig


@pytest.mark.parametrize("ngram,char_ngrams,family", [(5, False, "minhash"), (1, False, "minhash"),
                                                     (3, False, "minhash"), (4, True, "minhash"),
                                                     (5, False, "oph"), (2, True, "oph")])
def test_reference_is_the_documented_math(ngram, char_ngrams, family):
    mh = MinHasher(num_perm=16, seed=9, ngram=ngram, char_ngrams=char_ngrams, backend="numpy", family=family)
    texts = ["", "one", "The quick brown fox, the QUICK brown fox!", "ΑΣ Straße 😀 x_y", EDGE[12],
             demo_texts(1)[0][:600]]
    sigs = mh.signatures(texts)
    for t, row in zip(texts, sigs):
        sh, sig = _doc_math(t, ngram, char_ngrams, mh.a, mh.b, mh.probes if family == "oph" else None)
        assert list(row) == sig
        assert mh.shingle_hashes(t).tolist() == sh


def test_permutation_parameters():
    a, b = ref.permutation_params(256, 7)
    assert a.dtype == b.dtype == np.uint32 and (a & 1 == 1).all()
    a2, _ = ref.permutation_params(256, 8)
    assert not np.array_equal(a, a2)
    assert np.array_equal(ref.permutation_params(256, 7)[0], a)
    a, b, probes = ref.oph_params(64, 7)
    assert a.shape == b.shape == (1,) and a[0] & 1 == 1
    assert probes.shape == (64, ref.OPH_PROBES) and probes.min() >= 0 and probes.max() < 64


def test_shingles_are_order_sensitive_and_counted():
    mh = MinHasher(num_perm=64)
    words = [f"w{i}" for i in range(20)]
    b = mh.sign_batch([" ".join(words), " ".join(words[::-1]), "a b", "b a", "Hello,   World!",
                       "hello world", "!!!", "???", ""])
    assert list(b.num_shingles) == [16, 16, 1, 1, 1, 1, 0, 0, 0]
    assert estimate_jaccard(b.signatures[0], b.signatures[1]) < 0.2
    assert estimate_jaccard(b.signatures[2], b.signatures[3]) < 0.2
    assert (b.signatures[6:] == 0xFFFFFFFF).all()
    assert (b.signatures[:6] != 0xFFFFFFFF).any(axis=1).all()


def test_exact_keys():
    texts = ["Hello,   World!", "hello world", "!!!", "???", "", "\ud800", "Σ straße"]
    for backend in ("numba", "numpy"):
        k = MinHasher(backend=backend, num_perm=8).sign_batch(texts).exact_keys
        assert all(isinstance(x, bytes) and len(x) == 16 for x in k)
        assert k[0] == k[1] == xxhash.xxh3_128_digest(b"hello world")
        assert k[2] == xxhash.xxh3_128_digest(b"\x00raw\x00!!!")
        assert k[3] == xxhash.xxh3_128_digest(b"\x00raw\x00???") != k[2]
        assert k[4] == xxhash.xxh3_128_digest(b"\x00raw\x00")
        assert k[5] == xxhash.xxh3_128_digest(b"\x00raw\x00" + "\ud800".encode("utf-8", "surrogatepass"))
        assert k[6] == xxhash.xxh3_128_digest("σ straße".encode("utf-8"))


# -- the compiled loop equals the reference ---------------------------------------

CONFIGS = [dict(), dict(ngram=1), dict(ngram=3, num_perm=64, seed=7), dict(num_perm=1, seed=0),
           dict(num_perm=256, seed=2**32 - 1), dict(char_ngrams=True, ngram=5, num_perm=32),
           dict(char_ngrams=True, ngram=1, num_perm=8), dict(family="oph"),
           dict(family="oph", num_perm=7, ngram=2, seed=3), dict(family="oph", num_perm=1),
           dict(family="oph", char_ngrams=True, num_perm=300)]


def _assert_same(fast, slow):
    assert fast.signatures.dtype == slow.signatures.dtype == np.uint32
    assert np.array_equal(fast.signatures, slow.signatures)
    assert np.array_equal(fast.num_shingles, slow.num_shingles)
    assert fast.exact_keys == slow.exact_keys


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_numba_equals_reference_bit_for_bit(kwargs):
    texts = EDGE + demo_texts(8 if kwargs.get("char_ngrams") else 20)
    fast = MinHasher(backend="numba", **kwargs)
    slow = MinHasher(backend="numpy", **kwargs)
    _assert_same(fast.sign_batch(texts), slow.sign_batch(texts))
    for t in EDGE[:20]:
        assert np.array_equal(fast.shingle_hashes(t), slow.shingle_hashes(t))


def test_numba_equals_reference_on_shared_corpora():
    texts = shared_texts("web_noisy.jsonl.gz", 250) + shared_texts("neardup_dev.jsonl.gz", 250)
    texts += shared_texts("email_spamassassin.jsonl.gz", 100) + shared_texts("reviews_movies.jsonl.gz", 50)
    _assert_same(MinHasher(backend="numba").sign_batch(texts), MinHasher(backend="numpy").sign_batch(texts))
    _assert_same(MinHasher(backend="numba", family="oph").sign_batch(texts),
                 MinHasher(backend="numpy", family="oph").sign_batch(texts))
    small = texts[:40]
    kw = dict(char_ngrams=True, ngram=7, num_perm=16)
    _assert_same(MinHasher(backend="numba", **kw).sign_batch(small),
                 MinHasher(backend="numpy", **kw).sign_batch(small))


def test_numba_equals_reference_on_random_unicode():
    rng = random.Random(11)
    pools = ["abcXYZ_09", " \t\n.,;!?-", "éÀßÿµ", "ΣσςİıΩ", "\u0301\u0308\u200b", "😀🎉", "日本語한", "\ud800"]
    texts = []
    for _ in range(300):
        pool = "".join(rng.sample(pools, rng.randint(1, len(pools))))
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(0, 200))))
    for kw in (dict(ngram=2, num_perm=32), dict(ngram=3, num_perm=8, char_ngrams=True),
               dict(ngram=2, num_perm=64, family="oph")):
        _assert_same(MinHasher(backend="numba", **kw).sign_batch(texts),
                     MinHasher(backend="numpy", **kw).sign_batch(texts))


def test_chunking_and_batching_do_not_change_results(monkeypatch):
    texts = EDGE + demo_texts(10)
    mh = MinHasher(num_perm=32)
    whole = mh.sign_batch(texts)
    monkeypatch.setitem(mhmod._CHUNK, "cpu", (3, 2000))      # tiny compiled calls
    monkeypatch.setitem(mhmod._CHUNK, "gpu", (3, 2000))
    _assert_same(mh.sign_batch(texts), whole)
    parts = [mh.sign_batch(texts[i:i + 7]) for i in range(0, len(texts), 7)]
    assert np.array_equal(np.concatenate([p.signatures for p in parts]), whole.signatures)
    assert sum((p.exact_keys for p in parts), []) == whole.exact_keys
    _assert_same(MinHasher(num_perm=32, backend="numpy").sign_batch(texts), whole)
    assert np.array_equal(mh.signatures([]), np.zeros((0, 32), np.uint32))


def test_signature_is_min_over_shingle_hashes():
    mh = MinHasher(num_perm=32)
    for text in demo_texts(2)[:6] + ["one", "a b c"]:
        sh = mh.shingle_hashes(text)
        assert sh.dtype == np.uint32 and np.all(np.diff(sh.astype(np.int64)) > 0)
        expect = ((sh.astype(np.uint64)[:, None] * mh.a.astype(np.uint64) + mh.b.astype(np.uint64))
                  % 2**32).min(axis=0)
        assert np.array_equal(mh.signatures([text])[0], expect.astype(np.uint32))
    assert mh.shingle_hashes("").shape == (0,)


@pytest.mark.parametrize("family", ["minhash", "oph"])
def test_estimates_track_exact_jaccard(family):
    mh = MinHasher(num_perm=256, family=family)
    base = max(demo_texts(20), key=len).split()[:3000]
    assert len(base) > 300
    for step in (3, 10, 40):
        edited = list(base)
        for i in range(0, len(edited), step):
            edited[i] = "zzz"
        a, b = " ".join(base), " ".join(edited)
        sa, sb = set(mh.shingle_hashes(a).tolist()), set(mh.shingle_hashes(b).tolist())
        exact = len(sa & sb) / len(sa | sb)
        est = estimate_jaccard(*mh.signatures([a, b]))
        assert abs(est - exact) < 4 * np.sqrt(exact * (1 - exact) / 256) + 0.01


def test_estimate_jaccard_shapes():
    a = np.array([[1, 2, 3, 4], [1, 1, 1, 1]], dtype=np.uint32)
    b = np.array([[1, 2, 0, 0], [1, 1, 1, 1]], dtype=np.uint32)
    assert estimate_jaccard(a[0], b[0]) == 0.5
    assert isinstance(estimate_jaccard(a[0], b[0]), float)
    assert np.array_equal(estimate_jaccard(a, b), [0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        estimate_jaccard(a, b[:, :2])


def test_params_pickle_threads():
    mh = MinHasher(num_perm=64, seed=3, ngram=4)
    p = mh.params()
    assert json.loads(json.dumps(p)) == p
    assert p["num_perm"] == 64 and p["seed"] == 3 and p["ngram"] == 4 and p["backend"] == mh.backend
    assert p["char_ngrams"] is False and p["scheme"] == mhmod.SCHEME
    texts = demo_texts(6)
    want = mh.signatures(texts)
    clone = pickle.loads(pickle.dumps(mh))
    assert np.array_equal(clone.signatures(texts), want)
    results = [None] * 4

    def work(i):
        results[i] = mh.signatures(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, want) for r in results)


def test_argument_errors():
    for bad in [dict(num_perm=0), dict(ngram=0), dict(ngram=ref.MAX_NGRAM + 1), dict(backend="gpu"),
                dict(seed=-1), dict(seed=2**32), dict(family="bbit")]:
        with pytest.raises(ValueError):
            MinHasher(**bad)
    for bad in [dict(num_perm=2.5), dict(num_perm=True), dict(ngram="5"), dict(char_ngrams="yes")]:
        with pytest.raises(TypeError):
            MinHasher(**bad)
    mh = MinHasher(num_perm=8)
    with pytest.raises(TypeError, match="str"):
        mh.signatures([1, 2])
    with pytest.raises(TypeError, match="str"):
        mh.signatures(["ok", b"bytes"])
    with pytest.raises(TypeError, match="sequence"):
        mh.signatures("a single text")
    with pytest.raises(TypeError, match="str"):
        mh.shingle_hashes(None)
    with pytest.raises(ValueError, match="scheme"):
        MinHasher.datasketch_compatible(scheme="affine16")
    with pytest.raises(ValueError, match="num_perm"):
        MinHasher.datasketch_compatible(num_perm=0)
    with pytest.raises(TypeError, match="bytes"):
        MinHasher.datasketch_compatible().signatures_from_tokens([["str token"]])
    if not gpu.cupy_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            MinHasher(backend="cupy")
        assert MinHasher(backend="auto").backend == "numba"


# -- datasketch compatibility ----------------------------------------------------

def _datasketch_rows(num_perm, seed, scheme, token_lists):
    import datasketch
    rows = []
    for toks in token_lists:
        m = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        m.update_batch(toks)
        rows.append(m.hashvalues)
    return rows


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 42), (1, 0), (200, 12345), (16, 2**32 - 1)])
def test_datasketch_compatible_bit_for_bit(scheme, num_perm, seed):
    rng = np.random.default_rng(seed)
    token_lists = [[b"tok1", b"tok2"], [b"x"], [], [b""], [b"dup", b"dup", b"dup"]]
    token_lists += [[bytes(rng.integers(0, 256, rng.integers(0, 40), dtype=np.uint8))
                     for _ in range(rng.integers(1, 80))] for _ in range(12)]
    ds = MinHasher.datasketch_compatible(num_perm=num_perm, seed=seed, scheme=scheme)
    got = ds.signatures_from_tokens(token_lists)
    assert got.shape == (len(token_lists), num_perm)
    for row, want in zip(got, _datasketch_rows(num_perm, seed, scheme, token_lists)):
        assert row.dtype == want.dtype
        assert np.array_equal(row, want)


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
def test_datasketch_compatible_on_real_text(scheme):
    texts = EDGE + demo_texts(4)
    ds = MinHasher.datasketch_compatible(num_perm=128, seed=3, scheme=scheme)
    sigs = ds.signatures(texts)
    tokens = []
    for t in texts:     # word 5-grams of the regex definition, as a datasketch user writes them
        w = re.findall(r"\w+", t.lower())
        grams = [" ".join(w[i:i + 5]) for i in range(len(w) - 4)] if len(w) >= 5 else (
            [" ".join(w)] if w else [])
        tokens.append([g.encode("utf-8") for g in grams])
    for row, want in zip(sigs, _datasketch_rows(128, 3, scheme, tokens)):
        assert row.dtype == want.dtype and np.array_equal(row, want)
    if scheme == "affine32":     # the same parameters as ours: a*h + b with odd a, from the seed
        mh = MinHasher(num_perm=128, seed=3)
        assert np.array_equal(ds.a, mh.a) and np.array_equal(ds.b, mh.b)


def test_datasketch_compatible_on_shared_corpora():
    texts = shared_texts("neardup_dev.jsonl.gz", 30)
    for scheme in ("affine32", "legacy"):
        ds = MinHasher.datasketch_compatible(num_perm=64, seed=5, scheme=scheme)
        for row, want in zip(ds.signatures(texts),
                             _datasketch_rows(64, 5, scheme, [ds.shingles(t) for t in texts])):
            assert np.array_equal(row, want)


# -- the CUDA kernels ----------------------------------------------------------

_SHIM = r"""
#define __global__
#define __device__
#define __forceinline__ inline
struct mh_emu_dim3 { unsigned int x, y, z; };
extern "C" { mh_emu_dim3 threadIdx, blockIdx, blockDim, gridDim; }
extern "C" void mh_emu_set(unsigned int bx, unsigned int tx, unsigned int bd, unsigned int gd) {
    blockIdx.x = bx; threadIdx.x = tx; blockDim.x = bd; gridDim.x = gd;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    blockDim.y = blockDim.z = gridDim.y = gridDim.z = 1;
}
static inline unsigned int atomicMin(unsigned int* address, unsigned int val) {
    unsigned int old = *address;      /* one thread at a time here */
    if (val < old) *address = val;
    return old;
}
"""


def compile_emulated_kernels(source: str, workdir: Path):
    """`source` (gpu.KERNEL_SOURCE or a variant) compiled as C++ for the CPU; returns
    make_launch(max_grid, max_block), a launcher that runs each kernel block by block
    and thread by thread. Skips the test without a C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels")
    d = workdir
    (d / "shim.h").write_text(_SHIM)
    (d / "kernels.cu").write_text(source)
    subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-x", "c++", "-include",
                    str(d / "shim.h"), str(d / "kernels.cu"), "-o", str(d / "kernels.so")], check=True)
    lib = ctypes.CDLL(str(d / "kernels.so"))

    def make_launch(max_grid, max_block):
        def launch(name, grid, block, args):
            assert name in gpu.KERNEL_NAMES and grid >= 1 and 1 <= block <= 1024
            cargs = []
            for a in args:
                if isinstance(a, np.ndarray):
                    assert a.flags.c_contiguous
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
                elif isinstance(a, np.int64):
                    cargs.append(ctypes.c_longlong(int(a)))
                elif isinstance(a, np.int32):
                    cargs.append(ctypes.c_int(int(a)))
                elif isinstance(a, np.uint32):
                    cargs.append(ctypes.c_uint(int(a)))
                else:
                    raise TypeError(f"kernel argument of type {type(a).__name__}")
            g, b = min(grid, max_grid), min(block, max_block)
            fn = getattr(lib, name)
            for bx in range(g):
                for tx in range(b):
                    lib.mh_emu_set(bx, tx, b, g)
                    fn(*cargs)
        return launch
    return make_launch


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    """gpu.KERNEL_SOURCE compiled as C++ for the CPU, launched block by block and
    thread by thread: the kernels' logic checked on a machine without a GPU."""
    return compile_emulated_kernels(gpu.KERNEL_SOURCE, tmp_path_factory.mktemp("kernels"))


@pytest.mark.parametrize("kwargs", [dict(), dict(ngram=1, num_perm=40), dict(char_ngrams=True, num_perm=24),
                                    dict(family="oph"), dict(family="oph", ngram=2, num_perm=300)])
@pytest.mark.parametrize("grid,block", [(1, 1), (3, 7), (16, 64)])
def test_cuda_kernels_emulated_equal_reference(emulated_kernels, kwargs, grid, block):
    texts = EDGE + demo_texts(3)
    slow = MinHasher(backend="numpy", **kwargs)
    want = slow.sign_batch(texts)
    norms = [normalize(t).encode("utf-8") for t in texts]
    buf, offsets = mhmod._concat(norms)
    sig, counts = gpu.device_signatures(np, emulated_kernels(grid, block), buf, offsets, slow.ngram,
                                        slow.char_ngrams, slow.a, slow.b, slow.family, slow.probes)
    assert sig.dtype == np.uint32
    assert np.array_equal(sig, want.signatures)
    assert np.array_equal(counts, want.num_shingles)


def test_cupy_backend_path_emulated(emulated_kernels, monkeypatch):
    """MinHasher(backend="cupy") end to end (normalise on the host, chunking, keys),
    with the kernels emulated and NumPy standing in for CuPy."""
    monkeypatch.setattr(gpu, "cupy_available", lambda: True)
    monkeypatch.setattr(gpu, "current_device", lambda: 0)
    monkeypatch.setattr(gpu, "_CHECKED", {})       # the self-check runs on these kernels too
    monkeypatch.setattr(gpu, "signatures", lambda norm, off, ngram, char, a, b, fam, probes: (
        gpu.device_signatures(np, emulated_kernels(4, 32), norm, off, ngram, char, a, b, fam, probes)))
    monkeypatch.setitem(mhmod._CHUNK, "gpu", (17, 50_000))
    texts = EDGE + demo_texts(4) + _all_code_point_texts()[:6]
    for kw in (dict(num_perm=32), dict(num_perm=8, char_ngrams=True, ngram=3), dict(family="oph")):
        mh = MinHasher(backend="cupy", **kw)
        assert mh.backend == "cupy" and mh.params()["backend"] == "cupy"
        assert gpu._CHECKED == {0: None}
        _assert_same(mh.sign_batch(texts), MinHasher(backend="numpy", **kw).sign_batch(texts))


def test_cuda_kernels_compile_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is absent")
    (tmp_path / "kernels.cu").write_text(gpu.KERNEL_SOURCE)
    out = subprocess.run([nvcc, "-arch=sm_80", "-cubin", "-Werror", "all-warnings", "-o",
                          str(tmp_path / "kernels.cubin"), str(tmp_path / "kernels.cu")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


needs_gpu = pytest.mark.skipif(not gpu.cupy_available(), reason="needs CuPy and a CUDA device")


@needs_gpu
@pytest.mark.parametrize("kwargs", [dict(), dict(ngram=3, num_perm=64), dict(char_ngrams=True, num_perm=32),
                                    dict(family="oph"), dict(family="oph", num_perm=256, ngram=2)])
def test_cupy_equals_reference_bit_for_bit(kwargs):
    import cupy
    texts = EDGE + demo_texts(10)
    slow = MinHasher(backend="numpy", **kwargs)
    want = slow.sign_batch(texts)
    _assert_same(MinHasher(backend="cupy", **kwargs).sign_batch(texts), want)
    assert MinHasher(backend="auto", **kwargs).backend == "cupy"
    # the reference itself, run on CuPy arrays, agrees too
    assert np.array_equal(slow.reference_signatures(texts, xp=cupy), want.signatures)


@needs_gpu
def test_self_check_passes_on_this_gpu():
    """The first-use self-check, on the real device and CuPy: no fallback here."""
    assert gpu.self_check() is None
    assert gpu.choose_backend("cupy", cache={}) == "cupy"


@needs_gpu
def test_cupy_equals_reference_on_shared_corpora():
    texts = shared_texts("web_noisy.jsonl.gz", 300) + shared_texts("neardup_dev.jsonl.gz", 300)
    for family in ("minhash", "oph"):
        _assert_same(MinHasher(backend="cupy", family=family).sign_batch(texts),
                     MinHasher(backend="numpy", family=family).sign_batch(texts))
