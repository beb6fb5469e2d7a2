"""Score predicted duplicate clusters on the near-duplicate benchmark.

The benchmark is ../shared/corpora/neardup_dev.jsonl.gz with its truth file
neardup_dev_truth.json.gz. The truth lists every pair of documents whose word
5-gram Jaccard (text lower-cased, runs of non-word characters as one space) is at
least 0.3. As the corpora README prescribes:

* a pair with J >= 0.8 is a duplicate (a positive);
* a pair with J < 0.5 is not; pairs missing from the truth have J < 0.3, so they
  are negatives too;
* a pair with 0.5 <= J < 0.8 is not scored either way.

Every pair of documents that share a predicted cluster is a predicted positive.
Pairwise precision = TP / (TP + FP) and recall = TP / (TP + FN) over scored pairs.

Clusters are counted combinatorially: a cluster of n documents contributes
n(n-1)/2 predicted pairs, from which the (few) truth pairs that fall inside it are
subtracted, so a 50,000-document cluster costs no more than a small one.

Library use (stdlib only; pyarrow is imported only to read Parquet):

    from neardup_score import load_truth, score_clusters
    truth = load_truth()                       # default: ../shared/corpora path
    score_clusters({"a": "c1", "b": "c1"}, truth)

Command line:

    python benchmarks/neardup_score.py --clusters OUT/clusters      # Parquet dir/file(s)
    python benchmarks/neardup_score.py --clusters clusters.jsonl    # {"id", "cluster_id"} lines
    python benchmarks/neardup_score.py --selftest
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
CORPORA = os.environ.get("CURATION_CORPORA",
                         os.path.normpath(os.path.join(HERE, "..", "..", "shared", "corpora")))
DEFAULT_CORPUS = os.path.join(CORPORA, "neardup_dev.jsonl.gz")
DEFAULT_TRUTH = os.path.join(CORPORA, "neardup_dev_truth.json.gz")

DUP_MIN = 0.8       # J >= DUP_MIN: duplicate
NONDUP_BELOW = 0.5  # J < NONDUP_BELOW: not a duplicate; in between: unscored


@dataclass
class Truth:
    """Scored pairs of the benchmark. Pairs are (a, b) tuples with a < b."""
    positives: set[tuple[str, str]]
    unscored: set[tuple[str, str]]
    n_docs: int | None = None
    doc_ids: frozenset[str] | None = None    # all corpus ids, when the corpus was read
    meta: dict = field(default_factory=dict)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def truth_from_pairs(pairs, n_docs: int | None = None, doc_ids=None) -> Truth:
    """Build a Truth from (a, b, jaccard) triples (all pairs with J >= 0.3)."""
    pos, uns = set(), set()
    for a, b, j in pairs:
        if a == b:
            continue
        if j >= DUP_MIN:
            pos.add(_pair(a, b))
        elif j >= NONDUP_BELOW:
            uns.add(_pair(a, b))
    return Truth(positives=pos, unscored=uns, n_docs=n_docs,
                 doc_ids=frozenset(doc_ids) if doc_ids is not None else None)


def corpus_ids(path: str = DEFAULT_CORPUS) -> list[str]:
    ids = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            ids.append(json.loads(line)["id"])
    return ids


def load_truth(path: str = DEFAULT_TRUTH, corpus: str | None = DEFAULT_CORPUS) -> Truth:
    """Load the truth file. With `corpus` (default: the benchmark corpus, if present),
    also read every document id so that predictions naming unknown ids are caught."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = json.load(f)
    ids = None
    if corpus and os.path.exists(corpus):
        ids = corpus_ids(corpus)
    t = truth_from_pairs(raw["pairs"], n_docs=raw.get("n_docs"), doc_ids=ids)
    t.meta = {"kind": raw.get("kind", {}), "origin": raw.get("origin", {})}
    if ids is not None and t.n_docs is not None and len(ids) != t.n_docs:
        raise ValueError(f"{corpus} has {len(ids)} documents, the truth says {t.n_docs}")
    return t


def score_clusters(cluster_of: dict[str, str], truth: Truth, *, check_ids: bool = True) -> dict:
    """Pairwise precision/recall/F1 of predicted clusters.

    cluster_of maps doc id -> cluster id for documents in clusters of size >= 2;
    every other document is a singleton. Entries forming a cluster of size 1 are
    harmless (they predict no pair).
    """
    if check_ids and truth.doc_ids is not None:
        unknown = [d for d in cluster_of if d not in truth.doc_ids]
        if unknown:
            raise ValueError(f"{len(unknown)} predicted ids are not in the corpus, "
                             f"e.g. {unknown[:3]}")
    sizes = Counter(cluster_of.values())
    predicted = sum(n * (n - 1) // 2 for n in sizes.values())

    def same(a: str, b: str) -> bool:
        ca = cluster_of.get(a)
        return ca is not None and ca == cluster_of.get(b)

    tp = sum(1 for a, b in truth.positives if same(a, b))
    unscored_in = sum(1 for a, b in truth.unscored if same(a, b))
    fp = predicted - tp - unscored_in
    fn = len(truth.positives) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "tp": tp, "fp": fp, "fn": fn,
        "predicted_pairs": predicted, "unscored_pairs_in_clusters": unscored_in,
        "clusters": sum(1 for n in sizes.values() if n >= 2),
        "docs_in_clusters": sum(n for n in sizes.values() if n >= 2),
        "largest_cluster": max(sizes.values(), default=0),
    }


def clusters_from_components(labels: dict[str, str]) -> dict[str, str]:
    """Drop singleton clusters from a full doc -> label map."""
    sizes = Counter(labels.values())
    return {d: c for d, c in labels.items() if sizes[c] >= 2}


# ---------------------------------------------------------------- reading predictions

def read_clusters(path: str) -> dict[str, str]:
    """Read doc id -> cluster id from Parquet (a file, a directory of *.parquet, or a
    glob) or from JSON lines {"id", "cluster_id"} (.jsonl / .jsonl.gz)."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.parquet")))
        if not files:
            files = sorted(glob.glob(os.path.join(path, "*.jsonl*")))
    else:
        files = sorted(glob.glob(path)) or [path]
    if not files:
        raise FileNotFoundError(f"no cluster files at {path}")
    out: dict[str, str] = {}
    for f in files:
        if f.endswith(".parquet"):
            import pyarrow.parquet as pq
            tbl = pq.read_table(f, columns=["id", "cluster_id"])
            ids = tbl.column("id").to_pylist()
            cids = tbl.column("cluster_id").to_pylist()
            rows = zip(ids, cids)
        else:
            opener = gzip.open if f.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                rows = [(r["id"], r["cluster_id"]) for r in map(json.loads, fh)]
        for i, c in rows:
            i, c = str(i), str(c)
            if out.get(i, c) != c:
                raise ValueError(f"{i} is in two clusters: {out[i]} and {c}")
            out[i] = c
    return out


# ---------------------------------------------------------------- self test

def selftest() -> None:
    # Five documents. Truth: a-b 0.9 (dup), a-c 0.85 (dup), b-c 0.6 (unscored),
    # d-e 0.4 (non-dup), every other pair unlisted (non-dup).
    truth = truth_from_pairs([("b", "a", 0.9), ("a", "c", 0.85), ("b", "c", 0.6),
                              ("d", "e", 0.4)], doc_ids="abcdef")
    assert truth.positives == {("a", "b"), ("a", "c")}
    assert truth.unscored == {("b", "c")}

    def check(pred, tp, fp, fn):
        s = score_clusters(pred, truth)
        assert (s["tp"], s["fp"], s["fn"]) == (tp, fp, fn), (pred, s)
        return s

    s = check({"a": "1", "b": "1", "c": "1"}, 2, 0, 0)       # perfect; b-c not scored
    assert s["precision"] == 1.0 and s["recall"] == 1.0 and s["f1"] == 1.0
    s = check({}, 0, 0, 2)                                   # predicts nothing
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    s = check({"a": "x", "b": "x"}, 1, 0, 1)                 # half the recall
    assert s["precision"] == 1.0 and s["recall"] == 0.5
    # one big cluster of all six: 15 predicted pairs, 2 TP, 1 unscored, 12 FP
    s = check({d: "all" for d in "abcdef"}, 2, 12, 0)
    assert abs(s["precision"] - 2 / 14) < 1e-12
    # d-e together (a scored non-dup listed in the truth) and b-c (unscored)
    check({"d": "1", "e": "1", "b": "2", "c": "2"}, 0, 1, 2)
    # a size-1 "cluster" predicts nothing
    check({"a": "solo"}, 0, 0, 2)
    # unknown ids are refused
    try:
        score_clusters({"zz": "1", "a": "1"}, truth)
    except ValueError:
        pass
    else:
        raise AssertionError("unknown id accepted")
    # large cluster is counted, not enumerated
    big = {f"n{i}": "big" for i in range(200_000)}
    s = score_clusters(big, truth, check_ids=False)
    assert s["fp"] == 200_000 * 199_999 // 2, s
    print("neardup_score selftest: ok")


def _fmt(s: dict) -> str:
    return (f"F1 {s['f1']:.4f}  precision {s['precision']:.4f}  recall {s['recall']:.4f}  "
            f"(tp {s['tp']}, fp {s['fp']}, fn {s['fn']}; {s['clusters']} clusters, "
            f"{s['docs_in_clusters']} docs in clusters, largest {s['largest_cluster']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clusters", help="Parquet dir/file/glob (id, cluster_id) or JSONL")
    ap.add_argument("--truth", default=DEFAULT_TRUTH)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS,
                    help="benchmark corpus, used to check that predicted ids exist ('' to skip)")
    ap.add_argument("--json", action="store_true", help="print the score as JSON")
    ap.add_argument("--selftest", action="store_true", help="check the scorer on a hand example")
    a = ap.parse_args(argv)
    if a.selftest:
        selftest()
        if not a.clusters:
            return 0
    if not a.clusters:
        ap.error("--clusters is required (or --selftest)")
    truth = load_truth(a.truth, a.corpus or None)
    s = score_clusters(read_clusters(a.clusters), truth)
    print(json.dumps(s, indent=2) if a.json else _fmt(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
