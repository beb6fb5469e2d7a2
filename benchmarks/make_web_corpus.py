"""Build a synthetic web-like corpus of N documents from the real text in ../shared/corpora.

Deterministic: the same --seed and --n give byte-identical shards.

How a document is made:
* Every source corpus is cut into blocks of roughly 150-900 characters (paragraphs;
  runs of short lines such as menus are kept together; very long paragraphs such as
  the one-line State of the Union speeches are cut at sentence ends).
* A document gets a target length drawn from a log-normal (median ~2.8 KB, sigma
  0.85, clipped to 250 B .. 80 KB: typical web pages, with a long tail), a primary
  source (web pages weigh most), and is filled with runs of 1-3 consecutive blocks,
  85% from its primary source and the rest from any source.
  Run starts are dealt from a shuffled deck per source, so every block is reused
  about equally often and two unrelated documents rarely share more than a block.
* About 5% of the documents are exact copies of another document, about 10% are
  near-duplicate variants of one: another site's navigation header and/or footer
  (lines from real pages in web_noisy), light word edits (1-4% of words replaced,
  dropped or repeated), truncation (80-95% kept), or two of these.
* Order is shuffled; ids are web-NNNNNNN in that order; documents are written as
  --shards JSONL.gz shards (fields id, text) with gzip mtime 0, plus
  corpus_manifest.json (parameters, counts, and for every copy or variant the id
  of its original and the kind).

    python benchmarks/make_web_corpus.py --n 10000  [--out benchmarks/data/web_10k]
    python benchmarks/make_web_corpus.py --n 100000 [--out benchmarks/data/web_100k]
"""
from __future__ import annotations

import argparse
import bisect
import gzip
import io
import itertools
import json
import math
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from neardup_score import CORPORA  # noqa: E402

# Source corpus -> weight of documents whose primary source it is. Code, and the
# derived neardup_dev benchmark, are left out. Small corpora get small weights so
# that their blocks are not reused more than the big ones.
SOURCES = {
    "web_noisy.jsonl.gz": 0.30,
    "web_cc_dolma_fixtures.jsonl.gz": 0.01,
    "news_bbc.jsonl.gz": 0.14,
    "email_spamassassin.jsonl.gz": 0.14,
    "reference_foldoc.jsonl.gz": 0.08,
    "books_mobydick.jsonl.gz": 0.03,
    "speeches_sotu.jsonl.gz": 0.09,
    "wiki_wikitext2.jsonl.gz": 0.03,
    "techdocs_python.jsonl.gz": 0.10,
    "reviews_movies.jsonl.gz": 0.08,
}
BLOCK_MIN, BLOCK_MAX = 150, 900
SHORT_LINE = 60
_SENT = re.compile(r"(?<=[.!?])\s+")


def _split_long(par: str) -> list[str]:
    if len(par) <= BLOCK_MAX:
        return [par]
    out, cur = [], ""
    for sent in _SENT.split(par):
        if cur and len(cur) + len(sent) + 1 > BLOCK_MAX:
            out.append(cur)
            cur = sent
        else:
            cur = f"{cur} {sent}" if cur else sent
    if cur:
        out.append(cur)
    # a "sentence" longer than BLOCK_MAX (no punctuation): cut at spaces
    res = []
    for b in out:
        while len(b) > 2 * BLOCK_MAX:
            cut = b.rfind(" ", BLOCK_MAX // 2, BLOCK_MAX)
            cut = cut if cut > 0 else BLOCK_MAX
            res.append(b[:cut])
            b = b[cut:].lstrip()
        res.append(b)
    return res


def blocks_of(text: str) -> list[str]:
    """Cut one document into blocks of about BLOCK_MIN..BLOCK_MAX characters."""
    blocks, cur = [], []
    cur_len = 0
    for par in re.split(r"\n[ \t]*\n", text):
        lines = [ln.rstrip() for ln in par.split("\n") if ln.strip()]
        for piece in itertools.chain.from_iterable(_split_long(ln) for ln in lines):
            cur.append(piece)
            cur_len += len(piece) + 1
            if cur_len >= BLOCK_MIN:
                blocks.append("\n".join(cur))
                cur, cur_len = [], 0
        if cur_len >= BLOCK_MIN // 2:     # paragraph end: close the block if not tiny
            blocks.append("\n".join(cur))
            cur, cur_len = [], 0
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def load_sources(corpora: str):
    """-> {name: [block, ...]} in file order, and a pool of (header, footer) site chrome."""
    blocks, chrome = {}, []
    for name in SOURCES:
        path = os.path.join(corpora, name)
        bl = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                text = d["text"]
                bl.extend(blocks_of(text))
                if name == "web_noisy.jsonl.gz":
                    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
                    head = list(itertools.takewhile(lambda s: len(s) < SHORT_LINE, lines))[:15]
                    tail = list(itertools.takewhile(lambda s: len(s) < SHORT_LINE,
                                                    reversed(lines)))[:12][::-1]
                    if len(head) >= 3 or len(tail) >= 3:
                        chrome.append(("\n".join(head), "\n".join(tail)))
        blocks[name] = bl
    return blocks, chrome


class Deck:
    """Deals run starts of one source's blocks, reshuffling after each full pass."""

    def __init__(self, n: int, rng: random.Random):
        self.n, self.rng, self.cards = n, rng, []

    def deal(self) -> int:
        if not self.cards:
            self.cards = list(range(self.n))
            self.rng.shuffle(self.cards)
        return self.cards.pop()


def make_original(rng, names, cum, decks, blocks) -> str:
    target = min(80_000, max(250, int(rng.lognormvariate(math.log(2800), 0.85))))
    primary = names[bisect.bisect(cum, rng.random() * cum[-1])]
    parts, length = [], 0
    while length < target:
        src = primary if rng.random() < 0.85 else names[bisect.bisect(cum, rng.random() * cum[-1])]
        bl = blocks[src]
        start = decks[src].deal()
        for b in bl[start:start + rng.choice((1, 1, 2, 2, 3))]:
            parts.append(b)
            length += len(b) + 1
    return "\n".join(parts)


_WS = re.compile(r"(\s+)")


def light_edit(text: str, rng: random.Random) -> str:
    toks = _WS.split(text)                      # words at even positions, whitespace at odd
    words = list(range(0, len(toks), 2))
    rate = rng.uniform(0.01, 0.04)
    for i in rng.sample(words, max(1, int(len(words) * rate))):
        op = rng.random()
        if op < 0.5:                            # replace with another word of the document
            toks[i] = toks[rng.choice(words)]
        elif op < 0.8:                          # drop
            toks[i] = ""
        else:                                   # repeat
            toks[i] = f"{toks[i]} {toks[i]}"
    return "".join(toks)


def truncate(text: str, rng: random.Random) -> str:
    cut = int(len(text) * rng.uniform(0.80, 0.95))
    sp = text.rfind(" ", 0, cut)
    return text[: sp if sp > 0 else cut].rstrip()


def boilerplate(text: str, rng: random.Random, chrome) -> str:
    head, foot = chrome[rng.randrange(len(chrome))]
    which = rng.random()
    if which < 0.4 and head:
        return f"{head}\n{text}"
    if which < 0.7 and foot:
        return f"{text}\n{foot}"
    return "\n".join(x for x in (head, text, foot) if x)


VARIANTS = [("boilerplate", 0.40), ("light", 0.30), ("truncate", 0.20), ("two", 0.10)]


def make_variant(text: str, rng: random.Random, chrome) -> tuple[str, str]:
    r, acc = rng.random(), 0.0
    for kind, w in VARIANTS:
        acc += w
        if r < acc:
            break
    ops = {"boilerplate": lambda t: boilerplate(t, rng, chrome),
           "light": lambda t: light_edit(t, rng), "truncate": lambda t: truncate(t, rng)}
    if kind == "two":
        a, b = rng.sample(["boilerplate", "light", "truncate"], 2)
        return ops[b](ops[a](text)), f"{a}+{b}"
    return ops[kind](text), kind


def build(n: int, seed: int, corpora: str, exact_share: float, near_share: float,
          id_prefix: str = "web-"):
    rng = random.Random(seed)
    blocks, chrome = load_sources(corpora)
    names = list(SOURCES)
    cum = list(itertools.accumulate(SOURCES[k] for k in names))
    decks = {k: Deck(len(blocks[k]), random.Random(rng.random())) for k in names}
    n_exact, n_near = round(n * exact_share), round(n * near_share)
    n_orig = n - n_exact - n_near
    docs = [(make_original(rng, names, cum, decks, blocks), "orig", None) for _ in range(n_orig)]
    for _ in range(n_exact):
        j = rng.randrange(n_orig)
        docs.append((docs[j][0], "exact", j))
    for _ in range(n_near):
        j = rng.randrange(n_orig)
        text, kind = make_variant(docs[j][0], rng, chrome)
        docs.append((text, kind, j))
    order = list(range(n))
    rng.shuffle(order)
    new_id = {old: f"{id_prefix}{pos:07d}" for pos, old in enumerate(order)}
    out = [(new_id[old], docs[old][0]) for old in order]
    dups = [{"id": new_id[old], "kind": docs[old][1], "of": new_id[docs[old][2]]}
            for old in order if docs[old][2] is not None]
    stats = {"blocks": {k: len(v) for k, v in blocks.items()}, "chrome_pool": len(chrome),
             "originals": n_orig, "exact": n_exact, "near": n_near}
    return out, dups, stats


def write_shards(docs, out_dir: str, shards: int) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):
        if old.endswith(".jsonl.gz") or old == "corpus_manifest.json":
            os.remove(os.path.join(out_dir, old))
    paths, per = [], math.ceil(len(docs) / shards)
    for s in range(shards):
        chunk = docs[s * per:(s + 1) * per]
        path = os.path.join(out_dir, f"part-{s:05d}.jsonl.gz")
        buf = io.StringIO()
        for doc_id, text in chunk:
            buf.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False))
            buf.write("\n")
        tmp = path + ".tmp"
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  compresslevel=3, mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build a synthetic web-like corpus from real text.")
    ap.add_argument("--n", type=int, required=True, help="number of documents")
    ap.add_argument("--out", help="output directory (default benchmarks/data/web_<n>)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--exact-share", type=float, default=0.05)
    ap.add_argument("--near-share", type=float, default=0.10)
    ap.add_argument("--corpora", default=CORPORA)
    ap.add_argument("--id-prefix", default="web-", help="ids are PREFIX + position (default web-)")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(HERE, "data", f"web_{a.n // 1000}k" if a.n % 1000 == 0 else f"web_{a.n}")
    t0 = time.perf_counter()
    docs, dups, stats = build(a.n, a.seed, a.corpora, a.exact_share, a.near_share, a.id_prefix)
    t1 = time.perf_counter()
    paths = write_shards(docs, out, a.shards)
    t2 = time.perf_counter()
    lengths = sorted(len(t) for _, t in docs)
    pct = {f"p{q}": lengths[min(len(lengths) - 1, int(len(lengths) * q / 100))]
           for q in (10, 50, 90, 99)}
    manifest = {
        "n": a.n, "seed": a.seed, "shards": len(paths), "exact_share": a.exact_share,
        "near_share": a.near_share, "sources": SOURCES, **stats,
        "chars": {"total": sum(lengths), "mean": round(sum(lengths) / len(lengths)), **pct},
        "duplicates": dups,
    }
    with open(os.path.join(out, "corpus_manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    print(f"{a.n} docs ({stats['originals']} originals, {stats['exact']} exact copies, "
          f"{stats['near']} near variants), {sum(lengths) / 1e6:.1f} M chars "
          f"(median {pct['p50']}, p90 {pct['p90']}), {len(paths)} shards in {out}; "
          f"build {t1 - t0:.1f} s, write {t2 - t1:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
