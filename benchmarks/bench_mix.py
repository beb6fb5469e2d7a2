"""The mixture search on real corpora, and the cost of the demo search.

    python benchmarks/bench_mix.py [--budget 2000000] [--rounds 4] [--skip-demo]

1. `curate mix` (the library call) on seven domains of ../shared/corpora (books,
   news, reference, reviews, speeches, wiki, noisy web), the n-gram proxy: the chosen
   mixture's target on the test split against uniform, natural and the best
   temperature, mean and spread over the final seeds; best-so-far validation target
   against proxy runs used, per strategy; proxy runs per minute.
2. `curate mix --config configs/mix/demo.yaml` as a user runs it: wall time against
   the 10-minute target.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))
OUT = REPO / "benchmarks" / "out" / "mix"
DOMAINS = {"books": "books_mobydick", "news": "news_bbc", "reference": "reference_foldoc",
           "reviews": "reviews_movies", "speeches": "speeches_sotu", "wiki": "wiki_wikitext2",
           "web": "web_noisy"}


def load_bench_corpus(corpus: str):
    """CorpusSplits of the demo corpus or of DOMAINS from ../shared/corpora (seed 0);
    None, with the reason printed, when the shared files are missing."""
    sys.path.insert(0, str(REPO))
    from curation.mixture.data import load_corpus
    if corpus == "demo":
        from curation.demo import demo_glob
        return load_corpus([demo_glob()], seed=0)
    missing = [n for n in DOMAINS.values() if not (CORPORA / f"{n}.jsonl.gz").exists()]
    if missing:
        print(f"{CORPORA} lacks {missing}", file=sys.stderr)
        return None
    return load_corpus(domains={d: str(CORPORA / f"{n}.jsonl.gz") for d, n in DOMAINS.items()}, seed=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs-per-round", type=int, default=2)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    missing = [n for n in DOMAINS.values() if not (CORPORA / f"{n}.jsonl.gz").exists()]
    if missing:
        print(f"{CORPORA} lacks {missing}: this benchmark needs ../shared/corpora", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    os.environ.pop("ANTHROPIC_API_KEY", None)
    from curation.mixture.config import MixConfig
    from curation.mixture.run import run_mix
    if OUT.exists():
        shutil.rmtree(OUT)
    cfg = MixConfig(
        sources={d: str(CORPORA / f"{n}.jsonl.gz") for d, n in DOMAINS.items()},
        output=str(OUT / "shared"),
        proxy={"backend": "ngram", "budget_tokens": args.budget},
        search={"rounds": args.rounds, "runs_per_round": args.runs_per_round, "noise_seeds": 3,
                "final_seeds": 3, "final_top": 1},
        baselines=[{"name": "uniform"}, {"name": "natural"},
                   {"name": "temperature", "taus": [1.5, 2.0, 3.0, 5.0]}, {"name": "unimax"}],
        proposers=[{"name": "random"}, {"name": "regression"}])
    t0 = time.time()
    s = run_mix(cfg, log=lambda m: None)
    wall = time.time() - t0
    import csv
    rows = list(csv.DictReader((OUT / "shared" / "candidates.csv").open()))
    finals: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] == "final":
            finals.setdefault(r["strategy"], []).append(float(r["target_bpb"]))
    import statistics as st

    def line(name):
        v = finals[name]
        return f"| {name} | {st.fmean(v):.4f} | {st.stdev(v):.4f} | {len(v)} |"

    temps = sorted((k for k in finals if k.startswith("temperature")), key=lambda k: st.fmean(finals[k]))
    print(f"\n### Mixture search on {len(DOMAINS)} domains of ../shared/corpora (n-gram proxy, "
          f"{args.budget:,} tokens per run)\n")
    print(f"Domains: {', '.join(f'{d} ({n})' for d, n in DOMAINS.items())}. Search: "
          f"{args.rounds} rounds x {args.runs_per_round} runs for random search and regression; "
          f"seed noise (natural, 3 seeds, validation) sd {s['seed_noise_sd']:.4f} bits per byte.\n")
    print("| finalist (test split, fresh seeds) | mean target bpb | sd | seeds |")
    print("|---|---|---|---|")
    chosen = s["chosen_strategy"]
    for k in ["uniform", "natural", *temps, "unimax", "random", "regression"]:
        if k in finals:
            print(line(k) + (" **chosen**" if k == chosen else ""))
    print(f"\nChosen: {chosen}, weights {s['chosen']}")
    print("\n| against | difference (chosen - baseline) | 2 x seed noise | verdict |")
    print("|---|---|---|---|")
    for c in s["against_baselines"]:
        print(f"| {c['baseline']} | {c['difference']:+.4f} | {c['two_noise_sd']:.4f} | {c['verdict']} |")
    print("\nBest-so-far validation target against the strategy's own proxy runs:\n")
    for k, curve in s["best_so_far"].items():
        print(f"- {k}: " + ", ".join(f"{x:.4f}" for x in curve))
    computed = s["proxy_runs_computed"]
    search_s = s["timings_s"]["search"]
    print(f"\n{s['proxy_runs']} proxy runs ({computed} computed) in {search_s:.1f} s of search: "
          f"{computed / search_s * 60:.1f} n-gram proxy runs per minute on 2 cores "
          f"(data + tokenizer + statistics {s['timings_s']['data'] + s['timings_s']['tokenizer_and_stats']:.1f} s; "
          f"wall {wall:.1f} s)")

    if not args.skip_demo:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "mix", "--config",
                        "configs/mix/demo.yaml", "--output", str(OUT / "demo")], cwd=REPO,
                       check=True, env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"})
        demo = time.time() - t0
        d = json.loads((OUT / "demo" / "summary.json").read_text())
        print(f"\nDemo search (`curate mix --config configs/mix/demo.yaml`, no API key): {demo:.1f} s "
              f"wall for {d['proxy_runs']} proxy runs; target 600 s: "
              f"{'met' if demo < 600 else 'NOT met'} ({600 / demo:.1f}x under)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
