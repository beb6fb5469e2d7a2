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
    noise_seeds: int = Field(3, ge=2, le=50)
    final_seeds: int = Field(3, ge=3, le=50)
    final_top: int = Field(1, ge=1, le=20)
    seed: int = Field(0, ge=0)


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
    sample: SampleConfig = SampleConfig()
    baselines: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"name": "uniform"}, {"name": "natural"}, {"name": "temperature", "taus": [2.0, 5.0]},
        {"name": "unimax"}])
    proposers: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"name": "random"}, {"name": "regression"}, {"name": "claude"}])
    claude_model: str = "claude-sonnet-5-5"
    claude_hide_names: bool = False
    claude_max_usd: float | None = Field(5.0, gt=0)
    stages: dict[str, str] = Field(default_factory=dict)   # dedup/filter/score manifest paths

    def sample_bytes(self) -> int:
        """The sample bound per domain, in UTF-8 bytes of text (see SampleConfig)."""
        s = self.sample
        if s.max_bytes_per_domain is not None:
            return s.max_bytes_per_domain
        train = 1 - self.split.valid - self.split.test
        need = math.ceil(self.proxy.budget_tokens * self.constraints.max_epochs * s.bytes_per_token / train)
        return max(s.min_bytes_per_domain, need)

    @model_validator(mode="after")
    def _some_input(self):
        given = sum(bool(x) for x in (self.sources, self.inputs, self.demo))
        if given != 1:
            raise ValueError("give exactly one of sources (domain: glob), inputs, or demo: true")
        names = [p.get("name") for p in self.baselines + self.proposers]
        if any(not isinstance(n, str) for n in names):
            raise ValueError("every baseline and proposer needs a name")
        return self
