"""The compiled path to the words of :func:`curation.filters.text.words`.

The filters need counts over tokens (how many, how long, how many with a letter,
n-gram repeats), not token strings. Building millions of Python strings is what
made word-based rules slow (spaCy in datatrove, or a pure-Python tokenizer), so:

1. A Numba pass splits the text (as UTF-32 code points) on whitespace exactly as
   ``str.split()`` does and hashes each chunk twice (two independent 64-bit hashes).
2. Chunks of letters or digits, alone or followed by one punctuation mark ("word,"),
   are split right there (unless they are special cases such as "dont" or "Mr.").
   Any other chunk's split into tokens (only their lengths: tokens always concatenate
   back to their chunk) is looked up in a per-thread table keyed by both hashes.
   A miss is tokenised by the Python reference, ``text.chunk_words``, and stored.
   Natural text repeats its chunks ("the", "said,", "it's"), so after a few
   documents nearly every chunk hits.
3. A second Numba pass walks the tokens and yields, per token, its length, a 64-bit
   hash of its characters (for n-grams and stop words), and flags from a per-code
   point table: has a letter, is a word (not only punctuation/symbols/controls),
   is all punctuation, is a sentence terminator.

So the tokens are those of ``words(text)`` (tests compare them on real corpora),
unless two distinct chunks collide on both 64-bit hashes, whose chance over ten
million distinct chunks is about 10^-25. All passes are linear in the text.
"""
from __future__ import annotations

import threading
import unicodedata
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from curation.filters.text import _MERGE, SPECIALS, TERMINAL_PUNCTUATION, chunk_words

# per code point
C_SPACE, C_SYMBOL, C_ALPHA, C_PUNCT, C_TERM, C_LOWER, C_DIGIT = 1, 2, 4, 8, 16, 32, 64
# per token
T_WORD, T_ALPHA, T_PUNCT, T_TERM = 1, 2, 4, 8

_CACHE_CHUNK = 48          # longer chunks rarely repeat: tokenised, not stored
_TABLE_BITS = 19           # 512k slots (12 MB) per thread, half of them used at most
_RESET_POOL = 1 << 23      # token lengths kept before the cache starts over


@lru_cache(maxsize=1)
def char_classes() -> np.ndarray:
    """uint8 flags for every code point (C_* bits).

    Planes 4-13 are unassigned and 15-16 private use (category C: symbols for
    Gopher, nothing else), so only the rest is looked up one by one.
    """
    table = np.full(0x110000, C_SYMBOL, dtype=np.uint8)
    for lo, hi in ((0, 0x40000), (0xE0000, 0xE1000)):
        chars = [chr(c) for c in range(lo, hi)]
        cat = np.frombuffer("".join(unicodedata.category(ch)[0] for ch in chars).encode("ascii"),
                            np.uint8)
        flags = np.where(np.isin(cat, np.frombuffer(b"PSC", np.uint8)), C_SYMBOL, 0).astype(np.uint8)
        flags |= np.where(cat == ord("P"), C_PUNCT, 0).astype(np.uint8)
        flags |= np.fromiter(map(str.isalpha, chars), bool, len(chars)).astype(np.uint8) * C_ALPHA
        flags |= np.fromiter(map(str.islower, chars), bool, len(chars)).astype(np.uint8) * C_LOWER
        flags |= np.fromiter(map(str.isdigit, chars), bool, len(chars)).astype(np.uint8) * C_DIGIT
        table[lo:hi] = flags
    for c in range(0x110000):
        if c <= 0x3000 and chr(c).isspace():   # no space character lies above U+3000
            table[c] |= C_SPACE
    for ch in TERMINAL_PUNCTUATION:
        table[ord(ch)] |= C_TERM
    return table


@njit(cache=True, nogil=True, inline="always")
def _fmix(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


# Chunks whose split the compiled pass knows without the Python rules: all letters
# or all digits (one token), letters then one of these (two tokens, e.g. "word,";
# "." only after a lower-case letter), unless the chunk or its letters are a special
# case (a clitic, an abbreviation, an emoticon): those go to the rules.
_ONE, _TWO = -2, -3
_SUFFIX_ONE = np.array(sorted(map(ord, ',;:!?)"')), np.uint32)


@njit(cache=True, nogil=True)
def _is_special(special, h1, h2):
    mask = np.uint64(special.shape[0] - 1)
    slot = h1 & mask
    while special[slot, 0] != 0 or special[slot, 1] != 0:
        if special[slot, 0] == h1 and special[slot, 1] == h2:
            return True
        slot = (slot + np.uint64(1)) & mask
    return False


@njit(cache=True, nogil=True)
def _chunks(codes, cls, keys1, keys2, slot_ent, special, suffix_one):
    """Whitespace-separated chunks: starts, ends, both hashes, and per chunk its cached
    entry, _ONE or _TWO for the simple shapes, or -1 (a miss for the Python rules)."""
    n = codes.shape[0]
    count = 0
    i = 0
    while i < n:
        while i < n and cls[codes[i]] & 1:
            i += 1
        if i < n:
            count += 1
        while i < n and not cls[codes[i]] & 1:
            i += 1
    starts = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    h1s = np.empty(count, np.uint64)
    h2s = np.empty(count, np.uint64)
    ent = np.empty(count, np.int64)
    mask = np.uint64(slot_ent.shape[0] - 1)
    k = 0
    i = 0
    while i < n:
        while i < n and cls[codes[i]] & 1:
            i += 1
        if i >= n:
            break
        s = i
        h1 = np.uint64(0xCBF29CE484222325)
        h2 = np.uint64(0x84222325CBF29CE4)
        p1 = h1
        p2 = h2
        alpha = 0           # letters from the start
        digits = 0
        while i < n and not cls[codes[i]] & 1:
            c = np.uint64(codes[i])
            f = cls[codes[i]]
            if alpha == i - s and f & 4:
                alpha += 1
            if digits == i - s and f & 64:
                digits += 1
            p1 = h1
            p2 = h2
            h1 = (h1 ^ c) * np.uint64(0x100000001B3)
            h2 = (h2 + c + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
            h2 ^= h2 >> np.uint64(29)
            i += 1
        size = i - s
        length = np.uint64(size)
        h1 = _fmix(h1 ^ length)
        h2 = _fmix(h2 + length * np.uint64(0x9E3779B97F4A7C15))
        starts[k] = s
        ends[k] = i
        h1s[k] = h1
        h2s[k] = h2
        e = -1
        if alpha == size or digits == size:
            if digits == size or not _is_special(special, h1, h2):
                e = _ONE
        elif alpha == size - 1 and size >= 2:
            last = codes[i - 1]
            ok = False
            for q in range(suffix_one.shape[0]):
                if suffix_one[q] == last:
                    ok = True
            if last == 46 and cls[codes[i - 2]] & 32:      # "." after a lower-case letter
                ok = True
            if ok and not _is_special(special, h1, h2):
                core = np.uint64(size - 1)
                if not _is_special(special, _fmix(p1 ^ core),
                                   _fmix(p2 + core * np.uint64(0x9E3779B97F4A7C15))):
                    e = _TWO
        if e == -1:
            slot = h1 & mask
            while slot_ent[slot] >= 0:
                if keys1[slot] == h1 and keys2[slot] == h2:
                    e = slot_ent[slot]
                    break
                slot = (slot + np.uint64(1)) & mask
        ent[k] = e
        k += 1
    return starts, ends, h1s, h2s, ent


@njit(cache=True, nogil=True)
def _add(keys1, keys2, slot_ent, ent_off, ent_n, pool, state, h1, h2, cacheable, counts, lens):
    """Append one entry per new chunk (its token lengths); store the cacheable ones in
    the table while it has room. state = [entries, pool used, stored]. Returns ids."""
    mask = np.uint64(slot_ent.shape[0] - 1)
    limit = slot_ent.shape[0] // 2
    ids = np.empty(counts.shape[0], np.int64)
    q = 0
    for j in range(counts.shape[0]):
        e = state[0]
        p = state[1]
        c = counts[j]
        ent_off[e] = p
        ent_n[e] = c
        for k in range(c):
            pool[p + k] = lens[q + k]
        q += c
        state[0] = e + 1
        state[1] = p + c
        if cacheable[j] and state[2] < limit:
            slot = h1[j] & mask
            while slot_ent[slot] >= 0:
                slot = (slot + np.uint64(1)) & mask
            keys1[slot] = h1[j]
            keys2[slot] = h2[j]
            slot_ent[slot] = e
            state[2] += 1
        ids[j] = e
    return ids


@njit(cache=True, nogil=True)
def _assemble(codes, cls, starts, ends, ent, ent_off, ent_n, pool):
    total = 0
    for k in range(starts.shape[0]):
        e = ent[k]
        total += 1 if e == _ONE else 2 if e == _TWO else ent_n[e]
    tstart = np.empty(total, np.int64)
    tlen = np.empty(total, np.int64)
    thash = np.empty(total, np.uint64)
    tflags = np.empty(total, np.uint8)
    t = 0
    for k in range(starts.shape[0]):
        e = ent[k]
        pos = starts[k]
        size = ends[k] - pos
        count = 1 if e == _ONE else 2 if e == _TWO else ent_n[e]
        for j in range(count):
            if e == _ONE:
                ln = size
            elif e == _TWO:
                ln = size - 1 if j == 0 else 1
            else:
                ln = pool[ent_off[e] + j]
            h = np.uint64(0xCBF29CE484222325)
            word = False
            alpha = False
            punct = True
            for q in range(pos, pos + ln):
                c = codes[q]
                f = cls[c]
                h = (h ^ np.uint64(c)) * np.uint64(0x100000001B3)
                if not f & 2:
                    word = True
                if f & 4:
                    alpha = True
                if not f & 8:
                    punct = False
            fl = 0
            if word:
                fl |= 1
            if alpha:
                fl |= 2
            if punct:
                fl |= 4
            if ln == 1 and cls[codes[pos]] & 16:
                fl |= 8
            tstart[t] = pos
            tlen[t] = ln
            thash[t] = _fmix(h ^ np.uint64(ln))
            tflags[t] = fl
            pos += ln
            t += 1
    return tstart, tlen, thash, tflags


class Tokens(NamedTuple):
    """The tokens of a text as arrays: offsets and lengths in code points, hashes, flags."""

    start: np.ndarray
    length: np.ndarray
    hash: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return int(self.length.shape[0])

    def strings(self, text: str) -> list[str]:
        return [text[s:s + n] for s, n in zip(self.start.tolist(), self.length.tolist())]


class _Cache:
    """One thread's chunk -> token lengths table. Cleared when full: frequent chunks
    come back after a few documents, and memory stays bounded per thread."""

    def __init__(self):
        size = 1 << _TABLE_BITS
        self.keys1 = np.zeros(size, np.uint64)
        self.keys2 = np.zeros(size, np.uint64)
        self.slot_ent = np.full(size, -1, np.int64)
        self.ent_off = np.zeros(1 << 16, np.int64)
        self.ent_n = np.zeros(1 << 16, np.int64)
        self.pool = np.zeros(1 << 18, np.int64)
        self.state = np.zeros(3, np.int64)      # entries, pool used, chunks stored

    def reset(self) -> None:
        self.slot_ent.fill(-1)
        self.state[:] = 0

    def full(self) -> bool:
        return self.state[2] >= self.slot_ent.shape[0] // 2 or self.state[1] > _RESET_POOL

    def reserve(self, entries: int, lengths: int) -> None:
        need = self.state[0] + entries
        if need > self.ent_off.shape[0]:
            self.ent_off = np.resize(self.ent_off, max(need, 2 * self.ent_off.shape[0]))
            self.ent_n = np.resize(self.ent_n, self.ent_off.shape[0])
        need = self.state[1] + lengths
        if need > self.pool.shape[0]:
            self.pool = np.resize(self.pool, max(need, 2 * self.pool.shape[0]))


_LOCAL = threading.local()


def _cache() -> _Cache:
    c = getattr(_LOCAL, "cache", None)
    if c is None:
        c = _LOCAL.cache = _Cache()
    return c


@lru_cache(maxsize=1)
def special_table() -> np.ndarray:
    """Both hashes of every special-case chunk (and emoticon a split could re-join),
    in an open-addressing table: such chunks always go to the Python rules."""
    keys = sorted(set(SPECIALS) | set(_MERGE))
    size = 1 << (len(keys) * 4).bit_length()
    table = np.zeros((size, 2), np.uint64)
    empty = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.full(1, -1, np.int64))
    for key in keys:
        codes = codes_of(key)
        _, _, h1, h2, _ = _chunks(codes, char_classes(), *empty, np.zeros((1, 2), np.uint64),
                                  _SUFFIX_ONE)
        if h1.shape[0] != 1:
            continue                      # not one chunk: str.split never yields it
        slot = int(h1[0]) & (size - 1)
        while table[slot].any():
            slot = (slot + 1) & (size - 1)
        table[slot] = (h1[0], h2[0])
    return table


def codes_of(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


def reset_cache() -> None:
    """Forget this thread's chunk table (benchmarks start cold with it)."""
    _cache().reset()


def tokens(text: str) -> Tokens:
    """The tokens of ``words(text)``, as arrays."""
    cache = _cache()
    if cache.full():
        cache.reset()
    cls = char_classes()
    codes = codes_of(text)
    starts, ends, h1, h2, ent = _chunks(codes, cls, cache.keys1, cache.keys2, cache.slot_ent,
                                        special_table(), _SUFFIX_ONE)
    misses = np.flatnonzero(ent == -1)
    if misses.shape[0]:
        # each distinct new chunk once, by the Python reference; the rest compiled
        local: dict[tuple[int, int], int] = {}
        which = np.empty(misses.shape[0], np.int64)
        first: list[int] = []
        counts: list[int] = []
        lens: list[int] = []
        for j, (s, e, a, b) in enumerate(zip(starts[misses].tolist(), ends[misses].tolist(),
                                             h1[misses].tolist(), h2[misses].tolist())):
            got = local.get((a, b))
            if got is None:
                out: list[str] = []
                chunk_words(text[s:e], out)
                got = local[(a, b)] = len(counts)
                first.append(j)
                counts.append(len(out))
                lens.extend(map(len, out))
            which[j] = got
        new = misses[first]
        cache.reserve(len(counts), len(lens))
        ids = _add(cache.keys1, cache.keys2, cache.slot_ent, cache.ent_off, cache.ent_n, cache.pool,
                   cache.state, h1[new], h2[new], (ends[new] - starts[new]) <= _CACHE_CHUNK,
                   np.array(counts, np.int64), np.array(lens, np.int64))
        ent[misses] = ids[which]
    return Tokens(*_assemble(codes, cls, starts, ends, ent, cache.ent_off, cache.ent_n, cache.pool))


def token_hash(token: str) -> int:
    """The hash ``tokens`` gives this token (e.g. to look up stop words)."""
    t = tokens(token)
    if len(t) != 1:
        raise ValueError(f"{token!r} is not one token")
    return int(t.hash[0])


@njit(cache=True, nogil=True)
def count_sentences(flags, stop_at):
    """Sentences as a rule-based splitter counts them (spaCy's sentencizer): a new one
    starts at the first non-punctuation token after a terminator. Stops at stop_at (> 0)."""
    n = 1 if flags.shape[0] else 0
    seen = False
    for i in range(flags.shape[0]):
        f = flags[i]
        if f & 8:
            seen = True
        elif seen and not f & 4:
            n += 1
            seen = False
            if 0 < stop_at <= n:
                return n
    return n


class TokenCache:
    """The tokens of the last text seen, shared by the filters of one chain.

    One (text, tokens) tuple swapped atomically, so threads sharing it never pair
    one text with another's tokens; identity (``is``) keeps the check O(1).
    """

    __slots__ = ("_last",)

    def __init__(self):
        self._last: tuple[str | None, Tokens | None] = (None, None)

    def tokens(self, text: str) -> Tokens:
        last = self._last
        if last[0] is text:
            return last[1]
        toks = tokens(text)
        self._last = (text, toks)
        return toks


TOKENS = TokenCache()
