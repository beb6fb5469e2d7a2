"""Normalisation and the code-point tables behind the compiled tokenizer.

The definition (the benchmark truth uses it too)::

    normalize(text) == " ".join(re.findall(r"\\w+", text.lower()))

Words are maximal runs of Python `re` word characters (for str patterns: every
code point with str.isalnum(), and "_") in the lower-cased text. The compiled
loop (cpu.py) does not run a regex: it decodes UTF-8 and looks each code point up
in `fold_table()`, which is built *from the regex itself* over all 0x110000 code
points, so both agree on every code point by construction (and the tests check
that agreement again, against the regex and against str.isalnum, on every code
point and on real text).

Lower-casing: str.lower() is a per-code-point map except for two code points,
U+0130 (which lowers to two code points) and U+03A3 capital sigma (which lowers to
"ς" or "σ" depending on its neighbours). The compiled loop lowers per code point
with the table; a text holding either of the two is lowered by Python first
(`encode_for_loop`), which also picks the cheapest encoding to hand over (Latin-1 or
UTF-8). Lower-casing is idempotent on every code point, so running the
table over already-lowered text changes nothing (tested).
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache

import numpy as np

# names the rule below; a change to it changes every exact key and shingle (dedup
# indexes record it and refuse another)
NORMALISATION = "lower-words-v1"
MAX_CODEPOINT = 0x110000
_WORD_RE = re.compile(r"\w+")
CONTEXT_LOWER = ("\u0130", "\u03a3")


def normalize(text: str) -> str:
    """Lower-case, keep the words (runs of regex \\w), join them with one space."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return " ".join(_WORD_RE.findall(text.lower()))


def words(text: str) -> list[str]:
    """The words of normalize(text), as a list."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return _WORD_RE.findall(text.lower())


def _all_code_points() -> str:
    # lone surrogates are legal in a Python str, and the regex sees them (as non-word)
    return "".join(map(chr, range(MAX_CODEPOINT)))


@lru_cache(maxsize=1)
def word_table() -> np.ndarray:
    """uint8[0x110000]: 1 where the code point matches the regex `\\w`."""
    table = np.zeros(MAX_CODEPOINT, dtype=np.uint8)
    for m in _WORD_RE.finditer(_all_code_points()):   # index in the string == code point
        table[m.start():m.end()] = 1
    table.setflags(write=False)
    return table


@lru_cache(maxsize=1)
def lower_table() -> np.ndarray:
    """int32[0x110000]: the single code point str.lower() maps each code point to.

    U+0130 maps to itself here (str.lower gives two code points) and U+03A3 to
    U+03C3: texts holding either are lowered by Python and never reach the table."""
    skip = {0x130, 0x3A3}
    cps = np.array([c for c in range(MAX_CODEPOINT) if c not in skip], dtype=np.int64)
    lowered = "".join(map(chr, cps.tolist())).lower()      # every other one maps 1:1
    low = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if low.shape[0] != cps.shape[0]:   # pragma: no cover - a future Unicode change
        raise RuntimeError("str.lower() is no longer one-to-one outside U+0130/U+03A3")
    table = np.arange(MAX_CODEPOINT, dtype=np.int32)
    table[cps] = low.astype(np.int32)
    table[0x3A3] = 0x3C3
    table.setflags(write=False)
    return table


@lru_cache(maxsize=1)
def fold_table() -> np.ndarray:
    """int32[0x110000]: lower(cp) where lower(cp) is a word character, else -1.

    One lookup per non-ASCII code point gives both the lowered code point and its
    class; the ASCII range of the same table serves the byte fast path."""
    low = lower_table()
    table = np.where(word_table()[low] == 1, low, -1).astype(np.int32)
    table.setflags(write=False)
    return table


# CPython stores a str with one, two or four bytes per code point; its size tells
# which. The guess only picks the encoding to try first: the result never depends on it.
_UCS1_HEADER = sys.getsizeof("\xe9") - 2


def encode_for_loop(text: str) -> tuple[bytes, bool]:
    """The bytes the compiled loop reads, and whether they are Latin-1 (else UTF-8).

    The loop lowers per code point itself, so the text is not lowered here unless
    it needs the context rules of str.lower(). A text whose code points all fit in
    Latin-1 (most European text; CPython stores it one byte per character) is copied
    as Latin-1, which costs a fraction of UTF-8 encoding; any other text is UTF-8,
    with surrogatepass: a lone surrogate becomes 3 bytes that decode to a non-word
    code point, exactly as the regex treats it."""
    if text.isascii():
        return text.encode("ascii"), True
    if "\u0130" in text or "\u03a3" in text:    # CONTEXT_LOWER: only str.lower() gets these right
        text = text.lower()
    if sys.getsizeof(text) - _UCS1_HEADER == len(text) + 1:    # one byte per code point
        try:
            return text.encode("latin-1"), True
        except UnicodeEncodeError:     # pragma: no cover - a guess only, never trusted
            pass
    return text.encode("utf-8", "surrogatepass"), False


def encode_batch(texts) -> tuple[list, np.ndarray]:
    """encode_for_loop over a list: the byte strings and a uint8 Latin-1 flag each."""
    parts, flags = [], bytearray()
    for t in texts:
        b, latin1 = encode_for_loop(t)
        parts.append(b)
        flags.append(latin1)
    return parts, np.frombuffer(bytes(flags), dtype=np.uint8)
