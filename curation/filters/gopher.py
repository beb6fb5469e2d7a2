"""Gopher's quality and repetition rules (MassiveText).

Source: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", appendix A.1.1 (quality filters) and table A1 (repetition
thresholds), https://arxiv.org/abs/2112.11446. Where the paper leaves a detail open
(what a "word" is, which n-gram counts as the most frequent on a tie) we follow
datatrove's implementation, the reference most published corpora (FineWeb) used;
docs/benchmarks.md measures the agreement.
"""
from __future__ import annotations

import re
import numpy as np
from numba import njit
from pydantic import Field, field_validator, model_validator

from curation.filters.base import Filter, FilterParamError, Params, Verdict, check_order
from curation.filters.tokens import T_ALPHA, T_WORD, TOKENS, token_hash

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityParams(Params):
    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=0)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: tuple[str, ...] = GOPHER_STOP_WORDS
    bullets: tuple[str, ...] = ("•", "-")

    @model_validator(mode="after")
    def _order(self):
        check_order(self, ("min_doc_words", "max_doc_words"), ("min_avg_word_length", "max_avg_word_length"))
        return self


@njit(cache=True, nogil=True)
def _quality_counts(length, flags, hashes, stop):
    """(words, their characters, tokens with a letter, distinct stop words present)."""
    n_words = 0
    chars = 0
    n_alpha = 0
    seen = np.zeros(stop.shape[0], np.bool_)
    for i in range(flags.shape[0]):
        f = flags[i]
        if f & T_WORD:
            n_words += 1
            chars += length[i]
        if f & T_ALPHA:
            n_alpha += 1
        h = hashes[i]
        for j in range(stop.shape[0]):
            if stop[j] == h:
                seen[j] = True
    return n_words, chars, n_alpha, int(seen.sum())


class GopherQuality(Filter):
    """Gopher's quality rules. Defaults are the paper's:

    - 50 to 100,000 words (words with at least one letter, digit or other
      non-punctuation, non-symbol character);
    - mean word length between 3 and 10 characters;
    - at most 0.1 "#" per word and 0.1 ellipses ("..." or "…") per word, where the
      per-word denominator counts every token, punctuation included;
    - at most 90% of lines starting with a bullet ("•" or "-"), at most 30% ending
      with an ellipsis;
    - at least 80% of tokens containing an alphabetic character;
    - at least 2 of the stop words the, be, to, of, and, that, have, with (as
      written: "The" does not count, so all-capitals pages fail this rule).
    Any threshold can be set to None to switch its rule off.
    """

    name = "gopher_quality"
    rules = ("word_count", "mean_word_length", "hash_ratio", "ellipsis_ratio",
             "bullet_lines", "ellipsis_lines", "alpha_words", "stop_words")
    Params = GopherQualityParams

    def _setup(self) -> None:
        try:
            stop = {token_hash(w) for w in self.stop_words}
        except ValueError as e:
            raise FilterParamError(f"{self.name}.stop_words: each must be one word token: {e}") from None
        self._stop = np.array(sorted(stop), dtype=np.uint64)
        self._bullets = tuple(self.bullets)

    def check(self, text: str) -> Verdict:
        tk = TOKENS.tokens(text)
        n_tokens = len(tk)
        n_words, word_chars, n_alpha, n_stop = _quality_counts(tk.length, tk.flags, tk.hash,
                                                               self._stop)
        sig: dict = {"words": n_words}
        if self.min_doc_words is not None and n_words < self.min_doc_words:
            return self.remove("word_count", sig)
        if self.max_doc_words is not None and n_words > self.max_doc_words:
            return self.remove("word_count", sig)
        mean_len = word_chars / n_words if n_words else 0.0
        sig["mean_word_length"] = mean_len
        if self.min_avg_word_length is not None and mean_len < self.min_avg_word_length:
            return self.remove("mean_word_length", sig)
        if self.max_avg_word_length is not None and mean_len > self.max_avg_word_length:
            return self.remove("mean_word_length", sig)
        denom = n_tokens or 1
        sig["hash_ratio"] = hashes = text.count("#") / denom
        if self.max_symbol_word_ratio is not None and hashes > self.max_symbol_word_ratio:
            return self.remove("hash_ratio", sig)
        sig["ellipsis_ratio"] = ell = (text.count("...") + text.count("…")) / denom
        if self.max_symbol_word_ratio is not None and ell > self.max_symbol_word_ratio:
            return self.remove("ellipsis_ratio", sig)
        lines = text.splitlines() or [""]
        if self.max_bullet_lines_ratio is not None:
            bullets = self._bullets
            sig["bullet_lines_ratio"] = r = sum(
                1 for ln in lines if ln.lstrip().startswith(bullets)) / len(lines)
            if r > self.max_bullet_lines_ratio:
                return self.remove("bullet_lines", sig)
        if self.max_ellipsis_lines_ratio is not None:
            sig["ellipsis_lines_ratio"] = r = sum(
                1 for ln in lines if ln.rstrip().endswith(("...", "…"))) / len(lines)
            if r > self.max_ellipsis_lines_ratio:
                return self.remove("ellipsis_lines", sig)
        sig["alpha_words_ratio"] = alpha = n_alpha / denom if n_tokens else 0.0
        if self.min_alpha_words_ratio is not None and alpha < self.min_alpha_words_ratio:
            return self.remove("alpha_words", sig)
        if self.min_stop_words is not None:
            sig["stop_words"] = found = n_stop
            if found < self.min_stop_words:
                return self.remove("stop_words", sig)
        return Verdict(True, None, sig)


def _thresholds(pairs) -> tuple[tuple[int, float], ...]:
    return tuple((int(n), float(f)) for n, f in pairs)


class GopherRepetitionParams(Params):
    dup_line_frac: float | None = Field(0.30, ge=0)
    dup_para_frac: float | None = Field(0.30, ge=0)
    dup_line_char_frac: float | None = Field(0.20, ge=0)
    dup_para_char_frac: float | None = Field(0.20, ge=0)
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _sizes(cls, v):
        for n, frac in v:
            if n < 1 or not 0 <= frac <= 1:
                raise ValueError(f"each entry is (n >= 1, fraction in [0, 1]); got ({n}, {frac})")
        if len({n for n, _ in v}) != len(v):
            raise ValueError(f"each n-gram size at most once; got {[n for n, _ in v]}")
        return v


_PARAGRAPH = re.compile(r"\n{2,}")


def _line_runs(text: str) -> list[str]:
    """re.split(r"\n+", text) without the regex: the pieces between runs of newlines."""
    parts = text.split("\n")
    if len(parts) < 3:
        return parts
    return [parts[0], *filter(None, parts[1:-1]), parts[-1]]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, their characters): every occurrence after the first."""
    seen: set[str] = set()
    n = chars = 0
    for it in items:
        if it in seen:
            n += 1
            chars += len(it)
        else:
            seen.add(it)
    return n, chars


@njit(cache=True, nogil=True)
def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of each n-gram of token hashes (collisions ~2^-64 per pair)."""
    m = ids.shape[0] - n + 1
    out = np.empty(max(m, 0), dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for i in range(m):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(n):
            h = (h ^ ids[i + j]) * mult
        out[i] = h
    return out


@njit(cache=True, nogil=True)
def _most_frequent(keys: np.ndarray) -> tuple[int, int]:
    """(count of the most frequent key, first position of it); ties go to the key
    seen first. One pass over an open-addressing table."""
    m = keys.shape[0]
    cap = 16
    while cap < 2 * m + 2:
        cap *= 2
    table = np.zeros(cap, dtype=np.uint64)
    count = np.zeros(cap, dtype=np.int64)     # 0: empty slot
    first = np.zeros(cap, dtype=np.int64)
    mask = np.uint64(cap - 1)
    best, best_pos = 0, 0
    for i in range(m):
        k = keys[i]
        slot = (k ^ (k >> np.uint64(29))) & mask
        while count[slot] and table[slot] != k:
            slot = (slot + np.uint64(1)) & mask
        if count[slot] == 0:
            table[slot] = k
            first[slot] = i
        c = count[slot] + 1
        count[slot] = c
        if c > best or (c == best and first[slot] < best_pos):
            best, best_pos = c, first[slot]
    return best, best_pos


@njit(cache=True, nogil=True)
def _dup_scan(keys: np.ndarray, chars: np.ndarray, n: int) -> int:
    """Characters in repeated n-grams, scanning left to right and jumping past each repeat
    (so overlapping repeats are not counted twice). Open addressing over uint64 keys."""
    m = keys.shape[0]
    cap = 16
    while cap < 2 * m + 2:
        cap *= 2
    table = np.zeros(cap, dtype=np.uint64)
    used = np.zeros(cap, dtype=np.bool_)
    mask = np.uint64(cap - 1)
    total = 0
    i = 0
    while i < m:
        k = keys[i]
        slot = (k ^ (k >> np.uint64(29))) & mask
        found = False
        while used[slot]:
            if table[slot] == k:
                found = True
                break
            slot = (slot + np.uint64(1)) & mask
        if found:
            total += chars[i]
            i += n
        else:
            used[slot] = True
            table[slot] = k
            i += 1
    return total


class GopherRepetition(Filter):
    """Gopher's repetition rules (table A1 of the paper), as fractions of the text:

    - duplicate lines 0.30 and duplicate paragraphs 0.30 (by count), their characters
      0.20 and 0.20 (by share of all characters);
    - the most frequent 2-, 3-, 4-gram's characters (times its count): 0.20, 0.18, 0.16;
    - characters in duplicated 5- to 10-grams: 0.15, 0.14, 0.13, 0.12, 0.11, 0.10.
    Lines split on runs of newlines, paragraphs on two or more newlines. N-grams of
    words count their characters with single spaces between words for the top n-gram
    and without spaces for duplicated n-grams (as datatrove does).
    """

    name = "gopher_repetition"
    rules = ("empty", "duplicate_paragraphs", "duplicate_paragraph_chars", "duplicate_lines",
             "duplicate_line_chars", "top_2_gram", "top_3_gram", "top_4_gram",
             "duplicate_5_gram", "duplicate_6_gram", "duplicate_7_gram", "duplicate_8_gram",
             "duplicate_9_gram", "duplicate_10_gram")
    Params = GopherRepetitionParams

    def _setup(self) -> None:
        allowed = {r for r in self.rules}
        extra = [f"top_{n}_gram" for n, _ in self.top_n_grams if f"top_{n}_gram" not in allowed]
        extra += [f"duplicate_{n}_gram" for n, _ in self.dup_n_grams
                  if f"duplicate_{n}_gram" not in allowed]
        if extra:   # custom n-gram sizes get their own rule names
            self.rules = self.rules + tuple(extra)

    def check(self, text: str) -> Verdict:
        sig: dict = {}
        if not text.strip():
            return self.remove("empty", sig)
        size = len(text)
        paragraphs = _PARAGRAPH.split(text.strip())
        n, chars = _duplicates(paragraphs)
        sig["dup_para_frac"] = f = n / len(paragraphs)
        if self.dup_para_frac is not None and f > self.dup_para_frac:
            return self.remove("duplicate_paragraphs", sig)
        sig["dup_para_char_frac"] = f = chars / size
        if self.dup_para_char_frac is not None and f > self.dup_para_char_frac:
            return self.remove("duplicate_paragraph_chars", sig)
        lines = _line_runs(text)
        n, chars = _duplicates(lines)
        sig["dup_line_frac"] = f = n / len(lines)
        if self.dup_line_frac is not None and f > self.dup_line_frac:
            return self.remove("duplicate_lines", sig)
        sig["dup_line_char_frac"] = f = chars / size
        if self.dup_line_char_frac is not None and f > self.dup_line_char_frac:
            return self.remove("duplicate_line_chars", sig)
        if not self.top_n_grams and not self.dup_n_grams:
            return Verdict(True, None, sig)
        tk = TOKENS.tokens(text)
        n_tokens = len(tk)
        ids = tk.hash
        cum = np.concatenate(([0], np.cumsum(tk.length)))
        for n, frac in self.top_n_grams:
            if n_tokens < n:
                continue
            keys = _ngram_keys(ids, n)
            top, pos = _most_frequent(keys)
            span = int(cum[pos + n] - cum[pos]) + n - 1
            sig[f"top_{n}_gram_frac"] = f = span * int(top) / size
            if f > frac:
                return self.remove(f"top_{n}_gram", sig)
        for n, frac in self.dup_n_grams:
            if n_tokens < n:
                sig[f"dup_{n}_gram_frac"] = 0.0
                continue
            keys = _ngram_keys(ids, n)
            chars_at = cum[n:] - cum[:-n]
            sig[f"dup_{n}_gram_frac"] = f = _dup_scan(keys, chars_at, n) / size
            if f > frac:
                return self.remove(f"duplicate_{n}_gram", sig)
        return Verdict(True, None, sig)
