"""The `curate mix` configuration (YAML, validated; errors name the field)."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    valid: float = Field(0.1, gt=0, lt=0.5)
    test: float = Field(0.1, gt=0, lt=0.5)
    seed: int = Field(0, ge=0)


class TargetConfig(_Strict):
    kind: Literal["average", "worst", "weighted"] = "average"
    weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _weights(self):
        if (self.kind == "weighted") != (self.weights is not None):
            raise ValueError("weights are given with kind: weighted, and only then")
        if self.weights is not None and (not self.weights or min(self.weights.values()) < 0
                                         or sum(self.weights.values()) <= 0):
            raise ValueError("target weights must be non-negative with a positive sum")
        return self

    def spec(self) -> dict:
        return {"kind": self.kind, **({"weights": self.weights} if self.weights else {})}

    def describe(self) -> str:
        if self.kind == "average":
            return "the mean of the domains' bits per byte"
        if self.kind == "worst":
            return "the highest (worst) bits per byte of any domain"
        ws = ", ".join(f"{d} {w:g}" for d, w in sorted(self.weights.items()))
        return f"a weighted mean of bits per byte ({ws})"


class ConstraintsConfig(_Strict):
    min_weight: float = Field(0.01, ge=0, lt=1)
    max_epochs: float = Field(4.0, gt=0)


class ProxyConfig(_Strict):
    backend: Literal["ngram", "transformer"] = "ngram"
    budget_tokens: int = Field(1_000_000, ge=1000)
    params: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(_Strict):
    rounds: int = Field(4, ge=1, le=100)
    runs_per_round: int = Field(2, ge=1, le=100)
    noise_seeds: int = Field(5, ge=2, le=50)
    final_seeds: int = Field(5, ge=3, le=50)
    final_top: int = Field(1, ge=1, le=20)
    seed: int = Field(0, ge=0)


class FidelityConfig(_Strict):
    """After the search, rerun the finalists and ``mixtures`` further random mixtures on
    a larger proxy (docs/mixture.md, "Proxy fidelity"). Unset fields take the search
    proxy's: the same backend and parameters at ``budget_factor`` times its budget."""
    enabled: bool = True
    backend: Literal["ngram", "transformer"] | None = None
    budget_tokens: int | None = Field(None, ge=1000)
    budget_factor: float = Field(10.0, gt=0)
    params: dict[str, Any] | None = None
    mixtures: int = Field(8, ge=0, le=1000)
    seeds: int = Field(3, ge=3, le=50)
    min_rank_correlation: float = Field(0.8, ge=-1, le=1)


class SampleConfig(_Strict):
    """The bound on each domain's sample (docs/mixture.md, "The sample"): by default
    ``max(min_bytes_per_domain, ceil(budget_tokens * max_epochs * bytes_per_token /
    train_fraction))`` bytes; ``max_bytes_per_domain`` sets it outright."""
    max_bytes_per_domain: int | None = Field(None, ge=1)
    bytes_per_token: float = Field(6.0, gt=0)        # a generous guess: no tokenizer yet
    min_bytes_per_domain: int = Field(64 * 2**20, ge=1)   # below this a domain is held whole


class MixConfig(_Strict):
    sources: dict[str, list[str] | str] | None = None   # domain -> glob(s)
    inputs: list[str] = Field(default_factory=list)     # or: globs whose records carry a domain
    demo: bool = False
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = "domain"
    output: str | None = None
    split: SplitConfig = SplitConfig()
    tokenizer_vocab: int = Field(4096, ge=256, le=65536)
    target: TargetConfig = TargetConfig()
    constraints: ConstraintsConfig = ConstraintsConfig()
    proxy: ProxyConfig = ProxyConfig()
    search: SearchConfig = SearchConfig()
    fidelity: FidelityConfig = FidelityConfig()
    sample: SampleConfig = SampleConfig()
    baselines: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"name": "uniform"}, {"name": "natural"}, {"name": "temperature", "taus": [2.0, 5.0]},
        {"name": "unimax"}])
    proposers: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"name": "random"}, {"name": "regression"}, {"name": "claude"}])
    claude_model: str = "claude-sonnet-5-5"
    claude_hide_names: bool = False
    claude_max_usd: float | None = Field(5.0, gt=0)
    claude_samples: int = Field(3, ge=0, le=20)        # documents shown per domain (0: none)
    claude_sample_chars: int = Field(600, ge=50, le=5000)
    stages: dict[str, str] = Field(default_factory=dict)   # dedup/filter/score manifest paths

    def sample_bytes(self) -> int:
        """The sample bound per domain, in UTF-8 bytes of text (see SampleConfig)."""
        s = self.sample
        if s.max_bytes_per_domain is not None:
            return s.max_bytes_per_domain
        train = 1 - self.split.valid - self.split.test
        need = math.ceil(self.largest_budget() * self.constraints.max_epochs * s.bytes_per_token / train)
        return max(s.min_bytes_per_domain, need)

    def fidelity_proxy(self) -> ProxyConfig | None:
        """The larger proxy of the fidelity check, its unset fields filled in; None when off."""
        f = self.fidelity
        if not f.enabled:
            return None
        backend = f.backend or self.proxy.backend
        params = f.params if f.params is not None else (
            dict(self.proxy.params) if backend == self.proxy.backend else {})
        budget = f.budget_tokens or max(1000, int(round(self.proxy.budget_tokens * f.budget_factor)))
        return ProxyConfig(backend=backend, budget_tokens=budget, params=params)

    def largest_budget(self) -> int:
        fp = self.fidelity_proxy()
        return max(self.proxy.budget_tokens, fp.budget_tokens if fp else 0)

    @model_validator(mode="after")
    def _some_input(self):
        given = sum(bool(x) for x in (self.sources, self.inputs, self.demo))
        if given != 1:
            raise ValueError("give exactly one of sources (domain: glob), inputs, or demo: true")
        names = [p.get("name") for p in self.baselines + self.proposers]
        if any(not isinstance(n, str) for n in names):
            raise ValueError("every baseline and proposer needs a name")
        return self
