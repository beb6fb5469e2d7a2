"""The MinHash math, defined once against an array module `xp` (NumPy or CuPy).

Given the words of a batch of documents (their UTF-8 bytes concatenated, with
start offsets and lengths) this computes, in wrapping unsigned arithmetic:

  byte value   v_j  = fmix64(((byte_j + 1) * P1) ^ ((j + 1) * P2))   j = position in word
  word hash    w    = fmix64((sum_j v_j) ^ (len * P3))
  shingle hash s    = fmix64(sum_{k < m} w_{i+k} * C_k) >> 32        m = min(n, words)
  signature    sig[p] = min over shingles of (a_p * s + b_p) mod 2^32

A document with fewer than n words has one shingle of all its words; one with no
words has none and its signature stays all 0xFFFFFFFF. Character n-grams use the
bytes of the normalised text as one-byte "words". The compiled CPU loop and the
CUDA path must reproduce this bit for bit (tests/test_minhash.py).
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64
P1 = U64(0x9E3779B97F4A7C15)
P2 = U64(0xC2B2AE3D27D4EB4F)
P3 = U64(0x165667B19E3779F9)
M1 = U64(0xFF51AFD7ED558CCD)
M2 = U64(0xC4CEB9FE1A85EC53)
S33 = U64(33)
S32 = U64(32)
EMPTY = np.uint32(0xFFFFFFFF)
MAX_NGRAM = 64
# Distinct odd multipliers, one per position in a shingle (order matters).
SHINGLE_C = np.array([(0x9E3779B97F4A7C15 * (2 * k + 1) + 0x632BE59BD9B4E019 * k) % 2**64 | 1
                      for k in range(MAX_NGRAM)], dtype=np.uint64)


def fmix64(xp, x):
    x = x ^ (x >> S33)
    x = x * M1
    x = x ^ (x >> S33)
    x = x * M2
    return x ^ (x >> S33)


def word_hashes(xp, word_bytes, starts, lens):
    """uint64 hash of each word; `starts`/`lens` index into `word_bytes`."""
    n_words = int(starts.shape[0])
    if n_words == 0:
        return xp.zeros(0, dtype=xp.uint64)
    # words are contiguous and in order: a word's id is the count of starts before it
    mark = xp.zeros(int(word_bytes.shape[0]), dtype=xp.int64)
    mark[starts[1:]] = 1
    wid = xp.cumsum(mark)
    pos = xp.arange(int(word_bytes.shape[0]), dtype=xp.int64) - starts[wid]
    v = fmix64(xp, ((word_bytes.astype(xp.uint64) + U64(1)) * P1)
               ^ ((pos.astype(xp.uint64) + U64(1)) * P2))
    cs = xp.cumsum(v, dtype=xp.uint64)
    ends = starts + lens - 1
    before = xp.where(starts > 0, cs[xp.maximum(starts - 1, 0)], xp.zeros_like(cs[:1]))
    seg = cs[ends] - before
    return fmix64(xp, seg ^ (lens.astype(xp.uint64) * P3))


def shingle_layout(doc_word_offsets: np.ndarray, ngram: int):
    """Host-side (start word, length, document) of every shingle of the batch."""
    counts = np.diff(doc_word_offsets)
    per_doc = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    doc = np.repeat(np.arange(len(counts)), per_doc)
    first = np.repeat(doc_word_offsets[:-1], per_doc)
    rank = np.arange(int(per_doc.sum())) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    start = first + rank
    length = np.minimum(np.repeat(counts, per_doc), ngram)
    return start.astype(np.int64), length.astype(np.int64), doc.astype(np.int64), per_doc.astype(np.int64)


def shingle_hashes(xp, wh, start, length, ngram: int):
    """uint32 hash of each shingle (the n consecutive word hashes from `start`)."""
    if int(start.shape[0]) == 0:
        return xp.zeros(0, dtype=xp.uint32)
    acc = xp.zeros(start.shape, dtype=xp.uint64)
    last = int(wh.shape[0]) - 1
    for k in range(ngram):
        idx = xp.minimum(start + k, last)
        term = wh[idx] * xp.asarray(SHINGLE_C[k])
        acc = acc + xp.where(length > k, term, xp.zeros_like(term))
    return (fmix64(xp, acc) >> S32).astype(xp.uint32)


def permutation_params(num_perm: int, seed: int):
    """Odd a and any b, uint32, drawn like datasketch's affine32 parameters."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signatures_from_shingles(xp, sh, per_doc, a, b):
    """(n, K) uint32: per document, min over its shingles of a*s + b mod 2^32."""
    n, k = int(per_doc.shape[0]), int(a.shape[0])
    out = xp.full((n, k), EMPTY, dtype=xp.uint32)
    offs = np.concatenate([[0], np.cumsum(per_doc)])
    a_, b_ = xp.asarray(a), xp.asarray(b)
    for d in range(n):
        s, e = int(offs[d]), int(offs[d + 1])
        if e > s:
            out[d] = (sh[s:e, None] * a_[None, :] + b_[None, :]).min(axis=0)
    return out


def signatures(xp, word_bytes, starts, lens, doc_word_offsets, ngram, a, b):
    """The whole reference: words of a batch -> (signatures, shingles per doc)."""
    wh = word_hashes(xp, xp.asarray(word_bytes), xp.asarray(starts), xp.asarray(lens))
    start, length, _, per_doc = shingle_layout(np.asarray(doc_word_offsets), ngram)
    sh = shingle_hashes(xp, wh, xp.asarray(start), xp.asarray(length), ngram)
    return signatures_from_shingles(xp, sh, per_doc, a, b), per_doc
