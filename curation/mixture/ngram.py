"""A count-based language model over token ids: interpolated modified Kneser-Ney (NumPy).

The fast proxy backend trains one of these per proxy run, so it is written for
speed on one core: every n-gram is one int64 key (base ``S = vocab + 1``, the extra
symbol being the beginning-of-document pad ``BOS = vocab``), counted with
`np.unique`, and looked up with `np.searchsorted`; nothing loops over tokens in
Python. A trigram proxy run on the demo corpus (train, then score ~330k valid tokens)
takes about 0.4 s at 1M training tokens and 0.6 s at 5M on one core.

The model (Chen & Goodman 1998, "interpolated modified Kneser-Ney"):

- Each document is padded on the left with ``order - 1`` BOS symbols; n-grams never
  cross documents and BOS is never predicted (the model scores the document's own
  tokens, so bits per byte are bits of the text itself).
- Highest order N, raw counts c; lower orders k < N, continuation counts
  ``N1+(. g)`` = the number of distinct symbols seen before the k-gram g (distinct
  (k+1)-grams ending in g).
- ``P_k(w | h) = (max(c(h w) - D_k(c), 0) + gamma_k(h) P_{k-1}(w | h')) / c(h .)`` with
  ``gamma_k(h) = sum_w D_k(c(h w))``: three discounts per order, D1, D2, D3+, from the
  count-of-counts n1..n4 of that order: ``Y = n1 / (n1 + 2 n2)``,
  ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3`` (0.5/1/1.5
  where a count-of-count is zero). A context never seen at order k falls back to
  ``P_{k-1}`` whole.
- Guard (measured, not in the paper): the discounts are clipped to
  ``0 < D1 <= D2 <= D3+`` and ``Dk <= k``. On repeated data (a small domain drawn for
  several epochs, so few n-grams are seen once or twice) the formulas give D2 or D3+
  <= 0; a context whose continuations all have counts >= 3 would then pass no mass to
  the lower order and an unseen token would get probability 0 (an infinite loss at a
  5M-token budget on the demo corpus). ``D1 = n1 / (n1 + 2 n2) > 0`` whenever n1 > 0.
- Order 1 interpolates with the uniform distribution over the vocabulary:
  ``P_1(w) = (max(N1+(. w) - D(.), 0) + gamma_1 / V) / N1+(. .)``, so every token,
  seen or not, has a positive probability and the loss is always finite.

Each ``P_k(. | h)`` sums to 1 over the vocabulary (tests check it). Everything is
float64 and deterministic: the same training tokens give bit-identical log
probabilities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LOG2 = math.log(2.0)


def _discounts(counts: np.ndarray) -> np.ndarray:
    """``[0, D1, D2, D3+]`` from the counts of one order (modified Kneser-Ney)."""
    n = np.bincount(np.minimum(counts, 5), minlength=6).astype(np.float64)
    n1, n2, n3, n4 = n[1], n[2], n[3], n[4]
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
    d1 = 1 - 2 * y * n2 / n1 if n1 > 0 else 0.5
    d2 = 2 - 3 * y * n3 / n2 if n2 > 0 else 1.0
    d3 = 3 - 4 * y * n4 / n3 if n3 > 0 else 1.5
    d1 = min(max(d1, 0.0), 1.0)
    d2 = min(max(d2, d1), 2.0)
    d3 = min(max(d3, d2), 3.0)
    return np.array([0.0, d1, d2, d3])


def ngram_keys(tokens: np.ndarray, offsets: np.ndarray, order: int, base: int) -> np.ndarray:
    """The key of the `order`-gram ending at every token: ``sum_j sym_j * base**(order-1-j)``
    over the token and the ``order - 1`` before it in its document (BOS = base - 1 before
    the document's start)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.diff(np.asarray(offsets, dtype=np.int64))
    pad = order - 1
    n = len(tokens)
    if n == 0:
        return np.zeros(0, np.int64)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    pos = np.arange(n, dtype=np.int64) + pad * (doc + 1)
    padded = np.full(n + pad * len(lengths), base - 1, dtype=np.int64)
    padded[pos] = tokens
    key = np.zeros(n, np.int64)
    for j in range(order):
        key = key * base + padded[pos - pad + j]
    return key


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values[keys == q]`` for each query (0 where absent) and the found mask."""
    if len(keys) == 0:
        return np.zeros(len(query), values.dtype), np.zeros(len(query), bool)
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[i] == query
    return np.where(found, values[i], 0), found


@dataclass(frozen=True)
class _Level:
    """One order k >= 2: its k-grams (sorted keys) with their counts, and per context
    (the (k-1)-gram before the last symbol) the count total and the discount mass."""
    order: int
    grams: np.ndarray
    counts: np.ndarray
    contexts: np.ndarray
    totals: np.ndarray
    gammas: np.ndarray
    discounts: np.ndarray


class KneserNeyLM:
    """An interpolated modified Kneser-Ney model of `order` over ids ``0 .. vocab_size - 1``."""

    def __init__(self, vocab_size: int, order: int, levels: list[_Level], unigram: np.ndarray,
                 n_train_tokens: int):
        self.vocab_size = vocab_size
        self.order = order
        self.base = vocab_size + 1
        self.levels = levels            # orders 2 .. N, lowest first
        self.unigram = unigram          # P_1 over the vocabulary (float64)
        self.n_train_tokens = n_train_tokens

    @staticmethod
    def check_order(vocab_size: int, order: int) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if order * math.log2(vocab_size + 1) >= 63:
            raise ValueError(f"order {order} over a vocabulary of {vocab_size} does not fit "
                             f"int64 keys ((vocab+1)**order must be below 2**63)")

    @classmethod
    def fit(cls, tokens: np.ndarray, offsets: np.ndarray, vocab_size: int, order: int = 3) -> "KneserNeyLM":
        """Count the documents ``tokens[offsets[i]:offsets[i+1]]`` and build the model."""
        cls.check_order(vocab_size, order)
        tokens = np.asarray(tokens)
        if len(tokens) == 0:
            raise ValueError("cannot fit a language model on no tokens")
        if tokens.min() < 0 or tokens.max() >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        base = vocab_size + 1
        grams, counts = np.unique(ngram_keys(tokens, offsets, order, base), return_counts=True)
        levels: list[_Level] = []
        for k in range(order, 1, -1):
            disc = _discounts(counts)
            ctx_of = grams // base                       # sorted, as grams are
            contexts, start = np.unique(ctx_of, return_index=True)
            totals = np.add.reduceat(counts, start).astype(np.float64)
            gammas = np.add.reduceat(disc[np.minimum(counts, 3)], start)
            levels.append(_Level(k, grams, counts, contexts, totals, gammas, disc))
            # continuation counts of the (k-1)-grams: distinct symbols before each
            grams, counts = np.unique(grams % base ** (k - 1), return_counts=True)
        disc = _discounts(counts)
        cont = np.zeros(vocab_size, np.int64)
        cont[grams] = counts                             # order 1: grams are token ids
        total = float(counts.sum())
        gamma = float(disc[np.minimum(counts, 3)].sum())
        unigram = (np.maximum(cont - disc[np.minimum(cont, 3)], 0.0) + gamma / vocab_size) / total
        return cls(vocab_size, order, levels[::-1], unigram, int(len(tokens)))

    def _prob(self, keys: np.ndarray) -> np.ndarray:
        """P(last symbol | the ones before) for order-N keys."""
        base = self.base
        p = self.unigram[keys % base]
        for lv in self.levels:
            g = keys % base ** lv.order
            c, _ = _lookup(lv.grams, lv.counts, g)
            ctx = g // base
            tot, seen = _lookup(lv.contexts, lv.totals, ctx)
            gam, _ = _lookup(lv.contexts, lv.gammas, ctx)
            num = np.maximum(c - lv.discounts[np.minimum(c, 3)], 0.0) + gam * p
            p = np.where(seen, num / np.where(seen, tot, 1.0), p)
        return p

    def logprobs(self, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Natural-log probability of every token of the documents given its history."""
        tokens = np.asarray(tokens)
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return np.log(self._prob(ngram_keys(tokens, offsets, self.order, self.base)))

    def logprobs_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """`logprobs` for keys made beforehand by `ngram_keys` (same order and vocabulary)."""
        return np.log(self._prob(keys))

    def next_distribution(self, history) -> np.ndarray:
        """P(w | history) for every w in the vocabulary (history: the tokens before,
        the document's start when shorter than order - 1)."""
        pad = self.order - 1
        h = [self.vocab_size] * pad + [int(t) for t in history]
        ctx = 0
        for t in (h[len(h) - pad:] if pad else []):
            ctx = ctx * self.base + t
        keys = ctx * self.base + np.arange(self.vocab_size, dtype=np.int64)
        return self._prob(keys)


def loss_and_bpb(logprobs: np.ndarray, n_bytes: int) -> tuple[float, float]:
    """(nats per token, bits per byte) of natural-log token probabilities over text of
    `n_bytes` UTF-8 bytes. Bits per byte = total bits / bytes: it depends on the
    probability the model gives the whole text, not on how the text was cut into
    tokens. The sums are exact (math.fsum), so they do not depend on summation order."""
    n = len(logprobs)
    if n == 0 or n_bytes <= 0:
        raise ValueError("loss_and_bpb needs at least one token and one byte")
    nats = -math.fsum(np.asarray(logprobs, dtype=np.float64).tolist())
    return nats / n, nats / _LOG2 / n_bytes
