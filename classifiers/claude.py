"""Grading documents with Claude through the official SDK: concurrent Messages calls
and the Message Batches API.

Every result lands in the label store (classifiers.store) before the next decision,
so an interrupted run resumes without paying twice. The call itself, its fault
handling (retries, caps, counts), prices and the redaction of every kept error text
are the shared client's, curation.claude_client (the mixture proposer uses it too);
here a reply that is not a valid grade is stored as a failure with its reason.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from classifiers.grading import AnswerError, cost_usd, parse_answer, request_params
from curation.claude_client import (REDACTED, BudgetExceeded, CallOutcome, Interrupted,  # noqa: F401
                                    NoApiKey, Settings, _client_secrets, _retry_after, _short,
                                    call_with_retries, make_client, redact)
from classifiers.rubrics import Rubric
from classifiers.store import Label, LabelStore


@dataclass
class RunStats:
    sent: int = 0
    labelled: int = 0
    failed: int = 0
    cached: int = 0
    retries: dict = field(default_factory=dict)
    cost_usd: float = 0.0


class MessagesGrader:
    """Grades (content_key, text) pairs with concurrent Messages calls."""

    def __init__(self, client, rubric: Rubric, store: LabelStore, settings: Settings,
                 sleep: Callable[[float], None] = time.sleep,
                 estimate: Callable[[str], float] | None = None,
                 stop: threading.Event | None = None):
        self.client, self.rubric, self.store, self.s = client, rubric, store, settings
        self.sleep = sleep
        self.stop = stop or threading.Event()
        self.estimate = estimate or (lambda text: 0.0)
        self.stats = RunStats()
        self._lock = threading.Lock()
        self._spent = store.spent_usd(rubric.key, settings.model)
        self._reserved = 0.0

    def grade(self, items: Iterable[tuple[str, str]]) -> RunStats:
        items = list(dict(items).items())        # one call per distinct content
        todo = set(self.store.pending([k for k, _ in items], self.rubric.key, self.s.model))
        self.stats.cached = len(items) - len(todo)
        work = [(k, t) for k, t in items if k in todo]
        with ThreadPoolExecutor(max(1, self.s.concurrency)) as pool:
            for _ in pool.map(lambda kt: self._one(*kt), work):
                pass
        return self.stats

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats.retries[what] = self.stats.retries.get(what, 0) + 1

    def _reserve(self, upper: float) -> float:
        """Hold the most a call can cost (calls run concurrently); refuse it if that
        could take the run past the budget."""
        if self.stop.is_set():
            raise Interrupted("stopped on request; calls in flight were stored")
        if self.s.max_usd is None:
            return 0.0
        with self._lock:
            if self._spent >= self.s.max_usd or \
                    self._spent + self._reserved + upper > self.s.max_usd:
                raise BudgetExceeded(
                    f"spent ${self._spent:.4f} of --max-usd {self.s.max_usd}; the next call "
                    f"could cost up to ${upper:.4f}")
            self._reserved += upper
        return upper

    def _release(self, held: float) -> None:
        with self._lock:
            self._reserved -= held

    def _one(self, key: str, text: str) -> None:
        params = request_params(self.rubric, text, model=self.s.model,
                                max_doc_chars=self.s.max_doc_chars, max_tokens=self.s.max_tokens)
        upper = self.estimate(text)
        try:
            out = call_with_retries(
                self.client, params, self.s, lambda m: parse_answer(m, self.rubric),
                sleep=self.sleep, count=self._count, reserve=lambda: self._reserve(upper),
                release=self._release, paid=self._paid, sent=self._sent)
        except (BudgetExceeded, Interrupted) as e:
            o = getattr(e, "outcome", None)
            if o is not None and (o.cost or any(o.tokens)):   # an earlier attempt was paid for
                self._fail(key, f"retry not sent ({e})", o.tokens, o.cost)
            raise
        if out.error is not None:
            return self._fail(key, out.error, out.tokens, out.cost)
        grade = out.value
        self.store.put(Label(key, self.rubric.key, self.s.model, score=grade.score,
                             reasoning=grade.reasoning, input_tokens=out.tokens[0],
                             output_tokens=out.tokens[1], cache_read_tokens=out.tokens[2],
                             cache_write_tokens=out.tokens[3], cost_usd=out.cost,
                             attempts=out.attempts, mode="messages"))
        with self._lock:
            self.stats.labelled += 1
        return None

    def _sent(self) -> None:
        with self._lock:
            self.stats.sent += 1

    def _paid(self, call: float, held: float) -> None:
        with self._lock:
            self._spent += call
            self._reserved -= held
            self.stats.cost_usd += call

    def _fail(self, key: str, why: str, tokens: list[int], cost: float) -> None:
        why = redact(why, *_client_secrets(self.client))
        self.store.put(Label(key, self.rubric.key, self.s.model, error=why, input_tokens=tokens[0],
                             output_tokens=tokens[1], cache_read_tokens=tokens[2],
                             cache_write_tokens=tokens[3], cost_usd=cost, mode="messages"))
        with self._lock:
            self.stats.failed += 1


class BatchGrader:
    """Grades with the Message Batches API (half price): submit, poll, collect.

    Each submitted batch is recorded in the store before polling, so a run killed
    while waiting collects the same batch when restarted instead of paying for its
    documents again. Entries that errored, expired, were canceled or did not hold a
    valid grade go into the next round once; after that they are stored as failures.
    """

    def __init__(self, client, rubric: Rubric, store: LabelStore, settings: Settings, *,
                 batch_size: int = 10_000, poll_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 estimate: Callable[[str], float] | None = None,
                 stop: threading.Event | None = None):
        self.client, self.rubric, self.store, self.s = client, rubric, store, settings
        self.stop = stop or threading.Event()
        self.estimate = estimate or (lambda text: 0.0)
        self.batch_size, self.poll_s, self.sleep = batch_size, poll_s, sleep
        self.stats = RunStats()
        self._why: dict[str, str] = {}

    def grade(self, items: Iterable[tuple[str, str]]) -> RunStats:
        texts = dict(items)
        self.collect_open()
        todo = self.store.pending(list(texts), self.rubric.key, self.s.model)
        self.stats.cached = len(texts) - len(todo)
        for _ in range(1 + self.s.answer_retries):
            if not todo:
                break
            for i in range(0, len(todo), self.batch_size):
                self._submit_and_collect(todo[i:i + self.batch_size], texts)
            todo = self.store.pending(todo, self.rubric.key, self.s.model)
        stored = self.store.get(todo, self.rubric.key, self.s.model)
        for key in todo:        # still no label after the last round: say why
            why = self._why.get(key, "no result")
            # (an invalid answer is stored already, with its cost; a failure left by an
            # earlier run gets this run's reason)
            if key not in stored or stored[key].error != why:
                self.store.put(Label(key, self.rubric.key, self.s.model,
                                     error=why, mode="batch"))
            self.stats.failed += 1
        return self.stats

    def _redact(self, text) -> str:
        return redact(text, *_client_secrets(self.client))

    def collect_open(self) -> int:
        """Collect the batches a previous run submitted and did not collect; returns how
        many there were."""
        open_ = self.store.open_batches(self.rubric.key, self.s.model)
        for batch_id, keys in open_.items():
            self._collect(batch_id, keys)
        return len(open_)

    def _submit_and_collect(self, keys: list[str], texts: dict[str, str]) -> None:
        if self.stop.is_set():
            raise Interrupted("stopped on request before submitting a batch")
        cut = None
        if self.s.max_usd is not None:
            # submit only what cannot take the run past the budget, even at max_tokens
            spent = self.store.spent_usd(self.rubric.key, self.s.model)
            room, n = self.s.max_usd - spent, 0
            for k in keys:
                room -= self.estimate(texts[k])
                if room < 0:
                    break
                n += 1
            if n == 0 or spent >= self.s.max_usd:
                raise BudgetExceeded(f"spent ${spent:.4f} of --max-usd {self.s.max_usd}; the "
                                     f"next batch entry could pass it")
            if n < len(keys):
                keys, cut = keys[:n], (f"spent ${spent:.4f} of --max-usd {self.s.max_usd}; "
                                       f"submitted {n} more, {len(keys) - n} not sent")
        requests = [{"custom_id": f"d{i}", "params": request_params(
            self.rubric, texts[k], model=self.s.model, max_doc_chars=self.s.max_doc_chars,
            max_tokens=self.s.max_tokens)} for i, k in enumerate(keys)]
        import anthropic
        try:
            batch = self.client.messages.batches.create(requests=requests)
        except anthropic.APIStatusError as e:
            # refused (a bad key, a bad request) or unavailable: nothing was submitted, so
            # nothing is paid; the documents go to the next round, then fail with this reason
            why = self._redact(f"batch not accepted: {type(e).__name__} ({e.status_code}): "
                               f"{_short(e, *_client_secrets(self.client))}")
            for k in keys:
                self._why[k] = why
            self.stats.retries["batch_refused"] = self.stats.retries.get("batch_refused", 0) + 1
            return
        self.stats.sent += len(requests)
        self.store.add_batch(batch.id, self.rubric.key, self.s.model, keys)
        self._collect(batch.id, keys)
        if cut:
            raise BudgetExceeded(cut)

    def _collect(self, batch_id: str, keys: list[str]) -> None:
        while True:
            batch = self.client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "ended":
                break
            if self.stop.is_set():   # the batch is recorded: a rerun collects it
                raise Interrupted(f"stopped on request while batch {batch_id} runs; a rerun "
                                  f"collects it")
            self.sleep(self.poll_s)
        for entry in self.client.messages.batches.results(batch_id):
            key = keys[int(entry.custom_id[1:])]
            result = entry.result
            if result.type != "succeeded":
                detail = getattr(getattr(getattr(result, "error", None), "error", None), "message", "")
                self._why[key] = self._redact(f"batch entry {result.type}"
                                              + (f": {detail}" if detail else ""))
                self.stats.retries[result.type] = self.stats.retries.get(result.type, 0) + 1
                continue
            msg = result.message
            cost = cost_usd(self.s.model, msg.usage, batch=True, prices=self.s.prices)
            self.stats.cost_usd += cost
            try:
                grade = parse_answer(msg, self.rubric)
            except AnswerError as e:
                self._why[key] = self._redact(e)
                self.stats.retries["invalid_answer"] = self.stats.retries.get("invalid_answer", 0) + 1
                # the tokens were paid for: keep the cost on record with the failure
                self.store.put(Label(key, self.rubric.key, self.s.model, error=self._why[key],
                                     cost_usd=cost, mode="batch"))
                continue
            u = msg.usage
            self.store.put(Label(key, self.rubric.key, self.s.model, score=grade.score,
                                 reasoning=grade.reasoning, input_tokens=u.input_tokens or 0,
                                 output_tokens=u.output_tokens or 0,
                                 cache_read_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
                                 cache_write_tokens=getattr(u, "cache_creation_input_tokens", 0) or 0,
                                 cost_usd=cost, mode="batch"))
            self.stats.labelled += 1
        self.store.close_batch(batch_id)
