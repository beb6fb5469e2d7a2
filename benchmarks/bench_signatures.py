"""Signatures per second per core and Jaccard-estimation error: curation's
MinHasher against datasketch 2.x on the same real documents, in one process.

  python benchmarks/bench_signatures.py [--docs 3000] [--seeds 1,2,3] [--repeat 3]

Both sides shingle the same way (word 5-grams of the normalised text; datasketch
gets them as UTF-8 bytes through update_batch, the way its users feed it), both
run on one thread, and the best of --repeat timings is kept for each.
Estimation error: mean absolute error between the estimated and the exact
word-5-gram Jaccard over the pairs listed in neardup_dev_truth.json.gz.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))

import numpy as np  # noqa: E402


def load(name, limit=None):
    rows = []
    with gzip.open(CORPORA / name, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def rate(fn, docs, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(docs)
        best = min(best, time.perf_counter() - t)
    return len(docs) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--num-perm", type=int, default=128)
    args = ap.parse_args()
    if not (CORPORA / "neardup_dev.jsonl.gz").exists():
        print(f"skipped: {CORPORA} is absent (set CURATION_CORPORA)")
        return 0

    import datasketch
    from curation.minhash import MinHasher, estimate_jaccard

    k = args.num_perm
    web = [r["text"] for r in load("neardup_dev.jsonl.gz", args.docs)]
    mean_chars = sum(map(len, web)) / len(web)
    ours = MinHasher(num_perm=k, seed=1, backend="numba")
    ours.signatures(web[:8])  # compile / load the cached kernel outside the timing
    compat = MinHasher.datasketch_compatible(num_perm=k, seed=1)

    def run_datasketch(docs):
        for t in docs:
            m = datasketch.MinHash(num_perm=k, seed=1)
            m.update_batch(compat.shingles(t))

    def run_ours(docs):
        for i in range(0, len(docs), 2048):
            ours.signatures(docs[i:i + 2048])

    ds_docs = web[: max(300, len(web) // 4)]   # datasketch is slow: a quarter is plenty
    r_ds = rate(run_datasketch, ds_docs, args.repeat)
    r_ours = rate(run_ours, web, args.repeat)
    print(f"documents: {len(web)} from neardup_dev (web-length, mean {mean_chars:.0f} chars); "
          f"num_perm={k}; one thread")
    print(f"datasketch {datasketch.__version__} update_batch: {r_ds:10.0f} docs/s")
    print(f"curation MinHasher (numba):    {r_ours:10.0f} docs/s")
    print(f"ratio: {r_ours / r_ds:.1f}x datasketch's rate per core")

    truth = json.load(gzip.open(CORPORA / "neardup_dev_truth.json.gz"))
    texts = {r["id"]: r["text"] for r in load("neardup_dev.jsonl.gz")}
    pairs = [(a, b, j) for a, b, j in truth["pairs"] if a in texts and b in texts]
    ids = sorted({x for a, b, _ in pairs for x in (a, b)})
    pos = {d: i for i, d in enumerate(ids)}
    ia = np.array([pos[a] for a, _, _ in pairs])
    ib = np.array([pos[b] for _, b, _ in pairs])
    exact = np.array([j for _, _, j in pairs])
    print(f"\nJaccard estimation over {len(pairs)} truth pairs (exact J from the truth file):")
    print("seed  curation MAE  datasketch MAE   (|J_est - J|, mean)")
    mae_o, mae_d = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        so = MinHasher(num_perm=k, seed=seed, backend="numba").signatures([texts[i] for i in ids])
        sd = MinHasher.datasketch_compatible(num_perm=k, seed=seed).signatures([texts[i] for i in ids])
        eo = np.abs(estimate_jaccard(so[ia], so[ib]) - exact).mean()
        ed = np.abs(estimate_jaccard(sd[ia], sd[ib]) - exact).mean()
        mae_o.append(eo)
        mae_d.append(ed)
        print(f"{seed:4d}  {eo:12.4f}  {ed:14.4f}")
    print(f"mean  {np.mean(mae_o):12.4f}  {np.mean(mae_d):14.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
