"""The baseline mixture proposers of issue 5: fixed ones and the two from RegMix.

Every proposer is a small class built from the domains, the constraints and its own
documented parameters (validated by a pydantic model, so a YAML entry such as
``{name: temperature, taus: [2, 5]}`` becomes ``make_proposer("temperature", domains, c,
taus=[2, 5])``), with

    name: str
    propose(history, n, rng) -> list[Proposal]

``history`` is the list of earlier trials on the validation split: :class:`Trial` objects
or mappings with the same keys (``strategy, round, weights, target, bpb``, optionally
``seed``), as ``curation.mixture.search`` hands them. ``rng`` is a ``numpy.random.Generator``
derived deterministically by the caller: the same history, ``n`` and seed give identical
proposals. Every proposal goes through the feasibility projection
(``curation.mixture.feasibility``); ``raw_weights`` holds the weights before it and
``projection`` the log line of what it changed (None when nothing did).

Fixed proposers (uniform, natural, temperature, unimax) ignore ``history`` and ``rng`` and
return their whole fixed set whatever ``n`` is (one proposal, or one per tau); the
adaptive ones (random, regression) return ``n``. The target is a loss: lower is better.
Nothing here imports Beam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.mixture.feasibility import BOX_TOL, FeasibleSet
from curation.mixture.types import Constraints, DomainInfo, Proposal, ProxyResult, mixture_key


class ProposerError(ValueError):
    """A proposer could not be built or could not propose; the message says why."""


class NotEnoughTrials(ProposerError):
    """The regression proposer has fewer trials than it needs to fit (and no fallback)."""


# --------------------------------------------------------------------------- history
@dataclass(frozen=True)
class Trial:
    """One earlier proxy run on the validation split, as the adaptive proposers see it."""
    strategy: str
    round: int
    weights: dict[str, float]
    target: float                                   # the configured target (bpb); lower is better
    bpb: dict[str, float] = field(default_factory=dict)   # per domain, on the validation split
    seed: int | None = None

    @classmethod
    def from_result(cls, proposal: Proposal, result: ProxyResult, round: int) -> "Trial":
        if result.split != "valid":
            raise ValueError(f"proposers learn from the validation split only; this result is "
                             f"on {result.split!r} (the test split is for the final judgement)")
        if result.mixture_key != mixture_key(proposal.weights):
            raise ValueError("the result is for a different mixture than the proposal")
        return cls(strategy=proposal.strategy, round=round, weights=dict(proposal.weights),
                   target=float(result.target), bpb=dict(result.bpb), seed=result.seed)

    @classmethod
    def coerce(cls, item: "Trial | Mapping[str, Any]") -> "Trial":
        if isinstance(item, Trial):
            return item
        try:
            return cls(strategy=str(item["strategy"]), round=int(item["round"]),
                       weights={k: float(v) for k, v in item["weights"].items()},
                       target=float(item["target"]),
                       bpb={k: float(v) for k, v in (item.get("bpb") or {}).items()},
                       seed=None if item.get("seed") is None else int(item["seed"]))
        except (KeyError, TypeError, AttributeError) as e:
            raise ProposerError(f"a history entry needs strategy, round, weights and target; "
                                f"got {item!r} ({e})") from None


History = Sequence[Union[Trial, Mapping[str, Any]]]


# --------------------------------------------------------------------------- parameters
class ProposerParams(BaseModel):
    """Base of every proposer's parameters: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(ProposerParams):
    pass


class TemperatureParams(ProposerParams):
    taus: list[float] = Field(default_factory=lambda: [2.0, 5.0], min_length=1,
                              description="one proposal per tau; weights ∝ tokens^(1/tau)")

    @field_validator("taus", mode="before")
    @classmethod
    def _scalar(cls, v):
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("taus")
    @classmethod
    def _positive(cls, v):
        bad = [t for t in v if not (math.isfinite(t) and t > 0)]
        if bad:
            raise ValueError(f"every tau must be a finite number > 0, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"taus must be distinct, got {v}")
        return v


class SamplerParams(ProposerParams):
    """RegMix's Dirichlet sampler (see :class:`RegMixSampler`)."""
    prior_tau: float = Field(1.0, gt=0, description="prior ∝ tokens^(1/prior_tau); RegMix's "
                             "script uses 2 (it raises the Pile's token shares to the power 0.5)")
    min_strength: float = Field(0.1, gt=0, description="smallest Dirichlet strength (RegMix: 0.1)")
    max_strength: float = Field(5.0, gt=0, description="largest Dirichlet strength (RegMix: 5.0)")
    n_strengths: int = Field(15, ge=1, le=1000,
                             description="log-spaced strengths in [min, max] (RegMix: 15)")
    minimum: float = Field(2e-4, ge=0, lt=1, description="shares below this are set to 0 "
                           "before renormalising (RegMix: 2e-4)")

    @model_validator(mode="after")
    def _range(self):
        if self.max_strength < self.min_strength:
            raise ValueError(f"max_strength ({self.max_strength}) must be >= min_strength "
                             f"({self.min_strength})")
        return self


class RandomParams(SamplerParams):
    oversample: int = Field(100, ge=1, le=100_000, description="draws per wanted proposal "
                            "before giving up on the caps and projecting (RegMix: 100)")


class RegressionParams(SamplerParams):
    model: Literal["gbt", "linear", "loglinear"] = Field(
        "gbt", description="gbt: gradient-boosted trees on the weights; linear: least squares "
        "on the weights; loglinear: least squares on log(weight + eps)")
    candidates: int = Field(100_000, ge=1, le=10_000_000,
                            description="simulated mixtures scored by the model (RegMix: 100k)")
    top_k: int = Field(100, ge=1, description="the proposal is the mean of the top_k predicted "
                       "(RegMix's paper: 100; its notebook: 128)")
    min_trials: int | None = Field(None, ge=2, description="trials needed to fit; default K+2")
    fallback: bool = Field(True, description="with too few trials, propose RegMix random samples "
                           "(and say so) instead of raising NotEnoughTrials")
    eps: float = Field(1e-3, gt=0, description="loglinear: the features are log(weight + eps)")
    gbt_iterations: int = Field(300, ge=1, le=100_000)
    gbt_learning_rate: float = Field(0.05, gt=0, le=1)
    gbt_max_depth: int = Field(3, ge=1, le=32)

    @model_validator(mode="after")
    def _k(self):
        if self.top_k > self.candidates:
            raise ValueError(f"top_k ({self.top_k}) must be <= candidates ({self.candidates})")
        return self


def _validate(params_model: type[ProposerParams], name: str, params: Mapping[str, Any]):
    try:
        return params_model(**params)
    except ValidationError as e:
        known = ", ".join(params_model.model_fields) or "none"
        msgs = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"]) or "(parameters)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown parameter (known: {known})"
            msgs.append(f"{path}: {msg}" + (f" (got {err['input']!r})"
                                            if err["type"] != "extra_forbidden" else ""))
        raise ProposerError(f"proposer {name!r}: " + "; ".join(msgs)) from None


# --------------------------------------------------------------------------- base class
class Proposer:
    """Base class: holds the feasible set and the validated parameters."""
    name: ClassVar[str] = ""
    Params: ClassVar[type[ProposerParams]] = NoParams
    adaptive: ClassVar[bool] = False

    def __init__(self, domains: Sequence[DomainInfo], constraints: Constraints, **params: Any):
        self.domains = list(domains)
        self.constraints = constraints
        self.space = FeasibleSet.build(self.domains, constraints)
        self.params = _validate(self.Params, self.name, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def propose(self, history: History, n: int, rng: np.random.Generator) -> list[Proposal]:
        raise NotImplementedError

    # helpers -----------------------------------------------------------------
    def _shares(self, x: np.ndarray) -> dict[str, float]:
        return self.space.as_dict(np.asarray(x, dtype=float))

    def _make(self, raw: np.ndarray, rationale: str, params: Mapping[str, Any],
              strategy: str | None = None) -> Proposal:
        raw_d = self._shares(raw)
        weights, log = self.space.project(raw_d)
        return Proposal(strategy=strategy or self.name, weights=weights, rationale=rationale,
                        raw_weights=raw_d, projection=log, params=dict(params))


def _tempered(tokens: np.ndarray, tau: float) -> np.ndarray:
    """tokens^(1/tau), normalised, in log space (no overflow for huge counts or small tau);
    a domain with no tokens gets 0."""
    out = np.zeros_like(tokens, dtype=float)
    pos = tokens > 0
    logs = np.log(tokens[pos]) / tau
    e = np.exp(logs - logs.max())
    out[pos] = e / e.sum()
    return out


# --------------------------------------------------------------------------- fixed
class Uniform(Proposer):
    """Every domain the same share, 1/K (then projected: under binding repetition caps
    the projection of uniform is exactly UniMax's allocation)."""
    name = "uniform"

    def propose(self, history: History = (), n: int = 1, rng=None) -> list[Proposal]:
        k = len(self.space.names)
        return [self._make(np.full(k, 1.0 / k), f"uniform: each of the {k} domains gets 1/{k}", {})]


class Natural(Proposer):
    """Token-proportional: each domain's share of the available training tokens."""
    name = "natural"

    def propose(self, history: History = (), n: int = 1, rng=None) -> list[Proposal]:
        t = self.space.tokens
        return [self._make(t / t.sum(), "natural: weights ∝ available tokens", {})]


class Temperature(Proposer):
    """Temperature sampling (as in multilingual MT and mT5): weights ∝ tokens^(1/tau).
    tau=1 is natural; tau → ∞ tends to uniform. ``taus``: one proposal per tau
    (default [2, 5])."""
    name = "temperature"
    Params = TemperatureParams

    def propose(self, history: History = (), n: int = 1, rng=None) -> list[Proposal]:
        out = []
        for tau in self.params.taus:
            out.append(self._make(_tempered(self.space.tokens, tau),
                                  f"temperature sampling, tau={tau:g}: weights ∝ tokens^(1/{tau:g})",
                                  {"tau": float(tau)}))
        return out


def unimax_allocation(tokens: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """UniMax (Chung et al. 2023, Algorithm 1) over shares of the budget: go through the
    domains from the smallest cap up; each gets the uniform share of what is left,
    ``remaining / domains_left``, or its cap ``max_epochs * tokens / budget`` if that is
    smaller; the excess of a capped domain thereby spreads uniformly over the rest."""
    k = len(tokens)
    order = sorted(range(k), key=lambda i: (upper[i], tokens[i], i))
    w = np.zeros(k)
    remaining = 1.0
    for pos, i in enumerate(order):
        share = remaining / (k - pos)
        w[i] = min(upper[i], share)
        remaining -= w[i]
    return w


class UniMax(Proposer):
    """UniMax (Chung et al. 2023): uniform over domains, but no domain above its
    repetition cap ``max_epochs * tokens / budget``; a capped domain's excess goes
    uniformly to the others (greedy from the smallest domain up)."""
    name = "unimax"

    def propose(self, history: History = (), n: int = 1, rng=None) -> list[Proposal]:
        w = unimax_allocation(self.space.tokens, self.space.upper)
        capped = [nm for nm, x, u in zip(self.space.names, w, self.space.upper)
                  if u < 1 and x >= u - BOX_TOL]
        why = (f"UniMax: uniform over domains with at most {self.constraints.max_epochs:g} "
               f"epochs each" + (f" ({', '.join(capped)} at the cap)" if capped else
                                 " (no domain reaches its cap)"))
        return [self._make(w, why, {"max_epochs": float(self.constraints.max_epochs),
                                    "capped": capped})]


# --------------------------------------------------------------------------- RegMix sampler
class RegMixSampler:
    """RegMix's mixture sampler, after ``mixture_config/synthesize_mixture.py`` in
    sail-sg/regmix (read for this module; our own code):

    1. the prior is the token distribution, optionally tempered: ``prior ∝
       tokens^(1/prior_tau)`` (RegMix raises the shares to ``TEMP = 0.5``, i.e. tau 2);
    2. the Dirichlet strength is one of ``n_strengths`` (15) values log-spaced over
       ``[min_strength, max_strength]`` ([0.1, 5]): RegMix draws one sample per strength
       and keeps one at random, which is the same law as picking the strength uniformly
       and drawing once, as we do; small strengths give sparse, extreme mixtures, large
       ones mixtures near the prior;
    3. the sample is ``Dirichlet(strength * prior)``, so its mean is the prior whatever
       the strength;
    4. shares below ``minimum`` (2e-4) are set to 0 and the rest renormalised.

    RegMix then rejects samples above a cap (``min(prior * MAXIMUM_USAGE, 1)``), rounds
    to multiples of ``minimum`` and removes near-duplicates; :class:`RandomSearch` does the
    rejection with our caps and removes duplicates by ``mixture_key``; we do not round
    (mixture_key already identifies mixtures to 1e-6). Draws are made in log space
    (``Gamma(a) = Gamma(a + 1) * U^(1/a)``), so the tiny concentrations of small
    domains at strength 0.1 give exact zeros-or-tiny shares instead of 0/0."""

    def __init__(self, space: FeasibleSet, p: SamplerParams):
        self.space, self.p = space, p
        self.prior = _tempered(space.tokens, p.prior_tau)
        if p.n_strengths == 1 or p.min_strength == p.max_strength:
            self.strengths = np.array([p.min_strength])
        else:
            self.strengths = np.logspace(math.log10(p.min_strength), math.log10(p.max_strength),
                                         p.n_strengths)

    def draw(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` samples (rows, in ``space.names`` order) and the strength of each."""
        s = self.strengths[rng.integers(0, len(self.strengths), size=size)]
        alpha = s[:, None] * self.prior[None, :]
        pos = alpha > 0
        safe = np.where(pos, alpha, 1.0)
        g = rng.standard_gamma(safe + 1.0)
        u = rng.random(alpha.shape)
        with np.errstate(divide="ignore"):
            logg = np.where(pos, np.log(g) + np.log(u) / safe, -np.inf)
        logg -= logg.max(axis=1, keepdims=True)
        w = np.exp(logg)
        w /= w.sum(axis=1, keepdims=True)
        if self.p.minimum > 0:
            cut = np.where(w < self.p.minimum, 0.0, w)
            tot = cut.sum(axis=1, keepdims=True)
            w = np.where(tot > 0, cut / np.where(tot > 0, tot, 1.0), w)
        return w, s


class RandomSearch(Proposer):
    """Random search with RegMix's sampler (:class:`RegMixSampler`): draw until ``n``
    samples lie within the repetition caps (RegMix's rejection step), skipping mixtures
    already tried or already proposed; each is then projected (which only matters when
    ``min_weight`` > 0: RegMix has no lower bound but zero). If ``n * oversample``
    draws give too few, the first rejected draws are projected onto the caps instead,
    and their rationale says so."""
    name = "random"
    Params = RandomParams
    adaptive = True

    def __init__(self, domains, constraints, **params):
        super().__init__(domains, constraints, **params)
        self.sampler = RegMixSampler(self.space, self.params)

    def _rationale(self, strength: float, projected_caps: bool = False) -> str:
        r = (f"RegMix random search: a Dirichlet(strength x prior) sample, strength "
             f"{strength:.3g}, prior ∝ tokens^(1/{self.params.prior_tau:g})")
        return r + (", outside the repetition caps and projected onto them" if projected_caps else "")

    def propose(self, history: History, n: int, rng: np.random.Generator,
                strategy: str | None = None, note: str = "") -> list[Proposal]:
        if n <= 0:
            return []
        seen = {mixture_key(Trial.coerce(t).weights) for t in history}
        w, s = self.sampler.draw(rng, n * self.params.oversample)
        inside = np.all(w <= self.space.upper + BOX_TOL, axis=1)
        out: list[Proposal] = []
        for want_inside in (True, False):
            for i in np.flatnonzero(inside == want_inside):
                if len(out) >= n:
                    break
                p = self._make(w[i], note + self._rationale(s[i], not want_inside),
                               {"strength": float(s[i]), "prior_tau": self.params.prior_tau,
                                "draw": int(i)}, strategy=strategy)
                key = mixture_key(p.weights)
                if key in seen:
                    continue
                seen.add(key)
                out.append(p)
        return out


# --------------------------------------------------------------------------- regression
class Regression(Proposer):
    """RegMix's regression step: fit a model of the target on every trial so far, score
    ``candidates`` mixtures drawn with RegMix's sampler (projected onto the feasible set,
    where RegMix's notebook simply samples ``Dirichlet(prior)``), and propose the mean of
    the ``top_k`` with the lowest predicted target (RegMix averages the top 100 of its
    simulated mixtures); the mean of feasible mixtures is feasible.

    Models (``model``):
    - ``gbt``: gradient-boosted regression trees on the weights (sklearn's
      ``GradientBoostingRegressor``, squared error, ``gbt_iterations`` trees of depth
      ``gbt_max_depth`` at learning rate ``gbt_learning_rate``, ``min_samples_leaf`` 2).
      RegMix uses LightGBM (learning rate 0.01, up to 1000 trees, early stopping on
      held-out runs), fit per domain loss; with the few dozen trials a search has there is
      nothing to hold out, so the tree count is fixed and the target is fitted directly;
    - ``linear``: least squares of the target on the weights (RegMix's linear model);
      its optimum lies on the boundary, so its proposal is as extreme as the caps allow;
    - ``loglinear``: least squares of the target on ``log(weight + eps)``: the target
      modelled as ``b + sum_d a_d log(w_d + eps)`` (diminishing returns per domain, and an
      interior optimum when the a_d are negative). The response is the target itself,
      not its log: the target is already an average of log-losses.

    ``n`` > 1: the first proposal fits all trials, each further one a bootstrap resample
    of them (drawn with ``rng``): model uncertainty gives the spread. With fewer than
    ``min_trials`` (default K+2) trials the model is not fitted: with ``fallback`` (the
    default) the proposals are RegMix random samples and their rationale says so,
    otherwise :class:`NotEnoughTrials` is raised. Trials with a non-finite target are
    left out."""
    name = "regression"
    Params = RegressionParams
    adaptive = True

    def __init__(self, domains, constraints, **params):
        super().__init__(domains, constraints, **params)
        self.sampler = RegMixSampler(self.space, self.params)

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.log(x + self.params.eps) if self.params.model == "loglinear" else x

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int):
        p = self.params
        if p.model == "gbt":
            from sklearn.ensemble import GradientBoostingRegressor
            m = GradientBoostingRegressor(n_estimators=p.gbt_iterations, learning_rate=p.gbt_learning_rate,
                                          max_depth=p.gbt_max_depth, min_samples_leaf=2,
                                          random_state=seed)
        else:
            from sklearn.linear_model import LinearRegression
            m = LinearRegression()
        return m.fit(self._features(x), y)

    def propose(self, history: History, n: int, rng: np.random.Generator) -> list[Proposal]:
        if n <= 0:
            return []
        p = self.params
        trials = [t for t in map(Trial.coerce, history) if math.isfinite(t.target)]
        k = len(self.space.names)
        need = p.min_trials if p.min_trials is not None else k + 2
        if len(trials) < need:
            msg = (f"regression needs at least {need} trials with a finite target to fit "
                   f"(K+2 for K={k} domains), has {len(trials)}")
            if not p.fallback:
                raise NotEnoughTrials(msg)
            rs = RandomSearch(self.domains, self.constraints,
                              **p.model_dump(include=set(SamplerParams.model_fields)))
            return rs.propose(history, n, rng, strategy=self.name, note=msg + "; instead: ")
        x = np.stack([self.space.vector(t.weights) for t in trials])
        y = np.array([t.target for t in trials])
        raw, _ = self.sampler.draw(rng, p.candidates)
        cand = self.space.project_rows(raw)
        feats = self._features(cand)
        desc = {"gbt": "gradient-boosted trees", "linear": "linear fit on the weights",
                "loglinear": "linear fit on log weights"}[p.model]
        out = []
        for i in range(n):
            idx = np.arange(len(trials)) if i == 0 else rng.integers(0, len(trials), len(trials))
            seed = int(rng.integers(0, 2**31 - 1))
            model = self._fit(x[idx], y[idx], seed)
            pred = model.predict(feats)
            top = np.argsort(pred, kind="stable")[:p.top_k]
            mean = cand[top].mean(axis=0)
            predicted = float(model.predict(self._features(mean[None, :]))[0])
            why = (f"RegMix regression ({desc}) on {len(trials)} trials"
                   f"{' (bootstrap resample)' if i else ''}: the mean of the {p.top_k} of "
                   f"{p.candidates:,} sampled mixtures with the lowest predicted target "
                   f"(predicted {predicted:.4f})")
            out.append(self._make(mean, why, {"model": p.model, "trials": len(trials),
                                              "candidates": p.candidates, "top_k": p.top_k,
                                              "bootstrap": bool(i), "predicted_target": predicted,
                                              "top_k_predicted_mean": float(pred[top].mean())}))
        return out


# --------------------------------------------------------------------------- registry
PROPOSERS: dict[str, type[Proposer]] = {
    "uniform": Uniform,
    "natural": Natural,
    "temperature": Temperature,
    "unimax": UniMax,
    "random": RandomSearch,
    "regression": Regression,
}


def proposer_class(name: str) -> type[Proposer]:
    try:
        return PROPOSERS[name]
    except (KeyError, TypeError):
        raise ProposerError(f"unknown proposer {name!r}; known: {', '.join(PROPOSERS)} "
                            f"(and 'claude', built by curation.mixture.claude)") from None


def make_proposer(name: str, domains: Sequence[DomainInfo], constraints: Constraints,
                  **params: Any) -> Proposer:
    """``make_proposer("temperature", domains, c, taus=[2, 5])``; unknown names and bad
    parameters raise :class:`ProposerError` naming the known ones / the field."""
    return proposer_class(name)(domains, constraints, **params)


def check_spec(spec: Mapping[str, Any]) -> tuple[str, ProposerParams]:
    """Validate one config entry ``{name: ..., **params}`` without domains (for the
    config model): returns the name and the validated parameters."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ProposerError(f"a proposer entry needs a 'name' (one of {', '.join(PROPOSERS)}); "
                            f"got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    cls = proposer_class(spec["name"])
    return cls.name, _validate(cls.Params, cls.name, params)


def proposer_from_spec(spec: Mapping[str, Any], domains: Sequence[DomainInfo],
                       constraints: Constraints) -> Proposer:
    """``proposer_from_spec({"name": "regression", "model": "gbt"}, domains, c)``."""
    name, params = check_spec(spec)
    return PROPOSERS[name](domains, constraints, **params.model_dump())
