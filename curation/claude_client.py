"""The Claude client both the labelling (classifiers) and the mixture proposer
(curation.mixture) use: settings, the SDK client, one Messages call with our fault
handling and cost accounting, prices, and the redaction every kept error text goes
through. Transport only: what a grading call sends and accepts is classifiers.grading.

Faults are handled here, not by the SDK (it is built with ``max_retries=0``): the SDK
honours any ``retry-after``, however long, and we want a cap and a count.

- 429 (rate limit): wait ``retry-after`` (capped at ``max_wait_s``), then retry;
- 529 (overloaded), 5xx, timeouts, connection errors: exponential backoff, retry;
- a reply that ``parse`` rejects (AnswerError) or a body that is not JSON: retried
  ``answer_retries`` times, then an error with its reason;
- other 4xx (bad request, authentication): an error, not retried.

The API key is read by the SDK from ``ANTHROPIC_API_KEY``; it is never passed around,
logged or stored here. An API (or a proxy in front of it) may repeat the key in an
error message, so every error text passes through :func:`redact` first.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CACHE_WRITE, CACHE_READ, BATCH_DISCOUNT = 1.25, 0.10, 0.5

# USD per million tokens (input, output) as Anthropic published them in late 2026; check
# the pricing page and pass your own table when they change. Retired models are left out
# (claude-sonnet-4-5 retired 2026-11-30); claude-opus-4-5 retires 2027-01-22.
PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-5-5": (4.0, 20.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-opus-4-5": (5.0, 25.0),
}



class AnswerError(ValueError):
    """The model's reply is not a valid grade (wrong form, out of range, refusal)."""


REDACTED = "<redacted>"
# a credential's value after its name (header, JSON or query style), a Bearer token (8+
# characters, so that prose keeps "the bearer of"), or anything shaped like an Anthropic key
_CREDENTIAL = re.compile(
    r"""(?ix)
    ( \b(?:x-api-key|authorization|api[-_]?key|auth[-_]?token)["']?\s*[:=]\s*["']?(?:bearer\s+)? )
      (?!<redacted>|bearer\s)[^\s"',;)}\]]+
    | ( \bbearer\s+ ) (?!<redacted>)[^\s"',;)}\]]{8,}
    """)
_KEY_SHAPED = re.compile(r"\bsk-ant-[A-Za-z0-9_-]+")


def redact(text: object, *secrets: str | None) -> str:
    """``text`` without credentials: the values of ANTHROPIC_API_KEY and
    ANTHROPIC_AUTH_TOKEN, any of ``secrets`` (e.g. a client's own key), Bearer tokens,
    ``x-api-key``/``authorization`` values and anything shaped like an Anthropic key.
    Every error text we keep goes through here."""
    out = str(text)
    for value in (os.environ.get("ANTHROPIC_API_KEY"), os.environ.get("ANTHROPIC_AUTH_TOKEN"),
                  *secrets):
        if isinstance(value, str) and len(value.strip()) >= 6:   # a short value would eat words
            out = out.replace(value.strip(), REDACTED)
    out = _KEY_SHAPED.sub(REDACTED, out)
    return _CREDENTIAL.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, out)


def _client_secrets(client) -> tuple[str | None, str | None]:
    return getattr(client, "api_key", None), getattr(client, "auth_token", None)


class NoApiKey(RuntimeError):
    """ANTHROPIC_API_KEY is not set."""


class BudgetExceeded(RuntimeError):
    """The next call could take the run past --max-usd."""


class Interrupted(RuntimeError):
    """The stop event was set: no new calls were sent, those in flight were stored."""


@dataclass
class Settings:
    model: str
    max_doc_chars: int = 8000
    max_tokens: int = 300
    concurrency: int = 8
    max_attempts: int = 6          # 529/5xx/timeouts/connection errors
    max_rate_limited: int = 30     # 429s: the API asks us to wait, so wait longer before giving up
    answer_retries: int = 1        # invalid answers are retried this many times
    backoff_s: float = 1.0
    max_wait_s: float = 60.0
    timeout_s: float = 60.0
    max_usd: float | None = None
    prices: dict | None = None


def make_client(settings: Settings, base_url: str | None = None):
    import anthropic
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise NoApiKey("ANTHROPIC_API_KEY is not set: set it to grade with Claude, or use "
                       "--labeler heuristic or --labels-from-field FIELD")
    return anthropic.Anthropic(max_retries=0, timeout=settings.timeout_s,
                               **({"base_url": base_url} if base_url else {}))


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def cost_usd(model: str, usage: Any, *, batch: bool, prices: dict | None = None) -> float:
    """Dollars for one call's usage (input, output, cache write and read tokens)."""
    table = prices or PRICES
    if model not in table:
        raise KeyError(f"no price for model {model!r}; known: {', '.join(sorted(table))} "
                       f"(configure prices for others)")
    p_in, p_out = table[model]
    tokens_in = _get(usage, "input_tokens", 0) or 0
    out = _get(usage, "output_tokens", 0) or 0
    write = _get(usage, "cache_creation_input_tokens", 0) or 0
    read = _get(usage, "cache_read_input_tokens", 0) or 0
    usd = (tokens_in * p_in + out * p_out + write * p_in * CACHE_WRITE + read * p_in * CACHE_READ) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)


@dataclass
class CallOutcome:
    """One logical call after its retries: ``value`` is what ``parse`` returned, or
    ``error`` says why there is none; tokens (input, output, cache read, cache write)
    and cost add up every attempt that was answered."""
    value: Any = None
    error: str | None = None
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    cost: float = 0.0
    attempts: int = 0


def call_with_retries(client, params: dict, s: Settings, parse: Callable[[Any], Any], *,
                      sleep: Callable[[float], None] = time.sleep,
                      count: Callable[[str], None] = lambda what: None,
                      reserve: Callable[[], float] = lambda: 0.0,
                      release: Callable[[float], None] = lambda held: None,
                      paid: Callable[[float, float], None] = lambda call, held: None,
                      sent: Callable[[], None] = lambda: None) -> CallOutcome:
    """A Messages call with our fault handling (module docstring). ``parse`` turns a
    reply into a value or raises AnswerError (retried ``s.answer_retries`` times).
    ``reserve`` runs before each attempt and may raise BudgetExceeded or Interrupted:
    the exception then carries ``.outcome`` (what was already paid for). ``paid(cost,
    held)`` accounts each answered attempt; ``release(held)`` one that was not."""
    out = _call_with_retries(client, params, s, parse, sleep=sleep, count=count,
                             reserve=reserve, release=release, paid=paid, sent=sent)
    if out.error is not None:
        out.error = redact(out.error, *_client_secrets(client))
    return out


def _call_with_retries(client, params, s, parse, *, sleep, count, reserve, release, paid,
                       sent) -> CallOutcome:
    import anthropic
    out = CallOutcome()
    transport = answers = limited = 0
    while True:
        try:
            held = reserve()
        except (BudgetExceeded, Interrupted) as e:
            if out.error is not None:
                out.error = redact(out.error, *_client_secrets(client))
            e.outcome = out
            raise
        try:
            sent()
            try:
                msg = client.messages.create(**params)
            except BaseException:
                release(held)   # nothing was charged
                raise
        except anthropic.RateLimitError as e:
            limited += 1
            count("rate_limit")
            if limited >= s.max_rate_limited:
                out.error = f"rate limited {limited} times"
                return out
            sleep(min(_retry_after(e) or s.backoff_s, s.max_wait_s))
            continue
        except (anthropic.InternalServerError, anthropic.APITimeoutError,
                anthropic.APIConnectionError) as e:
            transport += 1
            count(_RETRY_NAMES.get(type(e).__name__, type(e).__name__))
            if transport >= s.max_attempts:
                out.error = f"{type(e).__name__} after {transport} attempts"
                return out
            sleep(min(s.backoff_s * 2 ** (transport - 1), s.max_wait_s))
            continue
        except anthropic.APIStatusError as e:
            out.error = f"{type(e).__name__} ({e.status_code}): {_short(e, *_client_secrets(client))}"
            return out
        except ValueError as e:           # a 200 whose body is not JSON
            answers += 1
            count("bad_body")
            if answers > s.answer_retries:
                out.error = f"unreadable reply: {e}"
                return out
            continue
        u = msg.usage
        out.tokens = [out.tokens[0] + (u.input_tokens or 0), out.tokens[1] + (u.output_tokens or 0),
                      out.tokens[2] + (getattr(u, "cache_read_input_tokens", 0) or 0),
                      out.tokens[3] + (getattr(u, "cache_creation_input_tokens", 0) or 0)]
        call = cost_usd(s.model, u, batch=False, prices=s.prices)
        out.cost += call
        paid(call, held)
        out.attempts = transport + limited + answers + 1
        try:
            out.value = parse(msg)
        except AnswerError as e:
            answers += 1
            count("invalid_answer")
            if answers > s.answer_retries:
                out.error = str(e)
                return out
            continue
        return out


_RETRY_NAMES = {"OverloadedError": "overloaded", "InternalServerError": "server_error",
                "APITimeoutError": "timeout", "APIConnectionError": "connection_error"}


def _retry_after(e) -> float | None:
    value = getattr(e, "response", None) and e.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(e, *secrets: str | None) -> str:
    """The API's own message (not the SDK's repr of the body), redacted before it is
    cut so that no part of a key survives the cut."""
    body = getattr(e, "body", None)
    detail = body.get("error") if isinstance(body, dict) else None
    text = detail.get("message") if isinstance(detail, dict) else None
    return redact(text if isinstance(text, str) else getattr(e, "message", e), *secrets)[:200]
