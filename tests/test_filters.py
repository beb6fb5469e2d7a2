"""The filter library: the user contract, every rule of every filter, chains, presets and
filter YAML, user filters, parameters, the word tokenizer, scale and threads.

The language filter's own behaviour (its rules, bit-for-bit agreement with py3langid, its
scale) is tested in tests/test_language.py; here it only appears where the contract or a
chain covers every filter.
"""
from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from pydantic import Field

from curation.config import ConfigError
from curation.demo import DEMO_DIR
from curation.documents import Document
from curation.filters import (DEFAULT_PRESET, PRESETS, C4Quality, Filter, FilterChain,
                              FilterInputError, FilterParamError, FineWebQuality, GopherQuality,
                              GopherRepetition, LanguageFilter, LengthFilter, UserFilter, Verdict,
                              load_chain, words)
from curation.filters.base import Params
from curation.filters.c4 import END_PUNCTUATION, POLICY_SUBSTRINGS
from curation.filters.config import presets_dir
from curation.filters.gopher import GOPHER_STOP_WORDS

REPO = Path(__file__).resolve().parents[1]
THIS = __name__     # how pytest imported this module: user filters below are found by it

# --- texts ------------------------------------------------------------------------------

# A good English document: four paragraphs of plain prose. Every filter keeps it.
GOOD = """\
The history of the town goes back to the twelfth century, when a small group of farmers \
settled on the banks of the river. They built a mill, a church and a handful of stone houses, \
some of which can still be seen today.

Over the following centuries the settlement grew slowly. Trade with the neighbouring villages \
brought wool, grain and timber to the market square, and by the sixteenth century the town had \
its own charter and a council of twelve elected members.

The arrival of the railway in 1854 changed everything. Within a decade the population had \
doubled, new factories lined the riverbank, and the old market square was surrounded by shops, \
banks and hotels that served travellers on their way to the coast.

Today the town is known for its museum, which holds a remarkable collection of tools, letters \
and photographs from the industrial period. Visitors can walk along the restored canal path, \
have lunch in one of the cafes near the bridge, and learn how ordinary families lived and \
worked during those years of rapid change."""

# Sentences without commas or terminal punctuation, each over 30 characters, each ending
# in a different word; the rule texts below add the punctuation they need.
PROSE = [
    "The old mill stood at the edge of the village for more than three hundred years",
    "Families who worked there passed the trade from parents to children through many generations",
    "In the spring the river rose and the great wheel turned faster than anyone could remember",
    "Farmers brought their grain on carts pulled by horses and waited in line until evening",
    "When the railway came the mill lost most of its customers and the wheel stopped for good",
    "Today the building is a small museum that shows visitors how flour was made by hand",
    "A narrow bridge of grey stone crosses the stream just below the old weir",
    "Children from the school visit every autumn to watch the miller grind a sack of wheat",
    "The museum shop sells bread baked from that flour on most weekends of the year",
    "Volunteers repaired the roof last winter after a storm tore away half of the slates",
    "Local historians have collected letters written by the last family to own the place",
    "On warm evenings people sit on the bank and watch the swallows skim over the water",
]
SENTENCES = "\n".join(s + "." for s in PROSE)          # 12 lines, one sentence each


def lines(*parts: str) -> str:
    return "\n".join(parts)


def paragraphs(*parts: str) -> str:
    return "\n\n".join(parts)


def pseudo_words(n: int, skip: int = 0) -> list[str]:
    """n distinct five-letter words (consonant-vowel patterns): text with no repetition."""
    pool = ("".join(p) for p in itertools.product("bcdfghjklmnprstvz", "aeiou",
                                                    "bcdfghjklmnprstvz", "aeiou",
                                                    "bcdfghjklmnprstvz"))
    return list(itertools.islice(pool, skip, skip + n))


def top_gram_text(n: int, fill: int, units: int) -> str:
    """One n-word phrase, then `fill` fresh words, `units` times: the phrase is the only
    repeated n-gram, so the top n-gram's share is units * (5n + n - 1) / len(text)."""
    pool = pseudo_words(n + fill * units)
    phrase, rest = pool[:n], iter(pool[n:])
    return " ".join(" ".join(phrase + [next(rest) for _ in range(fill)]) for _ in range(units))


def dup_gram_text(n: int, total_words: int, phrases: int = 4) -> str:
    """`phrases` distinct n-word phrases, each used twice, among fresh words: the second copy
    of each phrase is the only duplicated n-gram run, so the duplicated n-gram share is
    phrases * 5n / len(text) (characters without spaces, as datatrove counts them).

    Word counts are chosen so that n is the smallest size whose share crosses its
    threshold: a phrase of n words covers 5 * j * (n // j) characters of duplicated
    j-grams for j <= n, so shares for j < n stay under theirs (0.15 ... 0.10).
    """
    filler = total_words - 2 * phrases * n
    pool = pseudo_words(phrases * n + filler)
    groups = [pool[i * n:(i + 1) * n] for i in range(phrases)]
    rest = iter(pool[phrases * n:])
    gap = filler // (2 * phrases + 1)
    out: list[str] = []
    for k in range(2 * phrases):
        out += [next(rest) for _ in range(gap)]
        out += groups[k % phrases]
    out += list(rest)
    assert len(out) == total_words
    return " ".join(out)


# total words per duplicated n-gram size: the middle of the window described above
DUP_WORDS = {5: 80, 6: 127, 7: 161, 8: 200, 9: 247, 10: 303}

LONG_URL = ("https://www.example.com/articles/2023/05/how-the-town-museum-restored-its-"
            "collection-of-industrial-tools-and-letters-from-the-nineteenth-century-mill"
            "?utm_source=newsletter&utm_medium=email&utm_campaign=spring")


def ellipsize(sentence: str, every: int) -> str:
    ws = sentence.split()
    return " ".join(w + "..." if i % every == every - 1 and i < len(ws) - 1 else w
                    for i, w in enumerate(ws)) + "."


NO_STOP_WORDS = (
    "Bright stars shine above quiet hills. Farmers gather wheat before autumn rains arrive. "
    "Children run along narrow paths toward distant meadows. Old bridges cross cold streams "
    "where trout swim slowly. Evening brings soft light across green valleys. Travellers rest "
    "beside warm fires in small inns. Morning returns early during summer months. Bakers open "
    "their shops before sunrise. Markets fill quickly once bells ring.")

NUMBERS = ("The population of the town was 1200 in 1801 and 1350 in 1811 and 1500 in 1821 "
           "then 1720 in 1831 and 2010 in 1841 and 2400 in 1851 and 3100 in 1861 and 4200 in "
           "1871 and 5300 in 1881 and 6100 in 1891 and 7400 in 1901 and 8800 in 1911 and 9900 "
           "in 1921.")

MENU = ["Home", "News", "Sport", "Weather", "Contact us", "Login", "Register", "Search",
        "Privacy", "Shop", "Events", "Jobs", "Help", "Sitemap"]


def demo_docs(name: str) -> list[dict]:
    with gzip.open(DEMO_DIR / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def demo_text(name: str, doc_id: str) -> str:
    (text,) = [d["text"] for d in demo_docs(name) if d["id"] == doc_id]
    return text


# --- 1. the contract ----------------------------------------------------------------------

def test_public_names():
    import curation.filters as cf
    for name in ("GopherQuality", "GopherRepetition", "C4Quality", "FineWebQuality",
                 "LanguageFilter", "LengthFilter", "UserFilter", "FilterChain", "Verdict",
                 "load_chain", "words", "FilterInputError", "FilterParamError"):
        assert name in cf.__all__ and getattr(cf, name) is not None
    assert issubclass(LanguageFilter, Filter)
    with pytest.raises(AttributeError):
        cf.NoSuchFilter   # noqa: B018


def test_importing_filters_does_not_import_beam_or_the_language_model():
    code = ("import sys, curation.filters\n"
            "bad = [m for m in ('apache_beam', 'curation.filters.language', 'py3langid') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n"
            "from curation.filters import LanguageFilter\n"
            "assert 'curation.filters.language' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def keep_all(text: str) -> bool:
    return True


def user_filter() -> UserFilter:
    return UserFilter(path=f"{THIS}:keep_all")


# one instance of every filter class (and a chain), for the contract tests
ALL_FILTERS: dict[str, Callable[[], Any]] = {
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "c4_lines": C4Quality,
    "c4_document": lambda: C4Quality(mode="document"),
    "fineweb_quality": FineWebQuality,
    "language": LanguageFilter,
    "length": lambda: LengthFilter(min_words=5),
    "user": user_filter,
    "chain": lambda: load_chain("fineweb"),
}


@pytest.mark.parametrize("make", ALL_FILTERS.values(), ids=ALL_FILTERS.keys())
def test_str_mapping_and_document_give_the_same_verdict(make):
    f = make()
    v = f(GOOD)
    assert isinstance(v, Verdict) and isinstance(v.keep, bool) and isinstance(v.signals, dict)
    assert v.keep is True and v.reason is None and v.rule is None
    assert f({"text": GOOD, "id": "x"}) == v
    assert f(Document(id="x", text=GOOD)) == v


@pytest.mark.parametrize("make", ALL_FILTERS.values(), ids=ALL_FILTERS.keys())
@pytest.mark.parametrize("bad, says", [
    (None, "NoneType"),
    (42, "int"),
    (b"bytes are not text", "bytes"),
    (["a", "list"], "list"),
    ({"content": "no text key"}, "'text'"),
    ({"text": None}, "NoneType"),
    ({"text": 42}, "int"),
    ({"text": b"bytes"}, "bytes"),
    (Document(id="x", text=None), "NoneType"),      # type: ignore[arg-type]
], ids=["none", "int", "bytes", "list", "no-text-key", "text-none", "text-int", "text-bytes",
        "document-none"])
def test_non_text_input_is_a_clear_input_error(make, bad, says):
    f = make()
    with pytest.raises(FilterInputError) as e:
        f(bad)
    assert isinstance(e.value, TypeError)
    assert says in str(e.value)


def test_removal_verdict_shape():
    v = GopherQuality()("Too short.")
    assert v.keep is False and v.reason == "gopher_quality:word_count"
    assert v.rule == "word_count" and v.signals == {"words": 2}
    assert v.edited is False and v.text is None
    v = GopherQuality()("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3)
    assert v.reason == "gopher_quality:mean_word_length"
    assert v.signals["mean_word_length"] == 1.0


def test_reasons_are_name_colon_rule():
    for f in (GopherQuality(), GopherRepetition(), C4Quality(), FineWebQuality(), LanguageFilter(),
              LengthFilter(), user_filter()):
        assert f.reasons == tuple(f"{f.name}:{r}" for r in f.rules)
        assert len(set(f.rules)) == len(f.rules) and all(":" not in r for r in f.rules)
    chain = load_chain("fineweb")
    assert chain.reasons == tuple(r for f in chain.filters for r in f.reasons)


# --- 2. every rule of every filter ------------------------------------------------------

@dataclass
class RuleCase:
    make: Callable[[], Filter]
    rule: str
    text: Callable[[], str]
    off: dict                                       # parameters that switch the rule off
    crossed: Callable[[dict, str], bool]            # (signals, text): the measured value
    after: str | None = None                        # reason with the rule off (None: kept)
    id: str = ""

    @property
    def cls(self) -> type:
        return type(self.make())


def gq(rule, text, off, crossed, **kw):
    return RuleCase(GopherQuality, rule, text, off, crossed, **kw)


def gr(rule, text, off, crossed, **kw):
    return RuleCase(GopherRepetition, rule, text, off, crossed, **kw)


def _without(pairs, n):
    return [p for p in pairs if p[0] != n]


def _hashtags() -> str:
    tags = ("history village mill river museum travel heritage flour railway farming wheel "
            "bread grain horses trade spring countryside england").split()
    return ". ".join(PROSE[:6]) + ".\n" + " ".join("#" + w for w in tags)


def _dup_paragraphs() -> str:
    parts = []
    for i in range(4):
        parts += [lines(*PROSE[3 * i:3 * i + 3]), "Back to top."]
    return paragraphs(*parts)


def _dup_lines() -> str:
    out = []
    for s in PROSE[:5]:
        out += [s + ".", "Share this page."]
    return lines(*out, PROSE[5] + ".", PROSE[6] + ".")


def _dup_line_chars() -> str:
    return lines(PROSE[0], LONG_URL, PROSE[1], PROSE[2], PROSE[3], LONG_URL, PROSE[4])


def _char_dup() -> str:
    return lines(*(s + "." for s in PROSE[:6]), "Read more about the mill.", PROSE[6] + ".",
                 "Read more about the mill.")


_R = GopherRepetition()
_TOP = {2: (1, 40), 3: (8, 20), 4: (14, 15)}     # n: (fresh words per unit, units)
RULE_CASES: list[RuleCase] = [
    # --- Gopher quality: each text passes every other rule (switching this one off keeps it)
    gq("word_count", lambda: "The cat and the dog sat by the fire all evening, waiting for "
       "the rain to stop.", {"min_doc_words": None}, lambda s, t: s["words"] == 17 < 50,
       id="too_few_words"),
    gq("word_count", lambda: (GOOD + "\n\n") * 560, {"max_doc_words": None},
       lambda s, t: s["words"] == 180 * 560 > 100_000, id="too_many_words"),
    gq("mean_word_length", lambda: "So it is to be, and we go on as we did. " * 8,
       {"min_avg_word_length": None}, lambda s, t: s["mean_word_length"] < 3,
       id="short_words"),
    gq("mean_word_length", lambda: (
        "Notwithstanding extraordinary intergovernmental telecommunications infrastructures, "
        "comprehensive internationalization requirements characteristically overwhelmed the "
        "administrators of metropolitan transportation authorities and their representatives. "
    ) * 6, {"max_avg_word_length": None}, lambda s, t: s["mean_word_length"] > 10,
       id="long_words"),
    gq("hash_ratio", _hashtags, {"max_symbol_word_ratio": None},
       lambda s, t: s["hash_ratio"] > 0.1 and t.count("#") == 18),
    gq("ellipsis_ratio", lambda: lines(*(ellipsize(s, 6) for s in PROSE[:6])),
       {"max_symbol_word_ratio": None},
       lambda s, t: s["ellipsis_ratio"] > 0.1 and s["hash_ratio"] == 0),
    gq("bullet_lines", lambda: lines(*("- " + s + "." for s in PROSE[:6])),
       {"max_bullet_lines_ratio": None}, lambda s, t: s["bullet_lines_ratio"] == 1.0 > 0.9),
    gq("bullet_lines", lambda: lines(*("• " + s + "." for s in PROSE[:6])),
       {"max_bullet_lines_ratio": None}, lambda s, t: s["bullet_lines_ratio"] == 1.0,
       id="bullet_dots"),
    gq("ellipsis_lines", lambda: lines(*(s + ("..." if i % 2 else ".")
                                         for i, s in enumerate(PROSE[:6]))),
       {"max_ellipsis_lines_ratio": None},
       lambda s, t: s["ellipsis_lines_ratio"] == 0.5 > 0.3 and s["ellipsis_ratio"] <= 0.1),
    gq("alpha_words", lambda: NUMBERS, {"min_alpha_words_ratio": None},
       lambda s, t: s["alpha_words_ratio"] < 0.8),
    gq("stop_words", lambda: NO_STOP_WORDS, {"min_stop_words": None},
       lambda s, t: s["stop_words"] == 0),
    gq("stop_words", lambda: NO_STOP_WORDS.replace("Travellers rest", "Travellers rest with"),
       {"min_stop_words": None}, lambda s, t: s["stop_words"] == 1, id="one_stop_word"),
    gq("stop_words",   # as documented: "The" and "THE" are not "the"
       lambda: NO_STOP_WORDS.replace("Bright", "The bright").replace("Farmers", "THE farmers"),
       {"min_stop_words": None}, lambda s, t: s["stop_words"] == 0, id="capitalised_the"),

    # --- Gopher repetition
    gr("empty", lambda: "  \n\n \t \n", {}, lambda s, t: s == {},
       after="gopher_repetition:empty"),
    gr("duplicate_paragraphs", _dup_paragraphs, {"dup_para_frac": None},
       lambda s, t: s["dup_para_frac"] == 3 / 8 > 0.3),
    # a repeated paragraph repeats its lines: with this rule off, the line rule fires
    gr("duplicate_paragraph_chars", lambda: paragraphs(
        lines(*PROSE[0:3]), lines(*PROSE[3:6]), lines(*PROSE[6:9]), lines(*PROSE[0:3])),
       {"dup_para_char_frac": None},
       lambda s, t: s["dup_para_frac"] == 0.25 and s["dup_para_char_frac"] == pytest.approx(
           len(lines(*PROSE[0:3])) / len(t)) and s["dup_para_char_frac"] > 0.2,
       after="gopher_repetition:duplicate_line_chars"),
    gr("duplicate_lines", _dup_lines, {"dup_line_frac": None},
       lambda s, t: s["dup_line_frac"] == 4 / 12 > 0.3 and s["dup_para_frac"] == 0),
    gr("duplicate_line_chars", _dup_line_chars, {"dup_line_char_frac": None},
       lambda s, t: s["dup_line_frac"] == 1 / 7 and s["dup_line_char_frac"] == pytest.approx(
           len(LONG_URL) / len(t)) and s["dup_line_char_frac"] > 0.2),
    *[gr(f"top_{n}_gram", lambda n=n: top_gram_text(n, *_TOP[n]),
         {"top_n_grams": _without(_R.top_n_grams, n)},
         lambda s, t, n=n, thr=thr: s[f"top_{n}_gram_frac"] == pytest.approx(
             _TOP[n][1] * (6 * n - 1) / len(t)) and s[f"top_{n}_gram_frac"] > thr)
      for n, thr in _R.top_n_grams],
    *[gr(f"duplicate_{n}_gram", lambda n=n: dup_gram_text(n, DUP_WORDS[n]),
         {"dup_n_grams": _without(_R.dup_n_grams, n)},
         lambda s, t, n=n, thr=thr: s[f"dup_{n}_gram_frac"] == pytest.approx(
             4 * 5 * n / len(t)) and s[f"dup_{n}_gram_frac"] > thr)
      for n, thr in _R.dup_n_grams],

    # --- C4 page rules (the line rules drop lines: test_c4_line_rules)
    RuleCase(C4Quality, "lorem_ipsum",
             lambda: SENTENCES + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
             {"filter_lorem_ipsum": False}, lambda s, t: s["lines_kept"] == 12),
    RuleCase(C4Quality, "curly_bracket",
             lambda: SENTENCES + "\nWrite your name as {name} in the form.",
             {"filter_curly_bracket": False}, lambda s, t: s["lines_kept"] == 12),
    RuleCase(C4Quality, "too_few_sentences", lambda: lines(PROSE[0] + ".", PROSE[1] + "."),
             {"min_num_sentences": None}, lambda s, t: s["sentences"] == 2 < 5),
    RuleCase(lambda: C4Quality(max_removed_lines_ratio=0.5), "removed_lines",
             lambda: lines(*MENU[:7], *(s + "." for s in PROSE[:6])),
             {"max_removed_lines_ratio": None},
             lambda s, t: s["lines"] == 13 and s["lines_kept"] == 6 and 7 / 13 > 0.5),

    # --- FineWeb
    RuleCase(FineWebQuality, "empty", lambda: "\n  \n\t\n", {},
             lambda s, t: s["lines"] == 0, after="fineweb_quality:empty"),
    RuleCase(FineWebQuality, "line_punct_ratio", lambda: lines(*PROSE[:6]),
             {"line_punct_thr": 0.0}, lambda s, t: s["line_punct_ratio"] == 0.0 < 0.12),
    RuleCase(FineWebQuality, "short_line_ratio", lambda: lines(
        "Open daily.", "Free entry.", "Guided tours.", "Gift shop.", "Cafe inside.",
        "Parking nearby.", PROSE[0] + "."), {"short_line_thr": 1.0},
             lambda s, t: s["short_line_ratio"] == 6 / 7 > 0.67),
    RuleCase(FineWebQuality, "char_dup_ratio", _char_dup, {"char_duplicates_ratio": 1.0},
             lambda s, t: s["char_dup_ratio"] == pytest.approx(
                 len("Read more about the mill.") / (len(t) - t.count("\n")))
             and s["char_dup_ratio"] > 0.01),
    RuleCase(FineWebQuality, "list_ratio", lambda: ("\n" * 12).join(s + "." for s in PROSE[:6]),
             {"new_line_ratio": 1e9},
             lambda s, t: s["new_line_ratio"] == pytest.approx(60 / len(words(t)))
             and s["new_line_ratio"] > 0.3),

    # --- length
    RuleCase(lambda: LengthFilter(min_words=20), "too_short", lambda: "Only a few words here.",
             {"min_words": None}, lambda s, t: s["words"] == 5),
    RuleCase(lambda: LengthFilter(max_chars=100), "too_long", lambda: GOOD,
             {"max_chars": None}, lambda s, t: s["chars"] == len(GOOD) > 100),
]
RULE_FILTERS = (GopherQuality, GopherRepetition, C4Quality, FineWebQuality, LengthFilter)


def _case_id(c: RuleCase) -> str:
    return f"{c.cls.name}-{c.id or c.rule}"


def test_every_rule_has_a_case():
    """LanguageFilter's rules are covered in tests/test_language.py."""
    for cls in RULE_FILTERS:
        assert set(cls.rules) == {c.rule for c in RULE_CASES if c.cls is cls}, cls.name


@pytest.mark.parametrize("case", RULE_CASES, ids=_case_id)
def test_rule_fires(case: RuleCase):
    f = case.make()
    text = case.text()
    v = f(text)
    assert (v.keep, v.reason) == (False, f"{f.name}:{case.rule}"), v.signals
    assert v.rule == case.rule and not v.edited
    assert case.crossed(v.signals, text), v.signals
    # the same text with only this rule switched off: kept (or the documented next rule)
    off = type(f)(**{**f.config(), **case.off})
    assert off(text).reason == case.after


GOOD_REAL = [("speeches", "speeches/1791_george_washington_n.txt"),
             ("books", "books/moby-dick/chapter_1.txt")]


@pytest.mark.parametrize("make", [GopherQuality, GopherRepetition, C4Quality,
                                  lambda: C4Quality(mode="document"), FineWebQuality,
                                  LanguageFilter, lambda: load_chain("fineweb"),
                                  lambda: load_chain("gopher"), lambda: load_chain("c4"),
                                  lambda: load_chain("minimal")],
                         ids=["gopher_quality", "gopher_repetition", "c4_lines", "c4_document",
                              "fineweb_quality", "language", "fineweb", "gopher", "c4",
                              "minimal"])
def test_good_documents_pass(make):
    f = make()
    texts = [GOOD] + [demo_text(*k) for k in GOOD_REAL]
    for text in texts:
        v = f(text)
        assert v.keep, (v.reason, v.signals)


def test_gopher_quality_defaults_are_the_papers():
    assert GopherQuality().config() == {
        "min_doc_words": 50, "max_doc_words": 100_000,
        "min_avg_word_length": 3, "max_avg_word_length": 10,
        "max_symbol_word_ratio": 0.1, "max_bullet_lines_ratio": 0.9,
        "max_ellipsis_lines_ratio": 0.3, "min_alpha_words_ratio": 0.8, "min_stop_words": 2,
        "stop_words": ["the", "be", "to", "of", "and", "that", "have", "with"],
        "bullets": ["•", "-"]}
    assert set(GOPHER_STOP_WORDS) == {"the", "be", "to", "of", "and", "that", "have", "with"}


def test_gopher_repetition_defaults_are_the_papers():
    assert GopherRepetition().config() == {
        "dup_line_frac": 0.3, "dup_para_frac": 0.3,
        "dup_line_char_frac": 0.2, "dup_para_char_frac": 0.2,
        "top_n_grams": [[2, 0.2], [3, 0.18], [4, 0.16]],
        "dup_n_grams": [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]}


def test_c4_defaults_are_the_papers():
    assert C4Quality().config() == {
        "mode": "lines", "remove_citations": True, "filter_no_terminal_punct": True,
        "min_num_sentences": 5, "min_words_per_line": 3, "max_word_length": 1000,
        "filter_lorem_ipsum": True, "filter_javascript": True, "filter_curly_bracket": True,
        "filter_policy": True, "max_removed_lines_ratio": None}
    assert END_PUNCTUATION == (".", "?", "!", '"', "'")
    assert POLICY_SUBSTRINGS == ("terms of use", "privacy policy", "cookie policy",
                                 "uses cookies", "use of cookies", "use cookies")


def test_fineweb_defaults_are_the_papers():
    assert FineWebQuality().config() == {
        "line_punct_thr": 0.12, "line_punct_exclude_zero": False, "stop_chars": None,
        "short_line_thr": 0.67, "short_line_length": 30, "char_duplicates_ratio": 0.01,
        "new_line_ratio": 0.3}
    # stop_chars None: Unicode's Sentence_Terminal characters, not just ". ? !"
    f = FineWebQuality()
    assert f(lines(*(s + "。" for s in PROSE[:6]))).keep
    assert f(lines(*(s + "?" for s in PROSE[:6]))).keep


def test_thresholds_are_inclusive_where_the_paper_says_more_than():
    # "more than 90% of lines start with a bullet": exactly 90% is kept
    text = lines(*("- " + s + "." for s in PROSE[:9]), PROSE[9] + ".")
    v = GopherQuality()(text)
    assert v.signals["bullet_lines_ratio"] == 0.9 and v.keep
    # FineWeb: lines of exactly 30 characters count as short
    short = "x" * 29 + "."
    v = FineWebQuality()(lines(short, short.replace("x", "y"), PROSE[0] + "."))
    assert v.signals["short_line_ratio"] == pytest.approx(2 / 3) and v.keep


def test_top_n_gram_ties_go_to_the_n_gram_seen_first():
    # "ab cd" and "extraordinary circumstances" both appear 10 times (every other bigram once):
    # the one seen first is the top 2-gram, as datatrove's Counter.most_common(1) picks it
    fresh = iter(pseudo_words(20))
    short = " ".join(f"ab cd {next(fresh)}" for _ in range(10))
    long_ = " ".join(f"extraordinary circumstances {next(fresh)}" for _ in range(10))
    f = GopherRepetition()
    v = f(short + " " + long_)
    assert v.keep and v.signals["top_2_gram_frac"] == pytest.approx(50 / len(short + " " + long_))
    v = f(long_ + " " + short)
    assert v.reason == "gopher_repetition:top_2_gram"
    assert v.signals["top_2_gram_frac"] == pytest.approx(270 / len(long_ + " " + short))


def test_verdicts_do_not_leak_between_texts():
    # texts of the same length, one after the other: each verdict is its own text's
    a, b = GOOD, GOOD.upper()
    assert len(a) == len(b)
    for make in (GopherQuality, GopherRepetition, FineWebQuality, C4Quality):
        f = make()
        fresh = [f(b), f("x"), f(a)]
        f("x")
        assert [f(b), f("x"), f(a)] == fresh
        assert [f(a), f(b)] == [fresh[2], fresh[0]]
    assert GopherQuality()(a).signals["stop_words"] == 8
    assert GopherQuality()(b).signals["stop_words"] == 0


# --- 3. C4's line mode and chains -------------------------------------------------------

LINE_CASES = [   # (line rule, a line it drops, the parameters that keep the line)
    ("long_word", "The word " + "x" * 1001 + " is too long.", {"max_word_length": None}),
    ("no_terminal_punct", "A line without an end mark", {"filter_no_terminal_punct": False}),
    ("no_terminal_punct", "A line that trails off...", {"filter_no_terminal_punct": False}),
    ("too_few_words", "Too short.", {"min_words_per_line": None}),
    ("javascript", "Please enable JavaScript to use this site.", {"filter_javascript": False}),
    ("policy", "By continuing you accept our Privacy Policy.", {"filter_policy": False}),
    ("policy", "This site uses cookies to measure traffic.", {"filter_policy": False}),
]


@pytest.mark.parametrize("rule, line, keep_it", LINE_CASES,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(LINE_CASES)])
def test_c4_line_rules(rule, line, keep_it):
    text = lines(SENTENCES, line, PROSE[0] + " again.")
    v = C4Quality()(text)
    assert v.keep and v.edited
    assert v.text == lines(SENTENCES, PROSE[0] + " again.")
    assert v.signals[f"lines_{rule}"] == 1 and v.signals["lines"] == 14
    assert v.signals["lines_kept"] == 13
    others = {f"lines_{r}" for r, _, _ in LINE_CASES} - {f"lines_{rule}"}
    assert all(v.signals[k] == 0 for k in others)
    # document mode drops nothing and edits nothing, but counts the same
    d = C4Quality(mode="document")(text)
    assert d.keep and not d.edited and d.text is None and d.signals == v.signals
    # with the rule off the line stays
    v = C4Quality(**keep_it)(text)
    assert v.keep and (v.text is None or line.strip() in v.text.split("\n"))


def test_c4_lines_mode_strips_lines_and_removes_citations():
    text = lines("  " + PROSE[0] + " [1].  ", *(s + "." for s in PROSE[1:5]),
                 PROSE[5] + "[edit] and more[citation needed].")
    v = C4Quality()(text)
    assert v.keep and v.text == lines(PROSE[0] + " .", *(s + "." for s in PROSE[1:5]),
                                      PROSE[5] + " and more.")
    assert C4Quality(remove_citations=False)(text).text.split("\n")[0] == PROSE[0] + " [1]."
    # a text C4 keeps whole is not edited
    v = C4Quality()(SENTENCES)
    assert v.keep and v.text is None and not v.edited


def test_c4_removed_lines_in_document_mode():
    text = lines(*MENU[:7], *(s + "." for s in PROSE[:6]))
    f = C4Quality(mode="document", max_removed_lines_ratio=0.5)
    assert f(text).reason == "c4_quality:removed_lines"
    assert f(lines(*MENU[:5], *(s + "." for s in PROSE[:6]))).keep      # 5/11 removed
    assert C4Quality(mode="document")(text).keep                          # off by default


def test_c4_page_rules_in_both_modes():
    for mode in ("lines", "document"):
        f = C4Quality(mode=mode)
        lorem = SENTENCES + "\nLorem ipsum dolor sit amet, consectetur elit."
        assert f(lorem).rule == "lorem_ipsum"
        assert f(SENTENCES + "\nUse {braces} in the template now.").rule == "curly_bracket"
        assert f(PROSE[0] + ".").rule == "too_few_sentences"
        # a page rule only sees lines the line rules kept (as TFDS's c4_utils)
        assert f(SENTENCES + "\nfunction f() { return 1 }").keep


MENU_PAGE = lines(*MENU, *(s + "." for s in PROSE[:6]))   # 14 short lines, 6 sentences
PAGE_BODY = lines(*(s + "." for s in PROSE[:6]))


def test_chain_passes_edited_text_on():
    # FineWeb alone removes the page (14 of 20 lines are short) ...
    assert FineWebQuality()(MENU_PAGE).reason == "fineweb_quality:short_line_ratio"
    # ... after C4 has dropped the menu lines, FineWeb sees the body only and keeps it
    chain = FilterChain([C4Quality(), FineWebQuality()])
    v = chain(MENU_PAGE)
    assert v.keep and v.edited and v.text == PAGE_BODY
    assert v.signals["fineweb_quality.lines"] == 6
    assert v.signals["c4_quality.lines"] == 20 and v.signals["c4_quality.lines_kept"] == 6
    # document mode decides without editing: FineWeb then sees the menu
    v = FilterChain([C4Quality(mode="document"), FineWebQuality()])(MENU_PAGE)
    assert v.reason == "fineweb_quality:short_line_ratio" and v.text is None


def test_chain_first_removal_wins_and_carries_the_final_text():
    v = FilterChain([FineWebQuality(), C4Quality()])(MENU_PAGE)
    assert v.reason == "fineweb_quality:short_line_ratio" and v.text is None
    assert not any(k.startswith("c4_quality.") for k in v.signals)
    # removed after an edit: the verdict carries the edited text, the later filter saw it
    gopher = GopherQuality(min_doc_words=100)
    assert gopher(MENU_PAGE).keep and not gopher(PAGE_BODY).keep
    v = FilterChain([C4Quality(), gopher])(MENU_PAGE)
    assert v.reason == "gopher_quality:word_count" and v.edited and v.text == PAGE_BODY
    assert v.signals["gopher_quality.words"] == gopher(PAGE_BODY).signals["words"]
    # both filters would remove this text: the first in the chain names the reason
    text = "Short text."
    assert FilterChain([GopherQuality(), FineWebQuality(short_line_thr=0.5)])(text).reason == \
        "gopher_quality:word_count"
    assert FilterChain([FineWebQuality(short_line_thr=0.5), GopherQuality()])(text).reason == \
        "fineweb_quality:short_line_ratio"


def test_chain_signals_are_keyed_filter_dot_signal():
    chain = load_chain("fineweb")
    v = chain(MENU_PAGE + "\n\n" + GOOD)
    text = MENU_PAGE + "\n\n" + GOOD
    seen = set()
    for f in chain.filters:
        own = f(text)
        mine = {k.split(".", 1)[1]: val for k, val in v.signals.items()
                if k.startswith(f.name + ".")}
        assert mine == own.signals, f.name
        seen |= {f"{f.name}.{k}" for k in own.signals}
        if own.text is not None:
            text = own.text
    assert seen == set(v.signals)
    assert v.keep and v.text == text


def test_chain_rejects_a_filter_twice():
    with pytest.raises(FilterParamError, match="gopher_quality"):
        FilterChain([GopherQuality(), FineWebQuality(), GopherQuality(min_doc_words=1)])
    with pytest.raises(ConfigError, match="gopher_quality"):
        load_chain(config={"filters": ["gopher_quality", "gopher_quality"]})


def test_chain_without_edits_has_no_text():
    v = load_chain("gopher")(GOOD)
    assert v.keep and v.text is None and not v.edited
    assert set(v.signals) >= {"gopher_quality.words", "gopher_repetition.dup_5_gram_frac"}


# --- 4. presets and filter YAML -----------------------------------------------------------

def _yaml_entries(data: dict) -> list[tuple[str, dict]]:
    out = []
    for item in data["filters"]:
        if isinstance(item, str):
            out.append((item, {}))
        else:
            ((name, params),) = item.items()
            out.append((name, params or {}))
    return out


@pytest.mark.parametrize("name", PRESETS)
def test_presets_hold_what_their_yaml_says(name):
    data = yaml.safe_load((presets_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    assert data.get("description")
    entries = _yaml_entries(data)
    chain = load_chain(name)
    assert [f.name for f in chain.filters] == [n for n, _ in entries]
    for f, (_, params) in zip(chain.filters, entries):
        defaults = type(f)().config()
        assert f.config() == {**defaults, **params}, f.name


def test_preset_files_and_names_agree():
    assert {p.stem for p in presets_dir().glob("*.yaml")} == set(PRESETS)
    assert presets_dir() == REPO / "configs" / "filters"
    assert [f.name for f in load_chain("fineweb").filters] == [
        "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
    c4 = load_chain("fineweb").filters[3]
    assert c4.mode == "lines" and c4.filter_no_terminal_punct is False
    assert [f.name for f in load_chain("gopher").filters] == ["gopher_quality", "gopher_repetition"]
    assert [f.name for f in load_chain("minimal").filters] == ["length", "gopher_repetition"]


def test_load_chain_defaults_to_fineweb():
    assert DEFAULT_PRESET == "fineweb"
    assert load_chain().config() == load_chain("fineweb").config()
    assert load_chain(config={"preset": "fineweb"}).config() == load_chain("fineweb").config()


def test_user_yaml_composes_filters_and_overrides_thresholds(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "description: my chain\n"
        "filters:\n"
        "  - length: {min_words: 5}\n"
        "  - gopher_quality: {min_doc_words: 10, max_bullet_lines_ratio: null}\n"
        "  - c4_quality:\n"
        "      mode: document\n"
        "      max_removed_lines_ratio: 0.5\n"
        "  - gopher_repetition\n", encoding="utf-8")
    chain = load_chain(config=path)
    assert [f.name for f in chain.filters] == ["length", "gopher_quality", "c4_quality",
                                                "gopher_repetition"]
    gq_, c4 = chain.filters[1], chain.filters[2]
    assert gq_.min_doc_words == 10 and gq_.max_bullet_lines_ratio is None
    assert gq_.max_doc_words == 100_000                      # the rest stay at the defaults
    assert c4.mode == "document" and c4.max_removed_lines_ratio == 0.5
    # the overridden thresholds decide: a 17-word bulleted text passes this gopher_quality
    text = lines(*("- " + s + "." for s in PROSE[:6]))
    assert not GopherQuality()(text).keep and gq_(text).keep
    # the same mapping, given as a dict
    assert load_chain(config=yaml.safe_load(path.read_text())).config() == chain.config()
    assert load_chain(config=str(path)).config() == chain.config()


def test_preset_with_overrides(tmp_path):
    path = tmp_path / "fw.yaml"
    path.write_text("preset: fineweb\n"
                    "overrides:\n"
                    "  gopher_quality: {min_doc_words: 20}\n"
                    "  c4_quality: {mode: document}\n"
                    "  language: {min_confidence: 0.9}\n", encoding="utf-8")
    chain = load_chain(config=path)
    base = load_chain("fineweb")
    assert [f.name for f in chain.filters] == [f.name for f in base.filters]
    by = {f.name: f for f in chain.filters}
    assert by["gopher_quality"].min_doc_words == 20
    assert by["c4_quality"].mode == "document"
    assert by["c4_quality"].filter_no_terminal_punct is False     # the preset's own setting stays
    assert by["language"].min_confidence == 0.9 and by["language"].languages == ["en"]
    assert by["fineweb_quality"].config() == FineWebQuality().config()
    # the preset file itself is untouched
    assert load_chain("fineweb").config() == base.config()


CONFIG_ERRORS = {
    # id: (file text, what the message must name)
    "unknown_filter": ("filters:\n  - gopher_quality\n  - gopher_qualty\n",
                       ["filters[1]", "unknown filter 'gopher_qualty'", "gopher_quality"]),
    "unknown_parameter": ("filters:\n  - gopher_quality: {min_words: 3}\n",
                          ["filters[0]", "gopher_quality.min_words", "not permitted"]),
    "negative_threshold": (
        "filters:\n  - fineweb_quality\n  - gopher_quality: {min_doc_words: -1}\n",
        ["filters[1]", "gopher_quality.min_doc_words", "greater than or equal to 0"]),
    "ratio_above_one": (
        "filters:\n  - gopher_quality: {min_alpha_words_ratio: 1.5}\n",
        ["filters[0]", "gopher_quality.min_alpha_words_ratio", "less than or equal to 1"]),
    "wrong_type": ("filters:\n  - c4_quality: {min_num_sentences: five}\n",
                   ["filters[0]", "c4_quality.min_num_sentences", "integer", "'five'"]),
    "wrong_choice": ("filters:\n  - c4_quality: {mode: paragraphs}\n",
                     ["filters[0]", "c4_quality.mode", "'lines' or 'document'"]),
    "parameters_not_a_mapping": ("filters:\n  - gopher_quality: 50\n",
                                 ["filters[0].gopher_quality", "must be a mapping"]),
    "preset_and_filters": ("preset: gopher\nfilters: [gopher_quality]\n",
                           ["either 'preset' or 'filters'"]),
    "neither": ("description: nothing\n", ["either 'preset' or 'filters'"]),
    "empty_file": ("", ["either 'preset' or 'filters'"]),
    "override_not_in_chain": ("preset: c4\noverrides:\n  gopher_quality: {min_doc_words: 10}\n",
                              ["overrides.gopher_quality", "no such filter", "c4_quality"]),
    "override_not_a_mapping": ("preset: fineweb\noverrides:\n  gopher_quality: 5\n",
                               ["overrides.gopher_quality", "must be a mapping"]),
    "top_level_list": ("- gopher_quality\n- c4_quality\n", ["top level must be a mapping", "list"]),
    "top_level_scalar": ("gopher_quality\n", ["top level must be a mapping", "str"]),
    "invalid_yaml": ("filters: [gopher_quality\n  - c4\n", ["not valid YAML", "line"]),
    "unknown_key": ("filtres: [gopher_quality]\n", ["unknown key(s) ['filtres']"]),
    "empty_filter_list": ("filters: []\n", [".filters", "non-empty list"]),
    "two_keys_in_an_item": ("filters:\n  - {gopher_quality: {}, c4_quality: {}}\n",
                            ["filters[0]", "one-key mapping"]),
    "duplicate_filter": ("filters: [fineweb_quality, fineweb_quality]\n",
                         ["repeated", "fineweb_quality"]),
    "user_without_path": ("filters:\n  - user: {name: mine}\n", ["filters[0]", "user.path"]),
    "unknown_language": ("filters:\n  - language: {languages: [english]}\n",
                         ["filters[0]", "language.languages", "english"]),
}


@pytest.mark.parametrize("text, says", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_config_errors_name_the_field(tmp_path, text, says):
    path = tmp_path / "chain.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_chain(config=path)
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert str(path) in msg
    for s in says:
        assert s in msg, (s, msg)


def test_config_errors_outside_files(tmp_path):
    with pytest.raises(ConfigError, match="not found") as e:
        load_chain(config=tmp_path / "missing.yaml")
    assert str(tmp_path / "missing.yaml") in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown filter preset 'gopherr'.*fineweb"):
        load_chain("gopherr")
    with pytest.raises(ConfigError, match="not both"):
        load_chain("gopher", config={"preset": "c4"})
    with pytest.raises(ConfigError, match=r"config\.filters\[0\]: gopher_quality\.min_doc_words"):
        load_chain(config={"filters": [{"gopher_quality": {"min_doc_words": "many"}}]})
    with pytest.raises(ConfigError, match=r"config\.preset"):
        load_chain(config={"preset": ["gopher"]})


def test_override_errors_name_the_override(tmp_path):
    path = tmp_path / "fw.yaml"
    path.write_text("preset: fineweb\noverrides:\n  gopher_quality: {min_doc_words: -5}\n")
    with pytest.raises(ConfigError) as e:
        load_chain(config=path)
    assert "overrides.gopher_quality.min_doc_words" in str(e.value)


def test_unknown_preset_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("preset: gopherr\n")
    with pytest.raises(ConfigError) as e:
        load_chain(config=path)
    assert str(path) in str(e.value) and "gopherr" in str(e.value)


# --- 5. user filters ----------------------------------------------------------------------

class NoTables(Filter):
    """A user's Filter subclass: removes pages with more than max_tables HTML tables."""

    name = "no_tables"
    rules = ("tables",)

    class Params(Params):
        max_tables: int = Field(0, ge=0)

    def check(self, text: str) -> Verdict:
        sig = {"tables": text.count("<table")}
        if sig["tables"] > self.max_tables:
            return self.remove("tables", sig)
        return Verdict(True, None, sig)


def no_lorem(text: str) -> bool:
    return "lorem" not in text.lower()


def not_shouting(text: str) -> tuple[bool, str | None]:
    return (not text.isupper(), "all_caps")


def no_reason(text: str) -> tuple[bool, str | None]:
    return ("reject me" not in text, None)


def by_verdict(text: str) -> Verdict:
    if "buy now" in text.lower():
        return Verdict(False, "ads:advert", {"hits": text.lower().count("buy now")})
    if "spam" in text.lower():
        return Verdict(False)
    return Verdict(True, None, {"hits": 0})


class MinLines:
    """A callable class, built with the params."""

    def __init__(self, lines: int = 2):
        self.lines = lines

    def __call__(self, text: str):
        return (text.count("\n") + 1 >= self.lines, "few_lines")


def returns_a_string(text: str):
    return "yes"


NOT_CALLABLE = "a string"


def test_user_filter_subclass_from_config():
    chain = load_chain(config={"filters": [
        "gopher_repetition",
        {"user": {"path": f"{THIS}:NoTables", "params": {"max_tables": 1}}}]})
    f = chain.filters[1]
    assert f.name == "no_tables" and f.reasons == ("no_tables:tables", "no_tables:rejected")
    assert chain.reasons[-2:] == ("no_tables:tables", "no_tables:rejected")
    v = chain(GOOD + "\n\n<table><tr><td>1</td></tr></table> and <table></table>.")
    assert v.reason == "no_tables:tables" and v.signals["no_tables.tables"] == 2
    assert chain(GOOD + "\n\nOne <table></table> only.").keep
    # renamed, the reasons follow the name
    f = UserFilter(path=f"{THIS}:NoTables", name="html_tables")
    assert f("<table>").reason == "html_tables:tables" and f("plain text").keep
    assert f.reasons == ("html_tables:tables", "html_tables:rejected")


def test_user_filter_by_the_path_a_user_writes(tmp_path):
    # needs the repository root on sys.path, as `python -m pytest` from the root gives
    path = tmp_path / "mine.yaml"
    path.write_text("filters:\n"
                    "  - user: {path: 'tests.test_filters:NoTables', params: {max_tables: 0}}\n")
    chain = load_chain(config=path)
    assert chain("<table></table>").reason == "no_tables:tables"

@pytest.mark.parametrize("path, text, reason", [
    ("no_lorem", "Lorem ipsum dolor.", "no_lorem:rejected"),
    ("not_shouting", "STOP SHOUTING", "not_shouting:all_caps"),
    ("no_reason", "Please reject me.", "no_reason:rejected"),
    ("by_verdict", "Buy now! Buy now!", "by_verdict:advert"),
    ("by_verdict", "spam", "by_verdict:rejected"),
    ("MinLines", "one line", "MinLines:few_lines"),
])
def test_user_function_results(path, text, reason):
    f = load_chain(config={"filters": [{"user": {"path": f"{THIS}:{path}"}}]}).filters[0]
    v = f(text)
    assert (v.keep, v.reason) == (False, reason)
    assert f(GOOD).keep and f(GOOD).reason is None
    assert f.reasons[-1] == f"{f.name}:rejected"
    if path == "by_verdict":
        assert f("Buy now! Buy now!").signals == {"hits": 2}
    named = UserFilter(path=f"{THIS}:{path}", name="mine")
    assert named(text).reason == "mine:" + reason.split(":")[1]


def test_user_callable_class_takes_params():
    f = UserFilter(path=f"{THIS}:MinLines", params={"lines": 3}, rules=["few_lines"])
    assert f("a\nb").reason == "MinLines:few_lines" and f("a\nb\nc").keep
    assert f.reasons == ("MinLines:few_lines", "MinLines:rejected")


def test_user_filter_dotted_path_and_yaml(tmp_path):
    assert UserFilter(path=f"{THIS}.no_lorem")("lorem").reason == "no_lorem:rejected"
    path = tmp_path / "u.yaml"
    path.write_text(f"filters:\n  - user: {{path: '{THIS}:no_lorem', name: lorem_free}}\n"
                    f"  - user: {{path: '{THIS}:NoTables'}}\n")
    chain = load_chain(config=path)
    assert [f.name for f in chain.filters] == ["lorem_free", "no_tables"]
    assert chain("Lorem ipsum.").reason == "lorem_free:rejected"


@pytest.mark.parametrize("params, says", [
    ({"path": f"{THIS}:NoSuchThing"}, ["no attribute", "NoSuchThing"]),
    ({"path": "no_such_module_xyz.filters:Thing"}, ["cannot import", "no_such_module_xyz"]),
    ({"path": "no_colon_or_dot"}, ["must look like", "package.module:Name"]),
    ({"path": f"{THIS}:no_lorem", "params": {"x": 1}}, ["is a function", "no params"]),
    ({"path": f"{THIS}:NOT_CALLABLE"}, ["not callable"]),
    ({"path": f"{THIS}:MinLines", "params": {"rows": 3}}, ["MinLines", "rows"]),
    ({"path": f"{THIS}:NoTables", "params": {"max_tables": -1}}, ["no_tables.max_tables"]),
    ({"path": f"{THIS}:NoTables", "name": "has space"}, ["user.name"]),
    ({"path": f"{THIS}:NoTables", "colour": "red"}, ["user.colour"]),
])
def test_bad_user_filters(params, says):
    with pytest.raises(FilterParamError) as e:
        UserFilter(**params)
    for s in says:
        assert s in str(e.value), (s, str(e.value))
    with pytest.raises(ConfigError) as e:
        load_chain(config={"filters": [{"user": params}]})
    assert "filters[0]" in str(e.value)


def test_user_filter_with_a_wrong_return_type():
    f = UserFilter(path=f"{THIS}:returns_a_string")
    with pytest.raises(TypeError, match="returned str"):
        f("text")


def test_the_same_user_filter_twice_needs_two_names():
    two = [{"user": {"path": f"{THIS}:no_lorem"}}, {"user": {"path": f"{THIS}:no_lorem"}}]
    with pytest.raises(ConfigError, match="no_lorem"):
        load_chain(config={"filters": two})
    two[1]["user"]["name"] = "no_lorem_again"
    assert len(load_chain(config={"filters": two}).filters) == 2


def test_chain_config_names_user_filters():
    chain = load_chain(config={"filters": ["gopher_quality",
                                           {"user": {"path": f"{THIS}:no_lorem"}}]})
    assert [c["name"] for c in chain.config()] == ["gopher_quality", "no_lorem"]


# --- 6. parameters ------------------------------------------------------------------------

BAD_PARAMS = [
    (GopherQuality, {"min_doc_words": -1}, "gopher_quality.min_doc_words"),
    (GopherQuality, {"min_doc_words": 1.5}, "gopher_quality.min_doc_words"),
    (GopherQuality, {"max_bullet_lines_ratio": 1.5}, "gopher_quality.max_bullet_lines_ratio"),
    (GopherQuality, {"max_symbol_word_ratio": float("nan")},
     "gopher_quality.max_symbol_word_ratio"),
    (GopherQuality, {"stop_words": "the"}, "gopher_quality.stop_words"),
    (GopherQuality, {"min_words": 3}, "gopher_quality.min_words"),
    (GopherRepetition, {"dup_line_frac": -0.1}, "gopher_repetition.dup_line_frac"),
    (GopherRepetition, {"top_n_grams": [(2, 0.2, 1)]}, "gopher_repetition.top_n_grams"),
    (GopherRepetition, {"dup_n_grams": "5"}, "gopher_repetition.dup_n_grams"),
    (C4Quality, {"mode": "paragraphs"}, "c4_quality.mode"),
    (C4Quality, {"max_word_length": 0}, "c4_quality.max_word_length"),
    (C4Quality, {"min_num_sentences": -1}, "c4_quality.min_num_sentences"),
    (C4Quality, {"max_removed_lines_ratio": 2}, "c4_quality.max_removed_lines_ratio"),
    (FineWebQuality, {"line_punct_thr": 1.2}, "fineweb_quality.line_punct_thr"),
    (FineWebQuality, {"line_punct_thr": None}, "fineweb_quality.line_punct_thr"),
    (FineWebQuality, {"short_line_length": -1}, "fineweb_quality.short_line_length"),
    (FineWebQuality, {"char_duplicates_ratio": -0.5}, "fineweb_quality.char_duplicates_ratio"),
    (LengthFilter, {"min_chars": -1}, "length.min_chars"),
    (LengthFilter, {"min_words": 10, "max_words": 5},
     "min_words (10) is larger than max_words (5)"),
]


@pytest.mark.parametrize("cls, params, says", BAD_PARAMS,
                         ids=[f"{c.name}-{'-'.join(p)}" for c, p, _ in BAD_PARAMS])
def test_bad_params_name_the_field(cls, params, says):
    with pytest.raises(FilterParamError) as e:
        cls(**params)
    assert isinstance(e.value, ValueError)
    assert says in str(e.value)


@pytest.mark.parametrize("params", [
    {"top_n_grams": [(0, 0.2)]},
    {"dup_n_grams": [(-3, 0.1)]},       # left unchecked, the compiled scan never ends
    {"top_n_grams": [(2, -0.5)]},       # every document removed
], ids=["zero_size", "negative_size", "negative_fraction"])
def test_gopher_repetition_checks_its_n_grams(params):
    with pytest.raises(FilterParamError):
        GopherRepetition(**params)


@pytest.mark.parametrize("params", [
    {"min_doc_words": 200, "max_doc_words": 100},
    {"min_avg_word_length": 11, "max_avg_word_length": 10},
], ids=["words", "word_length"])
def test_gopher_quality_rejects_min_above_max(params):
    with pytest.raises(FilterParamError):
        GopherQuality(**params)


CONFIGURED = {   # built in the test: a user filter imports this module
    "gopher_quality": lambda: GopherQuality(min_doc_words=10, max_symbol_word_ratio=None,
                                            stop_words=["the", "a"], bullets=["*"]),
    "gopher_repetition": lambda: GopherRepetition(top_n_grams=[(2, 0.3)],
                                                  dup_n_grams=[(5, 0.2), (11, 0.05)],
                                                  dup_line_frac=None),
    "c4_quality": lambda: C4Quality(mode="document", min_num_sentences=3,
                                    max_removed_lines_ratio=0.4, filter_policy=False),
    "fineweb_quality": lambda: FineWebQuality(stop_chars=[".", "!"], short_line_length=20,
                                              line_punct_exclude_zero=True),
    "language": lambda: LanguageFilter(languages=["en", "de"], min_confidence=0.5,
                                       max_bytes=10_000),
    "length": lambda: LengthFilter(min_chars=10, max_words=1000),
    "user": lambda: UserFilter(path=f"{THIS}:NoTables", params={"max_tables": 2},
                               name="tables"),
}


@pytest.mark.parametrize("make", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_config_round_trips_as_plain_data(make):
    f = make()
    cfg = f.config()
    plain = json.loads(json.dumps(cfg))
    assert plain == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg
    g = type(f)(**plain)
    assert g.config() == cfg and g.reasons == f.reasons
    assert cfg != type(f)(**({"path": cfg["path"]} if "path" in cfg else {})).config()
    for text in (GOOD, MENU_PAGE, _dup_lines(), "<table><table><table>", ""):
        assert g(text) == f(text)


def test_custom_n_gram_sizes_get_rule_names():
    f = GopherRepetition(top_n_grams=[(2, 0.3)], dup_n_grams=[(5, 0.2), (11, 0.05)])
    assert "duplicate_11_gram" in f.rules and "gopher_repetition:duplicate_11_gram" in f.reasons
    assert GopherRepetition().rules == GopherRepetition.rules    # the class is untouched


@pytest.mark.parametrize("preset", PRESETS)
def test_chain_config_rebuilds_the_chain(preset):
    from curation.filters import build_chain
    cfg = load_chain(preset).config()
    entries = [(c["name"], {k: v for k, v in c.items() if k != "name"})
               for c in json.loads(json.dumps(cfg))]
    assert build_chain(entries).config() == cfg


SWITCHED_OFF = {   # every optional threshold None (and the flags off): nothing is removed
    GopherQuality: {k: None for k in ("min_doc_words", "max_doc_words", "min_avg_word_length",
                                      "max_avg_word_length", "max_symbol_word_ratio",
                                      "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                                      "min_alpha_words_ratio", "min_stop_words")},
    GopherRepetition: {"dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None,
                       "dup_para_char_frac": None, "top_n_grams": [], "dup_n_grams": []},
    C4Quality: {"min_num_sentences": None, "min_words_per_line": None, "max_word_length": None,
                "max_removed_lines_ratio": None, "filter_lorem_ipsum": False,
                "filter_curly_bracket": False},
    LengthFilter: {},
}


@pytest.mark.parametrize("cls", list(SWITCHED_OFF), ids=lambda c: c.name)
def test_none_switches_rules_off(cls):
    optional = {k for k, fld in cls.Params.model_fields.items()
                if not fld.is_required() and _allows_none(fld.annotation)}
    assert optional <= set(SWITCHED_OFF[cls]) or cls is LengthFilter
    f = cls(**SWITCHED_OFF[cls])
    cases = [c for c in RULE_CASES if c.cls is cls and c.after is None]
    assert cases
    for c in cases:
        assert f(c.text()).keep, c.rule


def _allows_none(annotation) -> bool:
    import types
    import typing
    return type(None) in getattr(annotation, "__args__", ()) and \
        isinstance(annotation, (types.UnionType, type(typing.Optional[int])))


# --- 7. the word tokenizer ----------------------------------------------------------------

@pytest.mark.parametrize("text, tokens", [
    ("don't", ["do", "n't"]),
    ("Don't", ["Do", "n't"]),
    ("can't won't", ["ca", "n't", "wo", "n't"]),
    ("I'm sure it's fine", ["I", "'m", "sure", "it", "'s", "fine"]),
    ("cannot", ["can", "not"]),
    ("gonna", ["gon", "na"]),
    ("U.S.", ["U.S."]),
    ("e.g. this", ["e.g.", "this"]),
    ("Mr. Smith", ["Mr.", "Smith"]),
    ("Hello, world!", ["Hello", ",", "world", "!"]),
    ("The end.", ["The", "end", "."]),
    ("Wait for it...", ["Wait", "for", "it", "..."]),
    ("https://www.example.com/a?b=c", ["https://www.example.com/a?b=c"]),
    ("see www.example.org now", ["see", "www.example.org", "now"]),
    ("mail me@example.com", ["mail", "me@example.com"]),
    ("$5.00", ["$", "5.00"]),
    ("(test)", ["(", "test", ")"]),
    ('"quoted"', ['"', "quoted", '"']),
    ("10km", ["10", "km"]),
    ("3.14%", ["3.14", "%"]),
    ("12:30 and 1.5", ["12:30", "and", "1.5"]),
    ("well-known", ["well", "-", "known"]),
    ("smile :)", ["smile", ":)"]),
    ("#tag", ["#", "tag"]),
    ("  spaces\tand\n\nnewlines  ", ["spaces", "and", "newlines"]),
    ("Lovin' it, goin' home.", ["Lovin'", "it", ",", "goin'", "home", "."]),
    ("", []),
])
def test_words_match_spacy_english(text, tokens):
    assert words(text) == tokens


def test_words_are_a_partition_of_the_text():
    # every token is a piece of the text, in order: nothing invented, nothing reordered
    text = demo_text(*GOOD_REAL[1]) + "\n" + MENU_PAGE + " don't U.S. $5.00 (x) 10km :)"
    toks = words(text)
    assert "".join(toks) == "".join(text.split())


# --- 8. linear time -----------------------------------------------------------------------
# Every filter of the fineweb preset, C4 in lines mode, and Gopher quality with every rule
# evaluated, on inputs built to find super-linear paths. They must only finish.

@pytest.fixture(scope="module")
def scale_filters() -> list[Filter]:
    return [*load_chain("fineweb").filters, C4Quality(mode="lines"),
            GopherQuality(**SWITCHED_OFF[GopherQuality])]


def _run_all(filters: list[Filter], text: str) -> list[Verdict]:
    out = []
    for f in filters:
        v = f(text)
        assert isinstance(v, Verdict) and isinstance(v.keep, bool), f.name
        out.append(v)
    return out


@pytest.mark.timeout(120)
def test_20_mb_document(scale_filters):
    paras = GOOD.split("\n\n")
    parts, size = [], 0
    while size < 20_000_000:        # numbered, so no paragraph or line repeats
        parts.append(f"{len(parts)}. {paras[len(parts) % len(paras)]}")
        size += len(parts[-1]) + 2
    text = "\n\n".join(parts)
    assert len(text) >= 20_000_000
    lang, rep, qual, c4, fw, c4_lines, qual_all = _run_all(scale_filters, text)
    # the preset's language filter reads a prefix: long English stays English
    assert lang.keep and lang.signals["language"] == "en"
    # the whole text was read: the counts are the text's, not a prefix's
    assert qual.reason == "gopher_quality:word_count" and qual.signals["words"] > 3_000_000
    assert qual_all.keep and qual_all.signals["words"] == qual.signals["words"]
    assert rep.signals["dup_para_frac"] == 0 and rep.reason == "gopher_repetition:duplicate_5_gram"
    assert c4.keep and c4.signals["lines"] == text.count("\n") + 1
    assert c4_lines.keep and c4_lines.signals["lines_kept"] == len(parts)
    assert fw.keep and fw.signals["lines"] == len(parts)


ONE_MILLION_CHAR_LINES = {
    "prose": lambda: " ".join(itertools.islice(itertools.cycle(" ".join(PROSE).split()),
                                               250_000))[:1_000_000],
    "punctuation": lambda: ("[12] (U.S.) don't-stop x...y #tag $5.00 e.g. a/b:c "
                            * 30_000)[:1_000_000],
    "one_word": lambda: ("a.b-c'd(e)" * 100_000),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ONE_MILLION_CHAR_LINES)
def test_one_million_character_line(scale_filters, kind):
    text = ONE_MILLION_CHAR_LINES[kind]()
    assert len(text) == 1_000_000 and "\n" not in text
    verdicts = _run_all(scale_filters, text)
    assert verdicts[4].signals["lines"] == 1        # fineweb saw one line


@pytest.mark.timeout(120)
@pytest.mark.parametrize("char", ["a", " ", ".", "\n", "#", "-"],
                         ids=["a", "space", "dot", "newline", "hash", "hyphen"])
def test_five_million_copies_of_one_character(scale_filters, char):
    text = char * 5_000_000
    verdicts = _run_all(scale_filters, text)
    assert not all(v.keep for v in verdicts[:5])    # the fineweb preset removes each


# --- 9. threads ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def thread_texts() -> list[str]:
    texts = [d["text"] for name in ("web", "books", "wiki", "email") for d in demo_docs(name)[:25]]
    texts += [c.text() for c in RULE_CASES if c.rule not in ("word_count",)]
    texts += [MENU_PAGE, GOOD, ""]
    return texts


@pytest.mark.parametrize("make", ALL_FILTERS.values(), ids=ALL_FILTERS.keys())
def test_one_instance_in_four_threads_agrees_with_sequential(make, thread_texts):
    f = make()
    want = [f(t) for t in thread_texts]
    assert len({v.reason for v in want}) > 1 or make is user_filter
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(f, thread_texts))
    assert got == want


def test_different_filters_in_threads_share_nothing_wrong(thread_texts):
    # filters that share the tokenizer's cache, on different texts at the same time
    filters = [GopherQuality(), GopherRepetition(), FineWebQuality(), C4Quality(),
               load_chain("fineweb")]
    jobs = [(f, t) for t in thread_texts for f in filters]
    want = [f(t) for f, t in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: job[0](job[1]), jobs))
    assert got == want
