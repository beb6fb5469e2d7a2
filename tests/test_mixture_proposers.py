"""Feasibility projection and the baseline mixture proposers (curation.mixture.{feasibility,proposers})."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from curation.mixture.feasibility import FeasibleSet, project
from curation.mixture.proposers import (
    PROPOSERS, NotEnoughTrials, ProposerError, RegMixSampler, SamplerParams, Trial,
    check_spec, make_proposer, proposer_from_spec, unimax_allocation)
from curation.mixture.types import Constraints, DomainInfo, Proposal, ProxyResult, mixture_key


def doms(tokens: dict[str, int]) -> list[DomainInfo]:
    return [DomainInfo(name=n, documents=10, bytes=4 * t, tokens=t) for n, t in tokens.items()]


# five domains of very different sizes; with a 1M-token budget and 4 epochs the caps are
# books 1, code 1, news 0.6, ref 0.24, web 0.08
TOKENS = {"books": 400_000, "code": 250_000, "news": 150_000, "ref": 60_000, "web": 20_000}
C = Constraints(min_weight=0.0, max_epochs=4, budget_tokens=1_000_000)
LOOSE = Constraints(min_weight=0.0, max_epochs=1000, budget_tokens=1_000_000)   # no cap binds


def vec(w: dict[str, float], names=sorted(TOKENS)) -> np.ndarray:
    return np.array([w[n] for n in names])


def assert_feasible(w: dict[str, float], fs: FeasibleSet) -> None:
    x = vec(w, fs.names)
    assert abs(x.sum() - 1) < 1e-9
    assert np.all(x >= fs.lower - 1e-12), (x, fs.lower)
    assert np.all(x <= fs.upper + 1e-12), (x, fs.upper)


# --------------------------------------------------------------------------- projection
def _scipy_projection(v, lo, hi):
    k = len(v)
    start = np.clip(np.full(k, 1 / k), lo, hi)
    r = minimize(lambda x: float(((x - v) ** 2).sum()), start, jac=lambda x: 2 * (x - v),
                 method="SLSQP", bounds=list(zip(lo, hi)),
                 constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1,
                               "jac": lambda x: np.ones_like(x)}],
                 options={"ftol": 1e-12, "maxiter": 1000})
    assert r.success, r.message
    return r.x


def test_projection_matches_scipy_and_kkt_on_random_cases():
    rng = np.random.default_rng(7)
    checked = projected = 0
    while checked < 60:
        k = int(rng.integers(2, 9))
        toks = rng.integers(1, 10**6, size=k)
        c = Constraints(min_weight=float(rng.choice([0.0, 0.01, 0.05])),
                        max_epochs=float(rng.choice([1, 2, 4])),
                        budget_tokens=int(toks.sum() * rng.uniform(0.3, 3.0)))
        try:
            fs = FeasibleSet.build(doms({f"d{i}": int(t) for i, t in enumerate(toks)}), c)
        except ValueError:
            continue
        checked += 1
        v = rng.uniform(0, 1, k) * rng.choice([0.3, 1.0, 4.0])
        w_d, log = fs.project(fs.as_dict(v))
        assert list(w_d) == sorted(w_d)
        w = vec(w_d, fs.names)
        assert_feasible(w_d, fs)
        ref = _scipy_projection(v, fs.lower, fs.upper)
        assert np.abs(w - ref).max() < 1e-6, (v, w, ref)
        # exactness: never farther from v than scipy's answer, and the KKT conditions hold
        assert ((w - v) ** 2).sum() <= ((ref - v) ** 2).sum() + 1e-12
        tau = v - w
        free = (w > fs.lower + 1e-12) & (w < fs.upper - 1e-12)
        if free.any():
            t = tau[free].mean()
            assert np.abs(tau[free] - t).max() < 1e-12
            assert np.all(tau[w <= fs.lower + 1e-12] <= t + 1e-12)   # at lower: v - t <= lower
            assert np.all(tau[w >= fs.upper - 1e-12] >= t - 1e-12)   # at upper: v - t >= upper
        if log is not None:
            projected += 1
        # the vectorised path agrees with the single one
        assert np.abs(fs.project_rows(v[None, :])[0] - w).max() < 1e-15
    assert projected > 40          # most random inputs were infeasible


def test_feasible_input_is_returned_unchanged_without_a_log_line():
    fs = FeasibleSet.build(doms(TOKENS), C)
    w = {"books": 0.3, "code": 0.25, "news": 0.2, "ref": 0.2, "web": 0.05}
    out, log = project(w, doms(TOKENS), C)
    assert out == w and log is None
    # an input within float noise of feasible is also left alone
    w2 = dict(w, books=0.3 + 1e-13)
    assert fs.project(w2) == (w2, None)
    # a projected point projects to itself
    p, log = fs.project({"web": 1.0})
    assert log is not None
    assert fs.project(p) == (p, None)


def test_projection_log_says_what_changed_and_why():
    c = Constraints(min_weight=0.02, max_epochs=4, budget_tokens=1_000_000)
    out, log = project({"books": 0.6, "code": 0.5, "news": 0.0, "web": 0.5}, doms(TOKENS), c)
    # w = clip(v - tau): tau = 0.11 takes books/code down, web to its cap, news/ref up to 0.02
    assert vec(out) == pytest.approx([0.49, 0.39, 0.02, 0.02, 0.08], abs=1e-12)
    assert log.startswith("projected onto the feasible set (the weights summed to 1.6, not 1), "
                          "L1 change 0.")
    assert "web 0.5000->0.0800 (capped at 4 epochs of 20,000 tokens)" in log
    assert "news 0.0000->0.0200 (raised to min_weight 0.02)" in log
    assert "ref 0.0000->0.0200" in log                   # missing counted as 0, then raised
    assert "books 0.6000->0.4900, code 0.5000->0.3900" in log
    _, log = project({n: 20.0 for n in TOKENS}, doms(TOKENS), C)
    assert "summed to 100" in log


def test_missing_domains_count_as_zero_and_bad_weights_are_errors():
    out, _ = project({"books": 0.5, "code": 0.5}, doms(TOKENS), C)
    assert set(out) == set(TOKENS) and out["web"] == 0.0 and out["books"] == 0.5
    with pytest.raises(ValueError, match="unknown domain.*wiki"):
        project({"books": 0.5, "wiki": 0.5}, doms(TOKENS), C)
    with pytest.raises(ValueError, match="finite and >= 0.*code=-0.1"):
        project({"books": 1.1, "code": -0.1}, doms(TOKENS), C)
    with pytest.raises(ValueError, match="books=nan"):
        project({"books": float("nan"), "code": 1.0}, doms(TOKENS), C)
    with pytest.raises(ValueError, match="unique"):
        project({}, doms(TOKENS) + doms({"web": 5}), C)


def test_infeasible_constraints_say_what_caps_it_and_by_how_much():
    small = {"a": 100_000, "b": 50_000, "c": 32_500}          # 182,500 tokens
    with pytest.raises(ValueError) as e:
        project({}, doms(small), C)
    msg = str(e.value)
    assert "the repetition caps allow at most 0.73 of the budget" in msg
    assert "short by 0.27" in msg
    assert "raise max_epochs to at least 5.479" in msg
    assert "lower budget_tokens to at most 730,000" in msg
    assert "a 0.4, b 0.2, c 0.13" in msg
    with pytest.raises(ValueError, match="min_weight 0.25 for 5 domains asks for 1.25"):
        project({}, doms(TOKENS), Constraints(min_weight=0.25, max_epochs=100))
    with pytest.raises(ValueError, match=r"above the repetition cap of 1 domain.*web can take "
                                         r"at most 0\.08"):
        project({}, doms(TOKENS), Constraints(min_weight=0.1, max_epochs=4))
    # on the edge it is feasible: caps summing to exactly 1
    out, _ = project({}, doms({"a": 500_000, "b": 500_000}), Constraints(max_epochs=1))
    assert out == {"a": 0.5, "b": 0.5}


# --------------------------------------------------------------------------- fixed proposers
def test_natural_is_token_proportional_and_temperature_flattens_it():
    rng = np.random.default_rng(0)
    [nat] = make_proposer("natural", doms(TOKENS), C).propose([], 1, rng)
    total = sum(TOKENS.values())
    assert nat.weights == pytest.approx({n: t / total for n, t in TOKENS.items()}, abs=1e-12)
    assert nat.projection is None and nat.strategy == "natural"
    temps = make_proposer("temperature", doms(TOKENS), LOOSE, taus=[1, 2, 5, 1e6]).propose([], 1, rng)
    assert [p.params["tau"] for p in temps] == [1.0, 2.0, 5.0, 1e6]    # all taus, whatever n
    assert temps[0].weights == pytest.approx(nat.weights, abs=1e-12)     # tau=1 is natural
    # tau=2: weights ∝ sqrt(tokens)
    root = {n: math.sqrt(t) for n, t in TOKENS.items()}
    assert temps[1].weights == pytest.approx({n: r / sum(root.values()) for n, r in root.items()})
    assert temps[3].weights == pytest.approx({n: 0.2 for n in TOKENS}, abs=1e-5)   # tau→∞
    spread = [max(p.weights.values()) - min(p.weights.values()) for p in temps]
    assert spread == sorted(spread, reverse=True) and spread[0] > 0.4
    assert temps[1].rationale == "temperature sampling, tau=2: weights ∝ tokens^(1/2)"


def test_temperature_under_caps_is_projected_and_logged():
    [p] = make_proposer("temperature", doms(TOKENS), C, taus=5).propose([], 1, None)
    fs = FeasibleSet.build(doms(TOKENS), C)
    assert_feasible(p.weights, fs)
    assert p.raw_weights["web"] > 0.08 and p.weights["web"] == pytest.approx(0.08)
    assert "web" in p.projection and "capped" in p.projection


def test_unimax_caps_small_domains_and_is_uniform_over_the_rest():
    toks = {"a": 1_000, "b": 5_000, "c": 200_000, "d": 300_000, "e": 500_000}
    [u] = make_proposer("unimax", doms(toks), C).propose([], 1, None)
    assert u.weights["a"] == pytest.approx(0.004)       # 4 epochs x 1,000 / 1M: at the cap
    assert u.weights["b"] == pytest.approx(0.02)
    rest = (1 - 0.004 - 0.02) / 3
    assert [u.weights[n] for n in "cde"] == pytest.approx([rest] * 3)
    assert u.params["capped"] == ["a", "b"] and "a, b at the cap" in u.rationale
    assert u.projection is None                          # feasible by construction
    # the greedy order matters: c's cap 0.8 is above the uniform share, so it is not capped
    toks2 = {"a": 1_000, "b": 60_000, "c": 1_000_000}
    w = unimax_allocation(np.array([1e3, 6e4, 1e6]), np.array([0.004, 0.24, 1.0]))
    assert w == pytest.approx([0.004, 0.24, 0.756])
    [u2] = make_proposer("unimax", doms(toks2), C).propose([], 1, None)
    assert vec(u2.weights, "abc") == pytest.approx([0.004, 0.24, 0.756])
    # no cap binds: exactly uniform; and UniMax is the projection of uniform when caps bind
    [u3] = make_proposer("unimax", doms(TOKENS), LOOSE).propose([], 1, None)
    assert u3.weights == pytest.approx({n: 0.2 for n in TOKENS}, abs=1e-15)
    [uni] = make_proposer("uniform", doms(toks), C).propose([], 1, None)
    assert uni.weights == pytest.approx(u.weights, abs=1e-12)
    assert uni.raw_weights == pytest.approx({n: 0.2 for n in toks}) and "capped" in uni.projection


# --------------------------------------------------------------------------- RegMix sampler
def test_regmix_sampler_is_dirichlet_around_the_prior():
    fs = FeasibleSet.build(doms(TOKENS), LOOSE)
    prior = np.array([TOKENS[n] for n in fs.names]) / sum(TOKENS.values())
    # one strength: the draws follow Dirichlet(alpha0 * prior): mean prior, var p(1-p)/(alpha0+1)
    one = RegMixSampler(fs, SamplerParams(min_strength=2.0, max_strength=2.0, minimum=0.0))
    w, s = one.draw(np.random.default_rng(1), 40_000)
    assert np.all(s == 2.0) and np.allclose(w.sum(axis=1), 1)
    assert np.abs(w.mean(axis=0) - prior).max() < 0.005
    assert np.allclose(w.var(axis=0), prior * (1 - prior) / 3, rtol=0.05)
    # RegMix's grid: 15 log-spaced strengths in [0.1, 5]; the mean stays the prior
    grid = RegMixSampler(fs, SamplerParams())
    assert grid.strengths[0] == pytest.approx(0.1) and grid.strengths[-1] == pytest.approx(5.0)
    assert len(grid.strengths) == 15 and np.allclose(np.diff(np.log(grid.strengths)),
                                                     np.log(50) / 14)
    w, s = grid.draw(np.random.default_rng(2), 40_000)
    assert set(np.round(s, 9)) == set(np.round(grid.strengths, 9))
    assert np.abs(w.mean(axis=0) - prior).max() < 0.01
    # small strengths give sparse mixtures (RegMix zeroes shares under 2e-4), large ones do not
    zeros = (w == 0).sum(axis=1)
    assert zeros[s < 0.2].mean() > 2.5 and zeros[s > 3].mean() < 1.0
    # tempered prior
    t2 = RegMixSampler(fs, SamplerParams(prior_tau=2.0))
    assert t2.prior == pytest.approx(np.sqrt(prior) / np.sqrt(prior).sum())


def test_random_search_is_feasible_deterministic_and_spread():
    rs = make_proposer("random", doms(TOKENS), C)
    fs = rs.space
    a = rs.propose([], 30, np.random.default_rng([3, 1]))
    b = rs.propose([], 30, np.random.default_rng([3, 1]))
    c = rs.propose([], 30, np.random.default_rng([4, 1]))
    assert a == b and a != c and len(a) == 30
    for p in a:
        assert_feasible(p.weights, fs)
        assert p.projection is None and p.raw_weights == p.weights   # rejection, not projection
        assert 0.1 - 1e-9 <= p.params["strength"] <= 5 + 1e-9
        assert p.rationale.startswith("RegMix random search")
    keys = [mixture_key(p.weights) for p in a]
    assert len(set(keys)) == 30
    x = np.stack([vec(p.weights) for p in a])
    prior = vec(TOKENS) / sum(TOKENS.values())
    assert np.all(x.std(axis=0) > 0.4 * prior)          # spread in every domain
    assert (x[:, -1] >= 0.08 - 1e-12).sum() < 30        # the web cap is respected, not pinned
    # already-tried mixtures are not proposed again
    hist = [Trial("random", 1, a[0].weights, 1.0), {"strategy": "x", "round": 0,
                                                     "weights": a[1].weights, "target": 2.0}]
    again = rs.propose(hist, 30, np.random.default_rng([3, 1]))
    assert a[0].weights not in [p.weights for p in again]
    assert a[1].weights not in [p.weights for p in again]
    assert again[:28] == a[2:30]


def test_random_search_respects_min_weight_through_the_projection():
    c = Constraints(min_weight=0.03, max_epochs=4, budget_tokens=1_000_000)
    rs = make_proposer("random", doms(TOKENS), c)
    props = rs.propose([], 20, np.random.default_rng(5))
    for p in props:
        assert_feasible(p.weights, rs.space)
    assert sum(p.projection is not None for p in props) > 10
    assert any("raised to min_weight 0.03" in (p.projection or "") for p in props)


# --------------------------------------------------------------------------- regression
A = np.array([0.15, 0.35, 0.10, 0.25, 0.15])   # per-domain importance (sorted names)
EPS = 1e-3


def synthetic_target(w: dict[str, float]) -> float:
    """A loss with a known optimum: 3 - sum_d a_d log(w_d + eps) (unconstrained optimum
    w ≈ a; here web's cap 0.08 and ref's cap 0.24 bind, so the optimum is on them)."""
    return 3.0 - float(A @ np.log(vec(w) + EPS))


def constrained_optimum() -> float:
    fs = FeasibleSet.build(doms(TOKENS), C)
    r = minimize(lambda x: 3.0 - float(A @ np.log(x + EPS)), np.full(5, 0.2) * [1.1, 1.1, 1.1, 1, 0.4],
                 method="SLSQP", bounds=list(zip(fs.lower, fs.upper)),
                 constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                 options={"ftol": 1e-14, "maxiter": 1000})
    assert r.success
    return float(r.fun)


def random_history(seed: int, n: int = 40) -> list[Trial]:
    rs = make_proposer("random", doms(TOKENS), C)
    return [Trial("random", 1, p.weights, synthetic_target(p.weights), seed=0)
            for p in rs.propose([], n, np.random.default_rng([seed, 1]))]


@pytest.mark.parametrize("model", ["gbt", "loglinear", "linear"])
def test_regression_beats_the_best_random_sample_after_40_trials(model):
    opt = constrained_optimum()
    reg = make_proposer("regression", doms(TOKENS), C, model=model)
    wins = 0
    for seed in (0, 1):
        hist = random_history(seed)
        best_random = min(t.target for t in hist)
        [p] = reg.propose(hist, 1, np.random.default_rng([seed, 2]))
        assert_feasible(p.weights, reg.space)
        got = synthetic_target(p.weights)
        assert got >= opt - 1e-9
        wins += got < best_random
        if model == "gbt":
            assert got < best_random - 0.1            # RegMix's main model: a clear gain
        if model == "loglinear":                      # the true model class: nearly optimal
            assert got - opt < 0.05, (got, opt)
        assert p.params["trials"] == 40 and p.params["top_k"] == 100
        assert p.rationale.startswith("RegMix regression") and "on 40 trials" in p.rationale
    if model != "linear":                             # linear misfits log; no claim beyond feasible
        assert wins == 2


def test_regression_is_deterministic_and_bootstraps_further_proposals():
    hist = random_history(3, n=20)
    reg = make_proposer("regression", doms(TOKENS), C, candidates=5_000, top_k=20)
    a = reg.propose(hist, 3, np.random.default_rng(11))
    b = reg.propose(hist, 3, np.random.default_rng(11))
    assert a == b and len(a) == 3
    assert len({mixture_key(p.weights) for p in a}) == 3
    assert [p.params["bootstrap"] for p in a] == [False, True, True]
    for p in a:
        assert_feasible(p.weights, reg.space)


def test_regression_with_too_few_trials_falls_back_or_raises():
    hist = random_history(0, n=6)                      # K+2 = 7 needed
    reg = make_proposer("regression", doms(TOKENS), C)
    props = reg.propose(hist, 2, np.random.default_rng(0))
    assert len(props) == 2 and all(p.strategy == "regression" for p in props)
    assert props[0].rationale.startswith("regression needs at least 7 trials with a finite "
                                         "target to fit (K+2 for K=5 domains), has 6; instead: "
                                         "RegMix random search")
    assert "strength" in props[0].params
    # a NaN target does not count
    nan_hist = random_history(0, n=7)
    nan_hist[0] = Trial("random", 1, nan_hist[0].weights, float("nan"))
    strict = make_proposer("regression", doms(TOKENS), C, fallback=False)
    with pytest.raises(NotEnoughTrials, match="has 6"):
        strict.propose(nan_hist, 1, np.random.default_rng(0))
    assert strict.propose(random_history(0, n=7), 1, np.random.default_rng(0))[0].params["trials"] == 7


# --------------------------------------------------------------------------- registry, history
def test_registry_builds_from_config_dicts_with_clear_errors():
    assert set(PROPOSERS) == {"uniform", "natural", "temperature", "unimax", "random", "regression"}
    p = proposer_from_spec({"name": "temperature", "taus": [2, 5]}, doms(TOKENS), C)
    assert [q.params["tau"] for q in p.propose([], 1, None)] == [2.0, 5.0]
    r = proposer_from_spec({"name": "regression", "model": "gbt"}, doms(TOKENS), C)
    assert r.params.model == "gbt" and r.params.candidates == 100_000 and r.name == "regression"
    with pytest.raises(ProposerError, match="unknown proposer 'doremi'; known: uniform, natural, "
                                            "temperature, unimax, random, regression"):
        make_proposer("doremi", doms(TOKENS), C)
    with pytest.raises(ProposerError, match=r"'temperature': taus: .*every tau must be a finite "
                                            r"number > 0"):
        check_spec({"name": "temperature", "taus": [2, -1]})
    with pytest.raises(ProposerError, match=r"'regression': model: Input should be 'gbt', "
                                            r"'linear' or 'loglinear'"):
        check_spec({"name": "regression", "model": "xgboost"})
    with pytest.raises(ProposerError, match=r"'random': tau: unknown parameter \(known: prior_tau"):
        check_spec({"name": "random", "tau": 2})
    with pytest.raises(ProposerError, match="top_k .* must be <= candidates"):
        check_spec({"name": "regression", "candidates": 10, "top_k": 50})
    with pytest.raises(ProposerError, match="needs a 'name'"):
        check_spec({"taus": [2]})
    with pytest.raises(ProposerError, match="max_strength"):
        make_proposer("random", doms(TOKENS), C, min_strength=5, max_strength=1)
    with pytest.raises(ValueError, match="repetition caps allow at most"):
        make_proposer("uniform", doms({"a": 10}), C)


def test_trials_come_from_validation_results_only():
    prop = Proposal(strategy="natural", weights={"a": 0.5, "b": 0.5})
    res = ProxyResult(mixture_key=mixture_key(prop.weights), backend="ngram", seed=3,
                      budget_tokens=1000, split="valid", loss={"a": 1.0, "b": 2.0},
                      bpb={"a": 1.1, "b": 2.1}, target=1.6)
    t = Trial.from_result(prop, res, round=2)
    assert (t.strategy, t.round, t.target, t.seed, t.bpb) == ("natural", 2, 1.6, 3, {"a": 1.1, "b": 2.1})
    with pytest.raises(ValueError, match="validation split only"):
        Trial.from_result(prop, ProxyResult(**{**res.__dict__, "split": "test"}), round=2)
    with pytest.raises(ProposerError, match="needs strategy, round, weights and target"):
        Trial.coerce({"weights": {"a": 1.0}})
