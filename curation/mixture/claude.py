"""Claude as a mixture proposer: it reads the domains' statistics, the feasibility rules
and every earlier proposal with its proxy result, and proposes the next mixtures with
its reasons through a forced tool, ``{mixtures: [{weights: {domain: number},
rationale: text}]}``.

The call goes through the official SDK with the labelling client's fault handling,
cost accounting and key handling (classifiers.claude.call_with_retries): retries on
429/529/5xx/timeouts, one retry of a reply that is not a valid proposal, the key read
from the environment only and redacted from every error (classifiers.claude.redact). ``hide_names`` shows the domains as d1..dK (largest
first) with their statistics only, to separate Claude's prior knowledge of "code" or
"books" from its use of the feedback.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from curation.mixture.types import Constraints, DomainInfo, Proposal, normalise

TOOL_NAME = "propose_mixtures"
DEFAULT_MODEL = "claude-sonnet-5-5"


class ProposalError(ValueError):
    """Claude's reply could not be turned into proposals."""


@dataclass
class ClaudeStats:
    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retries: dict = field(default_factory=dict)


def aliases(domains: Sequence[DomainInfo], hide_names: bool) -> dict[str, str]:
    """Real name -> the name Claude sees (d1 = the domain with the most tokens)."""
    if not hide_names:
        return {d.name: d.name for d in domains}
    order = sorted(domains, key=lambda d: (-d.tokens, d.name))
    return {d.name: f"d{i}" for i, d in enumerate(order, 1)}


def tool_schema(names: Sequence[str], n: int) -> dict:
    return {
        "name": TOOL_NAME,
        "description": f"Record {n} proposed training mixtures, each with its rationale.",
        "input_schema": {
            "type": "object",
            "properties": {
                "mixtures": {
                    "type": "array", "minItems": 1, "maxItems": n,
                    "items": {
                        "type": "object",
                        "properties": {
                            "weights": {
                                "type": "object",
                                "properties": {k: {"type": "number", "minimum": 0} for k in names},
                                "required": list(names), "additionalProperties": False,
                                "description": "share of the training tokens per domain (sums to 1)",
                            },
                            "rationale": {"type": "string", "maxLength": 1200,
                                          "description": "why this mixture, in two or three sentences"},
                        },
                        "required": ["weights", "rationale"], "additionalProperties": False,
                    },
                },
            },
            "required": ["mixtures"], "additionalProperties": False,
        },
    }


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def system_prompt(target: str, c: Constraints) -> str:
    return (
        "You help choose the domain mixture of a language model's pre-training data. A "
        "mixture gives each domain its share of the training tokens. Each proposal is "
        "judged by a small proxy training run on a sample of that mixture, which reports "
        "bits per byte (lower is better) on held-out data of every domain and on the "
        f"target: {target}. You are one of several strategies with the same budget of "
        "proxy runs, judged on test data none of them sees.\n\n"
        "Feasibility rules (a proposal breaking them is projected onto the nearest "
        "feasible mixture, and the projection is logged):\n"
        f"- every weight is at least {c.min_weight:g};\n"
        f"- a domain may be repeated at most {c.max_epochs:g} times, so its weight is at "
        "most its cap in the table;\n"
        "- the weights sum to 1.\n\n"
        "Use the earlier results: propose mixtures that are likely to lower the target "
        "and that teach something new, not near-copies of mixtures already run. Answer "
        f"only through the {TOOL_NAME} tool."
    )


def user_prompt(domains: Sequence[DomainInfo], c: Constraints, alias: Mapping[str, str],
                trials: Sequence[Mapping[str, Any]], n: int, round_: int) -> str:
    caps = c.upper_bounds(list(domains))
    total = sum(d.tokens for d in domains) or 1
    extra_keys = sorted({k for d in domains for k in d.extra})
    head = ["domain", "documents", "tokens", "token share", "bytes/token", "cap"] + extra_keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in sorted(domains, key=lambda d: alias[d.name]):
        row = [alias[d.name], str(d.documents), str(d.tokens), _fmt(d.tokens / total),
               f"{d.bytes / d.tokens:.2f}" if d.tokens else "n/a", _fmt(caps[d.name])]
        row += [_num(d.extra.get(k)) for k in extra_keys]
        lines.append("| " + " | ".join(row) + " |")
    parts = [f"Round {round_}. The training run has {c.budget_tokens:,} tokens.",
             "", "Domains:", *lines, ""]
    if trials:
        names = [alias[d.name] for d in sorted(domains, key=lambda d: alias[d.name])]
        real = {v: k for k, v in alias.items()}
        head = ["#", "strategy", "round"] + [f"w[{k}]" for k in names] + ["target bpb"] + \
               [f"bpb[{k}]" for k in names]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, t in enumerate(trials, 1):
            w, bpb = t["weights"], t.get("bpb") or {}
            rows.append("| " + " | ".join(
                [str(i), str(t["strategy"]), str(t.get("round", ""))]
                + [_fmt(w.get(real[k], 0.0)) for k in names] + [_num(t.get("target"))]
                + [_num(bpb.get(real[k])) for k in names]) + " |")
        parts += ["Every proxy run so far (validation split; mean over seeds where repeated):",
                  *rows, ""]
    else:
        parts += ["No proxy runs yet.", ""]
    parts.append(f"Propose {n} new mixture{'s' if n > 1 else ''}.")
    return "\n".join(parts)


def _num(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def request_params(domains, c, alias, trials, n, round_, *, target: str, model: str,
                   max_tokens: int = 4000) -> dict:
    names = sorted(alias.values())
    return {
        "model": model, "max_tokens": max_tokens,
        "system": [{"type": "text", "text": system_prompt(target, c),
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [tool_schema(names, n)],
        "tool_choice": {"type": "tool", "name": TOOL_NAME},
        "messages": [{"role": "user", "content": user_prompt(domains, c, alias, trials, n, round_)}],
    }


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def parse_mixtures(message: Any, names: Sequence[str], n: int) -> list[tuple[dict, str]]:
    """(weights by shown name, rationale) for each proposed mixture; raises
    classifiers.grading.AnswerError (retried once by the caller) for a bad reply."""
    from curation.claude_client import AnswerError
    if _get(message, "stop_reason") == "refusal":
        raise AnswerError("refusal: the model declined to propose")
    blocks = [b for b in _get(message, "content", []) or []
              if _get(b, "type") == "tool_use" and _get(b, "name") == TOOL_NAME]
    if not blocks:
        raise AnswerError(f"no {TOOL_NAME} tool call in the reply")
    data = _get(blocks[0], "input") or {}
    mixtures = data.get("mixtures") if isinstance(data, dict) else None
    if not isinstance(mixtures, list) or not mixtures:
        raise AnswerError("no mixtures in the reply")
    out = []
    for i, m in enumerate(mixtures[:n]):
        w = m.get("weights") if isinstance(m, dict) else None
        if not isinstance(w, dict):
            raise AnswerError(f"mixture {i}: weights missing")
        unknown = sorted(set(w) - set(names))
        if unknown:
            raise AnswerError(f"mixture {i}: unknown domains {unknown}")
        vals = {}
        for k in names:
            v = w.get(k, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AnswerError(f"mixture {i}: weight of {k} is not a non-negative number: {v!r}")
            vals[k] = float(v)
        if sum(vals.values()) <= 0:
            raise AnswerError(f"mixture {i}: all weights are zero")
        why = m.get("rationale")
        if not isinstance(why, str) or not why.strip():
            raise AnswerError(f"mixture {i}: rationale missing")
        out.append((vals, why.strip()))
    return out


class ClaudeProposer:
    """``propose(history, n, rng)`` like the other proposers; ``history`` is a list of
    trial dicts (strategy, round, weights, target, bpb by real domain name)."""

    name = "claude"

    def __init__(self, domains: Sequence[DomainInfo], constraints: Constraints, *,
                 target: str, model: str = DEFAULT_MODEL, hide_names: bool = False,
                 client=None, settings=None, sleep: Callable[[float], None] = time.sleep,
                 project: Callable | None = None, max_usd: float | None = None):
        from curation.claude_client import Settings, make_client
        self.domains, self.c = list(domains), constraints
        self.target, self.model, self.hide_names = target, model, hide_names
        self.s = settings or Settings(model=model, max_tokens=4000)
        self.client = client if client is not None else make_client(self.s)
        self.sleep, self.max_usd = sleep, max_usd
        self.alias = aliases(self.domains, hide_names)
        self.project = project
        self.stats = ClaudeStats()
        self.round = 0

    def _count(self, what: str) -> None:
        self.stats.retries[what] = self.stats.retries.get(what, 0) + 1

    def propose(self, history: Sequence[Mapping[str, Any]], n: int,
                rng: np.random.Generator | None = None) -> list[Proposal]:
        import anthropic

        from curation.claude_client import BudgetExceeded, call_with_retries, redact
        self.round += 1
        names = sorted(self.alias.values())
        real = {v: k for k, v in self.alias.items()}
        params = request_params(self.domains, self.c, self.alias, history, n, self.round,
                                target=self.target, model=self.model,
                                max_tokens=self.s.max_tokens)

        def reserve() -> float:
            if self.max_usd is not None and self.stats.cost_usd >= self.max_usd:
                raise BudgetExceeded(f"spent ${self.stats.cost_usd:.4f} of the proposer's "
                                     f"budget {self.max_usd}")
            return 0.0

        def paid(call: float, held: float) -> None:
            self.stats.cost_usd += call

        try:
            out = call_with_retries(self.client, params, self.s,
                                    lambda m: parse_mixtures(m, names, n), sleep=self.sleep,
                                    count=self._count, reserve=reserve, paid=paid)
        except anthropic.APIError as e:   # one call_with_retries lets through: still no key in it
            self.stats.calls += 1
            self.stats.failed += 1
            secrets = (getattr(self.client, "api_key", None), getattr(self.client, "auth_token", None))
            raise ProposalError(f"Claude proposed nothing usable: {type(e).__name__}: "
                                f"{redact(e, *secrets)}") from None
        self.stats.calls += 1
        self.stats.input_tokens += out.tokens[0] + out.tokens[2] + out.tokens[3]
        self.stats.output_tokens += out.tokens[1]
        if out.error is not None:
            self.stats.failed += 1
            raise ProposalError(f"Claude proposed nothing usable: {out.error}")
        proposals = []
        for shown, why in out.value:
            raw = normalise({real[k]: v for k, v in shown.items()})
            weights, log = (self.project(raw) if self.project is not None else (raw, None))
            proposals.append(Proposal(strategy=self.name, weights=weights, rationale=why,
                                      raw_weights=raw, projection=log,
                                      params={"model": self.model, "hide_names": self.hide_names,
                                              "round": self.round}))
        return proposals
