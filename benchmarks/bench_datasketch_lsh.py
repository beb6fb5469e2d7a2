"""Baseline: plain datasketch MinHashLSH on the near-duplicate benchmark.

Word 5-gram shingles of the corpora README's normalisation (lower-case, runs of
non-word characters as one space), MinHash with num_perm=128 (datasketch's default
seed 1), MinHashLSH at threshold 0.8 with datasketch's own band/row choice, no
Jaccard verification; predicted clusters are the connected components of the LSH
query results. Scored with neardup_score.

    python benchmarks/bench_datasketch_lsh.py [--threshold 0.8] [--num-perm 128] [--ngram 5]
        [--seeds 1,2,3,4,5] [--json]

The MinHash seed moves the score a lot on this small benchmark (787 positive
pairs, most of them in clusters of 2-6): seeds 1..5 gave F1 0.90-0.95, recall
0.83-0.90. Pass several seeds to report their mean next to each run.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neardup_score import DEFAULT_CORPUS, DEFAULT_TRUTH, load_truth, score_clusters  # noqa: E402

_NONWORD = re.compile(r"\W+")


def shingles(text: str, n: int) -> set[bytes]:
    words = _NONWORD.sub(" ", text.lower()).split()
    if len(words) < n:  # short document: its words as one shingle (none if empty)
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def read_docs(path: str) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [(d["id"], d["text"]) for d in map(json.loads, f)]


def lsh_clusters(docs, *, threshold: float, num_perm: int, ngram: int, seed: int = 1):
    """doc id -> cluster id (the smallest member id) for clusters of size >= 2,
    plus timings and the band/row choice."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    sigs = {}
    for doc_id, text in docs:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(shingles(text, ngram)))
        sigs[doc_id] = m
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for doc_id, _ in docs:
            session.insert(doc_id, sigs[doc_id])
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for doc_id, _ in docs:
        for other in lsh.query(sigs[doc_id]):
            ra, rb = find(doc_id), find(other)
            if ra != rb:
                if rb < ra:
                    ra, rb = rb, ra
                parent[rb] = ra  # the smaller id becomes the root: deterministic labels
    t2 = time.perf_counter()
    labels = {d: find(d) for d, _ in docs}
    sizes: dict[str, int] = {}
    for c in labels.values():
        sizes[c] = sizes.get(c, 0) + 1
    cluster_of = {d: c for d, c in labels.items() if sizes[c] >= 2}
    info = {"bands": lsh.b, "rows": lsh.r, "signature_seconds": round(t1 - t0, 3),
            "lsh_seconds": round(t2 - t1, 3)}
    return cluster_of, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="datasketch MinHashLSH baseline on neardup_dev")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--truth", default=DEFAULT_TRUTH)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seeds", default="1",
                    help="comma-separated MinHash seeds; with several, their mean is printed too")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    import datasketch

    docs = read_docs(a.corpus)
    truth = load_truth(a.truth, a.corpus)
    runs = []
    for seed in [int(x) for x in a.seeds.split(",") if x.strip()]:
        t0 = time.perf_counter()
        cluster_of, info = lsh_clusters(docs, threshold=a.threshold, num_perm=a.num_perm,
                                        ngram=a.ngram, seed=seed)
        secs = time.perf_counter() - t0
        s = score_clusters(cluster_of, truth)
        runs.append({"tool": f"datasketch {datasketch.__version__} MinHashLSH",
                     "docs": len(docs), "threshold": a.threshold, "num_perm": a.num_perm,
                     "ngram": a.ngram, "seed": seed, **info, "seconds": round(secs, 3),
                     "docs_per_s": round(len(docs) / secs, 1), **s})
        if not a.json:
            print(f"{runs[-1]['tool']} threshold {a.threshold} num_perm {a.num_perm} "
                  f"(b={info['bands']}, r={info['rows']}), word {a.ngram}-grams, seed {seed}, "
                  f"{len(docs)} docs, {secs:.1f} s")
            print(f"  F1 {s['f1']:.4f}  precision {s['precision']:.4f}  recall {s['recall']:.4f}"
                  f"  (tp {s['tp']}, fp {s['fp']}, fn {s['fn']}; {s['clusters']} clusters, "
                  f"largest {s['largest_cluster']})")
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("f1", "precision", "recall")}
    if a.json:
        print(json.dumps({"runs": runs, "mean": mean} if len(runs) > 1 else runs[0], indent=2))
    elif len(runs) > 1:
        print(f"mean over {len(runs)} seeds: F1 {mean['f1']:.4f}  precision "
              f"{mean['precision']:.4f}  recall {mean['recall']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
