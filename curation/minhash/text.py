"""Normalisation: lower-case, then words are maximal runs of Unicode word
characters (Python's `re` `\\w`). One table of word code points serves the
regex-free compiled tokenizer, so both agree on every code point."""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_WORD_RE = re.compile(r"\w+")
MAX_CODEPOINT = 0x110000


def normalize(text: str) -> str:
    """`" ".join(re.findall(r"\\w+", text.lower()))`: the normalised text whose
    word n-grams are shingled and whose hash identifies exact duplicates."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return " ".join(_WORD_RE.findall(text.lower()))


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


@lru_cache(maxsize=1)
def word_table() -> np.ndarray:
    """uint8[0x110000]: 1 where the code point is a regex word character."""
    # \w in Python's re (str patterns) = str.isalnum() or "_"; the regex check of
    # every code point lives in the tests.
    table = np.zeros(MAX_CODEPOINT, dtype=np.uint8)
    for cp in range(MAX_CODEPOINT):
        c = chr(cp)
        if c.isalnum():
            table[cp] = 1
    table[ord("_")] = 1
    return table


# str.lower() is a per-code-point map except for these: U+0130 lowers to two code
# points and capital sigma lowers by context (final sigma). Texts holding either are
# lowered by Python; all others are lowered in the compiled loop with lower_table().
CONTEXT_LOWER = ("\u0130", "\u03a3")


@lru_cache(maxsize=1)
def lower_table() -> np.ndarray:
    """int32[0x110000]: the code point str.lower() maps each code point to."""
    table = np.arange(MAX_CODEPOINT, dtype=np.int32)
    for cp in range(0x80, MAX_CODEPOINT):
        low = chr(cp).lower()
        if len(low) == 1:
            table[cp] = ord(low)
    for cp in range(0x41, 0x5B):
        table[cp] = cp + 32
    return table


def needs_python_lower(text: str) -> bool:
    return not text.isascii() and any(c in text for c in CONTEXT_LOWER)


def encode_lower(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    # surrogatepass: a lone surrogate becomes 3 bytes decoded back to a non-word
    # code point, exactly as the regex treats it
    return text.lower().encode("utf-8", "surrogatepass")
