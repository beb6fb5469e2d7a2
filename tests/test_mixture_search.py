"""The search driver and its outputs, with a synthetic proxy whose optimum is known."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import yaml

from curation.mixture.outputs import write_mixture, write_tables
from curation.mixture.search import FINAL_SEED_BASE, run_search
from curation.mixture.types import Proposal, ProxyResult, mixture_key, normalise

DOMAINS = ["a", "b", "c"]
BEST = {"a": 0.6, "b": 0.3, "c": 0.1}


def synthetic(noise=0.002, own_noise=0.0):
    """`noise` is shared by every mixture run with one seed (as the real backends' common
    random numbers are); `own_noise` differs between mixtures too."""
    calls = []

    def run_fn(weights, seed, split):
        calls.append((mixture_key(weights), seed, split))
        rng = np.random.default_rng([seed, 7 if split == "test" else 3])
        own = np.random.default_rng([seed, int(mixture_key(weights), 16) % 2**32])
        bpb = {d: 1.0 + (weights[d] - BEST[d]) ** 2 * 4 + rng.normal(0, noise)
               + own.normal(0, own_noise) for d in DOMAINS}
        return ProxyResult(mixture_key(weights), "synthetic", seed, 1000, split,
                           loss={d: v * math.log(2) for d, v in bpb.items()}, bpb=bpb,
                           target=sum(bpb.values()) / 3), False
    return run_fn, calls


class Fixed:
    def __init__(self, name, w):
        self.name, self.w = name, w

    def propose(self, history, n, rng):
        return [Proposal(self.name, normalise(self.w), rationale=f"fixed {self.name}")]


class Random:
    name = "random"

    def propose(self, history, n, rng):
        return [Proposal("random", normalise(dict(zip(DOMAINS, rng.dirichlet([1, 1, 1])))),
                         rationale="dirichlet") for _ in range(n)]


class Oracle:
    """Moves towards the known optimum: it should win."""
    name = "oracle"

    def propose(self, history, n, rng):
        assert all(h["strategy"] in ("uniform", "natural", "oracle") for h in history)
        return [Proposal("oracle", dict(BEST), rationale="knows the answer",
                         raw_weights={"a": 0.7, "b": 0.3, "c": 0.0}, projection="c raised to 0.1")
                for _ in range(n)]


def search(run_fn, **kw):
    settings = dict(rounds=3, runs_per_round=2, noise_seeds=3, final_seeds=3, final_top=1)
    settings.update(kw)
    return run_search(baselines=[Fixed("uniform", {"a": 1, "b": 1, "c": 1}),
                                 Fixed("natural", {"a": 1, "b": 2, "c": 5})],
                      adaptive=[Random(), Oracle()], natural=normalise({"a": 1, "b": 2, "c": 5}),
                      run_fn=run_fn, log=lambda m: None, **settings)


def test_phases_budgets_and_the_final_judgement():
    run_fn, calls = synthetic()
    res = search(run_fn)
    phases = [t.phase for t in res.trials]
    assert phases[:3] == ["noise"] * 3
    search_runs = [t for t in res.trials if t.phase == "search"]
    per = {s: sum(t.strategy == s for t in search_runs) for s in ("random", "oracle")}
    assert per == {"random": 6, "oracle": 6}              # equal budgets
    assert all(t.split == "valid" and t.seed == 0 for t in search_runs)
    finals = [t for t in res.trials if t.phase == "final"]
    assert finals and all(t.split == "test" and t.seed >= FINAL_SEED_BASE for t in finals)
    assert res.chosen["strategy"] == "oracle"
    verdicts = {c["baseline"]: c["verdict"] for c in res.comparisons}
    assert verdicts == {"uniform": "better", "natural": "better"}
    assert res.best_so_far["random"] == sorted(res.best_so_far["random"], reverse=True)
    assert len(res.best_so_far["oracle"]) == 6
    assert res.noise_sd > 0
    assert res.projections and res.projections[0]["log"] == "c raised to 0.1"


def test_an_interval_holding_zero_is_a_tie():
    run_fn, _ = synthetic(own_noise=5.0)     # noise of each mixture's own swamps every difference
    res = search(run_fn)
    assert {c["verdict"] for c in res.comparisons} == {"tie"}
    for c in res.comparisons:
        lo, hi = c["interval"]
        assert lo < 0 < hi and lo < c["difference"] < hi
        assert c["method"].startswith("Student's t") and c["seeds"] == 3


def test_paired_differences_see_through_noise_shared_by_a_seed():
    # the seed moves every mixture alike by far more than their differences: the
    # means alone could not separate them, the per-seed differences can
    run_fn, _ = synthetic(noise=0.5, own_noise=0.001)
    res = search(run_fn)
    assert res.noise_sd > 0.1
    verdicts = {c["baseline"]: c["verdict"] for c in res.comparisons}
    assert verdicts == {"uniform": "better", "natural": "better"}
    for c in res.comparisons:
        assert c["interval"][1] < 0
        assert c["differences"] == pytest.approx(
            [a - b for a, b in zip(res.chosen["test_targets"],
                                   next(f for f in res.finalists if c["baseline"] in f["names"])
                                   ["test_targets"])])


def test_finalists_with_the_same_weights_run_once_under_both_names():
    run_fn, calls = synthetic()
    res = run_search(baselines=[Fixed("uniform", {"a": 1, "b": 1, "c": 1}),
                                Fixed("unimax", {"a": 2, "b": 2, "c": 2}),
                                Fixed("natural", {"a": 1, "b": 2, "c": 5})],
                     adaptive=[Oracle()], natural=normalise({"a": 1, "b": 2, "c": 5}),
                     run_fn=run_fn, rounds=1, runs_per_round=1, noise_seeds=2, final_seeds=3,
                     final_top=1, log=lambda m: None)
    uni = [f for f in res.finalists if "uniform" in f["names"]]
    assert len(uni) == 1 and uni[0]["names"] == ["uniform", "unimax"]
    assert uni[0]["baseline_names"] == ["uniform", "unimax"]
    key = mixture_key(normalise({"a": 1, "b": 1, "c": 1}))
    assert sum(k == key and split == "test" for k, _, split in calls) == 3
    by = {c["baseline"]: c for c in res.comparisons}
    assert set(by) == {"uniform", "natural"}          # one verdict per mixture, not per name
    assert by["uniform"]["names"] == ["uniform", "unimax"]


def test_a_chosen_baseline_is_the_same_mixture_as_itself():
    run_fn, _ = synthetic()
    res = run_search(baselines=[Fixed("best", BEST), Fixed("natural", {"a": 1, "b": 2, "c": 5})],
                     adaptive=[Random()], natural=normalise({"a": 1, "b": 2, "c": 5}),
                     run_fn=run_fn, rounds=1, runs_per_round=1, noise_seeds=2, final_seeds=3,
                     final_top=1, log=lambda m: None)
    assert res.chosen["strategy"] == "best"
    by = {c["baseline"]: c["verdict"] for c in res.comparisons}
    assert by == {"best": "same", "natural": "better"}


def test_a_failing_proposer_does_not_end_the_search():
    class Broken:
        name = "claude"

        def propose(self, history, n, rng):
            raise RuntimeError("no proposals today")
    run_fn, _ = synthetic()
    res = run_search(baselines=[Fixed("uniform", {"a": 1, "b": 1, "c": 1})],
                     adaptive=[Broken(), Random()], natural={"a": 0.2, "b": 0.3, "c": 0.5},
                     run_fn=run_fn, rounds=2, runs_per_round=2, noise_seeds=2, final_seeds=3,
                     final_top=1, log=lambda m: None)
    assert res.best_so_far["claude"] == []
    assert res.chosen["strategy"] in ("random", "uniform")


def test_deterministic():
    a = search(synthetic()[0])
    b = search(synthetic()[0])
    assert [(t.strategy, t.weights, t.target) for t in a.trials] == \
        [(t.strategy, t.weights, t.target) for t in b.trials]


def test_outputs(tmp_path):
    res = search(synthetic()[0])
    write_tables(tmp_path, res, DOMAINS)
    doc = write_mixture(tmp_path, res, {"budget_tokens": 1000, "seed": 0,
                                        "constraints": {"max_epochs": 4}})
    rows = list(csv.DictReader((tmp_path / "candidates.csv").open()))
    assert len(rows) == len(res.trials)
    assert {r["phase"] for r in rows} == {"noise", "search", "final"}
    ratios = list(csv.DictReader((tmp_path / "ratios.csv").open()))
    metrics = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["run"] for r in ratios] == [r["run"] for r in metrics] == [r["run"] for r in rows]
    for r in ratios:
        assert sum(float(r[d]) for d in DOMAINS) == pytest.approx(1.0, abs=1e-5)
    y = yaml.safe_load((tmp_path / "mixture.yaml").read_text())
    assert y == doc
    assert y["weights"] == BEST and y["provenance"]["strategy"] == "oracle"
    assert y["provenance"]["projection"] == "c raised to 0.1"
    assert y["test"]["seeds"] == 3
    mega = (tmp_path / "megatron_data_path.txt").read_text().split()
    assert mega[0] == "0.6" and mega[1].endswith("a/a_text_document")
    olmo = yaml.safe_load((tmp_path / "olmo_source_mixture.yaml").read_text())
    srcs = olmo["source_mixture"]["source_configs"]
    assert [s["source_name"] for s in srcs] == DOMAINS
    assert sum(s["target_ratio"] for s in srcs) == pytest.approx(1.0)
