"""Dedup against an index: new data checked against what is already kept.

    python benchmarks/bench_dedup_index.py [--old 1000000] [--fresh 90000] [--planted 10000]

The old corpus is benchmarks/data/web_<old/1000>k (make_web_corpus.py, built when
missing). The new one is `--fresh` documents of a second web corpus (make_web_corpus.py
with another seed and no copies of its own) plus `--planted` documents made from
random old ones: half exact copies, half near variants (a contiguous run of 5% of the
words replaced by other words, or the last 8% cut off; about 0.9 word-5-gram
Jaccard with the original).

Runs, each timed from spawn to exit with its process tree's peak PSS (memwatch.py):
  index     curate dedup OLD --write-index IDX   (against a plain dedup of OLD: what
            writing the index costs)
  against   curate dedup NEW --against IDX
  together  curate dedup OLD+NEW, the alternative the index saves

Quality of the against run's removals of index duplicates, judged on the texts:
  precision  removals whose exact word-5-gram Jaccard with the matched indexed document
             is at least the threshold (0.8), and at least 0.7
  recall     planted documents removed, out of those whose exact Jaccard with their
             original is at least the threshold
and how the against run's removals of new documents compare with the together run's.
Results go to OUT/results.json.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from bench_dedup import ensure_corpus, measure  # noqa: E402

FAST = []   # the local runner's defaults: every core


def rows(pattern: str):
    import pyarrow.parquet as pq
    for p in sorted(glob.glob(pattern)):
        yield from pq.read_table(p).to_pylist()


def texts(pattern: str):
    for p in sorted(glob.glob(pattern)):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def make_new(old_glob: str, fresh_dir: str, out_dir: str, planted: int, seed: int) -> dict:
    """NEW: the fresh corpus plus planted copies and variants of old documents; returns
    {new id: (kind, old id)} for the planted ones."""
    os.makedirs(out_dir, exist_ok=True)
    truth_path = os.path.join(out_dir, "truth.json")
    if os.path.exists(truth_path):
        return json.load(open(truth_path))
    rng = random.Random(seed)
    n_old = sum(1 for _ in texts(old_glob))
    picks = set(rng.sample(range(n_old), planted))
    chosen = {}
    for k, r in enumerate(texts(old_glob)):
        if k in picks:
            chosen[r["id"]] = r["text"]
    truth = {}
    with gzip.open(os.path.join(out_dir, "planted.jsonl.gz"), "wt", encoding="utf-8") as g:
        for n, (oid, text) in enumerate(sorted(chosen.items())):
            nid = f"planted-{n:06d}"
            if n % 2 == 0:
                kind, new = "exact", text
            else:
                w = text.split()
                if n % 4 == 1 and len(w) > 40:
                    k = max(1, len(w) // 20)
                    at = rng.randrange(0, len(w) - k)
                    w[at:at + k] = [f"edit{rng.randrange(10**9)}" for _ in range(k)]
                    kind = "span"
                else:
                    w = w[:max(1, int(len(w) * 0.92))]
                    kind = "cut"
                new = " ".join(w)
            truth[nid] = [kind, oid]
            g.write(json.dumps({"id": nid, "text": new}) + "\n")
    for p in sorted(glob.glob(os.path.join(fresh_dir, "*.jsonl.gz"))):
        os.link(p, os.path.join(out_dir, "fresh-" + os.path.basename(p))) \
            if not os.path.exists(os.path.join(out_dir, "fresh-" + os.path.basename(p))) else None
    json.dump(truth, open(truth_path, "w"))
    return truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=int, default=1_000_000)
    ap.add_argument("--fresh", type=int, default=90_000)
    ap.add_argument("--planted", type=int, default=10_000)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "dedup_index"))
    ap.add_argument("--skip-together", action="store_true")
    a = ap.parse_args()

    from curation.lsh import exact_jaccard
    from curation.minhash import MinHasher

    old_glob = os.path.join(ensure_corpus(a.data, a.old), "*.jsonl.gz")
    fresh_dir = os.path.join(a.data, f"fresh_{a.fresh // 1000}k")
    if not os.path.exists(os.path.join(fresh_dir, "corpus_manifest.json")):
        import make_web_corpus
        make_web_corpus.main(["--n", str(a.fresh), "--seed", "777", "--exact-share", "0",
                              "--near-share", "0", "--id-prefix", "fresh-", "--out", fresh_dir])
    # named to sort after the old corpus: the together run then keeps the old copy, as
    # the index does
    new_dir = os.path.join(a.data, f"xnew_{a.fresh // 1000}k_{a.planted // 1000}k_from_{a.old // 1000}k")
    truth = make_new(old_glob, fresh_dir, new_dir, a.planted, seed=11)
    new_glob = os.path.join(new_dir, "*.jsonl.gz")
    cur = [sys.executable, "-m", "pipelines.cli"]
    out, idx = a.out, os.path.join(a.out, "idx")
    os.makedirs(out, exist_ok=True)

    res = {"old": a.old, "new": a.fresh + a.planted, "planted": a.planted}
    import shutil
    shutil.rmtree(idx, ignore_errors=True)
    # runs one after another; nothing else should run meanwhile
    res["plain"] = measure(cur + ["dedup", "--input", old_glob, "--output", os.path.join(out, "plain"),
                                  "--overwrite"], os.path.join(out, "logs", "plain"))
    res["index"] = measure(cur + ["dedup", "--input", old_glob, "--output", os.path.join(out, "old"),
                                  "--write-index", idx, "--overwrite"], os.path.join(out, "logs", "index"))
    res["against"] = measure(cur + ["dedup", "--input", new_glob, "--output", os.path.join(out, "new"),
                                    "--against", idx, "--overwrite"], os.path.join(out, "logs", "against"))
    if not a.skip_together:
        res["together"] = measure(cur + ["dedup", "--input", old_glob, "--input", new_glob,
                                         "--output", os.path.join(out, "together"), "--overwrite"],
                                  os.path.join(out, "logs", "together"))
    for k in ("plain", "index", "against", "together"):
        if k in res and res[k]["rc"] != 0:
            print(f"{k} failed: {res[k]['stderr_tail']}", file=sys.stderr)
            return 1
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(idx, "**"), recursive=True)
               if os.path.isfile(p))
    res["index_bytes"] = size
    man = json.load(open(os.path.join(out, "new", "manifest.json")))
    res["against_manifest"] = {k: man[k] for k in ("counts", "against")}

    removed = {r["id"]: r for r in rows(os.path.join(out, "new", "clusters", "*.parquet"))
               if r["reason"] in ("exact_duplicate_of_index", "near_duplicate_of_index")}
    need_old = {r["matched_id"] for r in removed.values()} | {o for _, o in truth.values()}
    # the together run's removals of new documents, judged the same way: against the old
    # document their cluster keeps
    together_pairs = {}
    if not a.skip_together:
        new_ids = {r["id"] for r in texts(new_glob)}
        together_pairs = {r["id"]: r["cluster_id"]
                          for r in rows(os.path.join(out, "together", "clusters", "*.parquet"))
                          if not r["kept"] and r["id"] in new_ids and r["cluster_id"] not in new_ids}
        need_old |= set(together_pairs.values())
    need_new = set(removed) | set(truth) | set(together_pairs)
    old_text = {r["id"]: r["text"] for r in texts(old_glob) if r["id"] in need_old}
    new_text = {r["id"]: r["text"] for r in texts(new_glob) if r["id"] in need_new}
    mh = MinHasher(num_perm=128, seed=1, ngram=5)
    sh = {}

    def J(x, y):
        for t in (x, y):
            if t not in sh:
                sh[t] = mh.shingle_hashes(t)
        return exact_jaccard(sh[x], sh[y])

    judged = [J(new_text[i], old_text[r["matched_id"]]) for i, r in removed.items()]
    # a planted document whose original the old run removed can only match the document
    # kept in its place, which may be further from it: recall counts those apart
    old_removed = {r["id"] for r in rows(os.path.join(out, "old", "clusters", "*.parquet")) if not r["kept"]}
    # (a copy of a record the reader rejects, e.g. for NUL bytes, is rejected again)
    seen = {r["id"] for part in ("documents", "clusters")
            for r in rows(os.path.join(out, "new", part, "*.parquet"))}
    rejected = set(truth) - seen
    true_pairs = {i for i, (_, o) in truth.items()
                  if i not in rejected and J(new_text[i], old_text[o]) >= 0.8}
    indexed = {i for i in true_pairs if truth[i][1] not in old_removed}
    res["quality"] = {
        "removed_as_index_duplicates": len(removed),
        "of_them_planted": sum(1 for i in removed if i in truth),
        "precision_at_0.8": round(sum(j >= 0.8 for j in judged) / max(1, len(judged)), 4),
        "precision_at_0.7": round(sum(j >= 0.7 for j in judged) / max(1, len(judged)), 4),
        "planted_rejected_by_the_reader": len(rejected),
        "planted_at_or_above_0.8": len(true_pairs),
        "recall": round(len(true_pairs & set(removed)) / max(1, len(true_pairs)), 4),
        "planted_with_original_indexed": len(indexed),
        "recall_original_indexed": round(len(indexed & set(removed)) / max(1, len(indexed)), 4),
        "planted_with_original_removed_by_old_run": len(true_pairs - indexed),
        "of_those_removed": len((true_pairs - indexed) & set(removed)),
        "planted_removed_any_reason": sum(1 for i in truth if i in removed),
        "by_kind": {k: [sum(1 for i, (kk, _) in truth.items() if kk == k and i in removed),
                        sum(1 for _, (kk, _) in truth.items() if kk == k)] for k in ("exact", "span", "cut")},
    }
    if "together" in res:
        new_ids = {r["id"] for r in texts(new_glob)}
        members: dict = {}
        for r in rows(os.path.join(out, "together", "clusters", "*.parquet")):
            members.setdefault(r["cluster_id"], []).append(r["id"])
        # new documents the together run put in a cluster with an old one
        tog_new = {i for ms in members.values() if any(m not in new_ids for m in ms)
                   for i in ms if i in new_ids}
        ag = set(removed)
        tj = [J(new_text[i], old_text[k]) for i, k in together_pairs.items()]
        res["together_quality"] = {
            "new_removed_as_duplicates_of_an_old_kept_document": len(tj),
            "precision_at_0.8": round(sum(j >= 0.8 for j in tj) / max(1, len(tj)), 4),
            "precision_at_0.7": round(sum(j >= 0.7 for j in tj) / max(1, len(tj)), 4),
            "planted_removed": sum(1 for i in truth if i in together_pairs)}
        res["agreement"] = {"new_in_a_cluster_with_old_together": len(tog_new),
                            "new_removed_as_index_duplicates": len(ag),
                            "both": len(tog_new & ag), "only_together": len(tog_new - ag),
                            "only_against": len(ag - tog_new)}
    json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=2)

    def line(k):
        r = res[k]
        return f"{k:9s} {r['wall_s']:8.1f} s  {r['peak_pss_mib']:8,.0f} MiB  {r['cpu_s']:8.1f} CPU-s"
    print(f"old {a.old:,} documents, new {a.fresh + a.planted:,} ({a.planted:,} planted)")
    for k in ("plain", "index", "against", "together"):
        if k in res:
            print(line(k))
    print(f"index: {size / 2**20:,.1f} MiB on disk; writing it costs "
          f"{res['index']['wall_s'] / res['plain']['wall_s']:.2f}x a plain dedup of the old corpus")
    if "together" in res:
        print(f"against / together wall: {res['against']['wall_s'] / res['together']['wall_s']:.3f}")
    print(json.dumps(res["quality"], indent=1))
    if "agreement" in res:
        print(json.dumps(res["together_quality"], indent=1))
        print(json.dumps(res["agreement"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
