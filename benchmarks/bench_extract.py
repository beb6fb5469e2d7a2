"""WARC to text: ours (FastWARC + Resiliparse, through `curation.io.read_documents`)
against datatrove 0.10.1's `WarcReader` + `Trafilatura` extractor (its default settings:
favour_precision, no comments, deduplicate), on the same WARC records, in one process.

Runs with the interpreter of the datatrove environment (benchmarks/README.md), which
also needs trafilatura, warcio, fastwarc, resiliparse and lxml_html_clean:

    benchmarks/.venv-datatrove/bin/python benchmarks/bench_extract.py [--rounds 2] [--json OUT]

The records: every page of Debian's Python 3.11 documentation (python3.11-doc, real
HTML; tests/setup.sh installs it) as a response record after a request record, in one
.warc.gz written by warcio (benchmarks/data/pydocs.warc.gz). Both sides read the
file and extract every HTML response, timed in CPU seconds of this process (one
core), the fastest of --rounds. Printed:

- documents per CPU second, each side, and the ratio;
- the share of records whose extracted texts are identical (after stripping), and
  equal up to whitespace; the mean word F1 between the two texts;
- quality on the content pages (index and contents pages left out), as bag-of-words
  precision, recall and F1 against the text of each page's `role="main"` element:
  ours, datatrove's Trafilatura, and Trafilatura with its own defaults.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.warc_fixture import html_pages, write_warc  # noqa: E402

WORD = re.compile(r"\w+")
NOT_CONTENT = re.compile(r"genindex|/contents\.html$|modindex|/search\.html$")


def bag(text: str) -> collections.Counter:
    return collections.Counter(WORD.findall(text.lower()))


def prf(pred: str, gold: str) -> tuple[float, float, float]:
    p, g = bag(pred), bag(gold)
    inter, np_, ng = sum((p & g).values()), sum(p.values()), sum(g.values())
    if not np_ or not ng:
        return 0.0, 0.0, 0.0
    pr, rc = inter / np_, inter / ng
    return pr, rc, (2 * pr * rc / (pr + rc) if pr + rc else 0.0)


def best_of(rounds: int, fn):
    best, out = None, None
    for _ in range(rounds):
        t0 = time.process_time()
        out = fn()
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    import lxml.html
    import trafilatura
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    from curation.documents import Rejected
    from curation.io import expand_inputs, read_documents

    pages = html_pages()
    if not pages:
        sys.exit("Debian's python3.11-doc is not installed (apt-get install python3.11-doc)")
    data = ROOT / "benchmarks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / "pydocs.warc.gz"
    write_warc(path, pages)
    gold = {}
    for url, html in pages:
        main_el = lxml.html.fromstring(html).xpath('//div[@role="main"]')
        gold[url] = main_el[0].text_content() if main_el else ""

    f = expand_inputs([str(path)])[0]
    t_ours, ours_out = best_of(args.rounds, lambda: list(read_documents(f)))
    ours = {d.id: d for d in ours_out if not isinstance(d, Rejected)}
    ours_rejected = [d for d in ours_out if isinstance(d, Rejected)]

    reader = WarcReader(str(data), glob_pattern="pydocs.warc.gz")
    ex = Trafilatura()

    def theirs_run():
        out = {}
        for doc in reader.read_file("pydocs.warc.gz"):
            out[doc.id] = (doc.metadata.get("url"), ex.extract(doc.text) or "")
        return out

    t_theirs, theirs = best_of(args.rounds, theirs_run)

    common = sorted(set(ours) | set(theirs))
    same = sum(1 for k in common if k in ours and k in theirs and ours[k].text.strip() == theirs[k][1].strip())
    ws = sum(1 for k in common if k in ours and k in theirs
             and " ".join(ours[k].text.split()) == " ".join(theirs[k][1].split()))
    mutual = [prf(ours[k].text, theirs[k][1])[2] for k in common if k in ours and k in theirs]

    url_of = {k: d.meta["url"] for k, d in ours.items()}
    url_of.update({k: u for k, (u, _) in theirs.items()})
    content = [k for k in common if not NOT_CONTENT.search(url_of[k])]

    def quality(texts: dict) -> dict:
        s = [prf(texts.get(k, ""), gold[url_of[k]]) for k in content]
        n = len(s)
        return {"precision": sum(x[0] for x in s) / n, "recall": sum(x[1] for x in s) / n,
                "f1": sum(x[2] for x in s) / n, "pages": n}

    traf_default = {k: trafilatura.extract(dict(pages)[url_of[k]].decode("utf-8")) or "" for k in content}
    res = {
        "records": len(pages), "warc_bytes": path.stat().st_size,
        "ours": {"documents": len(ours), "rejected": len(ours_rejected), "cpu_s": round(t_ours, 3),
                 "docs_per_cpu_s": round(len(pages) / t_ours, 1)},
        "datatrove_trafilatura": {"documents": len(theirs), "cpu_s": round(t_theirs, 3),
                                  "docs_per_cpu_s": round(len(pages) / t_theirs, 1)},
        "speed_ratio": round(t_theirs / t_ours, 2),
        "identical": same / len(common), "identical_up_to_whitespace": ws / len(common),
        "mean_word_f1_between": sum(mutual) / len(mutual),
        "quality": {"ours_resiliparse": quality({k: d.text for k, d in ours.items()}),
                    "datatrove_trafilatura": quality({k: t for k, (_, t) in theirs.items()}),
                    "trafilatura_defaults": quality(traf_default)},
    }
    print(f"{len(pages)} HTML responses ({res['warc_bytes']:,} bytes of .warc.gz), best of {args.rounds} rounds, one core")
    print(f"  ours (FastWARC + Resiliparse):       {res['ours']['docs_per_cpu_s']:8.1f} docs/CPU-s  "
          f"({len(ours)} documents, {len(ours_rejected)} rejected)")
    print(f"  datatrove WarcReader + Trafilatura:  {res['datatrove_trafilatura']['docs_per_cpu_s']:8.1f} docs/CPU-s  "
          f"({len(theirs)} documents)")
    print(f"  ours / datatrove speed: {res['speed_ratio']:.1f}x")
    print(f"  identical texts: {res['identical']:.1%}; identical up to whitespace: "
          f"{res['identical_up_to_whitespace']:.1%}; mean word F1 between them: {res['mean_word_f1_between']:.3f}")
    print(f"  against each page's main element, {len(content)} content pages:")
    for name, q in res["quality"].items():
        print(f"    {name:24s} P {q['precision']:.3f}  R {q['recall']:.3f}  F1 {q['f1']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
