"""Mixture proposers on targets whose answer is known: regret against a dense search.

    python benchmarks/bench_mix_known.py [--budget 1000000] [--rounds 12] [--runs-per-round 2]
        [--seeds 0,1,2,3,4] [--dense 300] [--polish 40] [--max-bytes 4000000]
        [--claude-max-usd 2] [--claude-model M] [--claude-samples 3] [--no-claude] [--quick]

Five domains of ../shared/corpora (Python stdlib code, Python docs, State of the Union
speeches, BBC news, FOLDOC), each a bounded sample of ``--max-bytes`` of text, split
80/10/10; the stated tokenizer (byte-level BPE 4096); the n-gram proxy at
``--budget`` tokens per run; constraints min weight 0.01, at most 4 epochs (of the
sample: the caps are computed from the tokens the proxy really draws from).

Three weighted targets whose answer is known in advance: the weight should move to
the named domains (one, two and three of them). Per target:

1. The reference optimum: a dense search at the same budget, split ("valid") and seed
   (0) as the proposers' runs: the baselines, ``--dense`` RegMix samples (the random
   proposer with its own fixed seed), every uniform-over-a-subset corner, a 0.1 grid
   over the face of the target's domains, target-heavy blends with uniform, then a
   greedy polish of the best (``--polish`` runs moving 0.05 / 0.02 between pairs of
   domains). The best target found is the optimum; the figures below are against it.
2. Each proposer (random search, RegMix regression; Claude when ANTHROPIC_API_KEY is
   set, against api.anthropic.com only: a local test server's scripted reply is not a
   measurement; the cap is printed first) runs the search loop of
   curation/mixture/search.py: the fixed baselines first (uniform, natural,
   temperature 2 and 5, UniMax: they count as runs used), then
   ``--rounds`` rounds of ``--runs-per-round``, each proposer seeing the baselines and
   its own trials, rng ``default_rng([seed, round, i])``, once per search seed.
3. Regret = best-so-far target - optimum, against runs used; runs to come within 1% of
   the optimum; and, because 1% of ~2 bits per byte can be easy, runs to come within 1%
   of the gap between the natural mixture and the optimum (the JSON also has 10%).

The per-domain bits per byte of a run do not depend on the target, so each mixture is
run once (cached in benchmarks/out/mix_known/) and every target is computed from the
same run with `curation.mixture.proxy.Target`, the backend's own formula. Output:
tables on stdout, benchmarks/out/mix_known/bench_mix_known.json, and the plot
docs/img/mix_known_regret.svg (``--quick``: under benchmarks/out/ instead).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics as st
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))
OUT = REPO / "benchmarks" / "out" / "mix_known"
SVG = REPO / "docs" / "img" / "mix_known_regret.svg"
DOMAINS = {"code": "code_python_stdlib", "techdocs": "techdocs_python",
           "speeches": "speeches_sotu", "news": "news_bbc", "reference": "reference_foldoc"}
TARGETS = {
    "one": {"speeches": 1.0},
    "two": {"code": 0.5, "techdocs": 0.5},
    "three": {"news": 1 / 3, "reference": 1 / 3, "speeches": 1 / 3},
}
BASELINES = [{"name": "uniform"}, {"name": "natural"}, {"name": "temperature", "taus": [2.0, 5.0]},
             {"name": "unimax"}]
SEARCH_SEED = 0          # the proxy seed of every search run, as in search.py
DENSE_SEED = 987_654     # the dense search's sampler: a stream no search seed uses
NOISE_SEEDS = (1, 2)     # extra proxy seeds for the noise check


def pct(x):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}%"


class Runner:
    """Proxy runs through the cache; every target comes from the same per-domain bpb."""

    def __init__(self, backend, cache, budget):
        self.backend, self.cache, self.budget = backend, cache, budget
        self.computed = self.cached = 0
        self.seconds = 0.0

    def bpb(self, weights, seed=SEARCH_SEED, split="valid"):
        t = time.perf_counter()
        r, hit = self.cache.run(self.backend, weights, seed, self.budget, split)
        if hit:
            self.cached += 1
        else:
            self.computed += 1
            self.seconds += time.perf_counter() - t
        return dict(r.bpb)


def dense_mixtures(feasible, domains, c, n_random):
    """(kind, label, weights): baselines, RegMix samples, subset corners, target faces
    and target-heavy blends; projected onto the feasible set, duplicates dropped."""
    import numpy as np

    from curation.mixture.proposers import proposer_from_spec
    from curation.mixture.types import mixture_key
    names = list(feasible.names)
    out, seen = [], {}

    def add(kind, label, w):
        w, _ = feasible.project(w)
        k = mixture_key(w)
        if k in seen:       # say every way a mixture was reached (a sparse sample is a corner)
            i = seen[k]
            out[i] = (out[i][0], out[i][1] + " = " + label, out[i][2])
            return
        seen[k] = len(out)
        out.append((kind, label, w))

    for spec in BASELINES:
        for p in proposer_from_spec(spec, domains, c).propose([], 1, None):
            add("baseline", p.strategy + (f" tau={p.params['tau']:g}" if "tau" in p.params else ""),
                p.weights)
    rnd = proposer_from_spec({"name": "random"}, domains, c)
    for p in rnd.propose([], n_random, np.random.default_rng(DENSE_SEED)):
        add("random", "RegMix sample", p.weights)
    for r in range(1, len(names) + 1):
        for sub in itertools.combinations(names, r):
            add("corner", "uniform on " + "+".join(sub), {d: 1.0 / r for d in sub})
    for tname, tw in TARGETS.items():
        on = sorted(tw)
        if len(on) > 1:
            steps = range(11)
            for ks in itertools.product(steps, repeat=len(on) - 1):
                if sum(ks) <= 10:
                    w = {d: k / 10 for d, k in zip(on, ks)}
                    w[on[-1]] = (10 - sum(ks)) / 10
                    add("face", f"{tname}-face grid", w)
        for t in (0.5, 0.7, 0.8, 0.9):
            tot = sum(tw.values())
            add("blend", f"{tname}: {t:g} target + uniform",
                {d: t * tw.get(d, 0.0) / tot + (1 - t) / len(names) for d in names})
    return out


def polish(best_w, best_t, value, feasible, runs_left):
    """Greedy first-improvement moves of `step` weight between two domains."""
    from curation.mixture.types import mixture_key
    names = list(feasible.names)
    lo = float(feasible.lower[0])
    tried = {mixture_key(best_w)}
    gain0 = best_t
    for step in (0.05, 0.02):
        improved = True
        while improved and runs_left > 0:
            improved = False
            for a, b in itertools.permutations(names, 2):
                if runs_left <= 0:
                    break
                if best_w[a] - step < lo - 1e-12:
                    continue
                w = dict(best_w)
                w[a] -= step
                w[b] += step
                w, _ = feasible.project(w)
                k = mixture_key(w)
                if k in tried:
                    continue
                tried.add(k)
                runs_left -= 1
                t = value(w)
                if t < best_t - 1e-12:
                    best_w, best_t, improved = w, t, True
                    break
    return best_w, best_t, gain0 - best_t


def first_within(curve, limit):
    return next((i + 1 for i, v in enumerate(curve) if v <= limit + 1e-12), None)


def on_target(weights, tw):
    return sum(weights[d] for d in tw if tw[d] > 0)


def claude_proposer(args, splits, domains, c, feasible, tw, usd):
    from curation.mixture import claude
    desc = "a weighted mean of bits per byte (" + ", ".join(
        f"{d} {w:.3g}" for d, w in sorted(tw.items())) + ")"
    kw = {"model": args.claude_model} if args.claude_model else {}
    if args.claude_samples:
        kw["samples"] = claude.domain_samples(splits, args.claude_samples, 600, 0)
    return claude.ClaudeProposer(domains, c, target=desc, project=feasible.project, max_usd=usd, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=1_000_000, help="tokens per proxy run")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--runs-per-round", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="search seeds (at least 3)")
    ap.add_argument("--dense", type=int, default=300, help="RegMix samples in the dense search")
    ap.add_argument("--polish", type=int, default=40, help="polish runs per target")
    ap.add_argument("--max-bytes", type=int, default=4_000_000, help="sample bound per domain")
    ap.add_argument("--claude-max-usd", type=float, default=2.0,
                    help="spending cap for the whole bench's Claude calls")
    ap.add_argument("--claude-model", default=None)
    ap.add_argument("--claude-samples", type=int, default=3, help="documents shown per domain")
    ap.add_argument("--no-claude", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    args = ap.parse_args()
    out_dir, svg_path = OUT, SVG
    if args.quick:
        args.budget, args.rounds, args.dense, args.polish = 200_000, 3, 30, 6
        args.max_bytes = min(args.max_bytes, 1_000_000)
        out_dir = OUT.with_name(OUT.name + "_quick")
        svg_path = out_dir / "mix_known_regret.svg"
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 3:
        ap.error("--seeds: at least 3 search seeds")
    missing = [n for n in DOMAINS.values() if not (CORPORA / f"{n}.jsonl.gz").exists()]
    if missing:
        print(f"{CORPORA} lacks {missing}: this benchmark needs ../shared/corpora", file=sys.stderr)
        return 2

    # Claude: only against the real API; the cap is said before anything runs
    claude_on, claude_why = False, ""
    base = os.environ.get("ANTHROPIC_BASE_URL", "")
    if args.no_claude:
        claude_why = "--no-claude"
    elif not os.environ.get("ANTHROPIC_API_KEY"):
        claude_why = "ANTHROPIC_API_KEY is not set"
    elif base and "api.anthropic.com" not in base:
        claude_why = ("ANTHROPIC_BASE_URL points elsewhere than api.anthropic.com: a scripted "
                      "reply is not a measurement of Claude")
    else:
        claude_on = True
    if claude_on:
        n = len(TARGETS) * len(seeds)
        print(f"Claude proposer ON: spending cap ${args.claude_max_usd:.2f} for the whole bench, "
              f"shared out over its {n} searches ({n * args.rounds} calls at most); a call whose "
              f"worst case could pass a search's share is not sent, and a search cut short "
              f"keeps its best (runs made are reported)", flush=True)
    else:
        print(f"Claude proposer left out: {claude_why}", flush=True)

    sys.path.insert(0, str(REPO))
    import numpy as np

    from curation.io import FieldMap
    from curation.mixture.data import load_data_spec
    from curation.mixture.feasibility import FeasibleSet
    from curation.mixture.proposers import proposer_from_spec
    from curation.mixture.proxy import NGramBackend, ResultCache, Target
    from curation.mixture.tokenizer import StatedTokenizer
    from curation.mixture.types import Constraints, DomainInfo

    t_start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = load_data_spec({"sources": {d: str(CORPORA / f"{n}.jsonl.gz") for d, n in DOMAINS.items()}},
                            fields=FieldMap(), seed=0, fractions=(0.8, 0.1, 0.1),
                            max_bytes=args.max_bytes)
    tok = StatedTokenizer.for_corpus(splits, str(out_dir), vocab_size=4096)
    enc = splits.encoded(tok)
    # caps from the sample the proxy draws from, not the whole corpus's estimate
    domains = [DomainInfo(d, enc["train"][d].documents, enc["train"][d].n_bytes, enc["train"][d].n_tokens)
               for d in splits.domains]
    c = Constraints(min_weight=0.01, max_epochs=4.0, budget_tokens=args.budget)
    feasible = FeasibleSet.build(domains, c)
    backend = NGramBackend(splits, tok, order=3)
    run = Runner(backend, ResultCache(str(out_dir)), args.budget)
    targets = {k: Target("weighted", tw) for k, tw in TARGETS.items()}
    t_setup = time.time() - t_start

    print(f"\n### Proposers on known-answer targets ({len(DOMAINS)} domains, n-gram proxy, "
          f"{args.budget:,} tokens per run)\n")
    print(f"{os.cpu_count()} CPUs ({platform.machine()}), one process; setup {t_setup:.1f} s; "
          f"sample bound {args.max_bytes:,} bytes per domain; tokenizer {tok.description}\n")
    print("| domain | corpus file | train docs | train tokens | valid tokens | cap (4 epochs) |")
    print("|---|---|---:|---:|---:|---:|")
    for d in domains:
        print(f"| {d.name} | {DOMAINS[d.name]} | {d.documents:,} | {d.tokens:,} | "
              f"{enc['valid'][d.name].n_tokens:,} | {min(1.0, 4 * d.tokens / args.budget):.3g} |")

    # ---------------------------------------------------------------- dense search
    t0 = time.time()
    dense = dense_mixtures(feasible, domains, c, args.dense)
    dense_bpb = [run.bpb(w) for _, _, w in dense]
    ref = {}
    for tname, T in targets.items():
        vals = [T.value(b) for b in dense_bpb]
        i = int(np.argmin(vals))
        rnd_best = min(v for v, (k, _, _) in zip(vals, dense) if k == "random")
        nat = next(v for v, (k, lab, _) in zip(vals, dense) if lab == "natural")
        bw, bt, gain = polish(dense[i][2], vals[i], lambda w: T.value(run.bpb(w)), feasible, args.polish)
        ref[tname] = {"optimum": bt, "weights": bw, "on_target": on_target(bw, TARGETS[tname]),
                      "dense_best": vals[i], "dense_best_kind": dense[i][0],
                      "dense_best_label": dense[i][1], "polish_gain": gain,
                      "random_only_best": rnd_best, "natural": nat,
                      "best_baseline": min(v for v, (k, _, _) in zip(vals, dense) if k == "baseline")}
    kinds = {k: sum(1 for x in dense if x[0] == k) for k in ("baseline", "random", "corner", "face", "blend")}
    t_dense = time.time() - t0
    print(f"\nDense search: {len(dense)} distinct mixtures ({', '.join(f'{v} {k}' for k, v in kinds.items())}) "
          f"+ up to {args.polish} polish runs per target, {t_dense:.0f} s\n")
    print("| target | optimum bpb | its weight on the target's domains | found by | polish gain | "
          "natural | best baseline | best of the RegMix samples alone |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for tname, r in ref.items():
        o = r["optimum"]
        print(f"| {tname}: {'+'.join(sorted(TARGETS[tname]))} | {o:.4f} | {r['on_target']:.3f} | "
              f"{r['dense_best_label']} | {r['polish_gain']:.4f} | {r['natural']:.4f} "
              f"(+{100 * (r['natural'] - o) / o:.2f}%) | {r['best_baseline']:.4f} "
              f"(+{100 * (r['best_baseline'] - o) / o:.2f}%) | {r['random_only_best']:.4f} "
              f"(+{100 * (r['random_only_best'] - o) / o:.2f}%) |")
    for tname, r in ref.items():
        print(f"- {tname} optimum: " + ", ".join(f"{d} {w:.3f}" for d, w in r["weights"].items()))

    # seed noise: is the optimum's lead over natural bigger than a change of proxy seed?
    nat_w = next(w for _, lab, w in dense if lab == "natural")
    noise = {}
    for tname, T in targets.items():
        nat_t = [ref[tname]["natural"]] + [T.value(run.bpb(nat_w, s)) for s in NOISE_SEEDS]
        opt_t = [ref[tname]["optimum"]] + [T.value(run.bpb(ref[tname]["weights"], s)) for s in NOISE_SEEDS]
        noise[tname] = {"natural": nat_t, "optimum": opt_t, "natural_sd": st.stdev(nat_t),
                        "lead": [a - b for a, b in zip(nat_t, opt_t)]}

    # ---------------------------------------------------------------- the searches
    baselines = [proposer_from_spec(s, domains, c) for s in BASELINES]
    base_props = []
    for prop in baselines:
        base_props += prop.propose([], 1, np.random.default_rng([seeds[0], 0]))
    nb = len(base_props)
    names = ["random", "regression"] + (["claude"] if claude_on else [])
    total = nb + args.rounds * args.runs_per_round
    curves = {t: {n: {} for n in names} for t in TARGETS}
    bests = {t: {n: {} for n in names} for t in TARGETS}
    made = {t: {n: {} for n in names} for t in TARGETS}
    claude_usd, claude_calls, claude_failed, skipped = 0.0, 0, 0, []
    n_searches, searches_done = len(TARGETS) * len(seeds), 0
    propose_s = {n: 0.0 for n in names}
    t0 = time.time()
    for seed in seeds:
        for tname, T in targets.items():
            base_hist = []
            for p in base_props:
                b = run.bpb(p.weights)
                base_hist.append({"strategy": p.strategy, "round": 0, "weights": p.weights,
                                  "target": T.value(b), "bpb": b})
            adaptive = [proposer_from_spec({"name": "random"}, domains, c),
                        proposer_from_spec({"name": "regression"}, domains, c)]
            if claude_on:
                # an equal share of what is left, so late seeds are not starved
                share = (args.claude_max_usd - claude_usd) / (n_searches - searches_done)
                if share > 0:
                    adaptive.append(claude_proposer(args, splits, domains, c, feasible,
                                                    TARGETS[tname], share))
                else:
                    skipped.append(f"claude {tname} seed {seed}: cap reached")
            searches_done += 1
            own = {p.name: [] for p in adaptive}
            for r in range(1, args.rounds + 1):
                for i, prop in enumerate(adaptive):
                    rng = np.random.default_rng([seed, r, i])
                    tp = time.perf_counter()
                    try:
                        props = prop.propose(base_hist + own[prop.name], args.runs_per_round, rng)
                    except Exception as e:  # noqa: BLE001 - as search.py: one failure ends nothing
                        print(f"  {prop.name} {tname} seed {seed} round {r}: no proposals "
                              f"({type(e).__name__}: {e})", flush=True)
                        props = []
                    propose_s[prop.name] += time.perf_counter() - tp
                    for p in props[:args.runs_per_round]:
                        b = run.bpb(p.weights)
                        own[prop.name].append({"strategy": prop.name, "round": r, "weights": p.weights,
                                               "target": T.value(b), "bpb": b})
            for prop in adaptive:
                if prop.name == "claude":
                    claude_usd += prop.stats.cost_usd
                    claude_calls += prop.stats.calls
                    claude_failed += prop.stats.failed
                trials = base_hist + own[prop.name]
                best, curve = math.inf, []
                for tr in trials:
                    best = min(best, tr["target"])
                    curve.append(best)
                made[tname][prop.name][seed] = len(curve)
                curve += [curve[-1]] * (total - len(curve))     # a short search keeps its best
                curves[tname][prop.name][seed] = curve
                bt = min(trials, key=lambda tr: tr["target"])
                bests[tname][prop.name][seed] = {"target": bt["target"], "weights": bt["weights"],
                                                 "strategy": bt["strategy"], "round": bt["round"]}
        print(f"  seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
    t_search = time.time() - t0

    # ---------------------------------------------------------------- figures
    checkpoints = sorted({nb} | {nb + round(k * args.rounds * args.runs_per_round / 4) for k in (1, 2, 3, 4)})
    result = {"settings": {**vars(args), "seeds": seeds, "domains": DOMAINS, "targets": TARGETS,
                           "baselines": BASELINES, "baseline_runs": nb, "runs_total": total,
                           "constraints": {"min_weight": c.min_weight, "max_epochs": c.max_epochs},
                           "tokenizer": tok.description, "claude": claude_on,
                           "claude_left_out_because": claude_why},
              "domains": {d.name: {"train_documents": d.documents, "train_tokens": d.tokens,
                                   "train_bytes": d.bytes, "valid_tokens": enc["valid"][d.name].n_tokens}
                          for d in domains},
              "dense": {"mixtures": len(dense), "kinds": kinds}, "targets": {}}
    print(f"\nSearch: seeds {seeds}, {nb} baseline runs then {args.rounds} rounds x "
          f"{args.runs_per_round} runs ({total} runs per search), {t_search:.0f} s; mean relative "
          f"regret (best-so-far - optimum) / optimum after N runs used (baselines included):\n")
    head = " | ".join(f"N={n}" for n in checkpoints)
    print(f"| target | proposer | {head} | runs to within 1% | runs to within 1% of natural's gap "
          f"| best's weight on target | regret at N={total}, per seed |")
    print("|---|---|" + "---:|" * (len(checkpoints) + 4))
    for tname in TARGETS:
        o, nat = ref[tname]["optimum"], ref[tname]["natural"]
        lim = {"1pct": o * 1.01, "gap_10pct": o + 0.10 * (nat - o), "gap_1pct": o + 0.01 * (nat - o)}
        tr = {"reference": ref[tname], "noise": noise[tname], "limits": lim, "proposers": {}}
        for n in names:
            cs = curves[tname][n]
            if not cs:
                continue
            rel = {s: [100 * (v - o) / o for v in cv] for s, cv in cs.items()}
            mean_rel = [st.fmean(rel[s][i] for s in cs) for i in range(total)]
            reach = {k: {s: first_within(cv, v) for s, cv in cs.items()} for k, v in lim.items()}
            ont = [on_target(bests[tname][n][s]["weights"], TARGETS[tname]) for s in cs]
            tr["proposers"][n] = {"curves": cs, "relative_regret_pct": rel, "mean_relative_regret_pct": mean_rel,
                                  "mean_regret": [st.fmean(cv[i] - o for cv in cs.values()) for i in range(total)],
                                  "runs_to": reach, "best": bests[tname][n], "runs_made": made[tname][n],
                                  "best_on_target_mean": st.fmean(ont)}

            def cell(k):
                got = [v for v in reach[k].values() if v is not None]
                return (f"{st.fmean(got):.1f} ({len(got)}/{len(cs)})" if got else f"not in {total} (0/{len(cs)})")
            print(f"| {tname} | {n} | " + " | ".join(pct(mean_rel[i - 1]) for i in checkpoints)
                  + f" | {cell('1pct')} | {cell('gap_1pct')} | {st.fmean(ont):.3f} | "
                  + " / ".join(f"{rel[s][-1]:.2f}" for s in cs) + " |")
        result["targets"][tname] = tr
    print("\n(runs to: mean over the seeds that got there, and how many did; the optimum's own weight "
          "on the target's domains: " + ", ".join(f"{t} {ref[t]['on_target']:.3f}" for t in TARGETS) + ")")
    print("\nSeed noise (proxy seeds 0, 1, 2; the searches all use seed 0):")
    for tname, nz in noise.items():
        o = ref[tname]["optimum"]
        print(f"- {tname}: natural {', '.join(f'{x:.4f}' for x in nz['natural'])} (sd {nz['natural_sd']:.4f}); "
              f"optimum's mixture {', '.join(f'{x:.4f}' for x in nz['optimum'])}; its lead over natural "
              f"{', '.join(f'{x:.4f}' for x in nz['lead'])}; 1% of the optimum = {0.01 * o:.4f}")
    runs_per_min = run.computed / run.seconds * 60 if run.seconds else float("nan")
    wall = time.time() - t_start
    print(f"\n{run.computed} proxy runs computed ({run.cached} from the cache) at "
          f"{runs_per_min:.0f} runs/min; proposing took " +
          ", ".join(f"{n} {s:.0f} s" for n, s in propose_s.items()) + f"; wall {wall:.0f} s")
    if claude_on:
        short = {f"{t} seed {s}": m for t in TARGETS for s, m in made[t].get("claude", {}).items() if m < total}
        print(f"Claude: {claude_calls} calls ({claude_failed} failed), ${claude_usd:.4f} of the "
              f"${args.claude_max_usd:.2f} cap" + (f"; not run: {'; '.join(skipped)}" if skipped else "")
              + (f"; searches cut short (runs made of {total}): {short}" if short else ""))
    result["timing_s"] = {"setup": t_setup, "dense": t_dense, "search": t_search, "wall": wall,
                          "runs_computed": run.computed, "runs_cached": run.cached,
                          "proxy_seconds": run.seconds, "propose": propose_s}
    result["claude"] = {"on": claude_on, "calls": claude_calls, "failed": claude_failed,
                        "usd": claude_usd, "cap_usd": args.claude_max_usd, "skipped": skipped}
    (out_dir / "bench_mix_known.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- the plot: a panel per target
    from curation.report.svg import line_chart
    panels, y = [], 0
    for tname in TARGETS:
        o = ref[tname]["optimum"]
        series = {n: [(i + 1, v) for i, v in enumerate(p["mean_relative_regret_pct"])]
                  for n, p in result["targets"][tname]["proposers"].items()}
        series["within 1% of the optimum"] = [(1, 1.0), (total, 1.0)]
        svg = line_chart(f"mix_known_{tname}", series,
                         title=f"Target {tname} ({'+'.join(sorted(TARGETS[tname]))}): mean relative "
                               f"regret over {len(seeds)} seeds, optimum {o:.4f} bpb",
                         xlabel="proxy runs used (the first {} are the baselines)".format(nb),
                         ylabel="regret %")
        h = float(svg.split('height="', 1)[1].split('"', 1)[0])
        panels.append(svg.replace("<svg ", f'<svg x="0" y="{y:g}" ', 1))
        y += h + 8
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    svg_path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{0:g}" '
                        'viewBox="0 0 760 {0:g}"><rect width="100%" height="100%" fill="#fff"/>'
                        .format(y) + "".join(panels) + "</svg>\n")
    print(f"\nwrote {out_dir / 'bench_mix_known.json'} and {svg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
