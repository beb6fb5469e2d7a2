"""Quality filters: Gopher, C4, FineWeb, language identification, length, your own;
and for a web crawl: URL block lists, PII redaction, evaluation-set decontamination.

Each filter is a small callable that takes a text (or a Document, or a mapping with
"text") and returns a Verdict::

    from curation.filters import GopherQuality
    v = GopherQuality()("some document text")
    v.keep, v.reason, v.signals      # False, "gopher_quality:word_count", {"words": 3}

Chains come from presets (configs/filters/) or YAML: ``load_chain(preset="fineweb")``.
Nothing here imports Apache Beam.
"""
from curation.filters.base import (Filter, FilterChain, FilterInputError, FilterParamError,
                                   Verdict, document_meta, document_text)
from curation.filters.basic import LengthFilter, UserFilter
from curation.filters.c4 import C4Quality
from curation.filters.config import DEFAULT_PRESET, PRESETS, build_chain, chain_spec, load_chain
from curation.filters.decontaminate import Decontaminate, NgramIndex, build_ngram_index
from curation.filters.fineweb import FineWebQuality
from curation.filters.gopher import GopherQuality, GopherRepetition
from curation.filters.pii import PIIRedactor
from curation.filters.text import words
from curation.filters.url import URLFilter


def heuristic_label_chain() -> list[Filter]:
    """The rule sets the heuristic labeler (`curate label --labeler heuristic`) counts a
    document as passing; the report names them."""
    return [GopherQuality(), GopherRepetition(), C4Quality(mode="document"), FineWebQuality()]


def __getattr__(name: str):
    # the language model loads on first use, not on `import curation.filters`
    if name in ("LanguageFilter", "identify"):
        from curation.filters import language
        return getattr(language, name)
    raise AttributeError(f"module 'curation.filters' has no attribute {name!r}")


__all__ = ["Filter", "FilterChain", "FilterInputError", "FilterParamError", "Verdict",
           "document_text", "document_meta", "GopherQuality", "GopherRepetition", "C4Quality",
           "FineWebQuality", "LanguageFilter", "LengthFilter", "UserFilter", "URLFilter",
           "PIIRedactor", "Decontaminate", "NgramIndex", "build_ngram_index", "identify", "load_chain",
           "build_chain", "chain_spec", "PRESETS", "DEFAULT_PRESET", "words", "heuristic_label_chain"]
