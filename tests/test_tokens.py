"""The compiled token path (curation.filters.tokens) equals the Python reference
(curation.filters.text.words and its predicates)."""
from __future__ import annotations

import random
import threading
import unicodedata

import numpy as np
import pytest

from curation.demo import demo_glob
from curation.filters import text as T
from curation.filters import tokens as K
from curation.io import expand_inputs, read_documents
from tests.conftest import read_jsonl_gz, shared_corpus


def demo_texts() -> list[str]:
    return [d.text for f in expand_inputs([demo_glob()]) for d in read_documents(f)]

ODD = ("a\x1cb\x1dc\x1ed\x1fe\x85f\u2028g\u2029h\u3000i\u00a0j\u200bk\ufeffl\u180em\u2007n"
       " \ud800x \U0001F600! don't U.S. e.g. $5.00 (test) http://x.org/a?b=c 5km ...end.. :-) "
       "l'été «quoi» 1,000,000 C++ y'all gonna 9am 12:30 — hi—there ¿qué? ")


def check_same(text: str) -> K.Tokens:
    tk = K.tokens(text)
    ref = T.words(text)
    assert tk.strings(text) == ref
    for tok, f in zip(ref, tk.flags.tolist()):
        assert bool(f & K.T_WORD) == (not T.is_symbol_word(tok)), tok
        assert bool(f & K.T_ALPHA) == T.has_alpha(tok), tok
        assert bool(f & K.T_PUNCT) == T.is_punct(tok), tok
        assert bool(f & K.T_TERM) == (tok in T.TERMINAL_PUNCTUATION), tok
    by_string: dict[str, int] = {}
    for tok, h in zip(ref, tk.hash.tolist()):
        assert by_string.setdefault(tok, h) == h
    assert len(set(by_string.values())) == len(by_string)
    return tk


def test_demo_corpus_equals_the_reference():
    docs = demo_texts()
    assert len(docs) > 1000
    for d in docs[::3]:
        check_same(d)


@pytest.mark.parametrize("name,limit", [("web_noisy.jsonl.gz", 400), ("code_python_stdlib.jsonl.gz", 100),
                                        ("email_spamassassin.jsonl.gz", 300), ("reference_foldoc.jsonl.gz", 500)])
def test_shared_corpora_equal_the_reference(name, limit):
    for row in read_jsonl_gz(shared_corpus(name), limit):
        check_same(row["text"])


def test_odd_whitespace_surrogates_and_specials():
    tk = check_same(ODD)
    assert len(tk) == len(T.words(ODD)) > 40
    assert check_same("").length.shape == (0,)
    assert len(check_same(" \n\t ")) == 0


def test_random_text_from_a_mean_alphabet():
    alphabet = list("aZ9 .,'’-:;!?()[]{}\"$%#@/…\n\t") + ["\u0301", "\U0001F600", "\ud800", "ß", "İ", "\u3000"]
    rng = random.Random(7)
    for _ in range(300):
        check_same("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))))


def test_char_classes_equal_unicodedata_everywhere():
    table = K.char_classes()
    cp = np.arange(0x110000)
    chars = [chr(c) for c in range(0x110000)]
    symbol = np.fromiter((unicodedata.category(c)[0] in "PSC" for c in chars), bool, 0x110000)
    assert np.array_equal((table & K.C_SYMBOL) > 0, symbol)
    alpha = np.fromiter(map(str.isalpha, chars), bool, 0x110000)
    assert np.array_equal((table & K.C_ALPHA) > 0, alpha)
    space = np.fromiter(map(str.isspace, chars), bool, 0x110000)
    assert np.array_equal((table & K.C_SPACE) > 0, space)
    assert set(cp[(table & K.C_TERM) > 0].tolist()) == set(map(ord, T.TERMINAL_PUNCTUATION))


def test_cache_reset_and_uncached_long_chunks(monkeypatch):
    monkeypatch.setattr(K, "_RESET_POOL", 50)
    text = ("a-very-long-hyphenated-chunk-that-is-never-stored-in-the-cache, " * 3
            + "short words, again. " * 20)
    for _ in range(5):
        check_same(text)
    assert K._cache().state[1] < 200


def test_a_full_table_starts_over(monkeypatch):
    monkeypatch.setattr(K, "_TABLE_BITS", 4)         # 8 chunks fill it
    monkeypatch.setattr(K._LOCAL, "cache", None)
    text = " ".join(f"w{i}, x{i}." for i in range(50))
    for _ in range(3):
        check_same(text)
        assert K._cache().state[2] <= 8
    monkeypatch.setattr(K._LOCAL, "cache", None)


def test_threads_agree_with_sequential():
    docs = demo_texts()[:300]
    want = [K.tokens(t).hash.tolist() for t in docs]
    got: dict[int, list] = {}

    def work(k):
        got[k] = [K.tokens(t).hash.tolist() for t in docs[k::4]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert got[k] == want[k::4]


def test_sentences_equal_the_reference():
    for d in demo_texts()[:400]:
        for line in d.splitlines()[:20]:
            flags = K.tokens(line).flags
            assert K.count_sentences(flags, 0) == T.count_sentences(T.words(line))
            assert K.count_sentences(flags, 3) == T.count_sentences(T.words(line), stop_at=3)


def test_simple_chunks_skip_the_python_rules():
    K.reset_cache()
    text = "Plain words, and more; then digits 12345 or Ends. (done) Mr. don't dont, x"
    check_same(text)
    # only "(done)", "Mr." (an abbreviation), "don't" and "dont," needed the rules
    assert K._cache().state[0] == 4
    K.reset_cache()


def test_token_hash():
    assert K.token_hash("the") == K.tokens("so the end").hash[1]
    with pytest.raises(ValueError, match="one token"):
        K.token_hash("don't")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("unit", ["a", "(", "a.", "ab "])
def test_five_million_repeated_chars(unit):
    text = unit * (5_000_000 // len(unit))
    tk = K.tokens(text)
    assert int(tk.length.sum()) == len(text.replace(" ", ""))
