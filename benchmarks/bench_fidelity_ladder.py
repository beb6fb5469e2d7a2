"""A ladder of proxies: how alike do rungs of increasing size rank the same mixtures?

    python benchmarks/bench_fidelity_ladder.py [--corpus shared|demo] [--random 9] [--seeds 3]
        [--rung SPEC ...]

A rung is ``backend:budget=N[:param=value...]``, e.g. ``ngram:budget=1000000:order=3`` or
``transformer:budget=10000000:d_model=384:n_layers=8:n_heads=6:context=256:batch_size=32:lr=0.001:device=cuda``.
Default rungs (all reachable on 2 CPU cores): the search proxy of configs/mix/demo.yaml
(a trigram at 1M tokens), the demo's fidelity proxy (a 4-gram at 2M) and a 5-gram at
10M. On a GPU machine (``pip install 'curation[transformer]'``) add the issue's ladder:

    --rung ngram:budget=1000000:order=3 \\
    --rung transformer:budget=1000000:device=cuda \\
    --rung transformer:budget=10000000:d_model=384:n_layers=8:n_heads=6:context=256:batch_size=32:lr=0.001:device=cuda

Mixtures: the baselines (uniform, natural, temperature 2 and 5, UniMax; one mixture
under several names runs once) and ``--random`` RegMix samples, the constraints of
configs/mix/demo.yaml at the first rung's budget. Every mixture runs on the test split
with ``--seeds`` seeds (10000...) under every rung: the same seeds draw the same
documents in every rung (common random numbers). Printed: each rung's mean target per
mixture, Spearman and Kendall between every pair of rungs, each rung's best mixture,
the same among the ``--top`` best mixtures of the first rung, the seed noise (sd of the
per-seed targets, averaged over mixtures), seconds per run.
Results are cached in benchmarks/out/fidelity_ladder/ (a rerun recomputes nothing) and
written to benchmarks/out/fidelity_ladder.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_mix import load_bench_corpus   # noqa: E402  the same seven shared domains

OUT = REPO / "benchmarks" / "out"
DEFAULT_RUNGS = ("ngram:budget=1000000:order=3", "ngram:budget=2000000:order=4",
                 "ngram:budget=10000000:order=5")


def parse_rung(spec: str) -> tuple[str, int, dict]:
    backend, *rest = spec.split(":")
    params: dict = {}
    for kv in rest:
        k, _, v = kv.partition("=")
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        params[k] = v
    if backend not in ("ngram", "transformer") or "budget" not in params:
        raise SystemExit(f"bad rung {spec!r}: backend:budget=N[:param=value...]")
    return backend, int(params.pop("budget")), params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=("demo", "shared"), default="shared")
    ap.add_argument("--random", type=int, default=9, help="RegMix random samples besides the baselines")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random samples")
    ap.add_argument("--rung", action="append", help="a rung (repeatable; default: three n-gram rungs)")
    ap.add_argument("--top", type=int, default=5, help="also rank only the best TOP mixtures of the "
                    "first rung: agreement among good mixtures is what a choice needs")
    args = ap.parse_args()
    import numpy as np

    from curation.mixture.fidelity import describe_proxy
    from curation.mixture.paired import rank_agreement
    from curation.mixture.proposers import proposer_from_spec
    from curation.mixture.proxy import NGramBackend, ResultCache
    from curation.mixture.search import FINAL_SEED_BASE
    from curation.mixture.tokenizer import StatedTokenizer
    from curation.mixture.types import Constraints, mixture_key

    rungs = [parse_rung(s) for s in (args.rung or DEFAULT_RUNGS)]
    t0 = time.time()
    splits = load_bench_corpus(args.corpus)
    if splits is None:
        return 2
    tok = StatedTokenizer.for_corpus(splits)
    domains = splits.domain_infos(tok)
    c = Constraints(min_weight=0.01, max_epochs=4, budget_tokens=rungs[0][1])
    mixtures: dict[str, tuple[str, dict]] = {}
    for spec in ({"name": "uniform"}, {"name": "natural"}, {"name": "temperature", "taus": [2, 5]},
                 {"name": "unimax"}):
        for p in proposer_from_spec(spec, domains, c).propose([], 1, np.random.default_rng(0)):
            label = p.strategy + (f"({p.params['tau']:g})" if "tau" in p.params else "")
            key = mixture_key(p.weights)
            if key in mixtures:
                mixtures[key] = (mixtures[key][0] + " = " + label, mixtures[key][1])
            else:
                mixtures[key] = (label, p.weights)
    draws = proposer_from_spec({"name": "random"}, domains, c).propose(
        [], args.random, np.random.default_rng([args.seed, 0xF1DE]))
    for i, p in enumerate(draws, 1):
        mixtures.setdefault(mixture_key(p.weights), (f"random-{i}", p.weights))
    total = sum(d.tokens for d in domains)
    print(f"corpus {args.corpus}: {len(domains)} domains, {total:,} train tokens under "
          f"{tok.description}; {len(mixtures)} mixtures, {args.seeds} seeds, test split; "
          f"{os.cpu_count()} CPUs; setup {time.time() - t0:.1f} s")

    cache = ResultCache(str(OUT / "fidelity_ladder" / args.corpus))
    table: dict[str, dict] = {}
    for backend, budget, params in rungs:
        name = describe_proxy(backend, budget, params)
        if backend == "transformer":
            from curation.mixture.transformer import TransformerBackend
            be = TransformerBackend(splits, tok, **params)
        else:
            be = NGramBackend(splits, tok, **params)
        means, sds, secs, computed = {}, [], [], 0
        for key, (label, w) in mixtures.items():
            ts = []
            for s in range(args.seeds):
                r, cached = cache.run(be, w, FINAL_SEED_BASE + s, budget, "test")
                ts.append(r.target)
                if not cached:
                    computed += 1
                secs.append(r.seconds)
            means[key] = statistics.fmean(ts)
            sds.append(statistics.stdev(ts))
        table[name] = {"means": means, "noise_sd": statistics.fmean(sds),
                       "seconds_per_run": statistics.fmean(secs), "computed": computed}
        best = min(means, key=means.get)
        print(f"{name}: best {mixtures[best][0]} ({means[best]:.4f}); seed noise sd "
              f"{table[name]['noise_sd']:.4f}; {table[name]['seconds_per_run']:.2f} s per run "
              f"({computed} computed)")

    names = list(table)
    keys = list(mixtures)
    print("\n| mixture | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k in sorted(keys, key=lambda k: table[names[0]]["means"][k]):
        print(f"| {mixtures[k][0]} | " + " | ".join(f"{table[n]['means'][k]:.4f}" for n in names) + " |")
    pairs = []
    top = sorted(keys, key=table[names[0]]["means"].get)[:args.top]
    print(f"\n| rung | rung | Spearman | Kendall | Spearman, top {len(top)} | Kendall, top {len(top)} "
          f"| same best |\n|---|---|---:|---:|---:|---:|---|")

    def fmt(x):
        return "n/a" if x is None else f"{x:+.3f}"
    for a, b in itertools.combinations(names, 2):
        ra = rank_agreement([table[a]["means"][k] for k in keys], [table[b]["means"][k] for k in keys])
        rt = rank_agreement([table[a]["means"][k] for k in top], [table[b]["means"][k] for k in top])
        same = min(keys, key=table[a]["means"].get) == min(keys, key=table[b]["means"].get)
        pairs.append({"a": a, "b": b, **ra, "top": {"mixtures": [mixtures[k][0] for k in top], **rt},
                      "same_best": same})
        print(f"| {a} | {b} | {fmt(ra['spearman'])} | {fmt(ra['kendall'])} | {fmt(rt['spearman'])} "
              f"| {fmt(rt['kendall'])} | {'yes' if same else 'no'} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fidelity_ladder.json").write_text(json.dumps(
        {"corpus": args.corpus, "seeds": args.seeds, "mixtures": {k: mixtures[k][0] for k in keys},
         "rungs": table, "pairs": pairs, "seconds": time.time() - t0}, indent=2, sort_keys=True) + "\n")
    print(f"\n{time.time() - t0:.0f} s in all -> {OUT / 'fidelity_ladder.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
