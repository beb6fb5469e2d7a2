"""FineWeb's additional quality rules.

Source: Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for the Finest
Text Data at Scale", section 3.3 (https://arxiv.org/abs/2406.17557), thresholds as
published with the dataset's processing code (datatrove's FineWebQualityFilter).
FineWeb's full chain, with the rules before these, is the ``fineweb`` preset.
"""
from __future__ import annotations

from pydantic import Field

from curation.filters.base import Filter, Params, Verdict
from curation.filters.gopher import _duplicates
from curation.filters.text import TERMINAL_TUPLE
from curation.filters.tokens import TOKENS


class FineWebParams(Params):
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] | None = None
    short_line_thr: float = Field(0.67, ge=0, le=1)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0)
    new_line_ratio: float = Field(0.3, ge=0)


class FineWebQuality(Filter):
    """FineWeb's rules, over the non-blank lines:

    - at least 12% of lines end with terminal punctuation (Unicode Sentence_Terminal);
    - at most 67% of lines are 30 characters or shorter;
    - characters in repeated lines at most 1% of the text's non-newline characters;
    - at most 0.3 newlines per word (list-like pages).
    """

    name = "fineweb_quality"
    rules = ("empty", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio")
    Params = FineWebParams

    def _setup(self) -> None:
        self._stops = tuple(self.stop_chars) if self.stop_chars is not None else TERMINAL_TUPLE

    def check(self, text: str) -> Verdict:
        lines = [ln for ln in text.split("\n") if ln.strip()]
        sig: dict = {"lines": len(lines)}
        if not lines:
            return self.remove("empty", sig)
        n = len(lines)
        sig["line_punct_ratio"] = r = sum(1 for ln in lines if ln.endswith(self._stops)) / n
        if r < self.line_punct_thr and not (r == 0 and self.line_punct_exclude_zero):
            return self.remove("line_punct_ratio", sig)
        short = self.short_line_length
        sig["short_line_ratio"] = r = sum(1 for ln in lines if len(ln) <= short) / n
        if r > self.short_line_thr:
            return self.remove("short_line_ratio", sig)
        chars = len(text) - text.count("\n")
        sig["char_dup_ratio"] = r = _duplicates(lines)[1] / chars if chars else 0.0
        if r > self.char_duplicates_ratio:
            return self.remove("char_dup_ratio", sig)
        n_words = max(len(TOKENS.tokens(text)), 1)   # a non-blank line holds a word
        sig["new_line_ratio"] = r = text.count("\n") / n_words
        if r > self.new_line_ratio:
            return self.remove("list_ratio", sig)
        return Verdict(True, None, sig)
