"""Words, lines and paragraphs, in linear time.

The published rule sets count "words" as a word tokenizer sees them: datatrove
(the reference implementation of the Gopher, C4 and FineWeb rules) uses spaCy's
English tokenizer, which splits punctuation off words ("end." -> "end", "."),
splits clitics ("don't" -> "do", "n't") and hyphenated words, but keeps URLs,
numbers like "1.5" or "12:30" and abbreviations like "e.g." whole. Those tokens
feed the rules' denominators (the share of words with a letter, hashes per word),
so a plain ``str.split`` would move documents across thresholds.

:func:`words` follows the same scheme (whitespace, then prefixes and suffixes
peeled one at a time, then infixes, with URL and special-case checks) without
spaCy: plain Python over ``str.split`` chunks, with a fast path for chunks that
are all letters or all digits. Every step is bounded per character, so a 20 MB
document or a million-character "word" costs time in proportion to its length.
The filters reach these tokens through :mod:`curation.filters.tokens`, which
tokenises each distinct chunk here once and does the rest compiled; the
predicates below (:func:`is_symbol_word`, :func:`has_alpha`, :func:`is_punct`,
:func:`count_sentences`) are the reference its flags are tested against.
The benchmark (benchmarks/bench_filters.py) measures how often the decisions agree
with datatrove's; docs/benchmarks.md lists the differences.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Characters peeled off either end of a chunk. Brackets, quotes and sentence
# punctuation, as in the usual English tokenizer conventions.
_PUNCT = set(",:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪…")
_QUOTES = set("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧")
_CURRENCY = set("$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₼₾₿")
_PREFIX_CHARS = _PUNCT | _QUOTES | _CURRENCY | set("§%=—–")
_SUFFIX_CHARS = _PUNCT | _QUOTES | set("—–")
# "." is a suffix after these (and after two capitals): "end." -> "end", "."
_DOT_AFTER = _PUNCT | _QUOTES | set("%²-+()?:")
_UNITS = frozenset(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg "
    "t lb oz m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %".split())
_MAX_UNIT = max(map(len, _UNITS))
_HYPHENS = ("---", "--", "——", "-", "–", "—", "~")

# URLs and host names stay one token ("www.example.org/a?b=c").
_URL = re.compile(
    r"(?:[\w+.-]{2,}://)?(?:[^\s@/]+@)?"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|"
    r"(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
    r"[a-z\u00df-\u00ff]{2,63})(?::\d{2,5})?(?:[/?#]\S*)?\Z")
_URL_MAX = 2048   # longer chunks are not treated as URLs (keeps the check cheap)


_EMOTICONS = frozenset("""
:) :-) :)) :-)) :))) :( :-( :(( :-(( :((( ): )-: (: (-: ;) ;-) (; (-; :] :-] [: [-: :} :-}
:| :-| :/ :-/ =/ :> :-> :* :-* :'( :') :'-( :'-) :’( :’) =) =( (= =] =[ [= ]= =| :D :-D ;D
;-D 8) 8-) 8D 8-D :P :-P :p :-p :o :-o :O :-O :x :-x :X :-X :0 :-0 :3 :-3 =3 =D :o) >:( >:o
:1 <3 <33 </3 ^_^ ^__^ -_- -__- >.< >.> <.< o.O O.o o_O O_o o.o O.O o_o O_O v.v V.V @_@ xD XD
'' ’’ and/or w/o C++ 'Cause 'cause 'Cos 'cos 'coz 'cuz c'mon C'mon o'clock O'clock ma'am Ma'am
""".split())


def _specials() -> dict[str, tuple[str, ...]]:
    """Chunks with a fixed split: clitics, abbreviations that keep their period, emoticons."""
    sp: dict[str, tuple[str, ...]] = {e: (e,) for e in _EMOTICONS}
    # dropped final g, in lower and title case: "goin'" stays one token
    for stem in ("doin", "goin", "nothin", "nuthin", "ol", "somethin", "lovin", "havin"):
        for st in (stem, stem.title()):
            sp[st + "'"] = (st + "'",)
    abbrevs = (
        "Mr. Mrs. Ms. Dr. St. Jr. Prof. Rev. Gen. Gov. Sen. Rep. Adm. Mt. Messrs. "
        "Inc. Ltd. Co. co. Corp. Bros. vs. v.s. e.g. E.g. E.G. i.e. I.e. I.E. a.m. p.m. "
        "Ph.D. Id. Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. "
        "Ak. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ia. Ill. Ind. Kan. Kans. Ky. "
        "La. Md. Mass. Mich. Minn. Miss. Mo. Mont. Neb. Nebr. Nev. Okla. Ore. Pa. Tenn. "
        "Va. Wash. Wis. N.C. N.D. N.H. N.J. N.M. N.Y. S.C. D.C. °C. °F. °K. °c. °f. °k. "
        "ä. ö. ü.").split()
    for a in abbrevs:
        sp[a] = (a,)
    for c in "abcdefghijklmnopqrstuvwxyz":
        sp[c + "."] = (c + ".",)
    for h in range(1, 13):
        for m in ("am", "pm"):
            sp[f"{h}{m}"] = (str(h), m)
            sp[f"{h}{m[0]}.m."] = (str(h), f"{m[0]}.m.")
    # clitics, with and without the apostrophe ("don't", "dont" -> "do", "n't" / "nt")
    neg = ("ai are ca could dare did does do had has have is may might must need ought "
           "sha should was were wo would").split()
    pron = {"i": "d ll m ve", "you": "d ll re ve", "he": "d ll s", "she": "d ll s",
            "it": "d ll s", "we": "d ll re ve", "they": "d ll re ve", "that": "d ll s",
            "there": "d ll re s ve", "these": "d ll re ve", "those": "d ll re ve",
            "this": "d ll s", "what": "d ll re s ve", "when": "d ll re s ve",
            "where": "d ll re s ve", "who": "d ll re s ve", "why": "d ll re s ve",
            "how": "d ll re s ve"}
    real_words = {"hell", "ill", "shell", "shed", "well", "were", "its", "whore"}
    pairs = [(stem, "n" + "'t") for stem in neg]
    pairs += [(stem, "'" + c) for stem, cl in pron.items() for c in cl.split()]
    for stem, clitic in pairs:
        for st in {stem, stem.capitalize(), "I" if stem == "i" else stem}:
            for apos in ("'", "’"):
                sp[st + clitic.replace("'", apos)] = (st, clitic.replace("'", apos))
            bare = st + clitic.replace("'", "")
            if bare.lower() not in real_words:
                sp[bare] = (st, clitic.replace("'", ""))
    for stem in ("could", "would", "should", "might", "must"):
        for st in (stem, stem.capitalize()):
            for apos in ("'", "’"):
                sp[f"{st}{apos}ve"] = (st, f"{apos}ve")
    for c in ("'s", "'S", "'d", "'ll", "'re", "'em", "'nuff", "'bout", "’s", "’S", "’d", "’ll", "’re"):
        sp[c] = (c,)
    sp.update({"cannot": ("can", "not"), "Cannot": ("Can", "not"), "gonna": ("gon", "na"),
               "Gonna": ("Gon", "na"), "gotta": ("got", "ta"), "Gotta": ("Got", "ta"),
               "let's": ("let", "'s"), "Let's": ("Let", "'s"), "yall": ("y", "all"),
               "y'all": ("y'", "all"), "Y'all": ("Y'", "all")})
    return sp


SPECIALS = _specials()
_MAX_SPECIAL = max(map(len, SPECIALS))
# specials made of punctuation that a split may have cut apart: "):" -> ")", ":" -> "):"
_MERGE = {e for e, toks in SPECIALS.items() if toks == (e,) and not e.isalnum() and len(e) <= 4}
_MERGE_FIRST = {e[0] for e in _MERGE}


@lru_cache(maxsize=65536)
def _is_icon(ch: str) -> bool:
    return unicodedata.category(ch) == "So"


def _prefix_len(s: str, lo: int, hi: int) -> int:
    ch = s[lo]
    if ch == ".":
        j = lo
        while j < hi and s[j] == ".":
            j += 1
        return j - lo if j - lo >= 2 else 0
    if ch == "+":
        return 0 if lo + 1 < hi and s[lo + 1].isdigit() else 1
    if ch in _PREFIX_CHARS or _is_icon(ch):
        return 1
    if ch in "UCA" and s.startswith("$", lo + 1 + (ch == "U")) and (ch != "U" or s.startswith("S", lo + 1)):
        return 3 if ch == "U" else 2   # US$, C$, A$
    return 0


def _suffix_len(s: str, lo: int, hi: int) -> int:
    """Length of the longest suffix rule that matches s[lo:hi] (leftmost start wins)."""
    n = hi - lo
    if n <= 0:
        return 0
    best = 0
    last = s[hi - 1]
    if last == ".":
        j = hi
        while j > lo and s[j - 1] == ".":
            j -= 1
        run = hi - j
        if run >= 2:
            best = run
        elif n >= 2:
            prev = s[hi - 2]
            if (prev.isdigit() or (prev.islower() and prev.isalpha()) or prev in _DOT_AFTER
                    or (n >= 3 and prev.isupper() and s[hi - 3].isupper())
                    or (n >= 3 and prev in "FfCcKk" and s[hi - 3] == "°")):
                best = 1
    elif last in _SUFFIX_CHARS or _is_icon(last):
        best = 1
    elif last == "+" and n >= 2 and s[hi - 2].isdigit():
        best = 1
    if n >= 2 and last in "sS" and s[hi - 2] in "'’":
        best = max(best, 2)
    if n >= 2 and last in _CURRENCY and s[hi - 2].isdigit():
        best = max(best, 1)
    # units after a number: "5km" -> "5", "km"
    for k in range(min(_MAX_UNIT, n - 1), best, -1):
        if s[hi - k - 1].isdigit() and s[hi - k:hi] in _UNITS:
            best = k
            break
    return best


def _infix_split(core: str, out: list[str]) -> None:
    """Split at infixes: ellipses, icons, hyphens between letters, "," "." ":" "/" inside words."""
    if core.isalnum():   # every infix needs punctuation or a symbol
        out.append(core)
        return
    n = len(core)
    start = 0
    i = 1   # an infix at position 0 never splits
    while i < n:
        ch = core[i]
        m = 0
        if ch == "." and i + 1 < n and core[i + 1] == ".":
            j = i
            while j < n and core[j] == ".":
                j += 1
            m = j - i
        elif ch == "…" or _is_icon(ch):
            m = 1
        elif i + 1 < n:
            prev, nxt = core[i - 1], core[i + 1]
            if ch in "+-*^" and prev.isdigit() and (nxt.isdigit() or nxt == "-"):
                m = 1
            elif ch == "." and ((prev.islower() and prev.isalpha()) or prev in _QUOTES) \
                    and ((nxt.isupper() and nxt.isalpha()) or nxt in _QUOTES):
                m = 1
            elif ch == "," and prev.isalpha() and nxt.isalpha():
                m = 1
            elif ch in ":<>=/" and (prev.isalpha() or prev.isdigit()) and nxt.isalpha():
                m = 1
            elif ch in "-–—~" and (prev.isalpha() or prev.isdigit()):
                for h in _HYPHENS:
                    k = len(h)
                    if core.startswith(h, i) and i + k < n and core[i + k].isalpha():
                        m = k
                        break
        if m:
            if i != start:
                out.append(core[start:i])
            out.append(core[i:i + m])
            start = i + m
            i = start
            continue
        i += 1
    if start < n:
        out.append(core[start:])


def _merge_specials(out: list[str], k0: int) -> None:
    toks = out[k0:]
    merged: list[str] = []
    i, n, changed = 0, len(toks), False
    while i < n:
        if toks[i][:1] in _MERGE_FIRST:
            for k in (3, 2):
                if i + k <= n and (cand := "".join(toks[i:i + k])) in _MERGE:
                    merged.append(cand)
                    i += k
                    changed = True
                    break
            else:
                merged.append(toks[i])
                i += 1
        else:
            merged.append(toks[i])
            i += 1
    if changed:
        out[k0:] = merged


def _split_chunk(s: str, out: list[str]) -> None:
    k0 = len(out)
    lo, hi = 0, len(s)
    suffixes: list[str] = []
    while lo < hi:
        if hi - lo <= _MAX_SPECIAL and s[lo:hi] in SPECIALS:
            break
        size = hi - lo
        pre = _prefix_len(s, lo, hi)
        if pre and hi - lo - pre <= _MAX_SPECIAL and lo + pre < hi and s[lo + pre:hi] in SPECIALS:
            out.append(s[lo:lo + pre])
            lo += pre
            break
        suf = _suffix_len(s, lo + pre, hi)
        if suf and hi - suf - lo <= _MAX_SPECIAL and hi - suf > lo and s[lo:hi - suf] in SPECIALS:
            suffixes.append(s[hi - suf:hi])
            hi -= suf
            break
        if pre and suf and pre + suf <= size:
            out.append(s[lo:lo + pre])
            suffixes.append(s[hi - suf:hi])
            lo += pre
            hi -= suf
        elif pre:
            out.append(s[lo:lo + pre])
            lo += pre
        elif suf:
            suffixes.append(s[hi - suf:hi])
            hi -= suf
        if hi - lo == size:
            break
    if lo < hi:
        core = s[lo:hi]
        special = SPECIALS.get(core) if hi - lo <= _MAX_SPECIAL else None
        if special is not None:
            out.extend(special)
        elif hi - lo <= _URL_MAX and "." in core and _URL.match(core):
            out.append(core)
        else:
            _infix_split(core, out)
    out.extend(reversed(suffixes))
    if len(out) - k0 > 1:
        _merge_specials(out, k0)


def chunk_words(chunk: str, out: list[str]) -> None:
    """Append the tokens of one whitespace-free chunk; they concatenate back to it."""
    if chunk.isalpha():
        if len(chunk) <= _MAX_SPECIAL and chunk in SPECIALS:
            out.extend(SPECIALS[chunk])
        else:
            out.append(chunk)
    elif chunk.isdigit():
        out.append(chunk)
    else:
        _split_chunk(chunk, out)


def words(text: str) -> list[str]:
    """Word tokens of ``text`` (punctuation split off as its own tokens).

    The reference the filters' compiled path (curation.filters.tokens) reproduces.
    """
    out: list[str] = []
    for chunk in text.split():
        chunk_words(chunk, out)
    return out


# Unicode's Sentence_Terminal property (generated from the Unicode 15 tables with the
# `regex` module's \p{Sentence_Terminal}); Python's unicodedata does not expose it.
TERMINAL_PUNCTUATION = frozenset(
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e'
    '\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u1803\u1809'
    '\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b4e\u1b4f\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e'
    '\u1b7f\u1c3b\u1c3c\u1c7e\u1c7f\u2024\u203c\u203d\u2047\u2048\u2049\u2cf9\u2cfa\u2cfb'
    '\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf'
    '\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe12\ufe15\ufe16\ufe52\ufe56'
    '\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57'
    '\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048'
    '\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5'
    '\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c'
    '\U000112a9\U000113d4\U000113d5\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9'
    '\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1'
    '\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642'
    '\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b'
    '\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e'
    '\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016d6e\U00016d6f\U00016e98'
    '\U0001bc9f\U0001da88')
TERMINAL_TUPLE = tuple(sorted(TERMINAL_PUNCTUATION))


@lru_cache(maxsize=1 << 16)
def is_punct(token: str) -> bool:
    """Every character is Unicode punctuation (categories P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


@lru_cache(maxsize=1 << 16)
def is_symbol_word(token: str) -> bool:
    """Made only of punctuation, symbols or control characters: not a word for Gopher."""
    return all(unicodedata.category(c)[0] in "PSC" for c in token)


@lru_cache(maxsize=1 << 16)
def has_alpha(token: str) -> bool:
    return token.isalpha() or any(c.isalpha() for c in token)


def count_sentences(tokens: list[str], stop_at: int | None = None) -> int:
    """Sentences as a rule-based sentence splitter counts them: a new sentence starts at
    the first non-punctuation token after a sentence terminator ("." "!" "?" ...)."""
    n = 1 if tokens else 0
    seen = False
    for tok in tokens:
        if tok in TERMINAL_PUNCTUATION:
            seen = True
        elif seen and not is_punct(tok):
            n += 1
            seen = False
            if stop_at is not None and n >= stop_at:
                return n
    return n
