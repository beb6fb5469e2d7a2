"""The shared vocabulary of the mixture search (issue 5): plain dataclasses, no Beam.

A *mixture* is a weight per domain, summing to 1, in sorted domain order. Weights
are shares of the *tokens* a training run draws (not of documents or bytes).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class DomainInfo:
    """What the proposers may know of a domain (``curate mix`` fills it from the data)."""
    name: str
    documents: int
    bytes: int
    tokens: int                   # under the search's stated tokenizer (train split)
    extra: Mapping[str, float] = field(default_factory=dict)   # quality, dup/filter rates...


@dataclass(frozen=True)
class Constraints:
    """Feasibility rules every proposal must respect (after projection).

    - ``min_weight``: every domain gets at least this share (0 allows dropping one);
    - ``max_epochs``: a domain may be repeated at most this many times, so its weight
      is at most ``max_epochs * tokens[d] / budget_tokens``;
    - ``budget_tokens``: the tokens of the run the mixture is for.
    """
    min_weight: float = 0.0
    max_epochs: float = 4.0
    budget_tokens: int = 1_000_000

    def upper_bounds(self, domains: list[DomainInfo]) -> dict[str, float]:
        return {d.name: min(1.0, self.max_epochs * d.tokens / self.budget_tokens) for d in domains}


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"weights must have a positive finite sum, got {dict(weights)}")
    return {k: float(weights[k]) / total for k in sorted(weights)}


def mixture_key(weights: Mapping[str, float], digits: int = 6) -> str:
    """A stable identity for a mixture: weights rounded to ``digits``, sorted, hashed."""
    canon = json.dumps({k: round(float(weights[k]), digits) for k in sorted(weights)},
                       sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Proposal:
    strategy: str                      # "uniform", "natural", "temperature", "claude", ...
    weights: dict[str, float]          # feasible: projected when it was not
    rationale: str = ""
    raw_weights: dict[str, float] | None = None    # as proposed, before projection
    projection: str | None = None      # what the projection changed, for the log
    params: Mapping[str, object] = field(default_factory=dict)   # e.g. {"tau": 2.0}


@dataclass(frozen=True)
class ProxyResult:
    """One proxy training run's outcome on a split ("valid" or "test")."""
    mixture_key: str
    backend: str
    seed: int
    budget_tokens: int
    split: str
    loss: dict[str, float]             # per domain: nats per token
    bpb: dict[str, float]              # per domain: bits per byte
    target: float                      # the configured target, in bits per byte
    seconds: float = 0.0
    # what the backend wants remembered: tokens drawn and epochs per domain, model sizes...
    detail: Mapping[str, object] = field(default_factory=dict)
