"""Locality-sensitive hashing over MinHash signatures: band/row choice, band keys,
candidate edges and their verification."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation.minhash.reference import fmix64

_GRID = 4001  # Simpson points per integral: plenty for the smooth S-curve


def _simpson(y: np.ndarray, x: np.ndarray) -> float:
    h = (x[-1] - x[0]) / (len(x) - 1)
    return float(h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


def false_positive_area(threshold: float, b: int, r: int) -> float:
    """Probability mass of becoming a candidate below the threshold."""
    s = np.linspace(0.0, threshold, _GRID)
    return _simpson(1 - (1 - s**r) ** b, s)


def false_negative_area(threshold: float, b: int, r: int) -> float:
    """Probability mass of being missed at or above the threshold."""
    s = np.linspace(threshold, 1.0, _GRID)
    return _simpson((1 - s**r) ** b, s)


def optimal_params(
    threshold: float,
    num_perm: int,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted sum of
    false-positive and false-negative areas under the LSH S-curve (the criterion
    datasketch's MinHashLSH uses, so both pick the same split)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    if abs(false_positive_weight + false_negative_weight - 1.0) > 1e-9:
        raise ValueError("false_positive_weight + false_negative_weight must be 1")
    best, best_err = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = false_positive_weight * false_positive_area(threshold, b, r) + \
                false_negative_weight * false_negative_area(threshold, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def estimate_stderr(threshold: float, num_perm: int) -> float:
    """Standard error of the MinHash Jaccard estimate at `threshold`."""
    return math.sqrt(threshold * (1.0 - threshold) / num_perm)


@dataclass(frozen=True)
class LSHParams:
    """`threshold`: the Jaccard at which documents are duplicates.
    `verify_threshold`: what a candidate pair's *estimated* Jaccard must reach.

    The estimate from `num_perm` positions is noisy (standard error 0.035 at 0.8 and
    128 permutations), so a pair truly at 0.82 is estimated below 0.8 a third of the
    time. Verification therefore accepts estimates down to `tolerance` standard
    errors below the threshold (default 2: a one-sided test that the pair is not
    significantly below it), and bands and rows are chosen for that lower candidate
    threshold with datasketch's criterion (equal false-positive and false-negative
    weights). With exact verification the tolerance is 0."""

    threshold: float
    num_perm: int
    bands: int
    rows: int
    verify_threshold: float

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int, bands: int | None = None,
                      rows: int | None = None, tolerance: float = 2.0) -> "LSHParams":
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        verify = max(1e-6, threshold - tolerance * estimate_stderr(threshold, num_perm))
        if bands is None:
            bands, rows = optimal_params(round(verify, 4), num_perm)
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"bands*rows = {bands}*{rows} must be >= 1 and <= num_perm={num_perm}")
        return cls(threshold, num_perm, bands, rows, verify)


_GOLD = np.uint64(0x9E3779B97F4A7C15)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: row block j of each signature hashed together with j.

    Two documents share key [:, j] when their rows j*rows..(j+1)*rows-1 agree (up to
    a 2^-64 collision, which verification then removes)."""
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.shape[1] < bands * rows:
        raise ValueError(f"signatures of shape {sig.shape} cannot give {bands} bands of {rows} rows")
    sig = sig.astype(np.uint64, copy=False)
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            h = np.full(n, (j + 1) * 0x9E3779B1, dtype=np.uint64)
            for c in range(j * rows, (j + 1) * rows):
                h = fmix64(np, (h * _GOLD) ^ sig[:, c])
            keys[:, j] = h
    return keys


def bucket_min_edges(keys: np.ndarray, order_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate edges of every bucket at once: members with equal `keys` form a
    bucket, and each is linked to the bucket's member with the smallest
    `order_keys` (n - 1 edges for n members, never all pairs). Returns index arrays
    (member, bucket minimum) into the inputs."""
    keys = np.asarray(keys)
    if len(keys) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((np.asarray(order_keys), keys))
    ks = keys[order]
    first = np.r_[True, ks[1:] != ks[:-1]]
    head = np.maximum.accumulate(np.where(first, np.arange(len(ks)), 0))
    rest = np.flatnonzero(~first)
    return order[rest], order[head[rest]]


def exact_jaccard(shingles_a: np.ndarray, shingles_b: np.ndarray) -> float:
    """Jaccard of two sorted unique shingle-hash arrays."""
    if len(shingles_a) == 0 and len(shingles_b) == 0:
        return 1.0
    inter = np.intersect1d(shingles_a, shingles_b, assume_unique=True).size
    return inter / (len(shingles_a) + len(shingles_b) - inter)
