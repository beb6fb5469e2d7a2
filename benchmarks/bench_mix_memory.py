"""Does `curate mix` (and `curate export` after it) hold the corpus? Both on web-length
corpora of two sizes (make_web_corpus.py), each run's whole process tree sampled from
/proc (memwatch: PSS summed over the tree), and the ratio of the peaks. Mix holds a
bounded sample per domain, so its ratio should be near 1 however far apart the sizes
are; export streams through a spill file, likewise.

    python benchmarks/bench_mix_memory.py [--sizes 20000,80000] [--bound 4000000]

The web corpus has no domain field: its shards are dealt round-robin to --domains
domains (``sources:`` in the mix config). The search is the smallest one (two
baselines, one random proposal, a 20k-token n-gram proxy), so what is measured is the
data layer. ``--bound`` is ``sample.max_bytes_per_domain``; ``--bound 0`` holds every
document (the behaviour before the sample), the peer to compare with.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_dedup import curate_cmd, ensure_corpus, measure  # noqa: E402


def mix_config(corpus: str, domains: int, bound: int) -> dict:
    shards = sorted(glob.glob(os.path.join(corpus, "*.jsonl.gz")))
    sources = {f"d{k}": shards[k::domains] for k in range(domains)}
    return {"sources": sources, "tokenizer_vocab": 512,
            "sample": {"max_bytes_per_domain": bound or 10**15},
            "proxy": {"backend": "ngram", "budget_tokens": 20000},
            "constraints": {"min_weight": 0.01, "max_epochs": 4},
            "search": {"rounds": 1, "runs_per_round": 1, "noise_seeds": 2, "final_seeds": 3},
            "baselines": [{"name": "uniform"}, {"name": "natural"}],
            "proposers": [{"name": "random"}]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,80000", help="two or more corpus sizes, comma-separated")
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--bound", type=int, default=4_000_000,
                    help="sample.max_bytes_per_domain (0: no bound, as before)")
    ap.add_argument("--export-tokens", type=int, default=1_000_000,
                    help="tokens for curate export after each mix (0: no export)")
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "mix_memory"))
    ap.add_argument("--curate-cmd", help="how to call curate (default: this Python's -m pipelines.cli)")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    curate = curate_cmd(a)
    os.makedirs(a.out, exist_ok=True)
    os.environ.pop("ANTHROPIC_API_KEY", None)
    rows = []
    for n in sizes:
        corpus = ensure_corpus(a.data_dir, n)
        tag = f"{n}_b{a.bound}"
        cfg_path = os.path.join(a.out, f"mix_{tag}.yaml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump(mix_config(corpus, a.domains, a.bound), f)
        run = os.path.join(a.out, f"mix_{tag}")
        stages = [("mix", [*curate, "mix", "--config", cfg_path, "--output", run])]
        if a.export_tokens:
            stages.append(("export", [*curate, "export", "--mixture", os.path.join(run, "mixture.yaml"),
                                      "--output", os.path.join(a.out, f"export_{tag}"),
                                      "--tokens", str(a.export_tokens)]))
        for stage, cmd in stages:
            r = measure(cmd, os.path.join(a.out, "logs", f"{stage}_{tag}"))
            if r["rc"] != 0:
                print(f"{stage} at {n} failed: {r['stderr_tail']}", file=sys.stderr)
                return 1
            row = {"stage": stage, "documents": n, "bound": a.bound, "wall_s": r["wall_s"],
                   "cpu_s": r["cpu_s"], "peak_pss_mib": r["peak_pss_mib"], "cmd": r["cmd"]}
            if stage == "mix":
                sample = json.load(open(os.path.join(run, "summary.json")))["data_sample"]["domains"]
                row["sampled_documents"] = sum(v["sample_documents"] for v in sample.values())
            rows.append(row)
            held = f"  (sample: {row['sampled_documents']:,} documents)" if "sampled_documents" in row else ""
            print(f"{stage:6s} {n:>9,} documents  wall {r['wall_s']:8.1f} s  CPU {r['cpu_s']:8.1f} s  "
                  f"peak PSS {r['peak_pss_mib']:8.1f} MiB{held}", flush=True)
    print()
    for stage in ("mix", "export"):
        own = [x for x in rows if x["stage"] == stage]
        if len(own) >= 2:
            lo, hi = own[0], own[-1]
            print(f"{stage}: {hi['documents'] / lo['documents']:.1f}x the documents -> "
                  f"{hi['peak_pss_mib'] / lo['peak_pss_mib']:.2f}x the peak PSS "
                  f"(bound {'none' if not a.bound else f'{a.bound:,} bytes per domain'})")
    with open(os.path.join(a.out, f"results_b{a.bound}.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
