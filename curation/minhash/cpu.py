"""The compiled CPU path: one Numba call per batch does tokenisation (UTF-8
decoding + word table), word and shingle hashing and the permutations, and
writes the normalised text for the exact-duplicate key. It must equal
reference.py bit for bit; tests/test_minhash.py checks that it does."""
from __future__ import annotations

import numpy as np
from numba import njit

from curation.minhash.reference import M1, M2, P1, P2, P3, S32, S33, SHINGLE_C

_ONE = np.uint64(1)
_MASK32 = np.uint64(0xFFFFFFFF)
_SPACE = np.uint8(32)


@njit(cache=True, inline="always")
def _fmix64(x):
    x = x ^ (x >> S33)
    x = x * M1
    x = x ^ (x >> S33)
    x = x * M2
    return x ^ (x >> S33)


@njit(cache=True)
def _permute_min(sh, n_sh, a, b, out):
    k = a.shape[0]
    for p in range(k):
        out[p] = np.uint32(0xFFFFFFFF)
    for i in range(n_sh):
        h = np.uint64(sh[i])
        for p in range(k):
            v = np.uint32((np.uint64(a[p]) * h + np.uint64(b[p])) & _MASK32)
            if v < out[p]:
                out[p] = v


_TAB_POS = 64


@njit(cache=True, inline="always")
def _decode(buf, i):
    b0 = np.int64(buf[i])
    if b0 >= 0xF0:
        return (((b0 & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
                | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)), 4
    if b0 >= 0xE0:
        return (((b0 & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6)
                | (np.int64(buf[i + 2]) & 0x3F)), 3
    return ((b0 & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2


@njit(cache=True, inline="always")
def _encode(cp, out):
    if cp < 0x800:
        out[0] = np.uint8(0xC0 | (cp >> 6))
        out[1] = np.uint8(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        out[0] = np.uint8(0xE0 | (cp >> 12))
        out[1] = np.uint8(0x80 | ((cp >> 6) & 0x3F))
        out[2] = np.uint8(0x80 | (cp & 0x3F))
        return 3
    out[0] = np.uint8(0xF0 | (cp >> 18))
    out[1] = np.uint8(0x80 | ((cp >> 12) & 0x3F))
    out[2] = np.uint8(0x80 | ((cp >> 6) & 0x3F))
    out[3] = np.uint8(0x80 | (cp & 0x3F))
    return 4


def byte_value_table() -> np.ndarray:
    """v(byte, position) of reference.word_hashes for the first 64 positions of a word,
    so the loop looks them up instead of mixing every byte."""
    pos = np.arange(_TAB_POS, dtype=np.uint64)[None, :]
    byte = np.arange(256, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        x = ((byte + np.uint64(1)) * P1) ^ ((pos + np.uint64(1)) * P2)
        x = x ^ (x >> S33)
        x = x * M1
        x = x ^ (x >> S33)
        x = x * M2
        x = x ^ (x >> S33)
    return np.ascontiguousarray(x)


@njit(cache=True)
def sign_batch(buf, doc_offsets, table, ngram, char_mode, a, b, sig, n_shingles,
               norm, norm_offsets, wh_scratch, sh_scratch, vtab, lower):
    """buf: UTF-8 of all documents, lower-cased except possibly ASCII A-Z (lowered
    here); doc_offsets: n+1 byte offsets. Fills sig (n, K), n_shingles (n), norm
    (normalised bytes) and norm_offsets."""
    n = doc_offsets.shape[0] - 1
    npos = 0
    enc = np.empty(4, dtype=np.uint8)
    for d in range(n):
        s, e = doc_offsets[d], doc_offsets[d + 1]
        norm_offsets[d] = npos
        n_words = 0
        in_word = False
        acc = np.uint64(0)
        wlen = 0
        i = s
        while i < e:
            b0 = buf[i]
            if b0 < 0x80:
                # ASCII fast path: most bytes of most text
                if table[b0]:
                    if not in_word:
                        if npos > norm_offsets[d]:
                            norm[npos] = _SPACE
                            npos += 1
                        in_word = True
                        acc = np.uint64(0)
                        wlen = 0
                    lb = b0 | 0x20 if (b0 >= 0x41 and b0 <= 0x5A) else b0
                    norm[npos] = lb
                    npos += 1
                    if wlen < 64:
                        acc += vtab[lb, wlen]
                    else:
                        acc += _fmix64(((np.uint64(lb) + _ONE) * P1) ^ ((np.uint64(wlen) + _ONE) * P2))
                    wlen += 1
                elif in_word:
                    if not char_mode:
                        wh_scratch[n_words] = _fmix64(acc ^ (np.uint64(wlen) * P3))
                    n_words += 1
                    in_word = False
                i += 1
                continue
            cp, clen = _decode(buf, i)
            cp = np.int64(lower[cp])
            if table[cp]:
                if not in_word:
                    if npos > norm_offsets[d]:
                        norm[npos] = _SPACE
                        npos += 1
                    in_word = True
                    acc = np.uint64(0)
                    wlen = 0
                nenc = _encode(cp, enc) if cp >= 0x80 else 1
                if cp < 0x80:
                    enc[0] = np.uint8(cp)
                for j in range(nenc):
                    byte = enc[j]
                    norm[npos] = byte
                    npos += 1
                    if wlen < 64:
                        acc += vtab[byte, wlen]
                    else:
                        acc += _fmix64(((np.uint64(byte) + _ONE) * P1) ^ ((np.uint64(wlen) + _ONE) * P2))
                    wlen += 1
            elif in_word:
                if not char_mode:
                    wh_scratch[n_words] = _fmix64(acc ^ (np.uint64(wlen) * P3))
                n_words += 1
                in_word = False
            i += clen
        if in_word:
            if not char_mode:
                wh_scratch[n_words] = _fmix64(acc ^ (np.uint64(wlen) * P3))
            n_words += 1
        if char_mode:
            # tokens are the bytes of the normalised text, each a one-byte word
            n_words = npos - norm_offsets[d]
            for t in range(n_words):
                byte = norm[norm_offsets[d] + t]
                v = _fmix64(((np.uint64(byte) + _ONE) * P1) ^ P2)
                wh_scratch[t] = _fmix64(v ^ P3)
        if n_words == 0:
            n_sh = 0
        elif n_words < ngram:
            n_sh = 1
        else:
            n_sh = n_words - ngram + 1
        for t in range(n_sh):
            m = ngram if n_words >= ngram else n_words
            acc2 = np.uint64(0)
            for k in range(m):
                acc2 += wh_scratch[t + k] * SHINGLE_C[k]
            sh_scratch[t] = np.uint32(_fmix64(acc2) >> S32)
        n_shingles[d] = n_sh
        _permute_min(sh_scratch, n_sh, a, b, sig[d])
    norm_offsets[n] = npos


@njit(cache=True)
def tokenize_batch(buf, doc_offsets, table, word_bytes, starts, lens, doc_word_offsets):
    """Word boundaries only (for the GPU path, which hashes on the device)."""
    n = doc_offsets.shape[0] - 1
    nb = 0
    nw = 0
    for d in range(n):
        doc_word_offsets[d] = nw
        in_word = False
        i = doc_offsets[d]
        e = doc_offsets[d + 1]
        while i < e:
            b0 = buf[i]
            if b0 < 0x80:
                cp, clen = np.int64(b0), 1
            else:
                cp, clen = _decode(buf, i)
            if table[cp]:
                if not in_word:
                    starts[nw] = nb
                    lens[nw] = 0
                    in_word = True
                for j in range(clen):
                    word_bytes[nb] = buf[i + j]
                    nb += 1
                lens[nw] += clen
            elif in_word:
                nw += 1
                in_word = False
            i += clen
        if in_word:
            nw += 1
    doc_word_offsets[n] = nw
    return nb, nw
