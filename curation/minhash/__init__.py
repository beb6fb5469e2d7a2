"""MinHash signatures for near-duplicate detection.

>>> from curation.minhash import MinHasher
>>> mh = MinHasher(num_perm=128, seed=1)
>>> mh.signatures(["first text", "second text"]).shape
(2, 128)

The math lives once in `reference.py` (NumPy or CuPy through `xp`); `cpu.py`
(Numba) and `gpu.py` (CUDA) are fast paths proven equal to it by the tests.
`MinHasher.datasketch_compatible` gives datasketch 2.x's signatures bit for bit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

from curation.minhash import reference as ref
from curation.minhash.datasketch_compat import SCHEMES, DatasketchCompatible
from curation.minhash.text import (encode_lower, lower_table, needs_python_lower, normalize,
                                   word_table, words)

__all__ = ["MinHasher", "SignedBatch", "normalize", "estimate_jaccard", "DatasketchCompatible"]

SCHEME = "curation-minhash-v1"
BACKENDS = ("auto", "numpy", "numba", "cupy")


def estimate_jaccard(sig_a, sig_b):
    """Fraction of equal positions; row-wise for 2-D inputs."""
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.shape != b.shape:
        raise ValueError(f"signature shapes differ: {a.shape} vs {b.shape}")
    return (a == b).mean(axis=-1)


@dataclass
class SignedBatch:
    signatures: np.ndarray     # (n, num_perm) uint32
    num_shingles: np.ndarray   # (n,) int64
    exact_keys: list           # 16-byte xxh3-128 digests of the normalised text


def _exact_key(norm: bytes, text: str) -> bytes:
    if norm:
        return xxhash.xxh3_128_digest(norm)
    # nothing word-like: identical raw texts are still duplicates, "!!!" and "???" are not
    return xxhash.xxh3_128_digest(b"\x00raw\x00" + text.encode("utf-8", "surrogatepass"))


_VTAB = None


def _vtab():
    global _VTAB
    if _VTAB is None:
        from curation.minhash.cpu import byte_value_table
        _VTAB = byte_value_table()
    return _VTAB


class MinHasher:
    """Word (or character) n-gram MinHash with `num_perm` permutations.

    backend: "auto" (CuPy kernel on a CUDA device, else the compiled CPU loop),
    "numba", "numpy" (the reference), or "cupy" (an error when unavailable)."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5,
                 char_ngrams: bool = False, backend: str = "auto"):
        if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
            raise ValueError(f"num_perm must be a positive integer, got {num_perm!r}")
        if isinstance(ngram, bool) or not isinstance(ngram, (int, np.integer)) or not 1 <= ngram <= ref.MAX_NGRAM:
            raise ValueError(f"ngram must be an integer in [1, {ref.MAX_NGRAM}], got {ngram!r}")
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {seed!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.num_perm, self.seed, self.ngram = int(num_perm), int(seed), int(ngram)
        self.char_ngrams = bool(char_ngrams)
        self.a, self.b = ref.permutation_params(self.num_perm, self.seed)
        if backend in ("auto", "cupy"):
            from curation.minhash.gpu import cupy_available
            if cupy_available():
                backend = "cupy"
            elif backend == "cupy":
                raise RuntimeError("backend='cupy' needs CuPy and a CUDA device; none was found "
                                   "(install the 'gpu' extra on a GPU machine, or use backend='numba')")
            else:
                backend = "numba"
        self.backend = backend

    @classmethod
    def datasketch_compatible(cls, num_perm: int = 128, seed: int = 1, scheme: str = "affine32",
                              ngram: int = 5) -> DatasketchCompatible:
        return DatasketchCompatible(num_perm=num_perm, seed=seed, scheme=scheme, ngram=ngram)

    def params(self) -> dict:
        return {"scheme": SCHEME, "num_perm": self.num_perm, "seed": self.seed,
                "ngram": self.ngram, "char_ngrams": self.char_ngrams, "backend": self.backend}

    # -- batches

    def signatures(self, texts) -> np.ndarray:
        return self.sign_batch(texts).signatures

    def sign_batch(self, texts) -> SignedBatch:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__}")
        if self.backend == "numba":
            return self._sign_numba(texts)
        if self.backend == "cupy":
            return self._sign_cupy(texts)
        return self._sign_reference(np, texts)

    def _encode(self, texts, ascii_lowered_later: bool = False):
        # the compiled loop lowers text itself, but for the two context-dependent cases
        enc = [encode_lower(t) if not ascii_lowered_later or needs_python_lower(t)
               else t.encode("utf-8", "surrogatepass") for t in texts]
        lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
        offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        buf = np.frombuffer(b"".join(enc), dtype=np.uint8) if enc else np.zeros(0, np.uint8)
        return buf, offsets, int(lens.max()) if len(enc) else 0

    _CHUNK = 256   # documents per compiled call: keeps buffers small and reused (no page faults)

    def _sign_numba(self, texts) -> SignedBatch:
        n = len(texts)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        nsh = np.zeros(n, dtype=np.int64)
        keys: list = []
        for s in range(0, n, self._CHUNK):
            e = min(n, s + self._CHUNK)
            self._sign_numba_chunk(texts[s:e], sig[s:e], nsh[s:e], keys)
        return SignedBatch(sig, nsh, keys)

    def _buffer(self, name, size, dtype):
        buf = getattr(self, name, None)
        if buf is None or buf.shape[0] < size:
            buf = np.empty(max(size, 1 << 16), dtype=dtype)
            setattr(self, name, buf)
        return buf

    def _sign_numba_chunk(self, texts, sig, nsh, keys):
        from curation.minhash import cpu
        buf, offsets, longest = self._encode(texts, ascii_lowered_later=True)
        n = len(texts)
        norm = self._buffer("_norm", len(buf) + n + 1, np.uint8)
        norm_off = np.zeros(n + 1, dtype=np.int64)
        scratch = longest + 1
        cpu.sign_batch(buf, offsets, word_table(), self.ngram, self.char_ngrams, self.a, self.b,
                       sig, nsh, norm, norm_off, self._buffer("_wh", scratch, np.uint64),
                       self._buffer("_sh", scratch, np.uint32), _vtab(), lower_table())
        nb = memoryview(norm)
        bounds = norm_off.tolist()
        keys.extend(xxhash.xxh3_128_digest(nb[bounds[i]:bounds[i + 1]]) if bounds[i + 1] > bounds[i]
                    else _exact_key(b"", texts[i]) for i in range(n))

    def _reference_words(self, texts):
        """Words of each document by the regex definition (independent of the tokenizer)."""
        norms = [normalize(t) for t in texts]
        chunks, starts, lens, doc_off = [], [], [], [0]
        pos = 0
        for norm in norms:
            toks = list(norm.encode("utf-8", "surrogatepass")) if self.char_ngrams else \
                [w.encode("utf-8", "surrogatepass") for w in norm.split(" ") if w]
            for w in toks:
                wb = bytes([w]) if self.char_ngrams else w
                chunks.append(wb)
                starts.append(pos)
                lens.append(len(wb))
                pos += len(wb)
            doc_off.append(len(starts))
        word_bytes = np.frombuffer(b"".join(chunks), dtype=np.uint8) if chunks else np.zeros(0, np.uint8)
        return (norms, word_bytes, np.array(starts, dtype=np.int64), np.array(lens, dtype=np.int64),
                np.array(doc_off, dtype=np.int64))

    def _sign_reference(self, xp, texts) -> SignedBatch:
        norms, wb, starts, lens, doc_off = self._reference_words(texts)
        sig, per_doc = ref.signatures(xp, wb, starts, lens, doc_off, self.ngram, self.a, self.b)
        if xp is not np:
            sig = xp.asnumpy(sig)
        keys = [_exact_key(nm.encode("utf-8", "surrogatepass"), t) for nm, t in zip(norms, texts)]
        return SignedBatch(np.asarray(sig), per_doc.astype(np.int64), keys)

    def _sign_cupy(self, texts) -> SignedBatch:
        from curation.minhash import cpu, gpu
        if self.char_ngrams:
            # character shingles need the normalised bytes; take them from the reference layout
            norms, wb, starts, lens, doc_off = self._reference_words(texts)
        else:
            buf, offsets, _ = self._encode(texts)
            n = len(texts)
            wb = np.empty(len(buf), dtype=np.uint8)
            starts = np.empty(len(buf) + 1, dtype=np.int64)
            lens = np.empty(len(buf) + 1, dtype=np.int64)
            doc_off = np.zeros(n + 1, dtype=np.int64)
            nb, nw = cpu.tokenize_batch(buf, offsets, word_table(), wb, starts, lens, doc_off)
            wb, starts, lens = wb[:nb], starts[:nw], lens[:nw]
            norms = None
        sig, per_doc = gpu.signatures_device(wb, starts, lens, doc_off, self.ngram, self.a, self.b)
        if norms is None:
            norms = [normalize(t) for t in texts]
        keys = [_exact_key(nm.encode("utf-8", "surrogatepass"), t) for nm, t in zip(norms, texts)]
        return SignedBatch(sig, per_doc.astype(np.int64), keys)

    def reference_signatures(self, texts, xp=np) -> np.ndarray:
        """The reference math on `xp` (NumPy or CuPy), whatever the backend."""
        return self._sign_reference(xp, list(texts)).signatures

    # -- single documents

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Sorted unique uint32 shingle hashes: the set the signature is a min over."""
        _, wb, starts, lens, doc_off = self._reference_words([text])
        wh = ref.word_hashes(np, wb, starts, lens)
        start, length, _, _ = ref.shingle_layout(doc_off, self.ngram)
        return np.unique(ref.shingle_hashes(np, wh, start, length, self.ngram))
