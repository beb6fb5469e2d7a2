"""Rebuilds the demo corpus from ../shared/corpora (only files whose licence lets
us redistribute them). Run: python -m curation.demo.build PATH/TO/shared/corpora

A few documents are re-published variants of other demo documents (another site's
header and footer, a few words changed, or cut short), marked `variant_of`, so the
demo has near duplicates to find beside the natural ones in the mail corpus."""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent

# file, domain, how many documents, max characters per document
SOURCES = [
    ("web_cc_dolma_fixtures.jsonl.gz", "web", 67, 20000),
    ("email_spamassassin.jsonl.gz", "email", 1200, 20000),
    ("techdocs_python.jsonl.gz", "docs", 100, 30000),
    ("code_python_stdlib.jsonl.gz", "code", 100, 30000),
    ("reference_foldoc.jsonl.gz", "reference", 1500, 20000),
    ("wiki_wikitext2.jsonl.gz", "wiki", 30, 30000),
    ("books_mobydick.jsonl.gz", "books", 30, 40000),
    ("speeches_sotu.jsonl.gz", "speeches", 30, 40000),
]

HEADERS = ["Home | News | About | Contact\n\n", "Skip to content\nMenu\nSearch\n\n",
           "Posted by admin in Uncategorized\n\n"]
FOOTERS = ["\n\nShare this: Twitter Facebook Email\nCopyright 2024. All rights reserved.",
           "\n\nRelated posts\nLeave a comment\nPrivacy Policy | Terms of Use"]


def _variant(rng: random.Random, text: str) -> str:
    kind = rng.choice(["frame", "edit", "truncate"])
    if kind == "frame":
        return rng.choice(HEADERS) + text + rng.choice(FOOTERS)
    words = text.split(" ")
    if kind == "edit":
        for _ in range(max(1, len(words) // 60)):
            i = rng.randrange(len(words))
            words[i] = rng.choice(["the", "a", "new", "this", "our"])
        return " ".join(words)
    return " ".join(words[: max(20, int(len(words) * 0.9))])


def main(corpora: str) -> None:
    src = Path(corpora)
    rng = random.Random(20261125)
    for name, domain, n, max_chars in SOURCES:
        with gzip.open(src / name, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        rows = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()
                and len(r["text"]) <= max_chars]
        pick = sorted(rng.sample(range(len(rows)), min(n, len(rows))))
        docs = [{"id": f"{domain}/{rows[i]['id']}", "domain": domain, "text": rows[i]["text"],
                 "source_corpus": name} for i in pick]
        if domain in ("web", "reference", "docs"):
            for d in rng.sample(docs, min(len(docs) // 10 + 2, 40)):
                if len(d["text"].split()) >= 80:
                    docs.append({"id": d["id"] + "#variant", "domain": domain,
                                 "text": _variant(rng, d["text"]), "source_corpus": name,
                                 "variant_of": d["id"]})
        out = OUT / f"{domain}.jsonl.gz"
        with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            for d in docs:
                gz.write((json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
        print(f"{out.name}: {len(docs)} documents, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[3] / "shared" / "corpora"))
