"""Signatures equal, bit for bit and in the same dtype, to datasketch 2.x's
`MinHash(num_perm, seed, scheme).update_batch(tokens).hashvalues`, for a batch of
token lists at once. Written from datasketch 2.0's minhash.py / hashfunc.py:

  token hash   SHA-1 of the token bytes, first 4 bytes little-endian (affine32, legacy)
               or first 8 bytes (affine64): datasketch.hashfunc.sha1_hash32 / _hash64
  affine32     h' = fmix32(h) (MurmurHash3 32-bit finaliser), then a*h' + b in uint32
  affine64     h' = fmix64(h), then a*h' + b in uint64
  legacy       ((a*h + b) mod (2^61 - 1)) & (2^32 - 1), computed in uint64 with a
               wrapping 64-bit a*h + b (exactly as datasketch computes it), stored uint64
  parameters   numpy.random.RandomState(seed); affine: a = randint(0, 2^(w-1), K)*2 + 1,
               then b = randint(0, 2^w, K) in uint{w}; legacy: for each permutation in
               turn, a = randint(1, 2^61 - 1), b = randint(0, 2^61 - 1) (uint64)
  empty        all 2^32 - 1 (affine32: uint32; legacy: uint64), affine64: 2^64 - 1
"""
from __future__ import annotations

import hashlib

import numpy as np

from curation.minhash.text import words

SCHEMES = ("affine32", "affine64", "legacy")
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)


def _fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _fmix64(h):
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


class DatasketchCompatible:
    """The signatures `datasketch.MinHash(num_perm, seed, scheme=scheme)` gives."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: str = "affine32", ngram: int = 5):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.num_perm = _check_int("num_perm", num_perm, 1)
        self.seed = _check_int("seed", seed, 0, 2**32)
        self.ngram = _check_int("ngram", ngram, 1)
        self.scheme = scheme
        gen = np.random.RandomState(self.seed)
        if scheme == "legacy":
            pairs = [(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                     for _ in range(self.num_perm)]
            self.a = np.array([p[0] for p in pairs], dtype=np.uint64)
            self.b = np.array([p[1] for p in pairs], dtype=np.uint64)
            self.dtype, self.empty = np.dtype(np.uint64), _MAX32
        else:
            width = 32 if scheme == "affine32" else 64
            dt = np.uint32 if width == 32 else np.uint64
            self.a = gen.randint(0, 1 << (width - 1), self.num_perm, dtype=dt) * dt(2) + dt(1)
            self.b = gen.randint(0, 1 << width, self.num_perm, dtype=dt)
            self.dtype, self.empty = np.dtype(dt), dt((1 << width) - 1)

    def params(self) -> dict:
        return {"scheme": f"datasketch-{self.scheme}", "num_perm": self.num_perm, "seed": self.seed,
                "ngram": self.ngram}

    def token_hashes(self, tokens) -> np.ndarray:
        """datasketch's SHA-1 token hashes, in the dtype update_batch gives them."""
        nbytes = 8 if self.scheme == "affine64" else 4
        hv = []
        for t in tokens:
            if not isinstance(t, (bytes, bytearray, memoryview)):
                raise TypeError(f"tokens must be bytes, got {type(t).__name__}")
            hv.append(int.from_bytes(hashlib.sha1(t).digest()[:nbytes], "little"))
        return np.array(hv, dtype=np.uint32 if self.scheme == "affine32" else np.uint64)

    def signature_from_tokens(self, tokens) -> np.ndarray:
        out = np.full(self.num_perm, self.empty, dtype=self.dtype)
        hv = self.token_hashes(tokens)
        if hv.shape[0] == 0:            # update_batch([]) leaves the sketch as it is
            return out
        hv = hv[:, None]
        if self.scheme == "legacy":
            phv = ((hv * self.a + self.b) % _MERSENNE) & _MAX32
        elif self.scheme == "affine32":
            phv = _fmix32(hv) * self.a + self.b
        else:
            phv = _fmix64(hv) * self.a + self.b
        return np.minimum(out, phv.min(axis=0))

    def signatures_from_tokens(self, token_lists) -> np.ndarray:
        """(n, num_perm) array in datasketch's dtype for the scheme (uint32 for
        affine32, uint64 for affine64 and legacy)."""
        rows = [self.signature_from_tokens(list(t)) for t in token_lists]
        if not rows:
            return np.zeros((0, self.num_perm), dtype=self.dtype)
        return np.stack(rows)

    def shingles(self, text: str) -> list:
        """What a datasketch user feeds: the word n-grams of normalize(text), words
        joined by one space, UTF-8. A text with fewer than n words gives one shingle of
        all its words and one with none gives none, as MinHasher does."""
        w = words(text)
        n = self.ngram
        if len(w) < n:
            return [" ".join(w).encode("utf-8")] if w else []
        return [" ".join(w[i:i + n]).encode("utf-8") for i in range(len(w) - n + 1)]

    def signatures(self, texts) -> np.ndarray:
        return self.signatures_from_tokens([self.shingles(t) for t in texts])
