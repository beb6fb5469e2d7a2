"""Throughput of the crawl filters on real text, each against a peer in the same process:

- `pii` (e-mail, IP, phone; curation/filters/pii.py) against datatrove 0.10.1's
  `PIIFormatter` (e-mail and IP only): documents per CPU second, and how many
  e-mail addresses and IPs each replaced (ours counts its tallies; datatrove's
  replacements are counted by its own replacement strings appearing anew);
- `decontaminate` (13-gram hashed set; curation/filters/decontaminate.py) against the
  script a team writes by hand: a Python set of 13-word tuples of the evaluation texts,
  each document's 13-grams looked up in it. Documents per CPU second, and whether the
  two flag the same documents (they must: the hashed set's collisions are ~1e-19).

Runs with the datatrove environment's interpreter (benchmarks/README.md):

    benchmarks/.venv-datatrove/bin/python benchmarks/bench_crawl_filters.py [--rounds 2] [--json OUT]

Documents: ../shared/corpora (or $CURATION_CORPORA): every e-mail of SpamAssassin
(headers included: the densest PII in the corpora) and every web page of web_noisy
for PII; for decontamination the same documents plus the BBC news articles, with an
evaluation set of 200 BBC articles (so the matches are real copies, as a benchmark
leaked into a crawl would be). Timed in CPU seconds of this process, fastest of
--rounds, after a warm-up.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))
WORD = re.compile(r"\w+")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import best_of  # noqa: E402  (CPU seconds, the fastest of N rounds)


def load(name: str) -> list[str]:
    with gzip.open(CORPORA / name, "rt", encoding="utf-8") as f:
        return [r["text"] for r in map(json.loads, f) if isinstance(r.get("text"), str)]


class HandRolled:
    """The usual decontamination script: the evaluation texts' 13-grams as word tuples."""

    def __init__(self, evals: list[str], n: int = 13):
        self.n = n
        self.grams = set()
        for t in evals:
            w = [x.lower() for x in WORD.findall(t)]
            self.grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))

    def contaminated(self, text: str) -> bool:
        w = [x.lower() for x in WORD.findall(text)]
        g, n = self.grams, self.n
        return any(tuple(w[i:i + n]) in g for i in range(len(w) - n + 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--evals", type=int, default=200, help="BBC articles in the evaluation set")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    names = ("email_spamassassin.jsonl.gz", "web_noisy.jsonl.gz", "news_bbc.jsonl.gz")
    missing = [n for n in names if not (CORPORA / n).exists()]
    if missing:
        sys.exit(f"{CORPORA} lacks {', '.join(missing)}")

    from datatrove.pipeline.formatters import PIIFormatter

    from curation.filters import load_chain
    from curation.filters.decontaminate import Decontaminate

    mail, web, news = (load(n) for n in names)
    pii_docs = mail + web
    res: dict = {"documents": {"pii": len(pii_docs)}}

    ours = load_chain(config={"filters": ["pii"]}).filters[0]
    theirs = PIIFormatter()
    ours.check(pii_docs[0]), theirs.format(pii_docs[0])          # warm-up (regex compilation)

    def run_ours():
        tallies = {"email": 0, "ip_address": 0, "phone": 0}
        for t in pii_docs:
            sig = ours.check(t).signals
            for k in tallies:
                tallies[k] += int(sig.get(k, 0))
        return tallies

    marks = [*theirs.emails_replacer.replacements, *theirs.ip_replacer.replacements]

    def run_theirs():
        emails = ips = 0
        for t in pii_docs:
            out = theirs.format(t)
            for m in theirs.emails_replacer.replacements:
                emails += out.count(m) - t.count(m)
            for m in theirs.ip_replacer.replacements:
                ips += out.count(m) - t.count(m)
        return {"email": emails, "ip_address": ips}

    t_ours, tal_ours = best_of(args.rounds, run_ours)
    t_theirs, tal_theirs = best_of(args.rounds, run_theirs)
    res["pii"] = {"ours": {"cpu_s": round(t_ours, 3), "docs_per_cpu_s": round(len(pii_docs) / t_ours, 1),
                           "replaced": tal_ours},
                  "datatrove_PIIFormatter": {"cpu_s": round(t_theirs, 3),
                                             "docs_per_cpu_s": round(len(pii_docs) / t_theirs, 1),
                                             "replaced": tal_theirs, "placeholders": marks},
                  "speed_ratio": round(t_theirs / t_ours, 2)}

    evals = news[:args.evals]
    eval_file = REPO / "benchmarks" / "out" / "bench_crawl_evals.jsonl"
    eval_file.parent.mkdir(parents=True, exist_ok=True)
    eval_file.write_text("".join(json.dumps({"benchmark": "bbc", "text": t}) + "\n" for t in evals),
                         encoding="utf-8")
    decon_docs = mail + web + news
    res["documents"]["decontaminate"] = len(decon_docs)
    t_build_ours, dec = best_of(1, lambda: Decontaminate(eval_files=[str(eval_file)]))
    t_build_hand, hand = best_of(1, lambda: HandRolled(evals))
    dec.check(decon_docs[0]), hand.contaminated(decon_docs[0])
    t_dec, flagged_ours = best_of(args.rounds, lambda: [not dec.check(t).keep for t in decon_docs])
    t_hand, flagged_hand = best_of(args.rounds, lambda: [hand.contaminated(t) for t in decon_docs])
    words = sum(len(WORD.findall(t)) for t in decon_docs)
    # what each side holds per evaluation n-gram: the arrays, or the set with its tuples
    ours_bytes = int(dec.index.hashes.nbytes + dec.index.bench.nbytes)
    hand_bytes = sys.getsizeof(hand.grams) + sum(sys.getsizeof(g) for g in hand.grams)
    res["decontaminate"] = {
        "eval_texts": len(evals), "eval_ngrams": len(hand.grams), "words": words,
        "set_bytes": {"ours": ours_bytes, "hand_rolled": hand_bytes},
        "ours": {"cpu_s": round(t_dec, 3), "docs_per_cpu_s": round(len(decon_docs) / t_dec, 1),
                 "us_per_word": round(1e6 * t_dec / words, 3), "build_s": round(t_build_ours, 3),
                 "flagged": sum(flagged_ours)},
        "hand_rolled_tuple_set": {"cpu_s": round(t_hand, 3),
                                  "docs_per_cpu_s": round(len(decon_docs) / t_hand, 1),
                                  "us_per_word": round(1e6 * t_hand / words, 3),
                                  "build_s": round(t_build_hand, 3), "flagged": sum(flagged_hand)},
        "same_documents_flagged": flagged_ours == flagged_hand,
        "speed_ratio": round(t_hand / t_dec, 2)}

    p, d = res["pii"], res["decontaminate"]
    print(f"pii on {len(pii_docs):,} documents (SpamAssassin with headers, web_noisy), one core, best of {args.rounds}:")
    print(f"  ours:      {p['ours']['docs_per_cpu_s']:9.1f} docs/CPU-s  replaced {p['ours']['replaced']}")
    print(f"  datatrove: {p['datatrove_PIIFormatter']['docs_per_cpu_s']:9.1f} docs/CPU-s  replaced "
          f"{p['datatrove_PIIFormatter']['replaced']} (no phone numbers)")
    print(f"  ours / datatrove speed: {p['speed_ratio']:.2f}x")
    print(f"decontaminate on {len(decon_docs):,} documents ({words:,} words) against {len(evals)} BBC "
          f"articles ({d['eval_ngrams']:,} 13-grams):")
    print(f"  ours (hashed set):       {d['ours']['docs_per_cpu_s']:9.1f} docs/CPU-s "
          f"({d['ours']['us_per_word']} us/word), {d['ours']['flagged']} flagged, built in {d['ours']['build_s']} s")
    print(f"  hand-rolled tuple set:   {d['hand_rolled_tuple_set']['docs_per_cpu_s']:9.1f} docs/CPU-s "
          f"({d['hand_rolled_tuple_set']['us_per_word']} us/word), {d['hand_rolled_tuple_set']['flagged']} flagged")
    print(f"  same documents flagged: {d['same_documents_flagged']}; ours / hand-rolled speed: {d['speed_ratio']:.2f}x")
    print(f"  the set in memory: ours {ours_bytes / len(hand.grams):.0f} bytes an n-gram, hand-rolled "
          f"{hand_bytes / len(hand.grams):.0f} (tuples of shared word strings, not counted)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
