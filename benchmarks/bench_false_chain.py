"""Planted false chains: does the check against the kept document stop them?

    python benchmarks/bench_false_chain.py [--chains 5] [--length 60] [--out benchmarks/out/false_chain]

Adds to ../shared/corpora/neardup_dev.jsonl.gz `--chains` chains of `--length` documents:
each a copy of the one before with a fresh run of 32 of its 400 words replaced at a new
place, so neighbours share about 83% of their word 5-grams and documents ten links apart
share almost nothing: every neighbour pair is a true near duplicate, the chain as a whole
is not. Runs `curate dedup` on it twice, with the check (the default `--kept-tolerance
0.15`) and with it in effect off (`--kept-tolerance 0.99`), and prints per run the largest
cluster, the documents removed from the chains, the check's counts, and F1 / precision /
recall on neardup_dev's own pairs (benchmarks/neardup_score.py), which the chains must
not change.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "neardup_dev.jsonl.gz"
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def chain(length: int, seed: int, n_words: int = 400, segment: int = 32) -> list[str]:
    rng = random.Random(seed)
    words = [f"c{seed}w{rng.randrange(10**9)}" for _ in range(n_words)]
    out = [list(words)]
    for k in range(1, length):
        nxt = list(out[-1])
        start = (k * 37) % (n_words - segment)
        nxt[start:start + segment] = [f"c{seed}x{k}_{rng.randrange(10**9)}" for _ in range(segment)]
        out.append(nxt)
    return [" ".join(w) for w in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=5)
    ap.add_argument("--length", type=int, default=60)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "false_chain"))
    args = ap.parse_args()
    if not CORPUS.exists():
        print(f"{CORPUS} is missing: this benchmark needs ../shared/corpora", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = out / "input.jsonl.gz"
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f, gzip.open(src, "wt", encoding="utf-8") as g:
        for line in f:
            g.write(line)
        for c in range(args.chains):
            for i, text in enumerate(chain(args.length, seed=c)):
                g.write(json.dumps({"id": f"chain{c}-{i:03d}", "text": text}) + "\n")
    print(f"neardup_dev + {args.chains} chains of {args.length} documents")
    print("| run | largest cluster | chain documents removed | members split off | F1 | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, tol in (("with the check (default)", "0.15"), ("check off (--kept-tolerance 0.99)", "0.99")):
        d = out / f"dedup_{tol}"
        subprocess.run([sys.executable, "-m", "pipelines.cli", "dedup", "--input", str(src),
                        "--output", str(d), "--kept-tolerance", tol, "--output-format", "jsonl.gz",
                        *FAST], check=True, cwd=REPO, capture_output=True)
        m = json.loads((d / "manifest.json").read_text())
        rows = []
        for p in sorted((d / "clusters").glob("*.jsonl.gz")):
            with gzip.open(p, "rt") as f:
                rows.extend(json.loads(x) for x in f)
        chain_removed = sum(1 for r in rows if r["id"].startswith("chain") and not r["kept"])
        # score on neardup_dev's own documents only
        own = out / f"own_{tol}.jsonl"
        own.write_text("".join(json.dumps({"id": r["id"], "cluster_id": r["cluster_id"]}) + "\n"
                               for r in rows if not r["id"].startswith("chain")))
        score = subprocess.run([sys.executable, "benchmarks/neardup_score.py", "--clusters", str(own)],
                               check=True, cwd=REPO, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        f1, p_, r_ = (score.split()[i] for i in (1, 3, 5))
        print(f"| {name} | {m['cluster_size']['largest']} | {chain_removed} of {args.chains * args.length} "
              f"| {m['kept_check']['members_split']} | {f1} | {p_} | {r_} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
