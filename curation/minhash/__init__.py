"""MinHash signatures for near-duplicate detection.

>>> from curation.minhash import MinHasher, estimate_jaccard
>>> mh = MinHasher(num_perm=128, seed=1)
>>> sigs = mh.signatures(["the quick brown fox jumps over the lazy dog",
...                       "The quick brown fox jumps over the lazy dog!"])
>>> sigs.shape, sigs.dtype.name, float(estimate_jaccard(sigs[0], sigs[1]))
((2, 128), 'uint32', 1.0)

The math is defined once in reference.py, against an array module `xp` (NumPy
or CuPy). cpu.py (one compiled Numba call per batch) and gpu.py (CUDA kernels)
are fast paths that the tests prove equal to it bit for bit. text.py holds the
normalisation, `normalize(text) == " ".join(re.findall(r"\\w+", text.lower()))`.
`MinHasher.datasketch_compatible` gives datasketch 2.x's signatures bit for bit.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import xxhash

from curation.minhash import reference as ref
from curation.minhash.datasketch_compat import SCHEMES, DatasketchCompatible
from curation.minhash.text import encode_batch, fold_table, normalize

__all__ = ["MinHasher", "SignedBatch", "DatasketchCompatible", "normalize", "estimate_jaccard",
           "exact_key", "SCHEME", "BACKENDS", "SCHEMES"]

SCHEME = "curation-minhash-v2"   # v2: token hash without the length term; "oph" family
BACKENDS = ("auto", "numpy", "numba", "cupy")
# documents per compiled call (per device batch on a GPU): buffers stay bounded, and
# on the CPU small enough to stay in cache, whatever the caller passes
_CHUNK = {"cpu": (2048, 1 << 23), "gpu": (1 << 16, 1 << 26)}


def estimate_jaccard(sig_a, sig_b):
    """Fraction of equal positions: a float for 1-D rows, an array row-wise for 2-D."""
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.shape != b.shape:
        raise ValueError(f"signature shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"signatures must be non-empty 1-D rows or 2-D arrays, got shape {a.shape}")
    est = (a == b).mean(axis=-1)
    return float(est) if a.ndim == 1 else est


def exact_key(normalized: bytes, text: str) -> bytes:
    """16-byte exact-duplicate key: xxh3-128 of the normalised text's UTF-8; a text
    with no words is keyed by its raw text instead ("!!!" and "???" differ)."""
    if normalized:
        return xxhash.xxh3_128_digest(normalized)
    return xxhash.xxh3_128_digest(b"\x00raw\x00" + text.encode("utf-8", "surrogatepass"))


@dataclass
class SignedBatch:
    signatures: np.ndarray     # (n, num_perm) uint32, on the host
    num_shingles: np.ndarray   # (n,) int64; 0: no words, signature all 0xFFFFFFFF
    exact_keys: list           # n 16-byte digests, see exact_key()

    def __len__(self) -> int:
        return int(self.signatures.shape[0])


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def _check_texts(texts) -> list:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str, not a single "
                        f"{type(texts).__name__} (wrap it in a list)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts must be str, got {type(t).__name__} at position {i}")
    return texts


def _chunks(lengths, where="cpu"):
    """[start, end) ranges of documents: at most max_docs documents and, past the
    first document, max_bytes bytes each."""
    max_docs, max_bytes = _CHUNK[where]
    s, size = 0, 0
    for i, n in enumerate(lengths):
        if i > s and (i - s >= max_docs or size + n > max_bytes):
            yield s, i
            s, size = i, 0
        size += n
    if s < len(lengths):
        yield s, len(lengths)


def _concat(parts):
    lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return buf, offsets


class MinHasher:
    """Word (default) or character n-gram MinHash with `num_perm` permutations.

    backend: "auto" (the CUDA kernels when CuPy and a CUDA device are available
    and the device passes its self-check, see gpu.choose_backend; else the
    compiled CPU loop), "numba" (the compiled CPU loop), "numpy" (the reference,
    on NumPy) or "cupy" (the CUDA kernels; an error without a device or when the
    self-check fails).
    Every backend gives the same signatures bit for bit.

    family: "minhash" (default; num_perm affine permutations, min over the
    shingles for each) or "oph" (one permutation hashing into num_perm bins with
    optimal densification: O(1) per shingle instead of O(num_perm), and on the
    neardup_dev pairs a lower Jaccard-estimation error; see docs/benchmarks.md).
    Signatures of different families, seeds or shingling never compare."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5,
                 char_ngrams: bool = False, backend: str = "auto", family: str = "minhash"):
        self.num_perm = _check_int("num_perm", num_perm, 1)
        self.seed = _check_int("seed", seed, 0, 2**32 - 1)
        self.ngram = _check_int("ngram", ngram, 1, ref.MAX_NGRAM)
        if not isinstance(char_ngrams, (bool, np.bool_)):
            raise TypeError(f"char_ngrams must be a bool, got {type(char_ngrams).__name__}")
        self.char_ngrams = bool(char_ngrams)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if family not in ref.FAMILIES:
            raise ValueError(f"family must be one of {ref.FAMILIES}, got {family!r}")
        self.family = family
        if family == "oph":
            self.a, self.b, self.probes = ref.oph_params(self.num_perm, self.seed)
        else:
            self.a, self.b = ref.permutation_params(self.num_perm, self.seed)
            self.probes = np.zeros((self.num_perm, 0), dtype=np.int64)
        if backend in ("auto", "cupy"):
            # CuPy with a device whose kernels passed their self-check, else the CPU
            # loop ("auto", with a warning if the check failed) or an error ("cupy")
            from curation.minhash.gpu import choose_backend
            backend = choose_backend(backend)
        self.backend = backend
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (f"MinHasher(num_perm={self.num_perm}, seed={self.seed}, ngram={self.ngram}, "
                f"char_ngrams={self.char_ngrams}, backend={self.backend!r}, family={self.family!r})")

    @classmethod
    def datasketch_compatible(cls, num_perm: int = 128, seed: int = 1, scheme: str = "affine32",
                              ngram: int = 5) -> DatasketchCompatible:
        """Signatures equal to datasketch 2.x's MinHash(num_perm, seed, scheme=scheme)."""
        return DatasketchCompatible(num_perm=num_perm, seed=seed, scheme=scheme, ngram=ngram)

    def params(self) -> dict:
        """What determines the signatures (JSON-serialisable), for manifests."""
        return {"scheme": SCHEME, "family": self.family, "num_perm": self.num_perm, "seed": self.seed,
                "ngram": self.ngram, "char_ngrams": self.char_ngrams, "backend": self.backend,
                "signature_dtype": "uint32"}

    # -- batches

    def signatures(self, texts) -> np.ndarray:
        """(n, num_perm) uint32 signatures, on the host."""
        return self.sign_batch(texts).signatures

    def sign_batch(self, texts) -> SignedBatch:
        """Signatures, shingle counts and exact-duplicate keys of a batch of texts."""
        texts = _check_texts(texts)
        if self.backend == "numpy":
            return self._sign_reference(np, texts)
        enc, latin1 = encode_batch(texts)
        n = len(texts)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        counts = np.zeros(n, dtype=np.int64)
        keys: list = []
        for s, e in _chunks([len(x) for x in enc], "gpu" if self.backend == "cupy" else "cpu"):
            buf, offsets = _concat(enc[s:e])
            if self.backend == "cupy":
                norm, norm_off = self._normalize_numba(buf, offsets, latin1[s:e])
                from curation.minhash import gpu
                gpu.require_checked_device()
                sig[s:e], counts[s:e] = gpu.signatures(norm, norm_off, self.ngram, self.char_ngrams,
                                                       self.a, self.b, self.family, self.probes)
            else:
                norm, norm_off = self._sign_numba(buf, offsets, latin1[s:e], sig[s:e], counts[s:e])
            self._keys(norm, norm_off, texts[s:e], keys)
        return SignedBatch(sig, counts, keys)

    def reference_signatures(self, texts, xp=np) -> np.ndarray:
        """The reference math run on `xp` (NumPy or CuPy) whatever the backend; host array."""
        return self._sign_reference(xp, _check_texts(texts)).signatures

    # -- single documents

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Sorted unique uint32 shingle hashes of one text: the set its signature is
        the minimum over (so exact Jaccard = |A & B| / |A | B| on these)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if self.backend == "numpy":
            norm = normalize(text).encode("utf-8")
            sh, _ = ref.shingles(np, np.frombuffer(norm, dtype=np.uint8),
                                 np.array([0, len(norm)], dtype=np.int64), self.ngram, self.char_ngrams)
            return np.unique(sh)
        enc, latin1 = encode_batch([text])
        buf, offsets = _concat(enc)
        counts = np.zeros(1, dtype=np.int64)
        self._sign_numba(buf, offsets, latin1, np.empty((1, 0), dtype=np.uint32), counts, signing=False)
        return np.unique(self._scratch("sh", 1, np.uint32)[:int(counts[0])])

    # -- the paths

    def _scratch(self, name, size, dtype):
        """Per-thread buffers, grown as needed and reused between calls."""
        buf = getattr(self._local, name, None)
        if buf is None or buf.shape[0] < size:
            buf = np.empty(max(size, 1 << 12), dtype=dtype)
            setattr(self._local, name, buf)
        return buf

    def _norm_buffers(self, buf, offsets):
        # the normalised UTF-8 can outgrow the input: a Latin-1 byte becomes at most two
        # bytes, a lowered UTF-8 character at most 3 from 2 (U+023A -> U+2C65)
        size = 2 * int(buf.shape[0]) + 8
        longest = 2 * int(np.diff(offsets).max(initial=0)) + 8
        return self._scratch("norm", size, np.uint8), np.empty(offsets.shape[0], dtype=np.int64), longest

    def _sign_numba(self, buf, offsets, latin1, sig, counts, signing=True):
        from curation.minhash import cpu
        norm, norm_off, longest = self._norm_buffers(buf, offsets)
        if signing:
            family, a, b, probes = (1 if self.family == "oph" else 0), self.a, self.b, self.probes
        else:       # shingles only (shingle_hashes): no permutations at all
            family, a, b, probes = 0, _NONE32, _NONE32, self.probes
        cpu.sign_batch(buf, offsets, latin1, fold_table(), _value_table(), self.ngram, self.char_ngrams,
                       family, a, b, probes, sig, counts, norm, norm_off,
                       self._scratch("tok_acc", longest, np.uint64), self._scratch("wh", longest, np.uint64),
                       self._scratch("sh", longest, np.uint32), self._scratch("filled", self.num_perm, np.uint8))
        return norm, norm_off

    def _normalize_numba(self, buf, offsets, latin1):
        from curation.minhash import cpu
        norm, norm_off, _ = self._norm_buffers(buf, offsets)
        cpu.normalize_batch(buf, offsets, latin1, fold_table(), norm, norm_off)
        return norm[:int(norm_off[-1])], norm_off

    @staticmethod
    def _keys(norm, norm_off, texts, keys):
        view = memoryview(norm)
        bounds = norm_off.tolist()
        digest = xxhash.xxh3_128_digest
        for i, t in enumerate(texts):
            s, e = bounds[i], bounds[i + 1]
            keys.append(digest(view[s:e]) if e > s else exact_key(b"", t))

    def _sign_reference(self, xp, texts) -> SignedBatch:
        norms = [normalize(t).encode("utf-8") for t in texts]
        n = len(texts)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        counts = np.zeros(n, dtype=np.int64)
        for s, e in _chunks([len(x) for x in norms], "cpu"):
            buf, offsets = _concat(norms[s:e])
            g, c = ref.signatures(xp, xp.asarray(buf), xp.asarray(offsets), self.ngram, self.char_ngrams,
                                  self.a, self.b, self.family, self.probes)
            if xp is not np:
                g, c = xp.asnumpy(g), xp.asnumpy(c)
            sig[s:e], counts[s:e] = g, c
        return SignedBatch(sig, counts, [exact_key(nb, t) for nb, t in zip(norms, texts)])


_VTAB = None
_NONE32 = np.zeros(0, dtype=np.uint32)


def _value_table():
    global _VTAB
    if _VTAB is None:
        from curation.minhash.cpu import value_table
        _VTAB = value_table()
    return _VTAB
