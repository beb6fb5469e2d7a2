"""Signatures equal, bit for bit, to datasketch 2.x's MinHash.hashvalues after
update_batch(tokens), in each of its permutation schemes, computed for a whole
batch of token lists at once."""
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


class DatasketchCompatible:
    """Same parameters as `datasketch.MinHash(num_perm, seed, scheme)`."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: str = "affine32", ngram: int = 5):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if not isinstance(num_perm, int) or num_perm < 1:
            raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
        self.num_perm, self.seed, self.scheme, self.ngram = num_perm, seed, scheme, ngram
        gen = np.random.RandomState(seed)
        if scheme == "legacy":
            pairs = [(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                     for _ in range(num_perm)]
            self.a = np.array([p[0] for p in pairs], dtype=np.uint64)
            self.b = np.array([p[1] for p in pairs], dtype=np.uint64)
            self.dtype = np.uint64
            self.empty = _MAX32
        else:
            width = 32 if scheme == "affine32" else 64
            dt = np.uint32 if width == 32 else np.uint64
            self.a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dt) * dt(2) + dt(1)
            self.b = gen.randint(0, 1 << width, num_perm, dtype=dt)
            self.dtype = dt
            self.empty = dt((1 << width) - 1)

    def _token_hashes(self, tokens) -> np.ndarray:
        if self.scheme == "affine64":
            return np.array([int.from_bytes(hashlib.sha1(t).digest()[:8], "little") for t in tokens],
                            dtype=np.uint64)
        hv = np.array([int.from_bytes(hashlib.sha1(t).digest()[:4], "little") for t in tokens],
                      dtype=np.uint64 if self.scheme == "legacy" else np.uint32)
        return hv

    def signature_from_tokens(self, tokens) -> np.ndarray:
        out = np.full(self.num_perm, self.empty, dtype=self.dtype)
        if not tokens:
            return out
        for t in tokens:
            if not isinstance(t, (bytes, bytearray, memoryview)):
                raise TypeError(f"tokens must be bytes, got {type(t).__name__}")
        hv = self._token_hashes(tokens)[:, None]
        with np.errstate(over="ignore"):
            if self.scheme == "legacy":
                phv = ((hv * self.a + self.b) % _MERSENNE) & _MAX32
            elif self.scheme == "affine32":
                phv = _fmix32(hv) * self.a + self.b
            else:
                phv = _fmix64(hv) * self.a + self.b
        return np.minimum(out, phv.min(axis=0))

    def signatures_from_tokens(self, token_lists) -> np.ndarray:
        """(n, num_perm) array in datasketch's dtype for that scheme."""
        return np.stack([self.signature_from_tokens(list(t)) for t in token_lists]) if token_lists \
            else np.zeros((0, self.num_perm), dtype=self.dtype)

    def shingles(self, text: str) -> list[bytes]:
        """Word n-grams of the normalised text, as a datasketch user feeds them."""
        w = words(text)
        n = self.ngram
        if len(w) < n:
            return [" ".join(w).encode("utf-8")] if w else []
        return [" ".join(w[i:i + n]).encode("utf-8") for i in range(len(w) - n + 1)]

    def signatures(self, texts) -> np.ndarray:
        return self.signatures_from_tokens([self.shingles(t) for t in texts])
