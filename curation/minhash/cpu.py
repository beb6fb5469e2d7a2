"""The compiled CPU path: one Numba call per batch of documents.

It reads the raw texts (one buffer + offsets; each document Latin-1 or UTF-8, see
text.encode_for_loop), and in one pass per document lower-cases and classifies
every code point with text.fold_table(), writes the normalised text (for the
exact-duplicate key) and accumulates the token hashes; then it hashes the shingles
and takes the permutation minima (or fills the OPH bins). It must equal
reference.py bit for bit; tests/test_minhash.py checks that it does.

Compiled with cache=True: the first process compiles (about a second), later ones
load the machine code from $NUMBA_CACHE_DIR, which curation/__init__.py points at
$XDG_CACHE_HOME/curation/numba (~/.cache/curation/numba) unless it is set: never
inside the installed package. The loops release the GIL (nogil=True); MinHasher
keeps their scratch buffers per thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from curation.minhash import reference as ref
from curation.minhash.reference import M1, M2, P1, P2, S32, S33, SHINGLE_C

_VTAB_POS = 64          # byte values v(c, j) are looked up for j < 64, computed beyond
# The hot loop keeps its state and indices in uint64: Numba checks signed indices
# for wraparound (each check needs the array length in a register), and with the
# lengths of five arrays live the loop state used to spill to the stack. Numba
# turns int64 (+) uint64 into float64, so every constant there is a np.uint64.
_Z = np.uint64(0)
_ONE = np.uint64(1)
_U8 = np.uint64(8)
_VT = np.uint64(_VTAB_POS)
_X80 = np.uint64(0x80)
_XFF = np.uint64(0xFF)
_SPACE = np.uint8(0x20)


def value_table() -> np.ndarray:
    """uint64[64 * 256]: reference.byte_values(c, j) at index j * 256 + c."""
    c = np.arange(256, dtype=np.uint64)[None, :]
    j = np.arange(_VTAB_POS, dtype=np.uint64)[:, None]
    return np.ascontiguousarray(ref.byte_values(np, c, j).ravel())


@njit(cache=True, inline="always")
def _fmix64(x):
    x = x ^ (x >> S33)
    x = x * M1
    x = x ^ (x >> S33)
    x = x * M2
    return x ^ (x >> S33)


@njit(cache=True, inline="always")
def _value(vtab, c, j):
    """v(c, j) of reference.byte_values; c, j uint64."""
    if j < _VT:
        return vtab[(j << _U8) | c]
    return _fmix64(((c + _ONE) * P1) ^ ((j + _ONE) * P2))


@njit(cache=True, inline="always")
def _decode(buf, i):
    """Code point (int64) and length (uint64) of the multi-byte UTF-8 sequence at buf[i]."""
    b0 = np.int64(buf[i])
    b1 = np.int64(buf[i + _ONE]) & 0x3F
    if b0 >= 0xF0:
        return (((b0 & 0x07) << 18) | (b1 << 12) | ((np.int64(buf[i + np.uint64(2)]) & 0x3F) << 6)
                | (np.int64(buf[i + np.uint64(3)]) & 0x3F)), np.uint64(4)
    if b0 >= 0xE0:
        return ((b0 & 0x0F) << 12) | (b1 << 6) | (np.int64(buf[i + np.uint64(2)]) & 0x3F), np.uint64(3)
    return ((b0 & 0x1F) << 6) | b1, np.uint64(2)


@njit(cache=True, inline="always")
def _utf8_lead(cp):
    """First byte and length of the UTF-8 encoding of code point cp (int64)."""
    if cp < 0x80:
        return cp, 1
    if cp < 0x800:
        return 0xC0 | (cp >> 6), 2
    if cp < 0x10000:
        return 0xE0 | (cp >> 12), 3
    return 0xF0 | (cp >> 18), 4


@njit(cache=True, inline="always")
def _minhash(sh, nsh, a, b, out):
    """out[p] = min over the shingles s of (a[p] * s + b[p]) mod 2^32."""
    for p in range(a.shape[0]):
        ap = a[p]
        bp = b[p]
        best = np.uint32(0xFFFFFFFF)
        for t in range(nsh):
            v = np.uint32(ap * sh[t] + bp)      # wraps mod 2^32
            best = min(best, v)
        out[p] = best


@njit(cache=True, inline="always")
def _oph(sh, nsh, a, b, probes, filled, out):
    """One permutation hashing with optimal densification (reference.py)."""
    k = out.shape[0]
    for p in range(k):
        out[p] = np.uint32(0xFFFFFFFF)
        filled[p] = 0
    if nsh == 0:
        return
    a0 = a[0]
    b0 = b[0]
    kk = np.uint64(k)
    for t in range(nsh):
        v = np.uint32(a0 * sh[t] + b0)
        j = (np.uint64(v) * kk) >> S32
        out[j] = min(out[j], v)
        filled[j] = 1
    for p in range(k):
        if filled[p]:
            continue
        src = -1
        for t in range(probes.shape[1]):
            j = probes[p, t]
            if filled[j]:
                src = j
                break
        if src < 0:
            for d in range(1, k):
                j = (p + d) % k
                if filled[j]:
                    src = j
                    break
        out[p] = out[src]           # src is a filled bin: never one written here


@njit(cache=True, inline="always")
def _shingles_and_minima(tok_acc, ntok, ngram, family, a, b, probes, filled, wh, sh, out):
    """Token sums -> token hashes -> shingle hashes -> the signature `out`.
    Returns the number of shingles."""
    for t in range(ntok):
        wh[t] = _fmix64(tok_acc[t])
    if ntok >= ngram:
        nsh = ntok - ngram + 1
        m = ngram
    else:
        nsh = 1 if ntok > 0 else 0
        m = ntok
    for t in range(nsh):
        acc = np.uint64(0)
        for k in range(m):
            acc += wh[t + k] * SHINGLE_C[k]
        sh[t] = np.uint32(_fmix64(acc) >> S32)
    if family == 1:
        _oph(sh, nsh, a, b, probes, filled, out)
    else:
        _minhash(sh, nsh, a, b, out)
    return nsh


@njit(cache=True, nogil=True)
def sign_batch(buf, doc_offsets, latin1, ftab, vtab, ngram, char_ngrams, family, a, b, probes,
               sig, n_shingles, norm, norm_offsets, tok_acc, wh, sh, filled):
    """buf: the documents' bytes (not lower-cased; see text.encode_for_loop), each
    Latin-1 where latin1[d] else UTF-8; doc_offsets: n+1 offsets into buf. family 0
    is "minhash" (a, b: K permutations), 1 is "oph" (a, b: one; probes). Fills sig
    (n, K) uint32, n_shingles (n,),
    norm (the normalised bytes, document after document) and norm_offsets (n+1).
    Scratch for one document: tok_acc (byte-value sum per token), wh (token
    hashes), sh (shingle hashes), filled (K flags)."""
    n = doc_offsets.shape[0] - 1
    npos = _Z
    for d in range(n):
        e = np.uint64(doc_offsets[d + 1])
        nstart = npos
        norm_offsets[d] = np.int64(npos)
        ntok = _Z
        acc = _Z
        wlen = _Z
        inw = _Z          # invariant: out of a word, acc == wlen == 0
        i = np.uint64(doc_offsets[d])
        is_latin1 = latin1[d] != 0
        while i < e:
            # ASCII runs, without branches on the text (word boundaries in real text
            # are unpredictable, and mispredictions cost most of the time). Each byte
            # writes a space (kept only when a word starts: the document's first
            # space is dropped at its end), the lowered byte (kept only inside a
            # word) and the token's sum so far (kept only when the word ends here).
            while i < e:
                c = np.uint64(buf[i])
                if c >= _X80:
                    break
                i += _ONE
                f = np.int64(ftab[c])
                w = np.uint64((f >> 63) + 1)         # 1 inside a word, else 0
                x = np.uint64(f) & _XFF
                start = w & (_ONE - inw)
                norm[npos] = _SPACE
                npos += start
                norm[npos] = np.uint8(x)
                npos += w
                tok_acc[ntok] = acc
                ntok += inw & (_ONE - w)
                acc = (acc + _value(vtab, x, wlen)) & (_Z - w)
                wlen = (wlen + _ONE) & (_Z - w)
                inw = w
            if i >= e:
                break
            if is_latin1:
                cp = np.int64(buf[i])
                i += _ONE
            else:
                cp, clen = _decode(buf, i)
                i += clen
            f = np.int64(ftab[cp])
            if f < 0:
                if inw != _Z:
                    tok_acc[ntok] = acc
                    ntok += _ONE
                    inw = _Z
                    acc = _Z
                    wlen = _Z
                continue
            if inw == _Z:
                norm[npos] = _SPACE
                npos += _ONE
                inw = _ONE
            # the UTF-8 of the lowered code point, each byte hashed at its position
            x0, nb = _utf8_lead(f)
            norm[npos] = np.uint8(x0)
            npos += _ONE
            acc += _value(vtab, np.uint64(x0), wlen)
            wlen += _ONE
            for q in range(nb - 2, -1, -1):
                x = np.uint64(0x80 | ((f >> (6 * q)) & 0x3F))
                norm[npos] = np.uint8(x)
                npos += _ONE
                acc += _value(vtab, x, wlen)
                wlen += _ONE
        if inw != _Z:
            tok_acc[ntok] = acc
            ntok += _ONE
        if npos > nstart:           # drop the space written before the first word
            for j in range(nstart, npos - _ONE):
                norm[j] = norm[j + _ONE]
            npos -= _ONE
        if char_ngrams:
            # tokens are the characters of the normalised text, spaces included
            ntok = _Z
            j = nstart
            while j < npos:
                c0 = norm[j]
                nb = 1 if c0 < 0x80 else (2 if c0 < 0xE0 else (3 if c0 < 0xF0 else 4))
                acc = _Z
                for q in range(nb):
                    acc += _value(vtab, np.uint64(norm[j + np.uint64(q)]), np.uint64(q))
                tok_acc[ntok] = acc
                ntok += _ONE
                j += np.uint64(nb)
        n_shingles[d] = _shingles_and_minima(tok_acc, np.int64(ntok), ngram, family, a, b, probes,
                                             filled, wh, sh, sig[d])
    norm_offsets[n] = np.int64(npos)


@njit(cache=True, nogil=True)
def normalize_batch(buf, doc_offsets, latin1, ftab, norm, norm_offsets):
    """Only the normalised bytes (the GPU path hashes them on the device)."""
    n = doc_offsets.shape[0] - 1
    npos = _Z
    for d in range(n):
        norm_offsets[d] = np.int64(npos)
        inw = False
        has_word = False
        is_latin1 = latin1[d] != 0
        i = np.uint64(doc_offsets[d])
        e = np.uint64(doc_offsets[d + 1])
        while i < e:
            c = np.uint64(buf[i])
            if c < _X80 or is_latin1:
                cp = np.int64(c)
                i += _ONE
            else:
                cp, clen = _decode(buf, i)
                i += clen
            f = np.int64(ftab[cp])
            if f < 0:
                inw = False
                continue
            if not inw:
                if has_word:
                    norm[npos] = _SPACE
                    npos += _ONE
                inw = True
                has_word = True
            x0, nb = _utf8_lead(f)
            norm[npos] = np.uint8(x0)
            npos += _ONE
            for q in range(nb - 2, -1, -1):
                norm[npos] = np.uint8(0x80 | ((f >> (6 * q)) & 0x3F))
                npos += _ONE
    norm_offsets[n] = np.int64(npos)
