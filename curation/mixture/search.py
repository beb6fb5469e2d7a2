"""The mixture search: proposers take turns under equal proxy-run budgets, and the
winner is judged on data none of them searched on.

1. Noise first: the natural mixture is run with ``noise_seeds`` seeds on the
   validation split; the standard deviation of its target is the seed noise.
2. Round 0: the fixed baselines (uniform, natural, temperature, UniMax) are run once
   each on the validation split.
3. Rounds 1..R: every adaptive proposer (random search, regression, Claude) proposes
   ``runs_per_round`` mixtures; each is run once on the validation split. A proposer
   sees the baselines' results and its own, not the other proposers': each spends the
   same number of proxy runs, and what it learns comes from those runs.
4. Final judgement: the best ``final_top`` mixtures of each strategy (by validation
   target) and every baseline are run with the same ``final_seeds`` fresh seeds on
   the test split; two with the same weights are one finalist carrying both names.
   The chosen mixture is the finalist with the best validation target. Against each
   baseline, the per-seed paired differences of the test target give a 95% interval
   and a verdict (`curation.mixture.paired`): better or worse when the interval
   excludes zero, a tie when it holds it. The seed noise is reported beside them.

Every run goes through the result cache (keyed by mixture, seed, budget, backend,
split), so a resumed search never redoes one. Nothing here imports Beam.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from curation.mixture.paired import paired_verdict
from curation.mixture.types import Proposal, ProxyResult, mixture_key

NOISE_SEED_BASE = 0          # seeds of the noise runs: 0..noise_seeds-1
SEARCH_SEED = 0              # every search run uses this seed (the noise tells its spread)
FINAL_SEED_BASE = 10_000     # fresh seeds for the test split


@dataclass
class Trial:
    run: int
    strategy: str
    round: int
    split: str
    seed: int
    weights: dict[str, float]
    result: ProxyResult
    proposal: Proposal | None = None
    cached: bool = False
    phase: str = "search"          # "noise" | "search" | "final"

    @property
    def target(self) -> float:
        return self.result.target

    def as_history(self) -> dict:
        return {"strategy": self.strategy, "round": self.round, "weights": self.weights,
                "target": self.result.target, "bpb": dict(self.result.bpb)}


@dataclass
class SearchResult:
    trials: list[Trial]
    noise_sd: float
    noise_targets: list[float]
    finalists: list[dict]
    chosen: dict
    comparisons: list[dict]
    best_so_far: dict[str, list[float]]
    skipped: dict[str, str] = field(default_factory=dict)
    projections: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Runner:
    """Runs (weights, seed, split) through the backend and the cache, numbering runs."""

    def __init__(self, run_fn: Callable[[Mapping[str, float], int, str], tuple[ProxyResult, bool]],
                 log: Callable[[str], None]):
        self.run_fn, self.log = run_fn, log
        self.trials: list[Trial] = []

    def __call__(self, strategy: str, round_: int, weights: Mapping[str, float], seed: int,
                 split: str, phase: str, proposal: Proposal | None = None) -> Trial:
        result, cached = self.run_fn(dict(weights), seed, split)
        t = Trial(run=len(self.trials), strategy=strategy, round=round_, split=split, seed=seed,
                  weights=dict(weights), result=result, proposal=proposal, cached=cached,
                  phase=phase)
        self.trials.append(t)
        self.log(f"mix: run {t.run:3d} {phase:6s} {strategy:12s} round {round_} {split} seed "
                 f"{seed}: target {result.target:.4f}{' (cached)' if cached else ''}")
        return t


def compare_with_baselines(chosen: dict, finalists: Sequence[dict], *, seed: int = 0,
                           key: str = "test_targets") -> list[dict]:
    """The chosen finalist against every baseline mixture (one entry per mixture:
    ``baseline`` is its first baseline name, ``names`` all it carries), from the per-seed
    paired differences of ``finalist[key]`` (the same seeds on both sides). A baseline
    that is the chosen mixture itself gets the verdict "same"."""
    out = []
    for f in finalists:
        if not f["baseline_names"]:
            continue
        if f is chosen:
            n = len(chosen[key])
            c = {"difference": 0.0, "interval": [0.0, 0.0], "level": 0.95, "method": "none",
                 "seeds": n, "differences": [0.0] * n, "verdict": "same"}
        else:
            c = paired_verdict(chosen[key], f[key], seed=seed)
        out.append({"baseline": f["baseline_names"][0], "names": list(f["names"]),
                    "baseline_test_target": statistics.fmean(f[key]),
                    "chosen_test_target": statistics.fmean(chosen[key]), **c})
    return out


def run_search(*, baselines: Sequence[Any], adaptive: Sequence[Any], natural: Mapping[str, float],
               run_fn, rounds: int, runs_per_round: int, noise_seeds: int, final_seeds: int,
               final_top: int, seed: int = 0, log: Callable[[str], None] = print,
               skipped: Mapping[str, str] | None = None) -> SearchResult:
    """``baselines``/``adaptive``: proposers (``name``, ``propose(history, n, rng)``);
    ``run_fn(weights, seed, split) -> (ProxyResult, cached)``."""
    if noise_seeds < 2:
        raise ValueError("noise_seeds must be at least 2 to measure the seed noise")
    if final_seeds < 3:
        raise ValueError("final_seeds must be at least 3")
    t0 = time.time()
    run = Runner(run_fn, log)
    projections: list[dict] = []

    noise = [run("natural", 0, natural, NOISE_SEED_BASE + i, "valid", "noise")
             for i in range(noise_seeds)]
    noise_targets = [t.target for t in noise]
    noise_sd = statistics.stdev(noise_targets)
    log(f"mix: seed noise of the natural mixture: sd {noise_sd:.5f} over {noise_seeds} seeds")

    def note(p: Proposal, strategy: str, round_: int) -> None:
        if p.projection:
            projections.append({"strategy": strategy, "round": round_, "raw": p.raw_weights,
                                "projected": p.weights, "log": p.projection})
            log(f"mix: {strategy} round {round_}: projected: {p.projection}")

    base_trials: list[Trial] = []
    for prop in baselines:
        props = prop.propose([], 1, np.random.default_rng([seed, 0]))
        for p in props:
            # one baseline with several settings (temperature taus): name each
            label = p.strategy if len(props) == 1 else p.strategy + "(" + ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(p.params.items())) + ")"
            note(p, label, 0)
            base_trials.append(run(label, 0, p.weights, SEARCH_SEED, "valid", "search", p))

    own: dict[str, list[Trial]] = {p.name: [] for p in adaptive}
    for r in range(1, rounds + 1):
        for i, prop in enumerate(adaptive):
            history = [t.as_history() for t in base_trials + own[prop.name]]
            rng = np.random.default_rng([seed, r, i])
            try:
                props = prop.propose(history, runs_per_round, rng)
            except Exception as e:  # noqa: BLE001 - one proposer failing must not end the search
                log(f"mix: {prop.name} round {r}: no proposals ({type(e).__name__}: {e})")
                props = []
            for p in props[:runs_per_round]:
                note(p, prop.name, r)
                own[prop.name].append(run(prop.name, r, p.weights, SEARCH_SEED, "valid",
                                          "search", p))

    # best-so-far target per strategy against the proxy runs it used
    best_so_far: dict[str, list[float]] = {}
    for t in base_trials:
        best_so_far[t.strategy] = [t.target]
    for name, ts in own.items():
        best, curve = math.inf, []
        for t in ts:
            best = min(best, t.target)
            curve.append(best)
        best_so_far[name] = curve

    # final judgement on the test split with fresh seeds; one mixture under several
    # names (uniform and UniMax when no cap binds) is run once and carries them all
    candidates: list[tuple[str, Trial]] = [("baseline", t) for t in base_trials]
    for name, ts in own.items():
        for t in sorted(ts, key=lambda t: (t.target, t.run))[:final_top]:
            candidates.append(("candidate", t))
    finalists: list[dict] = []
    by_key: dict[str, dict] = {}
    for kind, t in candidates:
        key = mixture_key(t.weights)
        if key in by_key:
            f = by_key[key]
            if t.strategy not in f["names"]:
                f["names"].append(t.strategy)
            if kind == "baseline" and t.strategy not in f["baseline_names"]:
                f["baseline_names"].append(t.strategy)
            continue
        tests = [run(t.strategy, t.round, t.weights, FINAL_SEED_BASE + s, "test", "final",
                     t.proposal) for s in range(final_seeds)]
        targets = [x.target for x in tests]
        f = {
            "kind": kind, "strategy": t.strategy, "names": [t.strategy],
            "baseline_names": [t.strategy] if kind == "baseline" else [],
            "mixture": key, "round": t.round, "search_run": t.run,
            "weights": t.weights, "valid_target": t.target,
            "test_target_mean": statistics.fmean(targets),
            "test_target_sd": statistics.stdev(targets),
            "test_targets": targets,
            "test_seeds": [x.seed for x in tests],
            "test_bpb_mean": {d: statistics.fmean(x.result.bpb[d] for x in tests)
                              for d in sorted(t.weights)},
            "rationale": t.proposal.rationale if t.proposal else "",
            "final_runs": [x.run for x in tests],
        }
        by_key[key] = f
        finalists.append(f)
    chosen = min(finalists, key=lambda f: (f["valid_target"], f["search_run"]))
    comparisons = compare_with_baselines(chosen, finalists, seed=seed)
    return SearchResult(trials=run.trials, noise_sd=noise_sd, noise_targets=noise_targets,
                        finalists=finalists, chosen=chosen, comparisons=comparisons,
                        best_so_far=best_so_far, skipped=dict(skipped or {}),
                        projections=projections, seconds=time.time() - t0)
