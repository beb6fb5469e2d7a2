"""Proxy runs: train a small model on a sample of a mixture, report its held-out loss.

A backend (`ProxyBackend`) has a ``name``, a ``version`` and an ``identity()`` (every
parameter its results depend on), and ``run(weights, seed, budget_tokens, split)``
returns a `ProxyResult`: per domain the loss in nats per token (under the stated
tokenizer) and bits per byte, plus the configured target in bits per byte.
`NGramBackend` is the fast count-based one; `curation.mixture.transformer.TransformerBackend`
(PyTorch, an optional extra) sits behind the same interface and trains on the same
sample. `ResultCache` remembers every run in the run directory, so a resumed search
never redoes one.

The sample of a run (`sample_mixture`, shared by the backends)
--------------------------------------------------------------
- The weights are normalised and rounded to the 6 digits `mixture_key` keeps (so
  two weight vectors with one key are one run), then turned into whole tokens per
  domain that add up to the budget exactly (largest remainder; ties by domain name).
- Each domain draws from its train split with its own generator, seeded by
  ``(seed, xxh3_64(domain))``: a domain's sample does not depend on the other
  domains' weights (common random numbers: two mixtures differ only where their
  weights do, which makes their comparison less noisy).
- ``sampling="epochs"`` (the default): the domain's documents in a fresh random order
  per epoch, as many epochs as the share asks (a weight above the domain's size
  repeats it; the feasibility rules cap that, not the backend), the last document
  cut to land on the share exactly. ``sampling="replacement"``: documents drawn
  with replacement until the share is met (the last one cut likewise). Epochs are
  the default because a real training run sees each document once per epoch: drawn
  with replacement, a one-epoch share would miss about 37% of a domain and repeat
  others, which adds noise and penalises small domains.

Evaluation: every domain's `split` ("valid" for the search, "test" for the final
judgement) is scored whole, whatever the weights; bits per byte = total bits of the
domain's tokens / its UTF-8 bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np
import xxhash

from curation.fs import write_atomic
from curation.mixture.data import CorpusSplits, EncodedDomain
from curation.mixture.ngram import KneserNeyLM, loss_and_bpb, ngram_keys
from curation.mixture.types import ProxyResult, mixture_key, normalise

EVAL_SPLITS = ("valid", "test")
SAMPLING = ("epochs", "replacement")
CACHE_FILE = "proxy_cache.jsonl"


# ---------------------------------------------------------------- the target

class Target:
    """The search's objective over per-domain bits per byte (lower is better).

    ``{"kind": "average"}``: the mean over all domains; ``{"kind": "worst"}``: the
    highest; ``{"kind": "weighted", "weights": {domain: w}}``: ``sum w_d bpb_d / sum w``
    (domains not named weigh 0)."""

    KINDS = ("average", "worst", "weighted")

    def __init__(self, kind: str = "average", weights: Mapping[str, float] | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"target kind must be one of {self.KINDS}, got {kind!r}")
        if (kind == "weighted") != (weights is not None):
            raise ValueError("target weights are given with kind 'weighted', and only then")
        if weights is not None:
            bad = {d: w for d, w in weights.items()
                   if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
            if bad or not weights or sum(weights.values()) <= 0:
                raise ValueError(f"target weights must be finite, non-negative, with a positive sum; "
                                 f"got {dict(weights)}")
            weights = {d: float(weights[d]) for d in sorted(weights)}
        self.kind, self.weights = kind, weights

    @classmethod
    def parse(cls, spec: "Target | Mapping[str, Any] | str | None") -> "Target":
        if spec is None:
            return cls()
        if isinstance(spec, Target):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        extra = set(spec) - {"kind", "weights"}
        if extra:
            raise ValueError(f"unknown target fields {sorted(extra)} (expected kind, weights)")
        return cls(spec.get("kind", "average"), spec.get("weights"))

    def spec(self) -> dict:
        return {"kind": self.kind, **({"weights": dict(self.weights)} if self.weights else {})}

    def check(self, domains) -> None:
        if self.weights:
            unknown = sorted(set(self.weights) - set(domains))
            if unknown:
                raise ValueError(f"target weights name unknown domains {unknown}; "
                                 f"the corpus has {sorted(domains)}")

    def value(self, bpb: Mapping[str, float]) -> float:
        if not bpb:
            raise ValueError("no per-domain results to take a target of")
        if self.kind == "average":
            return math.fsum(bpb.values()) / len(bpb)
        if self.kind == "worst":
            return max(bpb.values())
        total = math.fsum(self.weights.values())
        return math.fsum(w * bpb[d] for d, w in self.weights.items() if w) / total

    def __repr__(self) -> str:
        return f"Target({self.spec()})"


# ---------------------------------------------------------------- backends

@runtime_checkable
class ProxyBackend(Protocol):
    name: str
    version: str

    def identity(self) -> dict:
        """Everything a result depends on besides (mixture, seed, budget, split):
        backend name and version, its parameters, the target, the tokenizer id and the
        data fingerprint. JSON-serialisable."""
        ...

    def run(self, weights: Mapping[str, float], seed: int, budget_tokens: int,
            split: str = "valid") -> ProxyResult: ...


def token_shares(weights: Mapping[str, float], budget_tokens: int) -> dict[str, int]:
    """Whole tokens per domain, adding up to `budget_tokens`: the weights rounded to six
    digits (as `mixture_key`), normalised, floored, and the remainder handed out by
    largest fractional part (ties by domain name)."""
    if int(budget_tokens) != budget_tokens or budget_tokens < 1:
        raise ValueError(f"budget_tokens must be a positive integer, got {budget_tokens!r}")
    w = normalise({d: round(float(v), 6) for d, v in normalise(weights).items()})
    exact = {d: w[d] * budget_tokens for d in w}
    out = {d: int(math.floor(x)) for d, x in exact.items()}
    left = int(budget_tokens) - sum(out.values())
    for d in sorted(w, key=lambda d: (-(exact[d] - out[d]), d))[:left]:
        out[d] += 1
    return out


def _domain_rng(seed: int, domain: str) -> np.random.Generator:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), xxhash.xxh3_64_intdigest(domain.encode("utf-8", "surrogatepass"))])))


def draw_documents(lengths: np.ndarray, need: int, rng: np.random.Generator,
                   sampling: str = "epochs") -> tuple[np.ndarray, np.ndarray]:
    """Documents (indices) and the tokens taken of each, adding up to `need` exactly
    (the last document cut short). See the module docstring for the two rules."""
    n = len(lengths)
    if need <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    total = int(lengths.sum())
    if n == 0 or total == 0:
        raise ValueError("cannot draw tokens from a domain with no train tokens")
    chunks: list[np.ndarray] = []
    have = 0
    while have < need:
        if sampling == "epochs":
            idx = rng.permutation(n)
        elif sampling == "replacement":
            size = max(16, int(math.ceil((need - have) / (total / n) * 1.1)))
            idx = rng.integers(0, n, size=size)
        else:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        chunks.append(idx)
        have += int(lengths[idx].sum())
    order = np.concatenate(chunks).astype(np.int64)
    cum = np.cumsum(lengths[order])
    last = int(np.searchsorted(cum, need))           # first document where the sum reaches need
    order = order[:last + 1]
    take = lengths[order].astype(np.int64)
    take[-1] -= int(cum[last]) - need
    return order, take


def gather(enc: EncodedDomain, docs: np.ndarray, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``take[i]`` tokens of each document ``docs[i]``: (tokens, offsets)."""
    offsets = np.zeros(len(take) + 1, np.int64)
    np.cumsum(take, out=offsets[1:])
    total = int(offsets[-1])
    idx = np.repeat(enc.offsets[docs] - offsets[:-1], take) + np.arange(total, dtype=np.int64)
    return enc.tokens[idx], offsets


def check_weights(domains: list[str], weights: Mapping[str, float]) -> dict[str, float]:
    """`weights` over exactly `domains` (missing ones 0), normalised; ValueError naming
    any domain the corpus does not have."""
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"weights name unknown domains {unknown}; the corpus has {domains}")
    return normalise({d: float(weights.get(d, 0.0)) for d in domains})


def sample_mixture(train: Mapping[str, EncodedDomain], weights: Mapping[str, float], seed: int,
                   budget_tokens: int, sampling: str = "epochs"
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, dict]]:
    """The training tokens of a proxy run, the same for every backend (the rules of the
    module docstring): ``(tokens, offsets, summary)``, documents of the domains in sorted
    order (document i is ``tokens[offsets[i]:offsets[i + 1]]``), and per domain the
    tokens, documents drawn and epochs. `train`: ``{domain: EncodedDomain}`` of the train
    split."""
    domains = sorted(train)
    shares = token_shares(check_weights(domains, weights), budget_tokens)
    toks, offs, summary = [], [np.zeros(1, np.int64)], {}
    base = 0
    for d in domains:
        enc = train[d]
        docs, take = draw_documents(enc.lengths, shares[d], _domain_rng(seed, d), sampling)
        t, o = gather(enc, docs, take)
        toks.append(t)
        offs.append(o[1:] + base)
        base += int(o[-1])
        summary[d] = {"tokens": shares[d], "documents_drawn": int(len(docs)),
                      "epochs": shares[d] / enc.n_tokens if enc.n_tokens else 0.0}
    return np.concatenate(toks), np.concatenate(offs), summary


class NGramBackend:
    """The fast proxy backend: an interpolated modified Kneser-Ney n-gram model
    (`curation.mixture.ngram`) over the stated tokenizer's ids, trained on the mixture's
    sample; seconds per run at a few million tokens on one core."""

    name = "ngram"
    version = "kn-modified-interpolated/1"

    def __init__(self, splits: CorpusSplits, tokenizer, *, order: int = 3,
                 target: Target | Mapping[str, Any] | str | None = None,
                 sampling: str = "epochs"):
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        KneserNeyLM.check_order(tokenizer.vocab_size, order)
        self.splits, self.tokenizer = splits, tokenizer
        self.order, self.sampling = int(order), sampling
        self.target = Target.parse(target)
        self.domains = splits.domains
        self.target.check(self.domains)
        self.encoded = splits.encoded(tokenizer)
        self._eval_keys: dict[str, dict[str, np.ndarray]] = {}

    def identity(self) -> dict:
        return {"backend": self.name, "version": self.version,
                "params": {"order": self.order, "sampling": self.sampling},
                "target": self.target.spec(), "tokenizer": self.tokenizer.id,
                "data": self.splits.fingerprint()}

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        return check_weights(self.domains, weights)

    def sample(self, weights: Mapping[str, float], seed: int, budget_tokens: int
               ) -> tuple[np.ndarray, np.ndarray, dict[str, dict]]:
        """The training tokens of a run: (tokens, offsets, per-domain draw summary)."""
        return sample_mixture(self.encoded["train"], weights, seed, budget_tokens, self.sampling)

    def _keys(self, split: str) -> dict[str, np.ndarray]:
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        if split not in self._eval_keys:
            base = self.tokenizer.vocab_size + 1
            self._eval_keys[split] = {
                d: ngram_keys(e.tokens, e.offsets, self.order, base)
                for d, e in self.encoded[split].items()}
        return self._eval_keys[split]

    def run(self, weights: Mapping[str, float], seed: int, budget_tokens: int,
            split: str = "valid") -> ProxyResult:
        t0 = time.perf_counter()
        w = self._check_weights(weights)
        keys = self._keys(split)
        tokens, offsets, drawn = self.sample(w, seed, budget_tokens)
        lm = KneserNeyLM.fit(tokens, offsets, self.tokenizer.vocab_size, self.order)
        loss, bpb = {}, {}
        for d in self.domains:
            enc = self.encoded[split][d]
            if enc.n_tokens == 0:
                raise ValueError(f"domain {d!r} has no {split} tokens to evaluate on")
            loss[d], bpb[d] = loss_and_bpb(lm.logprobs_of_keys(keys[d]), enc.n_bytes)
        detail = {"drawn": drawn, "tokenizer": self.tokenizer.description,
                  "ngrams": {f"order_{lv.order}": int(len(lv.grams)) for lv in lm.levels},
                  "eval_tokens": {d: self.encoded[split][d].n_tokens for d in self.domains}}
        return ProxyResult(mixture_key=mixture_key(normalise(weights)), backend=self.name,
                           seed=int(seed), budget_tokens=int(budget_tokens), split=split,
                           loss=loss, bpb=bpb, target=self.target.value(bpb),
                           seconds=time.perf_counter() - t0, detail=detail)


# ---------------------------------------------------------------- the cache

def run_identity(backend: ProxyBackend, weights: Mapping[str, float], seed: int,
                 budget_tokens: int, split: str) -> dict:
    """What a cached result is keyed by: the mixture (its `mixture_key`), seed, budget,
    split and the backend's identity (name, version, parameters, target, tokenizer,
    data fingerprint)."""
    return {"mixture": mixture_key(normalise(weights)), "seed": int(seed),
            "budget_tokens": int(budget_tokens), "split": split, **backend.identity()}


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def _result_from(d: dict) -> ProxyResult:
    return ProxyResult(**d)


class ResultCache:
    """Proxy results on disk, one JSON object per line in ``<run_dir>/proxy_cache.jsonl``
    (``{"key", "identity", "result"}``), sorted by key and rewritten atomically after
    every new result (a crash leaves the previous complete file). Floats are written
    by `json` as the shortest repr that reads back to the same double, so a cached
    result equals the computed one bit for bit. ``hits`` and ``misses`` count lookups."""

    def __init__(self, path: str | None):
        """`path`: the cache file, or a directory (then ``proxy_cache.jsonl`` in it), or
        None for a cache in memory only."""
        if path is not None and (os.path.isdir(path) or not os.path.splitext(path)[1]):
            path = os.path.join(path, CACHE_FILE)
        self.path = path
        self.hits = self.misses = 0
        self._entries: dict[str, dict] = {}
        if path is not None and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    e = json.loads(line)
                    if _key(e["identity"]) != e["key"]:
                        raise ValueError(f"{path}:{n}: the key does not match its identity")
                    self._entries[e["key"]] = e

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, backend: ProxyBackend, weights, seed, budget_tokens, split) -> ProxyResult | None:
        e = self._entries.get(_key(run_identity(backend, weights, seed, budget_tokens, split)))
        return None if e is None else _result_from(e["result"])

    def put(self, backend: ProxyBackend, weights, seed, budget_tokens, split,
            result: ProxyResult) -> None:
        ident = run_identity(backend, weights, seed, budget_tokens, split)
        self._entries[_key(ident)] = {"key": _key(ident), "identity": ident, "result": asdict(result)}
        self._save()

    def run(self, backend: ProxyBackend, weights: Mapping[str, float], seed: int,
            budget_tokens: int, split: str = "valid") -> tuple[ProxyResult, bool]:
        """The cached result, or a new run stored; returns (result, was_cached)."""
        hit = self.get(backend, weights, seed, budget_tokens, split)
        if hit is not None:
            self.hits += 1
            return hit, True
        self.misses += 1
        result = backend.run(weights, seed, budget_tokens, split)
        self.put(backend, weights, seed, budget_tokens, split, result)
        return result, False

    def _save(self) -> None:
        if self.path is None:
            return
        lines = [json.dumps(self._entries[k], sort_keys=True, separators=(",", ":"),
                            allow_nan=False) for k in sorted(self._entries)]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"))
