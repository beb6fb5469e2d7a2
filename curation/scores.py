"""Score histograms and quantile cuts: what `curate score --keep-top` computes over a whole
corpus, mergeable in any order (plain NumPy; the pipeline sums them in Beam).

Scores in [0, 1] are counted in BINS = 2**20 equal bins. The cut keeping the top
fraction F of N scores starts at the highest bin b at which the count of scores in
bins >= b reaches target = ceil(F * N) (F as written: 0.1 is 1/10); its threshold
b / 2**20 is exact: `s >= b / 2**20` iff `bin(s) >= b`.

Ties. Classifier probabilities saturate (many confident documents score exactly
1.0, or the same float32 value), so bin b can hold far more documents than the
`need = target - (documents in bins > b)` the target still asks for. Then a
tie-break splits bin b by a key of each document that does not depend on the
corpus's files or workers: `tie_key(id)` = xxh3_64 of the id's UTF-8 bytes (seed
0), counted in a second histogram of BINS bins over its top 20 bits, `key_bin`,
for the documents of bin b only. The tie-break cut t is the highest key bin at
which the documents of bin b with key_bin >= t reach `need`, and the rule is

    keep  iff  bin(s) > b  or  (bin(s) == b and key_bin(id) >= t)

(`keep_mask`). The kept count is target exactly, plus the documents of bin b that
share key bin t beyond the need: about count_in(b) / 2**20 expected (under 0.1 for
10^5 tied documents). The key depends on the id alone, so the kept set is the same
whatever the files, their order or the workers; documents with the same id and the
same score bin have the same key and are kept or removed together (ids made from
file name and line for records without one do change when files are split). Without a tie-break (need == count_in(b))
the rule is `bin(s) >= b`, as before.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import xxhash

BINS = 1 << 20
KEY_SHIFT = 64 - 20                 # key_bin = the top 20 bits of the 64-bit tie key
COARSE_BINS = 20                    # the summaries' plot-ready histogram: counts per 0.05
DECILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_DENSE_AT = 1 << 16                 # a histogram with more distinct bins is held dense


def tie_key(doc_id: str) -> int:
    """The tie-break key of a document: xxh3_64 (seed 0) of its id's UTF-8 bytes."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8", "surrogatepass"))


def tie_keys(ids) -> np.ndarray:
    """`tie_key` of each id, as uint64."""
    ids = list(ids)
    return np.fromiter((tie_key(i) for i in ids), np.uint64, count=len(ids))


def key_bins(keys) -> np.ndarray:
    """The tie-break bin of each key: its top 20 bits, in [0, BINS)."""
    return (np.asarray(keys, dtype=np.uint64) >> np.uint64(KEY_SHIFT)).astype(np.int64)


def score_bins(scores) -> np.ndarray:
    """The bin of each score in [0, 1]: floor(s * 2**20), with 1.0 in the top bin.
    Scaling by a power of two is exact, so `s >= b / BINS` iff `bin(s) >= b`."""
    s = np.asarray(scores, dtype=np.float64)
    return np.minimum((s * BINS).astype(np.int64), BINS - 1)


class ScoreHistogram:
    """Counts in BINS bins, mergeable in any order (integer sums): of scores over [0, 1]
    (`of`), or of the tie-break key bins of a cut's boundary bin (`of_bins(key_bins(...))`).
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
        return cls.of_bins(score_bins(scores))

    @classmethod
    def of_bins(cls, bins) -> "ScoreHistogram":
        """The histogram of bin numbers in [0, BINS)."""
        idx, cnt = np.unique(np.asarray(bins, dtype=np.int64), return_counts=True)
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


def _from_top(hist: ScoreHistogram, target: int) -> tuple[int, int, int]:
    """(b, count in bins > b, count in bin b) for the highest bin b at which the count
    in bins >= b reaches `target` (1 <= target <= hist.total)."""
    idx, cnt = hist.sparse()
    from_top = np.cumsum(cnt[::-1])
    k = int(np.searchsorted(from_top, target))   # the first bin (from the top) reaching it
    in_bin = int(cnt[::-1][k])
    return int(idx[::-1][k]), int(from_top[k]) - in_bin, in_bin


def top_cut(hist: ScoreHistogram, fraction: float) -> dict | None:
    """The first-level cut keeping the top `fraction` of the histogram's scores (see
    the module docstring); None for an empty histogram. `kept` counts all of the
    boundary bin; `needs_tie_break(cut)` says whether `tie_break_cut` should split it."""
    n = hist.total
    if n == 0:
        return None
    f = Fraction(repr(float(fraction)))          # 0.1 as 1/10: ceil(0.1 * 30) is 3, not 4
    target = -((-f.numerator * n) // f.denominator)
    b, above, in_bin = _from_top(hist, target)
    kept = above + in_bin
    return {"bin": b, "threshold": b / BINS, "scored": n, "target": target,
            "above_bin": above, "in_bin": in_bin, "need": target - above, "tie_break": None,
            "kept": kept, "asked": float(fraction), "achieved": kept / n}


def needs_tie_break(cut: dict | None) -> bool:
    """Whether the cut's boundary bin holds more documents than the target needs."""
    return cut is not None and cut["need"] < cut["in_bin"]


def tie_histograms(scores, keys, groups, boundary: dict) -> dict:
    """{group: ScoreHistogram of the key bins of the documents whose score falls in
    their group's boundary bin}: `groups[i]` is document i's group (a domain, say),
    `boundary` maps a group to its boundary bin (groups not in it: no tie-break).
    NaN scores (not scored) are left out; groups without such documents too."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups)
    ok = np.isfinite(s)
    bins = np.full(len(s), -1, np.int64)
    bins[ok] = score_bins(s[ok])
    kb = key_bins(keys)
    out = {}
    for name in sorted(boundary):
        at = (g == name) & (bins == boundary[name])
        if at.any():
            out[name] = ScoreHistogram.of_bins(kb[at])
    return out


def tie_break_cut(cut: dict, ties: ScoreHistogram) -> dict:
    """The cut with its tie-break: `ties` is the histogram of the key bins of the
    documents in the cut's boundary bin (their sum over the whole corpus or domain).
    `tie_break.key_bin` is the highest key bin t at which those with key_bin >= t
    reach `need`; `kept` becomes the documents above the bin plus those, `remnant`
    is kept - target (documents sharing key bin t beyond the need). A cut that needs
    no tie-break is returned as it is."""
    if not needs_tie_break(cut):
        return cut
    scanned = ties.total
    if scanned < cut["need"]:
        raise RuntimeError(f"the tie-break scan found {scanned} documents in bin {cut['bin']}, "
                           f"fewer than the {cut['need']} needed ({cut['in_bin']} counted in the "
                           f"first pass): the scores changed during the run")
    t, above, at_t = _from_top(ties, cut["need"])
    kept_in_bin = above + at_t
    kept = cut["above_bin"] + kept_in_bin
    return {**cut, "kept": kept, "achieved": kept / cut["scored"],
            "tie_break": {"key_bin": t, "key_bits": 64 - KEY_SHIFT, "scanned": scanned,
                          "kept_in_bin": kept_in_bin, "remnant": kept - cut["target"]}}


def keep_mask(scores, keys, cut: dict) -> np.ndarray:
    """Which documents a --keep-top cut keeps: bin(s) > b, or bin(s) == b and (with
    a tie-break) key_bin(key) >= t. NaN scores are never kept."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    bins = np.full(len(s), -1, np.int64)
    bins[ok] = score_bins(s[ok])
    b, tb = cut["bin"], cut.get("tie_break")
    if tb is None:
        return bins >= b
    return (bins > b) | ((bins == b) & (key_bins(keys) >= tb["key_bin"]))


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


# ---------------------------------------------------------------- the score stage's summaries

def summary_with_cut(hist: "ScoreHistogram", keep_top: float | None) -> dict:
    """`summarise`, with the keep-top cut when `keep_top` is set."""
    out = summarise(hist)
    if keep_top is not None:
        out["cut"] = top_cut(hist, keep_top)
    return out


def domain_summary(kv, keep_top):
    """(domain, histogram) -> (domain, its summary)."""
    domain, hist = kv
    return domain, summary_with_cut(hist, keep_top)


def corpus_summary(summary: dict, ties: dict, by: str) -> dict:
    """The corpus summary with its cut's tie-break (ties: {domain: key-bin histogram}
    of the documents in the corpus cut's boundary bin)."""
    if by != "corpus" or not needs_tie_break(summary.get("cut")):
        return summary
    total = ScoreHistogram()
    for name in sorted(ties):
        total.add(ties[name])
    return {**summary, "cut": tie_break_cut(summary["cut"], total)}


def domain_summaries(domains: dict, ties: dict, by: str) -> dict:
    """Each domain's summary with its cut's tie-break."""
    if by != "domain":
        return domains
    return {d: ({**s, "cut": tie_break_cut(s["cut"], ties.get(d, ScoreHistogram()))}
                if needs_tie_break(s.get("cut")) else s)
            for d, s in domains.items()}
