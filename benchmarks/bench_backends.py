"""Do the fast n-gram proxy and the small transformer rank mixtures the same way?

    python benchmarks/bench_backends.py [--budget 300000] [--seed 0] [--random 6]
        [--threads 2] [--batch-size 8] [--no-repeat] [--noise-seeds 2] [--corpus demo|shared]

On the demo corpus (eight domains, shipped in the package; ``--corpus shared``: seven
domains of ../shared/corpora instead), the stated tokenizer (byte-level BPE 4096),
the constraints of configs/mix/demo.yaml (min weight 0.01, at most 4 epochs), the
mixtures of curation.mixture.proposers: uniform, natural, temperature tau 2 and 5,
UniMax and ``--random`` RegMix random-search samples (seeded by ``--seed``). Every
mixture is one proxy run under each backend, same seed, same budget, so the same
training tokens (`curation.mixture.proxy.sample_mixture`), scored on the validation
split. Printed:

- each mixture's target (mean bits per byte over the domains) under both backends
  and its rank under each;
- Spearman and Kendall (tau-b) rank correlations of the two backends' targets
  (scipy.stats), and per domain of the domain's bits per byte across the mixtures;
- cost on this machine's cores: the n-gram backend one run at a time in one process
  (it is single-threaded NumPy) and then the same runs in two worker processes
  (runs per minute on 2 cores; the pool's results are checked equal to the
  sequential ones); the transformer one run at a time with ``--threads`` intra-op
  threads (default 2), seconds per run split into training and evaluation, and
  (unless ``--no-repeat``) the first mixture run again to check that the floats
  repeat exactly;
- the seed noise: the first mixture (uniform) at ``--noise-seeds`` more seeds under
  both backends, the standard deviation of its target, and how many pairs of
  mixtures differ by less than twice it (the search calls those ties).

The transformer uses the backend's defaults (d_model 128, 4 layers, 4 heads, context
128, lr 3e-3, ~1.33M parameters) except the batch: ``--batch-size`` 8 rows of 128
(1,024 tokens a step) rather than 32, because at budgets of a few hundred thousand
tokens the number of optimiser steps limits the loss (measured on the demo corpus,
uniform mixture: 1M tokens, 2.99 bits per byte with batch 8 vs 3.09 with 32). The
default budget, 300k tokens, makes one transformer run about a minute on 2 cores.
Results go to benchmarks/out/bench_backends.json as well.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

from bench_mix import load_bench_corpus

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "bench_backends.json"

_NGRAM = None          # the n-gram backend, inherited by the forked pool's workers


def _ngram_run(job):
    weights, seed, budget = job
    r = _NGRAM.run(weights, seed, budget)
    return r.target, r.bpb, r.seconds


def _mixtures(domains, constraints, seed, n_random):
    """The fixed proposers' mixtures, then RegMix random samples; a mixture equal to an
    earlier one (UniMax is uniform when no cap binds) is left out and one more random
    sample drawn instead, so there are 5 + n_random distinct mixtures in the usual case."""
    import numpy as np
    from curation.mixture.proposers import Trial, make_proposer
    from curation.mixture.types import mixture_key
    out, seen, dropped = [], set(), []
    for name, params in (("uniform", {}), ("natural", {}), ("temperature", {"taus": [2, 5]}),
                         ("unimax", {})):
        for p in make_proposer(name, domains, constraints, **params).propose([], 1, None):
            label = name + (f" tau={p.params['tau']:g}" if "tau" in p.params else "")
            if mixture_key(p.weights) in seen:
                dropped.append(label)
                continue
            seen.add(mixture_key(p.weights))
            out.append((label, p.weights))
    history = [Trial("fixed", 0, w, 0.0) for _, w in out]        # random search skips these
    rnd = make_proposer("random", domains, constraints).propose(
        history, n_random + len(dropped), np.random.default_rng(seed))
    out += [(f"random #{i + 1} (s={p.params['strength']:.2g})", p.weights) for i, p in enumerate(rnd)]
    return out, dropped


def _ties(values, margin):
    return sum(abs(a - b) < margin for i, a in enumerate(values) for b in values[i + 1:])


def _ranks(values):
    from scipy.stats import rankdata
    return [int(r) for r in rankdata(values, method="min")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random", type=int, default=6, help="RegMix random-search mixtures")
    ap.add_argument("--threads", type=int, default=2, help="the transformer's intra-op threads")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-repeat", action="store_true", help="skip the determinism repeat")
    ap.add_argument("--noise-seeds", type=int, default=2,
                    help="extra seeds of the uniform mixture under both backends: the seed noise")
    ap.add_argument("--corpus", choices=("demo", "shared"), default="demo")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from scipy.stats import kendalltau, spearmanr

    from curation.mixture.proxy import NGramBackend
    from curation.mixture.tokenizer import StatedTokenizer
    from curation.mixture.types import Constraints

    t0 = time.time()
    splits = load_bench_corpus(args.corpus)
    if splits is None:
        return 2
    tok = StatedTokenizer.for_corpus(splits)
    domains = splits.domain_infos(tok)
    c = Constraints(min_weight=0.01, max_epochs=4, budget_tokens=args.budget)
    mixtures, dropped = _mixtures(domains, c, args.seed, args.random)
    names = splits.domains
    valid_tokens = sum(e.n_tokens for e in splits.encoded(tok)["valid"].values())
    print(f"corpus {args.corpus}: {len(names)} domains, {sum(d.tokens for d in domains):,} train / "
          f"{valid_tokens:,} valid tokens under {tok.description}; setup {time.time() - t0:.1f} s")
    print(f"budget {args.budget:,} tokens, seed {args.seed}, {len(mixtures)} mixtures; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    if dropped:
        print(f"left out as equal to an earlier mixture: {', '.join(dropped)} "
              f"(one more random sample each)")

    # ---- the n-gram backend: one process, then two (before torch is imported: fork-safe)
    global _NGRAM
    _NGRAM = NGramBackend(splits, tok)
    _NGRAM.run(mixtures[0][1], args.seed, args.budget)                 # warm the eval keys
    jobs = [(w, args.seed, args.budget) for _, w in mixtures]
    t = time.perf_counter()
    ngram = [_ngram_run(j) for j in jobs]
    ngram_seq_s = time.perf_counter() - t
    t = time.perf_counter()
    with mp.get_context("fork").Pool(2) as pool:
        pooled = pool.map(_ngram_run, jobs, chunksize=1)
    ngram_pool_s = time.perf_counter() - t
    assert [p[:2] for p in pooled] == [n[:2] for n in ngram], "the pooled n-gram runs differ"
    noise_seeds = [args.seed + 1 + i for i in range(args.noise_seeds)]
    ngram_noise = [ngram[0][0]] + [_NGRAM.run(mixtures[0][1], s, args.budget).target for s in noise_seeds]

    # ---- the transformer
    from curation.mixture.transformer import TransformerBackend
    tb = TransformerBackend(splits, tok, threads=args.threads, batch_size=args.batch_size)
    print(f"transformer: {tb.parameter_count():,} parameters, device {tb.device}, "
          f"threads {args.threads}, batch {args.batch_size} x {tb.context}, lr {tb.lr:g}")
    trans = []
    for label, w in mixtures:
        r = tb.run(w, args.seed, args.budget)
        trans.append(r)
        print(f"  {label:<24} {r.target:.4f} bpb  {r.seconds:5.1f} s "
              f"(train {r.detail['seconds_train']:.1f}, eval {r.detail['seconds_eval']:.1f}, "
              f"{r.detail['steps']} steps)", flush=True)
    repeat = None
    if not args.no_repeat:
        again = tb.run(mixtures[0][1], args.seed, args.budget)
        repeat = (again.loss, again.bpb, again.target) == (trans[0].loss, trans[0].bpb, trans[0].target)
    trans_s = sum(r.seconds for r in trans)
    trans_noise = [trans[0].target] + [tb.run(mixtures[0][1], s, args.budget).target for s in noise_seeds]

    # ---- agreement
    ng_t = [n[0] for n in ngram]
    tr_t = [r.target for r in trans]
    rs, rk = _ranks(ng_t), _ranks(tr_t)
    sp, kt = spearmanr(ng_t, tr_t), kendalltau(ng_t, tr_t)
    print()
    print(f"{'mixture':<24} " + " ".join(f"{d[:6]:>6}" for d in names) +
          "   n-gram  rank   transf.  rank")
    for (label, w), a, ra, b, rb in zip(mixtures, ng_t, rs, tr_t, rk):
        print(f"{label:<24} " + " ".join(f"{w[d]:6.3f}" for d in names) +
              f"   {a:.4f}  {ra:4d}   {b:.4f}  {rb:4d}")
    print()
    print(f"targets: Spearman {sp.statistic:+.3f} (p={sp.pvalue:.3g}), "
          f"Kendall tau-b {kt.statistic:+.3f} (p={kt.pvalue:.3g}) over {len(mixtures)} mixtures")
    per_domain = {}
    for d in names:
        a = [n[1][d] for n in ngram]
        b = [r.bpb[d] for r in trans]
        per_domain[d] = {"spearman": float(spearmanr(a, b).statistic),
                         "kendall": float(kendalltau(a, b).statistic)}
    print("per domain (bpb across mixtures), Spearman / Kendall: " + ", ".join(
        f"{d} {v['spearman']:+.2f}/{v['kendall']:+.2f}" for d, v in per_domain.items()))
    if noise_seeds:
        import statistics
        sd_ng, sd_tr = statistics.stdev(ngram_noise), statistics.stdev(trans_noise)
        print(f"seed noise ({mixtures[0][0]}, seeds {[args.seed] + noise_seeds}): target sd n-gram "
              f"{sd_ng:.4f}, transformer {sd_tr:.4f} bpb; pairs of mixtures closer than twice that, "
              f"counted as ties: n-gram {_ties(ng_t, 2 * sd_ng)}, transformer {_ties(tr_t, 2 * sd_tr)} "
              f"of {len(ng_t) * (len(ng_t) - 1) // 2}")
    best_ng = min(range(len(ng_t)), key=ng_t.__getitem__)
    best_tr = min(range(len(tr_t)), key=tr_t.__getitem__)
    print(f"best mixture: n-gram {mixtures[best_ng][0]!r} (transformer rank {rk[best_ng]}), "
          f"transformer {mixtures[best_tr][0]!r} (n-gram rank {rs[best_tr]})")
    n = len(mixtures)
    print()
    print(f"n-gram:      {ngram_seq_s / n:6.2f} s/run, one process: {60 * n / ngram_seq_s:7.1f} runs/min; "
          f"two worker processes: {60 * n / ngram_pool_s:7.1f} runs/min on 2 cores")
    print(f"transformer: {trans_s / n:6.2f} s/run with {args.threads} threads "
          f"(train {sum(r.detail['seconds_train'] for r in trans) / n:.1f} s, eval "
          f"{sum(r.detail['seconds_eval'] for r in trans) / n:.1f} s): {60 * n / trans_s:7.2f} runs/min "
          f"on {args.threads} cores; n-gram/transformer speed ratio "
          f"{trans_s / ngram_pool_s:.0f}x (runs per minute, both on 2 cores)")
    if repeat is not None:
        print(f"determinism: the first mixture rerun gives identical floats: {repeat}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "command": " ".join(sys.argv), "corpus": args.corpus, "budget_tokens": args.budget,
        "seed": args.seed, "tokenizer": tok.description,
        "transformer": tb.identity()["params"], "parameters": tb.parameter_count(),
        "mixtures": [{"label": label, "weights": w, "ngram_target": a, "transformer_target": b,
                      "ngram_bpb": ng[1], "transformer_bpb": r.bpb,
                      "transformer_seconds": r.seconds, "ngram_seconds": ng[2]}
                     for (label, w), a, b, ng, r in zip(mixtures, ng_t, tr_t, ngram, trans)],
        "spearman": float(sp.statistic), "kendall": float(kt.statistic), "per_domain": per_domain,
        "ngram_runs_per_min_1proc": 60 * n / ngram_seq_s, "ngram_runs_per_min_2proc": 60 * n / ngram_pool_s,
        "transformer_seconds_per_run": trans_s / n, "transformer_runs_per_min": 60 * n / trans_s,
        "deterministic_repeat": repeat, "noise_seeds": noise_seeds,
        "ngram_noise_targets": ngram_noise, "transformer_noise_targets": trans_noise},
        indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}; total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
