"""Score histograms and quantile cuts: what `curate score --keep-top` computes over a whole
corpus, mergeable in any order (plain NumPy; the pipeline sums them in Beam).

Scores in [0, 1] are counted in BINS = 2**20 equal bins. The cut keeping the top
fraction F of N scores is the lower edge b / 2**20 of the highest bin b at which
the count of scores in bins >= b reaches ceil(F * N) (F as written: 0.1 is 1/10);
`s >= b / 2**20` is exactly `bin(s) >= b`, so the kept count is the histogram's:
at least ceil(F * N), more only by ties inside bin b.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

BINS = 1 << 20
COARSE_BINS = 20                    # the summaries' plot-ready histogram: counts per 0.05
DECILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_DENSE_AT = 1 << 16                 # a histogram with more distinct bins is held dense


def score_bins(scores) -> np.ndarray:
    """The bin of each score in [0, 1]: floor(s * 2**20), with 1.0 in the top bin.
    Scaling by a power of two is exact, so `s >= b / BINS` iff `bin(s) >= b`."""
    s = np.asarray(scores, dtype=np.float64)
    return np.minimum((s * BINS).astype(np.int64), BINS - 1)


class ScoreHistogram:
    """Counts of scores in BINS bins over [0, 1], mergeable in any order (integer sums).
    Sparse (distinct bins and their counts) while small, one dense int64 array (8 MiB)
    once it has more than 2**16 distinct bins, so many small domains stay small;
    pickled sparse either way."""

    __slots__ = ("_idx", "_cnt", "_dense")

    def __init__(self, idx: np.ndarray | None = None, cnt: np.ndarray | None = None):
        self._idx = np.zeros(0, np.int64) if idx is None else np.asarray(idx, np.int64)
        self._cnt = np.zeros(0, np.int64) if cnt is None else np.asarray(cnt, np.int64)
        self._dense: np.ndarray | None = None

    @classmethod
    def of(cls, scores) -> "ScoreHistogram":
        idx, cnt = np.unique(score_bins(scores), return_counts=True)
        return cls(idx, cnt)

    def add(self, other: "ScoreHistogram") -> "ScoreHistogram":
        """self += other (other is left as it was); returns self."""
        oi, oc = other.sparse()
        if self._dense is not None:
            self._dense[oi] += oc                  # distinct bins: plain fancy-index add
            return self
        idx = np.concatenate([self._idx, oi])
        cnt = np.concatenate([self._cnt, oc])
        if len(idx) > _DENSE_AT:
            dense = np.zeros(BINS, np.int64)
            np.add.at(dense, idx, cnt)
            self._dense, self._idx, self._cnt = dense, None, None
            return self
        u, inv = np.unique(idx, return_inverse=True)
        c = np.zeros(len(u), np.int64)
        np.add.at(c, inv, cnt)
        self._idx, self._cnt = u, c
        return self

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """(bins with a count, in increasing order; their counts)."""
        if self._dense is None:
            return self._idx, self._cnt
        idx = np.flatnonzero(self._dense)
        return idx, self._dense[idx]

    @property
    def total(self) -> int:
        return int(self.sparse()[1].sum())

    def __getstate__(self):
        return self.sparse()

    def __setstate__(self, state):
        self._idx, self._cnt = state
        self._dense = None

    def __eq__(self, other):
        if not isinstance(other, ScoreHistogram):
            return NotImplemented
        (a, b), (c, d) = self.sparse(), other.sparse()
        return np.array_equal(a, c) and np.array_equal(b, d)


def domain_histograms(scores: np.ndarray, domains: list[str]) -> dict[str, ScoreHistogram]:
    """One histogram per domain of the finite scores (NaN: not scored)."""
    ok = np.isfinite(scores)
    names = sorted(set(domains))
    code = {d: i for i, d in enumerate(names)}
    codes = np.fromiter((code[d] for d in domains), np.int64, count=len(domains))
    return {d: ScoreHistogram.of(scores[ok & (codes == i)]) for i, d in enumerate(names)
            if np.any(ok & (codes == i))}


def top_cut(hist: ScoreHistogram, fraction: float) -> dict | None:
    """The threshold keeping the top `fraction` of the histogram's scores (see the
    module docstring); None for an empty histogram."""
    idx, cnt = hist.sparse()
    n = int(cnt.sum())
    if n == 0:
        return None
    f = Fraction(repr(float(fraction)))          # 0.1 as 1/10: ceil(0.1 * 30) is 3, not 4
    target = -((-f.numerator * n) // f.denominator)
    from_top = np.cumsum(cnt[::-1])
    k = int(np.searchsorted(from_top, target))   # the first bin (from the top) reaching it
    b = int(idx[::-1][k])
    kept = int(from_top[k])
    return {"bin": b, "threshold": b / BINS, "scored": n, "target": target, "kept": kept,
            "asked": float(fraction), "achieved": kept / n}


def _edge(b: int) -> float:
    return round(b / BINS, 6)                    # 2**-20 resolution: 6 decimals say it all


def summarise(hist: ScoreHistogram) -> dict:
    """Count, mean, min, max, deciles and counts per 0.05 of the scores, from the
    histogram (deterministic; values to the bins' 2**-20 resolution). Deciles: the
    lower edge of the bin holding the ceil(q * N)-th smallest score; mean: from bin
    centres."""
    idx, cnt = hist.sparse()
    n = int(cnt.sum())
    coarse = np.zeros(COARSE_BINS, np.int64)
    if n == 0:
        return {"count": 0, "mean": None, "min": None, "max": None, "deciles": None,
                "per_0.05": coarse.tolist()}
    cum = np.cumsum(cnt)
    deciles = {}
    for q in DECILES:
        need = -((-q * n) // 100)
        deciles[f"p{q}"] = _edge(int(idx[int(np.searchsorted(cum, need))]))
    weighted = int(np.dot(idx, cnt))             # exact in int64 below 2**43 documents
    np.add.at(coarse, idx * COARSE_BINS // BINS, cnt)
    return {"count": n, "mean": round((2 * weighted + n) / (2 * n * BINS), 6),
            "min": _edge(int(idx[0])), "max": round((int(idx[-1]) + 1) / BINS, 6),
            "deciles": deciles, "per_0.05": coarse.tolist()}
