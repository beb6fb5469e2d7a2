"""Proxy fidelity: would a larger proxy have chosen as the search proxy did?

After the search, the finalists and a seeded set of further mixtures (drawn by the
random proposer's sampler) are run on the test split, with the same ``seeds`` fresh
seeds, under both proxies: the search's and a larger one (another backend, or the same
at a larger budget or order). From the two proxies' mean targets on the same mixtures:

- Spearman's rho and Kendall's tau (`curation.mixture.paired.rank_agreement`);
- the larger proxy's best finalist, and whether it is the chosen mixture;
- the larger proxy's paired verdicts of the chosen mixture against every baseline.

The choice is *supported* at the larger scale when the rank correlation reaches
``min_rank_correlation`` (Spearman) and the larger proxy's best finalist is the chosen
mixture; otherwise `message` says, in plain words, that it is not yet supported and why.
Nothing here imports Beam; every run goes through the caller's result cache.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping, Sequence

from curation.mixture.paired import describe_interval, paired_verdict, rank_agreement
from curation.mixture.search import FINAL_SEED_BASE, SearchResult, compare_with_baselines
from curation.mixture.types import Proposal, ProxyResult, mixture_key

RunFn = Callable[[Mapping[str, float], int, str], "tuple[ProxyResult, bool]"]


def describe_proxy(backend: str, budget_tokens: int, params: Mapping[str, Any] | None = None) -> str:
    """``ngram (order 5) at 2,000,000 tokens``."""
    shown = ", ".join(f"{k} {v}" for k, v in sorted((params or {}).items()))
    return f"{backend}{f' ({shown})' if shown else ''} at {budget_tokens:,} tokens"


def fidelity_mixtures(res: SearchResult, extra: Sequence[Proposal]) -> list[dict]:
    """The finalists (with their names), then the extra mixtures not among them."""
    out, seen = [], set()
    for f in res.finalists:
        out.append({"mixture": f["mixture"], "kind": "finalist", "names": list(f["names"]),
                    "baseline_names": list(f["baseline_names"]), "weights": dict(f["weights"]),
                    "chosen": f is res.chosen})
        seen.add(f["mixture"])
    for i, p in enumerate(extra):
        key = mixture_key(p.weights)
        if key in seen:
            continue
        seen.add(key)
        out.append({"mixture": key, "kind": "extra", "names": [f"random-{i + 1}"],
                    "baseline_names": [], "weights": dict(p.weights), "chosen": False})
    return out


def run_fidelity(res: SearchResult, extra: Sequence[Proposal], *, search_fn: RunFn,
                 larger_fn: RunFn, seeds: int, min_rank_correlation: float,
                 search_proxy: str, larger_proxy: str, seed: int = 0,
                 log: Callable[[str], None] = print) -> dict:
    """Run the fidelity mixtures under both proxies and judge the agreement (see the
    module docstring). ``*_fn(weights, seed, split) -> (ProxyResult, cached)``."""
    if seeds < 2:
        raise ValueError("fidelity needs at least 2 seeds for its paired verdicts")
    t0 = time.time()
    mixtures = fidelity_mixtures(res, extra)
    runs: list[dict] = []
    computed = {"search": 0, "larger": 0}
    seconds = {"search": 0.0, "larger": 0.0}
    for m in mixtures:
        for proxy, fn in (("search", search_fn), ("larger", larger_fn)):
            targets = []
            for s in range(seeds):
                r, cached = fn(m["weights"], FINAL_SEED_BASE + s, "test")
                targets.append(r.target)
                computed[proxy] += not cached
                seconds[proxy] += 0.0 if cached else r.seconds
                runs.append({"mixture": m["mixture"], "names": m["names"], "kind": m["kind"],
                             "proxy": proxy, "seed": r.seed, "split": r.split,
                             "target": r.target, "bpb": dict(r.bpb), "cached": cached})
            m[f"{proxy}_targets"] = targets
            m[f"{proxy}_target_mean"] = statistics.fmean(targets)
        log(f"mix: fidelity {'/'.join(m['names'])}: search proxy {m['search_target_mean']:.4f}, "
            f"larger proxy {m['larger_target_mean']:.4f}")

    ranks = rank_agreement([m["search_target_mean"] for m in mixtures],
                           [m["larger_target_mean"] for m in mixtures])
    finalists = [m for m in mixtures if m["kind"] == "finalist"]
    chosen = next(m for m in finalists if m["chosen"])
    winner = min(finalists, key=lambda m: m["larger_target_mean"])
    same = winner is chosen
    against = compare_with_baselines(chosen, finalists, seed=seed, key="larger_targets")
    vs_winner = None if same else paired_verdict(chosen["larger_targets"], winner["larger_targets"],
                                                 seed=seed)
    reasons = []
    rho = ranks["spearman"]
    if rho is None:
        reasons.append(f"the rank correlation is undefined over {ranks['mixtures']} mixtures "
                       f"(fewer than 3, or one proxy scores them all alike)")
    elif rho < min_rank_correlation:
        reasons.append(f"the larger proxy ranks the {ranks['mixtures']} mixtures with Spearman "
                       f"{rho:.2f}, below {min_rank_correlation:g}")
    if not same:
        reasons.append(f"the larger proxy's best finalist is {' = '.join(winner['names'])}, not the "
                       f"chosen {' = '.join(chosen['names'])} (the chosen against it on the larger "
                       f"proxy: {describe_interval(vs_winner)})")
    supported = not reasons
    agreement = ("" if rho is None else f"Spearman {rho:.2f}, Kendall {ranks['kendall']:.2f} over "
                 f"{ranks['mixtures']} mixtures")
    if supported:
        message = (f"The larger proxy ({larger_proxy}) supports the choice: {agreement}, and it "
                   f"picks the same winner.")
    else:
        message = (f"The choice is not yet supported at the larger scale ({larger_proxy}): "
                   + "; ".join(reasons) + (f" ({agreement})" if agreement and rho >= min_rank_correlation
                                           else "") + ".")
    return {
        "search_proxy": search_proxy, "larger_proxy": larger_proxy, "split": "test",
        "seeds": [FINAL_SEED_BASE + s for s in range(seeds)],
        "min_rank_correlation": min_rank_correlation, **ranks,
        "winner": {"search": chosen["names"], "larger": winner["names"], "same": same,
                   "chosen_against_larger_winner": vs_winner},
        "against_baselines": against, "supported": supported, "message": message,
        "mixtures": [{k: m[k] for k in ("mixture", "kind", "names", "weights", "search_targets",
                                         "search_target_mean", "larger_targets", "larger_target_mean")}
                     for m in mixtures],
        "runs": runs, "runs_computed": computed, "proxy_seconds": seconds,
        "seconds": time.time() - t0,
    }
