"""A local stand-in for Anthropic's HTTP API, for tests that use the real `anthropic` SDK.

It speaks enough of the Messages, Token Counting and Message Batches API for a labelling
client that grades documents with a forced tool, and it can inject the faults such a
client must survive: rate limits, overload, server errors, slow answers, malformed and
refused answers, and per-request batch failures. It listens on 127.0.0.1 only.

    with FakeAnthropic() as server:
        client = anthropic.Anthropic(api_key="test-key", base_url=server.base_url, max_retries=0)
        server.inject("messages", Fault.rate_limit(retry_after=0.1))
        ...
        assert server.requests[-1].path == "/v1/messages"

The server never follows instructions found in a document: the grade comes from
`grader(document_text, request_json)` (default `default_grader`, a function of simple text
features). API keys are checked for presence and never recorded: `x-api-key` and
`authorization` headers are stored as "<redacted>". Two switches play a careless API
instead: `accepted_keys` refuses (401) any other key, and `echo_credentials` repeats the
request's `x-api-key` and `authorization` values in every error message (HTTP error
bodies and errored batch entries), so a client's redaction can be tested.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, NamedTuple


__all__ = [
    "BatchOutcome",
    "FakeAnthropic",
    "Fault",
    "RecordedRequest",
    "default_grader",
    "estimate_tokens",
    "extract_document",
]

Grader = Callable[[str, dict], dict]

REDACTED = "<redacted>"
_SECRET_HEADERS = {"x-api-key", "authorization"}
ENDPOINTS = (
    "messages",
    "count_tokens",
    "batches.create",
    "batches.retrieve",
    "batches.results",
    "batches.cancel",
    "*",
)
_DOC_RE = re.compile(r"<document>(.*?)</document>", re.DOTALL)


# --------------------------------------------------------------------------- helpers


def extract_document(text: str) -> str:
    """The text between the first <document> and </document> tags, else all of `text`."""
    m = _DOC_RE.search(text)
    return m.group(1).strip("\n") if m else text


def estimate_tokens(obj: Any) -> int:
    """Deterministic token estimate: UTF-8 bytes of the (JSON) value // 4, at least 1."""
    if not isinstance(obj, str):
        obj = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return max(1, len(obj.encode("utf-8")) // 4)


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "\n".join(parts)


def user_text(request_json: dict) -> str:
    """All text of the request's user turns, joined by newlines."""
    return "\n".join(
        _block_text(m.get("content")) for m in request_json.get("messages", []) if m.get("role") == "user"
    )


def default_mixture_proposal(request_json: dict) -> dict:
    """The forced `propose_mixtures` tool's input: mixture i leans towards domain i
    (mod K), so answers differ and are deterministic."""
    items = request_json["tools"][0]["input_schema"]["properties"]["mixtures"]
    names = items["items"]["properties"]["weights"]["required"]
    out = []
    for i in range(items.get("maxItems", 1)):
        lean = names[i % len(names)]
        w = {k: (0.5 if k == lean else 0.5 / (len(names) - 1) if len(names) > 1 else 1.0)
             for k in names}
        out.append({"weights": w, "rationale": f"Fake proposer: more of {lean}."})
    return {"mixtures": out}


def default_grader(document_text: str, request_json: dict) -> dict:
    """A deterministic 0-5 score from length, punctuation and letter share (or, for a
    `propose_mixtures` request, `default_mixture_proposal`).

    One point each for: >= 20 words; >= 80 words; sentence punctuation (at least one
    of . ! ? per 40 words); letters make up >= 70% of non-space characters; mean word
    length between 3 and 9.
    """
    if (request_json.get("tool_choice") or {}).get("name") == "propose_mixtures":
        return default_mixture_proposal(request_json)
    words = document_text.split()
    n = len(words)
    chars = [c for c in document_text if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    punct = sum(document_text.count(p) for p in ".!?")
    reasons = []
    score = 0
    if n >= 20:
        score += 1
        reasons.append(f"{n} words")
    if n >= 80:
        score += 1
        reasons.append("long enough")
    if n and punct * 40 >= n:
        score += 1
        reasons.append("has sentence punctuation")
    if chars and letters / len(chars) >= 0.7:
        score += 1
        reasons.append("mostly letters")
    if n and 3 <= sum(len(w) for w in words) / n <= 9:
        score += 1
        reasons.append("plausible word lengths")
    reasoning = "; ".join(reasons) if reasons else "too short or not prose"
    return {"score": score, "reasoning": f"Fake grader: {reasoning}."}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def error_body(error_type: str, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type, "message": message}}


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the next `times` matching requests.

    kind:
      "status"    reply `status` with an error body of `error_type`/`message` (+ `headers`)
      "delay"     sleep `delay_s`, then answer normally (use a delay > the client's timeout)
      "missing_score" / "score_out_of_range" / "text_block" / "max_tokens" / "refusal" /
      "garbage"   answer 200 with a malformed message (see the constructors)
    """

    kind: str
    status: int = 200
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    value: Any = None

    # status faults
    @classmethod
    def error(cls, status: int, error_type: str, message: str = "", headers: dict | None = None) -> "Fault":
        return cls("status", status=status, error_type=error_type, message=message or error_type,
                   headers=dict(headers or {}))

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1, headers: dict | None = None) -> "Fault":
        h = dict(headers or {})
        if retry_after is not None:
            h["retry-after"] = f"{retry_after:g}"
        return cls.error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit.", h)

    @classmethod
    def overloaded(cls) -> "Fault":
        return cls.error(529, "overloaded_error", "Overloaded")

    @classmethod
    def server_error(cls) -> "Fault":
        return cls.error(500, "api_error", "Internal server error")

    @classmethod
    def invalid_request(cls, message: str = "invalid request") -> "Fault":
        return cls.error(400, "invalid_request_error", message)

    # slow answer
    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        return cls("delay", delay_s=seconds)

    # malformed / refused answers (HTTP 200)
    @classmethod
    def missing_score(cls) -> "Fault":
        """tool_use input without the `score` key."""
        return cls("missing_score")

    @classmethod
    def score_out_of_range(cls, score: Any = 7) -> "Fault":
        return cls("score_out_of_range", value=score)

    @classmethod
    def text_block(cls, text: str = "I think this document deserves a 4.") -> "Fault":
        """A text block and stop_reason end_turn instead of the forced tool_use."""
        return cls("text_block", value=text)

    @classmethod
    def max_tokens(cls) -> "Fault":
        """stop_reason max_tokens with an empty (truncated) tool input."""
        return cls("max_tokens")

    @classmethod
    def refusal(cls, text: str = "I can't help with that request.") -> "Fault":
        return cls("refusal", value=text)

    @classmethod
    def garbage(cls, body: str = "<html>bad gateway</html>") -> "Fault":
        """200 with a non-JSON body."""
        return cls("garbage", value=body)

    @property
    def shapes_message(self) -> bool:
        return self.kind in {"missing_score", "score_out_of_range", "text_block", "max_tokens", "refusal"}


@dataclass
class BatchOutcome:
    """The result of one batch request, forced by custom_id (see FakeAnthropic.batch_result)."""

    type: str  # "errored" | "expired" | "canceled" | "succeeded"
    error_type: str = "invalid_request_error"
    message: str = "Injected error"
    fault: Fault | None = None  # for "succeeded": a message-shaping Fault (refusal, missing_score, ...)

    @classmethod
    def errored(cls, error_type: str = "invalid_request_error", message: str = "Injected error") -> "BatchOutcome":
        return cls("errored", error_type=error_type, message=message)

    @classmethod
    def expired(cls) -> "BatchOutcome":
        return cls("expired")

    @classmethod
    def canceled(cls) -> "BatchOutcome":
        return cls("canceled")

    @classmethod
    def succeeded_with(cls, fault: Fault) -> "BatchOutcome":
        if not fault.shapes_message:
            raise ValueError(f"a batch result can only carry a message-shaping fault, not {fault.kind!r}")
        return cls("succeeded", fault=fault)


class RecordedRequest(NamedTuple):
    method: str
    path: str
    headers: dict  # lower-case names; x-api-key / authorization redacted
    json: Any  # parsed body, or None


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers or {}


# --------------------------------------------------------------------------- server


class FakeAnthropic:
    """A threaded HTTP server on 127.0.0.1 speaking a subset of Anthropic's API.

    Args:
      grader: `grader(document_text, request_json) -> dict`, the forced tool's input.
      batch_polls_before_end: how many GET /v1/messages/batches/{id} report
        "in_progress" before the batch reports "ended" (the SDK's `batches.results()`
        does one such GET itself).
      processed_before_cancel: on cancel, this many leading requests still succeed; the
        rest are "canceled".
      min_cacheable_tokens: cached prefixes shorter than this are not cached (the real
        API's minimum is 1024-4096 by model; 0 here so short tests see caching).
      require_api_key: answer 401 when neither x-api-key nor Authorization is sent.
      accepted_keys: if given, answer 401 to a request whose x-api-key (or Bearer token)
        is not one of them.
      echo_credentials: every error message ends with the request's x-api-key and
        authorization header values, verbatim.
    """

    def __init__(
        self,
        grader: Grader | None = None,
        *,
        batch_polls_before_end: int = 1,
        processed_before_cancel: int = 0,
        min_cacheable_tokens: int = 0,
        require_api_key: bool = True,
        accepted_keys: Any = None,
        echo_credentials: bool = False,
    ) -> None:
        self.grader: Grader = grader or default_grader
        self.batch_polls_before_end = batch_polls_before_end
        self.processed_before_cancel = processed_before_cancel
        self.min_cacheable_tokens = min_cacheable_tokens
        self.require_api_key = require_api_key
        self.accepted_keys = None if accepted_keys is None else set(accepted_keys)
        self.echo_credentials = echo_credentials
        self.requests: list[RecordedRequest] = []
        self.batches: dict[str, dict] = {}
        self._faults: dict[str, collections.deque] = {e: collections.deque() for e in ENDPOINTS}
        self._batch_outcomes: dict[str, BatchOutcome] = {}
        self._cache: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._closing = threading.Event()

        handler = type("_Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="fake-anthropic", daemon=True)
        self._thread.start()

    # ---- lifecycle
    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()  # wakes handlers sleeping in a delay fault
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeAnthropic":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- fault injection
    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to `endpoint` (one of ENDPOINTS;
        "*" matches any endpoint once its own queue is empty). Faults run in FIFO order."""
        if endpoint not in self._faults:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if fault.shapes_message and endpoint not in ("messages", "*"):
            raise ValueError(f"{fault.kind!r} shapes a message; inject it on 'messages' or use batch_result()")
        with self._lock:
            self._faults[endpoint].append([fault, times])

    def batch_result(self, custom_id: str, outcome: BatchOutcome | str) -> None:
        """Force the batch result of request `custom_id` (in any later-ending batch)."""
        if isinstance(outcome, str):
            outcome = BatchOutcome(outcome)
        with self._lock:
            self._batch_outcomes[custom_id] = outcome

    def pending_faults(self) -> int:
        with self._lock:
            return sum(t for q in self._faults.values() for _, t in q)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for key in (endpoint, "*"):
                q = self._faults[key]
                if not q or (key == "*" and q[0][0].shapes_message and endpoint != "messages"):
                    continue  # a message-shaping wildcard fault waits for a messages request
                entry = q[0]
                entry[1] -= 1
                if entry[1] <= 0:
                    q.popleft()
                return entry[0]
        return None

    # ---- recorded requests
    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def _record(self, method: str, path: str, headers: dict, body: Any) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body))

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            n = next(self._ids)
        return f"{prefix}_fake{n:020d}"

    # ---- Messages
    @staticmethod
    def _validate_params(params: Any) -> None:
        if not isinstance(params, dict):
            raise _ApiError(400, "invalid_request_error", "body: expected a JSON object")
        for key in ("model", "max_tokens", "messages"):
            if key not in params:
                raise _ApiError(400, "invalid_request_error", f"{key}: Field required")
        if not isinstance(params["max_tokens"], int) or params["max_tokens"] < 1:
            raise _ApiError(400, "invalid_request_error", "max_tokens: must be a positive integer")
        if not isinstance(params["messages"], list) or not params["messages"]:
            raise _ApiError(400, "invalid_request_error", "messages: at least one message is required")
        choice = params.get("tool_choice")
        if choice and choice.get("type") == "tool":
            names = [t.get("name") for t in params.get("tools") or []]
            if choice.get("name") not in names:
                raise _ApiError(400, "invalid_request_error",
                                f"tool_choice.name: tool {choice.get('name')!r} not found in tools")

    def _usage(self, params: dict, output: Any) -> dict:
        total = estimate_tokens({k: params.get(k) for k in ("system", "messages", "tools")})
        # the cacheable prefix: tools, then system blocks up to the last with cache_control
        system = params.get("system")
        prefix_blocks: list = []
        if isinstance(system, list):
            last = max((i for i, b in enumerate(system) if isinstance(b, dict) and b.get("cache_control")),
                       default=-1)
            prefix_blocks = system[: last + 1]
        created = read = 0
        if prefix_blocks:
            prefix = {"model": params.get("model"), "tools": params.get("tools"), "system": prefix_blocks}
            ptoks = estimate_tokens(prefix)
            if ptoks >= self.min_cacheable_tokens:
                key = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
                with self._lock:
                    hit = key in self._cache
                    self._cache.add(key)
                ptoks = min(ptoks, total - 1) if total > 1 else ptoks
                created, read = (0, ptoks) if hit else (ptoks, 0)
        return {
            "input_tokens": max(1, total - created - read),
            "output_tokens": estimate_tokens(output),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        }

    def make_message(self, params: dict, fault: Fault | None = None) -> dict:
        """The assistant message the fake returns for a (validated) request."""
        document = extract_document(user_text(params))
        tools = params.get("tools") or []
        choice = params.get("tool_choice") or {}
        if choice.get("type") == "tool":
            tool_name = choice["name"]
        elif tools and choice.get("type") in ("any", "auto", None):
            tool_name = tools[0].get("name")
        else:
            tool_name = None

        stop_details = None
        kind = fault.kind if fault is not None else None
        if kind == "refusal":
            content = [{"type": "text", "text": fault.value}]
            stop_reason = "refusal"
            stop_details = {"type": "refusal", "category": None, "explanation": None}
        elif kind == "text_block" or (tool_name is None and kind is None):
            text = fault.value if kind == "text_block" else json.dumps(self.grader(document, params))
            content = [{"type": "text", "text": text}]
            stop_reason = "end_turn"
        else:
            tool_input = dict(self.grader(document, params))
            stop_reason = "tool_use"
            if kind == "missing_score":
                tool_input.pop("score", None)
            elif kind == "score_out_of_range":
                tool_input["score"] = fault.value
            elif kind == "max_tokens":
                tool_input = {}
                stop_reason = "max_tokens"
            content = [{"type": "tool_use", "id": self._next_id("toolu"), "name": tool_name or "", "input": tool_input}]
        message = {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": params.get("model"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(params, content),
        }
        if stop_details is not None:
            message["stop_details"] = stop_details
        return message

    # ---- Batches
    def echo(self, message: str, credentials: dict) -> str:
        """`message`, with the credentials appended verbatim in echo mode."""
        if not self.echo_credentials or not credentials:
            return message
        return message + " (request had " + ", ".join(f"{k}: {v}" for k, v in sorted(credentials.items())) + ")"

    def _batch_view(self, b: dict) -> dict:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if b["processing_status"] == "ended":
            for line in b["results"]:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(b["requests"])
        return {
            "id": b["id"],
            "type": "message_batch",
            "processing_status": b["processing_status"],
            "request_counts": counts,
            "created_at": _rfc3339(b["created_at"]),
            "expires_at": _rfc3339(b["created_at"] + timedelta(hours=24)),
            "ended_at": _rfc3339(b["ended_at"]),
            "cancel_initiated_at": _rfc3339(b["cancel_initiated_at"]),
            "archived_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{b['id']}/results"
            if b["processing_status"] == "ended" else None,
        }

    def _end_batch(self, b: dict) -> None:
        results = []
        canceling = b["cancel_initiated_at"] is not None
        for i, req in enumerate(b["requests"]):
            cid = req.get("custom_id")
            with self._lock:
                outcome = self._batch_outcomes.get(cid)
            if canceling and i >= self.processed_before_cancel:
                result = {"type": "canceled"}
            elif outcome is not None and outcome.type in ("expired", "canceled"):
                result = {"type": outcome.type}
            elif outcome is not None and outcome.type == "errored":
                result = {"type": "errored", "error": error_body(
                    outcome.error_type, self.echo(outcome.message, b.get("credentials") or {}))}
            else:
                params = req.get("params")
                try:
                    self._validate_params(params)
                    msg = self.make_message(params, outcome.fault if outcome else None)
                    result = {"type": "succeeded", "message": msg}
                except _ApiError as e:
                    result = {"type": "errored", "error": error_body(
                        e.error_type, self.echo(e.message, b.get("credentials") or {}))}
            results.append({"custom_id": cid, "result": result})
        b["results"] = results
        b["processing_status"] = "ended"
        b["ended_at"] = _now()

    def _create_batch(self, body: Any, credentials: dict | None = None) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
            raise _ApiError(400, "invalid_request_error", "requests: at least one request is required")
        ids = [r.get("custom_id") for r in body["requests"] if isinstance(r, dict)]
        if len(ids) != len(body["requests"]) or any(not isinstance(i, str) or not i for i in ids):
            raise _ApiError(400, "invalid_request_error", "requests: each needs a custom_id and params")
        if len(set(ids)) != len(ids):
            raise _ApiError(400, "invalid_request_error", "requests: custom_id values must be unique")
        b = {
            "id": self._next_id("msgbatch"),
            "requests": body["requests"],
            "processing_status": "in_progress",
            "polls_left": self.batch_polls_before_end,
            "created_at": _now(),
            "ended_at": None,
            "cancel_initiated_at": None,
            "results": None,
            "credentials": dict(credentials or {}),   # only echoed, in echo mode
        }
        with self._lock:
            self.batches[b["id"]] = b
        return self._batch_view(b)

    def _get_batch(self, batch_id: str) -> dict:
        with self._lock:
            b = self.batches.get(batch_id)
        if b is None:
            raise _ApiError(404, "not_found_error", f"batch {batch_id} not found")
        return b

    def _retrieve_batch(self, batch_id: str) -> dict:
        b = self._get_batch(batch_id)
        with self._lock:
            if b["processing_status"] == "canceling":
                self._end_batch(b)
            elif b["processing_status"] == "in_progress":
                if b["polls_left"] > 0:
                    b["polls_left"] -= 1
                else:
                    self._end_batch(b)
            return self._batch_view(b)

    def _cancel_batch(self, batch_id: str) -> dict:
        b = self._get_batch(batch_id)
        with self._lock:
            if b["processing_status"] == "in_progress":
                b["processing_status"] = "canceling"
                b["cancel_initiated_at"] = _now()
            return self._batch_view(b)

    def _batch_results(self, batch_id: str) -> bytes:
        b = self._get_batch(batch_id)
        if b["processing_status"] != "ended":
            raise _ApiError(400, "invalid_request_error", f"batch {batch_id} has not ended; no results yet")
        return b"".join(json.dumps(line).encode() + b"\n" for line in b["results"])

    # ---- routing (called by the handler thread)
    def _route(self, method: str, path: str) -> tuple[str, str | None]:
        if method == "POST" and path == "/v1/messages":
            return "messages", None
        if method == "POST" and path == "/v1/messages/count_tokens":
            return "count_tokens", None
        if method == "POST" and path == "/v1/messages/batches":
            return "batches.create", None
        m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", path)
        if m:
            tail = m.group(2)
            if method == "GET" and tail is None:
                return "batches.retrieve", m.group(1)
            if method == "GET" and tail == "/results":
                return "batches.results", m.group(1)
            if method == "POST" and tail == "/cancel":
                return "batches.cancel", m.group(1)
        raise _ApiError(404, "not_found_error", f"{method} {path}: no such endpoint")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go in two writes: no 40 ms ACK wait
    fake: FakeAnthropic  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # silent: nothing (least of all a key) reaches stderr

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_fake{id(self):x}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _handle(self, method: str) -> None:
        fake = self.fake
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake._record(method, path, headers, body)
        credentials = {k.lower(): v for k, v in self.headers.items() if k.lower() in _SECRET_HEADERS}
        try:
            if raw and body is None:
                raise _ApiError(400, "invalid_request_error", "body: not valid JSON")
            if fake.require_api_key and not (self.headers.get("x-api-key") or self.headers.get("authorization")):
                raise _ApiError(401, "authentication_error", "x-api-key header is required")
            if fake.accepted_keys is not None:
                key = credentials.get("x-api-key") or re.sub(
                    r"(?i)^bearer\s+", "", credentials.get("authorization", ""))
                if key not in fake.accepted_keys:
                    raise _ApiError(401, "authentication_error", "invalid x-api-key")
            if not self.headers.get("anthropic-version"):
                raise _ApiError(400, "invalid_request_error", "anthropic-version: header is required")
            endpoint, batch_id = fake._route(method, path)
            fault = fake._take_fault(endpoint)
            if fault is not None and fault.kind == "status":
                raise _ApiError(fault.status, fault.error_type, fault.message, fault.headers)
            if fault is not None and fault.kind == "delay":
                if fake._closing.wait(fault.delay_s):
                    return
            if fault is not None and fault.kind == "garbage":
                self._send(200, str(fault.value).encode(), "application/json")
                return
            msg_fault = fault if fault is not None and fault.shapes_message else None
            if endpoint == "messages":
                fake._validate_params(body)
                self._send_json(200, fake.make_message(body, msg_fault))
            elif endpoint == "count_tokens":
                if not isinstance(body, dict) or "messages" not in body or "model" not in body:
                    raise _ApiError(400, "invalid_request_error", "model and messages are required")
                n = estimate_tokens({k: body.get(k) for k in ("system", "messages", "tools")})
                self._send_json(200, {"input_tokens": n})
            elif endpoint == "batches.create":
                self._send_json(200, fake._create_batch(body, credentials))
            elif endpoint == "batches.retrieve":
                self._send_json(200, fake._retrieve_batch(batch_id))
            elif endpoint == "batches.cancel":
                self._send_json(200, fake._cancel_batch(batch_id))
            elif endpoint == "batches.results":
                self._send(200, fake._batch_results(batch_id), "application/x-jsonl")
        except _ApiError as e:
            self._send_json(e.status, error_body(e.error_type, fake.echo(e.message, credentials)), e.headers)
