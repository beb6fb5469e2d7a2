"""C4's clean-up rules.

Source: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", section 2.2 (https://jmlr.org/papers/v21/20-074.html), and
its reference code, TFDS text/c4_utils.py (which adds the long-word and policy rules
and drops Wikipedia-style citation markers). The bad-words rule needs a word list
download and is not included.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from curation.filters.base import Filter, Params, Verdict
from curation.filters.tokens import count_sentences, tokens

CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                     "use of cookies", "use cookies")
LINE_RULES = ("long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")


class C4Params(Params):
    mode: Literal["lines", "document"] = "lines"
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int | None = Field(5, ge=0)
    min_words_per_line: int | None = Field(3, ge=0)
    max_word_length: int | None = Field(1000, ge=1)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    max_removed_lines_ratio: float | None = Field(None, ge=0, le=1)


class C4Quality(Filter):
    """C4's rules. Line rules (each drops the line): a word over 1000 characters, no
    terminal punctuation (. ? ! " ', and not an ellipsis), fewer than 3 words, the word
    "javascript", a cookie or terms-of-use phrase. Page rules (each removes the
    document): "lorem ipsum", a curly bracket, fewer than 5 sentences in the lines kept.

    ``mode="lines"`` (C4's own behaviour) returns the text with the dropped lines
    removed and each kept line stripped (``verdict.text``). ``mode="document"`` keeps
    the text as it is and only decides: the same page rules, plus, when
    ``max_removed_lines_ratio`` is set, removal of documents whose line rules would
    drop more than that share of lines. Sentences are counted with a rule-based
    splitter over the tokens of :func:`curation.filters.text.words`
    (computed by :mod:`curation.filters.tokens`).
    """

    name = "c4_quality"
    rules = ("lorem_ipsum", "curly_bracket", "too_few_sentences", "removed_lines")
    Params = C4Params

    def check(self, text: str) -> Verdict:
        kept: list[str] = []
        dropped = dict.fromkeys(LINE_RULES, 0)
        sentences = 0
        need = self.min_num_sentences
        n_lines = 0
        for line in text.splitlines():
            n_lines += 1
            line = line.strip()
            parts = line.split()
            if self.max_word_length is not None and any(len(w) > self.max_word_length for w in parts):
                dropped["long_word"] += 1
                continue
            if self.remove_citations and "[" in line:
                line = CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION)
                                                  or line.endswith("...")):
                dropped["no_terminal_punct"] += 1
                continue
            if self.min_words_per_line is not None and len(parts) < self.min_words_per_line:
                dropped["too_few_words"] += 1
                continue
            low = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in low:
                return self.remove("lorem_ipsum", self._signals(n_lines, kept, dropped, sentences))
            if self.filter_javascript and "javascript" in low:
                dropped["javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return self.remove("curly_bracket", self._signals(n_lines, kept, dropped, sentences))
            if self.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
                dropped["policy"] += 1
                continue
            if need is not None and sentences < need:
                sentences += count_sentences(tokens(line).flags, need - sentences)
            kept.append(line)
        sig = self._signals(n_lines, kept, dropped, sentences)
        if need is not None and sentences < need:
            return self.remove("too_few_sentences", sig)
        if self.max_removed_lines_ratio is not None and n_lines and \
                (n_lines - len(kept)) / n_lines > self.max_removed_lines_ratio:
            return self.remove("removed_lines", sig)
        if self.mode == "document":
            return Verdict(True, None, sig)
        new = "\n".join(kept).strip()
        return Verdict(True, None, sig, None if new == text else new)

    @staticmethod
    def _signals(n_lines: int, kept: list[str], dropped: dict, sentences: int) -> dict:
        sig = {"lines": n_lines, "lines_kept": len(kept), "sentences": sentences}
        for rule, n in dropped.items():
            sig[f"lines_{rule}"] = n
        return sig
