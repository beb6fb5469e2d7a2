"""The MinHash math, written once against an array module `xp` (NumPy or CuPy).

Every function here takes `xp` and uses only operations NumPy and CuPy share, so
the NumPy reference and the CuPy reference are literally the same code. The fast
paths (cpu.py: one compiled Numba loop; gpu.py: CUDA kernels) must reproduce it
bit for bit, which tests/test_minhash.py checks.

Input: the normalised documents of a batch (UTF-8 of `normalize(text)`, see
text.py) concatenated into one byte array, with n+1 document offsets.

  tokens       word mode: the words (runs of bytes other than the single spaces
               between them); character mode: the characters of the normalised
               text, spaces included (one UTF-8 sequence each)
  byte value   v(c, j) = fmix64(((c + 1) * P1) ^ ((j + 1) * P2))    j = byte position in the token
  token hash   w = fmix64(sum_j v(c_j, j))                           (wrapping uint64 sum)
  shingle      m = min(ngram, tokens in the document) consecutive tokens; a document
               with fewer than ngram tokens has one shingle of all of them, one with
               no tokens has none
  shingle hash s = fmix64(sum_{i < m} w_i * C_i) >> 32                order-sensitive: the C_i differ
  signature    family "minhash" (the default): K permutations,
               sig[p] = min over shingles of (a_p * s + b_p) mod 2^32, a_p odd;
               family "oph" (one permutation hashing, optimal densification):
               v = (a * s + b) mod 2^32 falls in bin floor(v * K / 2^32), sig[p] = min
               of the v in bin p; an empty bin p copies the first non-empty bin among
               probes[p, 0..OPH_PROBES-1], then among p+1, p+2, ... (mod K)
               (Shrivastava, "Optimal densification for fast and accurate minwise
               hashing", ICML 2017; the probe table stands in for its hash of (p, attempt))
  no shingles  either family: the signature is all 0xFFFFFFFF
  parameters   numpy.random.RandomState(seed): permutation_params() and oph_params()
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64
P1 = U64(0x9E3779B97F4A7C15)
P2 = U64(0xC2B2AE3D27D4EB4F)
M1 = U64(0xFF51AFD7ED558CCD)    # MurmurHash3's 64-bit finaliser
M2 = U64(0xC4CEB9FE1A85EC53)
S33 = U64(33)
S32 = U64(32)
MASK32 = U64(0xFFFFFFFF)
EMPTY = 0xFFFFFFFF
SPACE = 0x20
MAX_NGRAM = 64
FAMILIES = ("minhash", "oph")
OPH_PROBES = 64
# One odd multiplier per position in a shingle (distinct, so order matters).
SHINGLE_C = np.array([((0x9E3779B97F4A7C15 * (2 * k + 1) + 0x632BE59BD9B4E019 * k) % 2**64) | 1
                      for k in range(MAX_NGRAM)], dtype=np.uint64)
# The permutation-min step materialises (shingles x num_perm) values: bound it.
_MAX_CELLS = 1 << 21


def fmix64(xp, x):
    """MurmurHash3's 64-bit finaliser, element-wise on uint64 (wrapping)."""
    x = x ^ (x >> S33)
    x = x * M1
    x = x ^ (x >> S33)
    x = x * M2
    return x ^ (x >> S33)


def byte_values(xp, c, j):
    """v(c, j) for byte values c and in-token positions j (any integer arrays)."""
    return fmix64(xp, ((c.astype(xp.uint64) + U64(1)) * P1) ^ ((j.astype(xp.uint64) + U64(1)) * P2))


def token_layout(xp, norm, doc_offsets, char_ngrams: bool):
    """Token start offsets and lengths (int64, into `norm`) and the n+1 token
    offsets of the documents."""
    norm = xp.asarray(norm)
    doc_offsets = xp.asarray(doc_offsets, dtype=xp.int64)
    size = int(norm.shape[0])
    if size == 0:
        z = xp.zeros(0, dtype=xp.int64)
        return z, z, xp.zeros(doc_offsets.shape, dtype=xp.int64)
    # a document boundary always starts and ends a token (documents can abut)
    first = xp.zeros(size + 1, dtype=xp.bool_)
    first[doc_offsets] = True
    if char_ngrams:
        is_tok = xp.ones(size, dtype=xp.bool_)
        starts_here = (norm & np.uint8(0xC0)) != np.uint8(0x80)   # UTF-8 lead bytes
    else:
        is_tok = norm != np.uint8(SPACE)
        prev = xp.concatenate([xp.zeros(1, dtype=xp.bool_), is_tok[:-1]])
        starts_here = is_tok & (~prev | first[:-1])
    nxt_start = xp.concatenate([starts_here[1:] | ~is_tok[1:], xp.ones(1, dtype=xp.bool_)])
    ends_here = is_tok & (nxt_start | first[1:])
    starts = xp.flatnonzero(starts_here).astype(xp.int64)
    ends = xp.flatnonzero(ends_here).astype(xp.int64)
    tok_offsets = xp.searchsorted(starts, doc_offsets, side="left").astype(xp.int64)
    return starts, ends - starts + 1, tok_offsets


def token_hashes(xp, norm, starts, lens):
    """uint64 hash of each token (see the module docstring)."""
    norm = xp.asarray(norm)
    if int(starts.shape[0]) == 0:
        return xp.zeros(0, dtype=xp.uint64)
    idx = xp.arange(int(norm.shape[0]), dtype=xp.int64)
    owner = xp.maximum(xp.searchsorted(starts, idx, side="right") - 1, 0)   # last start <= i
    v = byte_values(xp, norm, idx - starts[owner])    # bytes outside tokens: never summed
    csum = xp.cumsum(v, dtype=xp.uint64)              # wrapping: differences stay exact mod 2^64
    ends = starts + lens - 1
    before = xp.where(starts > 0, csum[xp.maximum(starts - 1, 0)], xp.zeros_like(csum[:1]))
    return fmix64(xp, csum[ends] - before)


def shingle_layout(xp, tok_offsets, ngram: int):
    """Per shingle: its first token and its length in tokens; and the n+1 shingle
    offsets of the documents."""
    tok_offsets = xp.asarray(tok_offsets, dtype=xp.int64)
    counts = tok_offsets[1:] - tok_offsets[:-1]
    per_doc = xp.where(counts >= ngram, counts - (ngram - 1), xp.minimum(counts, 1))
    sh_offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(per_doc).astype(xp.int64)])
    total = int(sh_offsets[-1])
    s = xp.arange(total, dtype=xp.int64)
    doc = xp.searchsorted(sh_offsets[1:], s, side="right")
    start = tok_offsets[:-1][doc] + (s - sh_offsets[doc])
    length = xp.minimum(counts[doc], ngram)
    return start, length, sh_offsets


def shingle_hashes(xp, wh, start, length, ngram: int):
    """uint32 hash of each shingle: its `length` consecutive token hashes from `start`."""
    if int(start.shape[0]) == 0:
        return xp.zeros(0, dtype=xp.uint32)
    acc = xp.zeros(start.shape, dtype=xp.uint64)
    last = int(wh.shape[0]) - 1
    for k in range(ngram):
        term = wh[xp.minimum(start + k, last)] * xp.asarray(SHINGLE_C[k])
        acc = acc + xp.where(length > k, term, xp.zeros_like(term))
    return (fmix64(xp, acc) >> S32).astype(xp.uint32)


def permutation_params(num_perm: int, seed: int):
    """(a, b) uint32 arrays: a odd. Drawn from numpy.random.RandomState(seed) the way
    datasketch draws its affine32 parameters (the same a, b for the same seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def oph_params(num_perm: int, seed: int):
    """(a, b, probes) of the "oph" family, from numpy.random.RandomState(seed): the one
    permutation (a odd; uint32 arrays of length 1) and, per bin, the bins an empty
    bin borrows from, in order (int64, (num_perm, OPH_PROBES))."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, 1, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, 1, dtype=np.uint32)
    probes = gen.randint(0, num_perm, (num_perm, OPH_PROBES)).astype(np.int64)
    return a, b, probes


def _shingle_docs(xp, sh_offsets, total):
    return xp.searchsorted(sh_offsets[1:], xp.arange(total, dtype=xp.int64), side="right")


def oph_signatures_from_shingles(xp, sh, sh_offsets, a, b, probes):
    """(n, K) uint32 signatures of the "oph" family (see the module docstring)."""
    probes = xp.asarray(probes, dtype=xp.int64)
    sh_offsets = xp.asarray(sh_offsets, dtype=xp.int64)
    n, k = int(sh_offsets.shape[0]) - 1, int(probes.shape[0])
    raw = xp.full(n * k, EMPTY, dtype=xp.uint32)
    filled = xp.zeros(n * k, dtype=xp.bool_)
    total = int(sh.shape[0])
    if total:
        v = sh * xp.asarray(a, dtype=xp.uint32)[0] + xp.asarray(b, dtype=xp.uint32)[0]   # wraps mod 2^32
        bins = (v.astype(xp.uint64) * U64(k)) >> S32
        cell = _shingle_docs(xp, sh_offsets, total).astype(xp.uint64) * U64(k) + bins
        key = xp.sort((cell << S32) | v.astype(xp.uint64))       # per cell, its minimum first
        cell = key >> S32
        first = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=xp.bool_), cell[1:] != cell[:-1]]))
        cells = cell[first].astype(xp.int64)
        raw[cells] = (key[first] & MASK32).astype(xp.uint32)
        filled[cells] = True
    raw, filled = raw.reshape(n, k), filled.reshape(n, k)
    sig = raw.copy()
    need = ~filled & filled.any(axis=1, keepdims=True)       # empty bins of non-empty documents
    order = [probes[:, t] for t in range(int(probes.shape[1]))]
    order += [(xp.arange(k, dtype=xp.int64) + d) % k for d in range(1, k)]
    for j in order:
        if not bool(need.any()):
            break
        ok = need & filled[:, j]
        sig = xp.where(ok, raw[:, j], sig)
        need = need & ~ok
    return sig


def signatures_from_shingles(xp, sh, sh_offsets, a, b):
    """(n, K) uint32: per document, the min over its shingles s of a*s + b mod 2^32.

    A segmented min written with operations NumPy and CuPy share: in each chunk of
    rows, the key (document << 32 | value) is sorted down each column, so a
    document's first row holds its minimum."""
    a = xp.asarray(a, dtype=xp.uint32)
    b = xp.asarray(b, dtype=xp.uint32)
    sh_offsets = xp.asarray(sh_offsets, dtype=xp.int64)
    n, k = int(sh_offsets.shape[0]) - 1, int(a.shape[0])
    out = xp.full((n, k), EMPTY, dtype=xp.uint32)
    total = int(sh.shape[0])
    if total == 0:
        return out
    doc = _shingle_docs(xp, sh_offsets, total)
    rows = max(1, _MAX_CELLS // k)
    for r0 in range(0, total, rows):
        r1 = min(total, r0 + rows)
        d = doc[r0:r1]
        vals = sh[r0:r1, None] * a[None, :] + b[None, :]            # wraps mod 2^32
        key = ((d - d[0]).astype(xp.uint64)[:, None] << S32) | vals.astype(xp.uint64)
        key = xp.sort(key, axis=0)
        first = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=xp.bool_), d[1:] != d[:-1]]))
        docs = d[first]
        out[docs] = xp.minimum(out[docs], (key[first] & MASK32).astype(xp.uint32))
    return out


def shingles(xp, norm, doc_offsets, ngram: int, char_ngrams: bool):
    """All shingle hashes of a batch (uint32, document by document) and the n+1
    shingle offsets of the documents."""
    norm = xp.asarray(norm)
    starts, lens, tok_offsets = token_layout(xp, norm, doc_offsets, char_ngrams)
    wh = token_hashes(xp, norm, starts, lens)
    start, length, sh_offsets = shingle_layout(xp, tok_offsets, ngram)
    return shingle_hashes(xp, wh, start, length, ngram), sh_offsets


def signatures(xp, norm, doc_offsets, ngram: int, char_ngrams: bool, a, b, family="minhash", probes=None):
    """The whole reference: normalised bytes of a batch -> (signatures (n, K) uint32,
    shingles per document (n,) int64), both on `xp`. `a`, `b` (and `probes`) are
    permutation_params(K, seed) for "minhash", oph_params(K, seed) for "oph"."""
    sh, sh_offsets = shingles(xp, norm, doc_offsets, ngram, char_ngrams)
    if family == "oph":
        sig = oph_signatures_from_shingles(xp, sh, sh_offsets, a, b, probes)
    else:
        sig = signatures_from_shingles(xp, sh, sh_offsets, a, b)
    return sig, sh_offsets[1:] - sh_offsets[:-1]
