"""`curate label` against the local fake Anthropic API: throughput, accounting, kill/restart.

    python benchmarks/bench_label.py [--docs 2000] [--peer-docs 120] [--kill-docs 360]
                                     [--batch-kill-docs 200] [--json OUT]

Everything runs against tests/fake_anthropic.py, started in this script's own process
on 127.0.0.1 (no network, no key: a dummy ANTHROPIC_API_KEY). `curate label` itself
runs as the real CLI in a subprocess (`python -m pipelines.cli label ...`, cwd the
repository root, ANTHROPIC_BASE_URL pointing at the fake), so client and server do not
share a GIL.

Input: the first documents of every corpus in ../shared/corpora (or $CURATION_CORPORA;
neardup_dev is left out: it re-publishes the others), written to one JSONL.gz with
`domain` set to the corpus name, so the CLI's sample is stratified over ~11 domains.

Part 1, throughput and accounting (fault pattern by request index i on /v1/messages:
429 with retry-after 0.2 s when i % 10 == 9, 529 when i % 250 == 125, otherwise a
50 ms delay before a normal answer):
  - ours: the CLI in messages mode, concurrency 8, on --docs sampled documents;
    grading docs/s is measured server-side (first POST /v1/messages received to last
    grade produced), the CLI wall time also counts start-up, reading, sampling and the
    token-count estimate;
  - retries: summary.json calls.retries against the error replies the server sent;
  - coverage: every row of labels.jsonl has a score or an error (rows with neither: 0);
  - cost: the server records the `usage` of every answer it sends (FakeAnthropic
    subclass wrapping make_message: the very dict that goes over the wire, so nothing
    the client computes is involved). The bench re-prices that ledger with its own
    arithmetic (prices from classifiers.grading.PRICES, Anthropic's published rules:
    cache write 1.25x input, cache read 0.1x input, batches 0.5x) and compares tokens
    with labels.jsonl (exactly) and dollars with the label store (unrounded, to 1e-9)
    and with labels.jsonl (within the 6-decimal rounding of each row). Only the server's
    token counts are measured here: the prices are a table, so the batch/messages cost
    ratio is 0.5 by construction (it checks that the batch rate was applied);
  - peer: a naive sequential client on a spread subset of the same sampled documents
    (the SDK's own retries, max_retries=2, one call at a time, same request body,
    same fault pattern from request 0 on a fresh server), in this process. Against a
    server that waits 50 ms per call, 8 calls in flight against 1 give up to 8x by
    construction: the ratio says how much of that retries and client overhead keep;
  - batch: the same documents with --mode batch (fresh output dir and store, fresh
    server): wall time, and its tokens and cost against the messages run.

The fake's replies go out with TCP_NODELAY here (see MeteredFake): its handler writes
headers and body in two send()s, and with Nagle's algorithm each reply would wait
~40 ms for the client's delayed ACK: an artefact of the fake (the real API has no such
stall) that would add ~40 ms to every call of both clients, on top of the injected 50.

Part 2, kill and restart (the CLI as a subprocess; the grader hook counts how often the
server graded each document text):
  (a) SIGTERM after ~1/3 of the documents were graded, expect rc 130, rerun to the end:
      documents graded twice must be 0;
  (b) SIGKILL at the same point: the calls in flight were answered (and paid) but their
      answers died with the process; the rerun grades them again. Bounded by
      --concurrency;
  (c) batch mode, SIGKILL while the CLI polls a submitted batch (the fake keeps it in
      progress for a number of polls): the rerun must collect the recorded batch, not
      submit another: batches created 1, documents graded twice 0.
Each final labels.jsonl must cover every sampled document with a label or a reason.

Outputs go to benchmarks/out/label/ (wiped at start). Prints markdown tables for
docs/benchmarks.md. Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))
OUT = REPO / "benchmarks" / "out" / "label"
if __name__ == "__main__" and not CORPORA.is_dir():   # before the slow imports below
    sys.exit(f"bench_label: {CORPORA} is absent: the bench reads ../shared/corpora "
             f"(clone ../shared beside this repository, or set CURATION_CORPORA=/path)")

import anthropic  # noqa: E402

from classifiers.grading import (PRICES, AnswerError, parse_answer, request_params,  # noqa: E402
                                 user_message)
from classifiers.rubrics import load_rubric  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, Fault, default_grader, extract_document  # noqa: E402

MODEL = "claude-haiku-4-5"
RUBRIC = "educational"
CONCURRENCY = 8
MAX_DOC_CHARS = 8000          # the CLI's default; the bench sends the same request body
DUMMY_KEY = "bench-dummy-key-not-a-secret"
EXCLUDE = {"neardup_dev.jsonl.gz"}

CHECKS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    CHECKS.append((name, bool(ok), detail))
    return ok


# --------------------------------------------------------------------------- input


def build_corpus(path: Path, docs: int) -> dict:
    files = sorted(p for p in CORPORA.glob("*.jsonl.gz") if p.name not in EXCLUDE)
    if not files:
        sys.exit(f"bench_label: no corpora in {CORPORA} (../shared is not beside this clone; "
                 f"set CURATION_CORPORA=/path/to/corpora)")
    cap = max(50, math.ceil(2 * docs / len(files)))   # enough for the sample after dedup
    per = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for f in files:
            domain = f.name[: -len(".jsonl.gz")]
            n = 0
            with gzip.open(f, "rt", encoding="utf-8") as src:
                for line in src:
                    rec = json.loads(line)
                    if not isinstance(rec.get("text"), str) or not rec["text"].strip():
                        continue
                    out.write(json.dumps({"id": f"{domain}/{rec.get('id', n)}", "domain": domain,
                                          "text": rec["text"]}, ensure_ascii=False) + "\n")
                    n += 1
                    if n >= cap:
                        break
            per[domain] = n
    return per


# --------------------------------------------------------------------------- the metered fake


class Meter:
    """What the server did: grades per document text, usage of every answer sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.graded: Counter = Counter()      # document text (as the server extracts it) -> grades
        self.n_graded = 0
        self.ledger: list[dict] = []          # usage of every answer the server produced
        self.first_post: float | None = None
        self.last_grade: float | None = None
        self.posts = 0                        # POST /v1/messages received (incl. faulted)

    def grader(self, document: str, request: dict) -> dict:
        with self.lock:
            self.graded[document] += 1
            self.n_graded += 1
            self.last_grade = time.perf_counter()
        return default_grader(document, request)

    def total(self) -> int:
        with self.lock:
            return self.n_graded


class MeteredFake(FakeAnthropic):
    """FakeAnthropic that keeps the `usage` of every message it builds (Messages replies
    and batch results alike) and the arrival time of Messages calls."""

    def __init__(self, meter: Meter, **kw):
        super().__init__(grader=meter.grader, **kw)
        self.meter = meter
        default = self._httpd.handle_error

        def quiet(request, client_address):
            # a killed client resets its idle keep-alive connections: not an error here
            if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                default(request, client_address)
        self._httpd.handle_error = quiet
        # The fake writes a reply's headers and body in two send()s; with Nagle's algorithm
        # the body then waits for the client's delayed ACK (~40 ms on Linux loopback), a
        # latency the real API does not have and that would swamp the injected one.
        self._httpd.RequestHandlerClass.disable_nagle_algorithm = True

    def make_message(self, params, fault=None):
        msg = super().make_message(params, fault)
        with self.meter.lock:
            self.meter.ledger.append(dict(msg["usage"]))
        return msg

    def _record(self, method, path, headers, body):
        super()._record(method, path, headers, body)
        if method == "POST" and path == "/v1/messages":
            with self.meter.lock:
                self.meter.posts += 1
                if self.meter.first_post is None:
                    self.meter.first_post = time.perf_counter()


def fault_plan(server: FakeAnthropic, requests: int, delay_s: float) -> None:
    """Per request index i on /v1/messages: 429 (retry-after 0.2 s) when i % 10 == 9, 529
    when i % 250 == 125, else `delay_s` of latency. FIFO: retries take the next index."""
    run = 0
    for i in range(requests):
        if i % 10 == 9:
            fault = Fault.rate_limit(retry_after=0.2)
        elif i % 250 == 125:
            fault = Fault.overloaded()
        else:
            run += 1
            continue
        if run:
            server.inject("messages", Fault.delay(delay_s), times=run)
            run = 0
        server.inject("messages", fault)
    if run:
        server.inject("messages", Fault.delay(delay_s), times=run)


def price(ledger: list[dict], *, batch: bool) -> float:
    """Dollars for a list of usage dicts, computed here (not with classifiers.grading.cost_usd)."""
    p_in, p_out = PRICES[MODEL]
    t = tokens(ledger)
    usd = (t["input"] * p_in + t["output"] * p_out + t["cache_write"] * p_in * 1.25
           + t["cache_read"] * p_in * 0.10) / 1e6
    return usd * (0.5 if batch else 1.0)


def tokens(ledger: list[dict]) -> dict:
    return {"input": sum(u.get("input_tokens") or 0 for u in ledger),
            "output": sum(u.get("output_tokens") or 0 for u in ledger),
            "cache_write": sum(u.get("cache_creation_input_tokens") or 0 for u in ledger),
            "cache_read": sum(u.get("cache_read_input_tokens") or 0 for u in ledger)}


def row_tokens(rows: list[dict]) -> dict:
    return {"input": sum(r["input_tokens"] for r in rows), "output": sum(r["output_tokens"] for r in rows),
            "cache_write": sum(r["cache_write_tokens"] for r in rows),
            "cache_read": sum(r["cache_read_tokens"] for r in rows)}


def sent_text(text: str) -> str:
    """The document text the server sees for `text` (truncated, closing tag defused)."""
    return extract_document(user_message(text, MAX_DOC_CHARS))


# --------------------------------------------------------------------------- the CLI


def rel(path: Path) -> str:
    """`path` relative to the repository root (the CLI runs there), for commands one can paste."""
    return os.path.relpath(path, REPO)


def cli_args(corpus: Path, out: Path, sample: int, mode: str) -> list[str]:
    return ["label", "--input", rel(corpus), "--output", rel(out), "--sample", str(sample),
            "--mode", mode, "--model", MODEL, "--concurrency", str(CONCURRENCY),
            "--batch-poll-s", "0.05"]


def cli_env(server: FakeAnthropic) -> dict:
    env = dict(os.environ, ANTHROPIC_API_KEY=DUMMY_KEY, ANTHROPIC_BASE_URL=server.base_url)
    env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env["no_proxy"] = env["NO_PROXY"]
    return env


def start_cli(args: list[str], server: FakeAnthropic, log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    p = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO,
                         env=cli_env(server), stdout=f, stderr=subprocess.STDOUT)
    f.close()   # the child holds its own descriptor
    return p


def run_cli(args: list[str], server: FakeAnthropic, log: Path, timeout: float = 300) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = start_cli(args, server, log)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = -999
    return rc, time.perf_counter() - t0


def read_rows(out: Path) -> list[dict]:
    path = out / "labels.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def read_summary(out: Path) -> dict:
    path = out / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def coverage(rows: list[dict]) -> tuple[int, int, int]:
    """(labelled, failed with a reason, neither)."""
    ok = sum(r["error"] is None and r["score"] is not None for r in rows)
    failed = sum(bool(r["error"]) for r in rows)
    return ok, failed, len(rows) - ok - failed


def graded_twice(meter: Meter, rows: list[dict]) -> tuple[int, int]:
    """(documents the server graded more often than they occur in the sample, extra grades)."""
    expected = Counter(sent_text(r["text"]) for r in rows)
    with meter.lock:
        graded = dict(meter.graded)
    over = {t: c - expected.get(t, 0) for t, c in graded.items() if c > expected.get(t, 0)}
    return len(over), sum(over.values())


def store_state(store: Path) -> tuple[int, float, int | None]:
    """(labels stored, dollars recorded (unrounded), batches still open) in a label store."""
    if not store.exists():
        return 0, 0.0, None
    db = sqlite3.connect(store)
    try:
        ok = db.execute("SELECT COUNT(*) FROM labels WHERE score IS NOT NULL AND error IS NULL").fetchone()[0]
        usd = db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM labels").fetchone()[0]
        open_ = db.execute("SELECT COUNT(*) FROM batches WHERE status = 'submitted'").fetchone()[0]
    finally:
        db.close()
    return ok, float(usd), open_


def tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- part 1


def naive_peer(server: FakeAnthropic, texts: list[str]) -> dict:
    """One SDK call at a time, the SDK's default retries (max_retries=2)."""
    rubric = load_rubric(RUBRIC)
    client = anthropic.Anthropic(api_key=DUMMY_KEY, base_url=server.base_url, max_retries=2)
    ok = failed = 0
    reasons: Counter = Counter()
    t0 = time.perf_counter()
    for text in texts:
        params = request_params(rubric, text, model=MODEL, max_doc_chars=MAX_DOC_CHARS)
        try:
            msg = client.messages.create(**params)
            parse_answer(msg, rubric)
            ok += 1
        except (anthropic.APIError, AnswerError) as e:
            failed += 1
            reasons[type(e).__name__] += 1
    wall = time.perf_counter() - t0
    client.close()
    return {"docs": len(texts), "ok": ok, "failed": failed, "reasons": dict(reasons), "wall_s": wall}


def part1(corpus: Path, docs: int, peer_docs: int, commands: list[str]) -> dict:
    res: dict = {}
    # --- ours, messages
    meter = Meter()
    out = OUT / "messages"
    with MeteredFake(meter) as server:
        fault_plan(server, int(docs * 1.3) + 100, 0.05)
        args = cli_args(corpus, out, docs, "messages")
        commands.append(" ".join(shlex.quote(a) for a in
                                 ["python", "-m", "pipelines.cli", *args]))
        rc, wall = run_cli(args, server, OUT / "messages.log")
        left = server.pending_faults()
        posts = len(server.requests_to("/v1/messages", "POST"))
        counts = len(server.requests_to("/v1/messages/count_tokens", "POST"))
    rows, summary = read_rows(out), read_summary(out)
    if not check("messages run exits 0", rc == 0, f"rc {rc}\n{tail(OUT / 'messages.log')}"):
        return res
    lab, fail, neither = coverage(rows)
    sampled = summary["counts"]["sampled"]
    retries = summary.get("calls", {}).get("retries", {})
    served_errors = posts - len(meter.ledger)          # 429/529 replies (no answer built)
    grading_s = meter.last_grade - meter.first_post
    t_rows, t_srv = row_tokens(rows), tokens(meter.ledger)
    cost_rows = sum(r["cost_usd"] for r in rows)
    cost_srv = price(meter.ledger, batch=False)
    cost_store = store_state(out / "labels.sqlite")[1]
    res["messages"] = {
        "sampled": sampled, "labelled": lab, "failed": fail, "neither": neither,
        "domains": len(summary.get("domains", {})),
        "sampled_by_domain": {d: v["sampled"] for d, v in summary.get("domains", {}).items()},
        # what 8 slots could do at best: every answer waits 50 ms, every 429 its retry-after
        # (0.2 s), every 529 our first backoff (1 s); no CPU time at all
        "ceiling_docs_per_s": lab / ((len(meter.ledger) * 0.05 + retries.get("rate_limit", 0) * 0.2
                                      + retries.get("OverloadedError", 0) * 1.0) / CONCURRENCY),
        "cli_wall_s": wall, "grading_s": grading_s, "docs_per_s": lab / grading_s,
        "retries": retries, "retries_total": sum(retries.values()), "server_error_replies": posts - len(meter.ledger),
        "posts": posts, "count_tokens_calls": counts, "answers": len(meter.ledger),
        "faults_left": left, "tokens_rows": t_rows, "tokens_server": t_srv,
        "cost_rows": cost_rows, "cost_server": cost_srv, "cost_store": cost_store,
        "cost_summary": summary.get("cost_usd"),
        "estimate": summary.get("estimate", {}), "spent_this_run_usd": summary.get("spent_this_run_usd"),
    }
    check("messages: every sampled doc has a row", len(rows) == sampled == docs,
          f"rows {len(rows)}, sampled {sampled}, asked {docs}")
    check("messages: rows with neither label nor reason = 0", neither == 0, f"{neither}")
    check("messages: fault plan did not run out", left > 0, f"{left} faults left")
    check("messages: summary retries == error replies the server sent",
          sum(retries.values()) == served_errors, f"{retries} vs {served_errors}")
    check("messages: each doc graded once", graded_twice(meter, rows)[0] == 0 and len(meter.ledger) == lab,
          f"answers {len(meter.ledger)}, labelled {lab}")
    check("messages: tokens in labels.jsonl == usage the server sent", t_rows == t_srv,
          f"{t_rows} vs {t_srv}")
    check("messages: cost in labels.jsonl == cost re-priced from server usage",
          abs(cost_rows - cost_srv) <= 5e-7 * len(rows) + 1e-9, f"{cost_rows:.6f} vs {cost_srv:.6f}")
    check("messages: store cost (unrounded) == cost re-priced from server usage",
          abs(cost_store - cost_srv) <= 1e-9, f"{cost_store!r} vs {cost_srv!r}")
    check("messages: summary cost_usd == sum of rows", abs(summary["cost_usd"] - cost_rows) <= 1e-6,
          f"{summary['cost_usd']} vs {cost_rows}")

    # --- peer: naive sequential SDK client on a spread subset of the same documents
    step = max(1, len(rows) // peer_docs)
    subset = [r["text"] for r in rows[::step]][:peer_docs]
    pmeter = Meter()
    with MeteredFake(pmeter) as server:
        fault_plan(server, int(len(subset) * 1.3) + 100, 0.05)
        peer = naive_peer(server, subset)
        peer["posts"] = len(server.requests_to("/v1/messages", "POST"))
    peer["grading_s"] = peer["wall_s"]
    peer["docs_per_s"] = peer["ok"] / peer["wall_s"]
    peer["server_error_replies"] = peer["posts"] - len(pmeter.ledger)
    res["peer"] = peer

    # --- batch mode, same documents (same corpus, same sample), fresh store and server
    bmeter = Meter()
    bout = OUT / "batch"
    with MeteredFake(bmeter) as server:
        args = cli_args(corpus, bout, docs, "batch")
        commands.append(" ".join(shlex.quote(a) for a in ["python", "-m", "pipelines.cli", *args]))
        rc, bwall = run_cli(args, server, OUT / "batch.log")
        created = len(server.requests_to("/v1/messages/batches", "POST"))
        polls = sum(1 for r in server.requests if r.method == "GET" and r.path.startswith("/v1/messages/batches/")
                    and not r.path.endswith("/results"))
    if not check("batch run exits 0", rc == 0, f"rc {rc}\n{tail(OUT / 'batch.log')}"):
        return res
    brows, bsum = read_rows(bout), read_summary(bout)
    blab, bfail, bneither = coverage(brows)
    bt_rows, bt_srv = row_tokens(brows), tokens(bmeter.ledger)
    bcost_rows = sum(r["cost_usd"] for r in brows)
    bcost_srv = price(bmeter.ledger, batch=True)
    bcost_store = store_state(bout / "labels.sqlite")[1]
    same_docs = sorted(r["id"] for r in brows) == sorted(r["id"] for r in rows)
    # the messages run's tokens priced at the messages rate vs the batch run's at the batch rate
    res["batch"] = {"sampled": bsum["counts"]["sampled"], "labelled": blab, "failed": bfail,
                    "neither": bneither, "cli_wall_s": bwall, "batches_created": created, "polls": polls,
                    "tokens_rows": bt_rows, "tokens_server": bt_srv, "cost_rows": bcost_rows,
                    "cost_server": bcost_srv, "cost_store": bcost_store, "same_docs": same_docs,
                    "cost_ratio": bcost_store / cost_store if cost_store else float("nan"),
                    "batch_tokens_at_messages_rate": price(bmeter.ledger, batch=False)}
    check("batch: same sampled documents as messages", same_docs)
    check("batch: rows with neither label nor reason = 0", bneither == 0 and len(brows) == docs,
          f"{bneither} of {len(brows)}")
    check("batch: tokens in labels.jsonl == usage the server sent", bt_rows == bt_srv,
          f"{bt_rows} vs {bt_srv}")
    check("batch: cost in labels.jsonl == cost re-priced from server usage (batch rate)",
          abs(bcost_rows - bcost_srv) <= 5e-7 * len(brows) + 1e-9, f"{bcost_rows:.6f} vs {bcost_srv:.6f}")
    check("batch: store cost (unrounded) == cost re-priced from server usage",
          abs(bcost_store - bcost_srv) <= 1e-9, f"{bcost_store!r} vs {bcost_srv!r}")
    check("batch: same tokens as the messages run", bt_srv == t_srv, f"{bt_srv} vs {t_srv}")
    check("batch: cost = 0.5 x messages cost of the same tokens",
          abs(bcost_srv - 0.5 * price(bmeter.ledger, batch=False)) < 1e-9
          and abs(bcost_store / cost_store - 0.5) < 1e-9 if cost_store else False,
          f"ratio {bcost_store / cost_store if cost_store else float('nan'):.9f}")
    return res


# --------------------------------------------------------------------------- part 2


def wait_for(cond, p: subprocess.Popen, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if cond():
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def kill_restart(name: str, corpus: Path, n: int, sig: int, mode: str, commands: list[str]) -> dict:
    meter = Meter()
    slug = "kill_" + "_".join(name.lower().split())
    out = OUT / slug
    log = OUT / f"{slug}.log"
    kw = {"batch_polls_before_end": 40} if mode == "batch" else {}
    res: dict = {"scenario": name, "docs": n, "signal": signal.Signals(sig).name, "mode": mode}
    with MeteredFake(meter, **kw) as server:
        if mode == "messages":
            fault_plan(server, int(n * 1.3) + 100, 0.1)
        args = cli_args(corpus, out, n, mode)
        commands.append(" ".join(shlex.quote(a) for a in ["python", "-m", "pipelines.cli", *args])
                        + f"   # {name}: {res['signal']}, then the same command again")
        t0 = time.perf_counter()
        p = start_cli(args, server, log)
        if mode == "messages":
            cond = lambda: meter.total() >= n // 3  # noqa: E731
            what = f"{n // 3} graded"
        else:
            def cond():
                gets = [r for r in server.requests if r.method == "GET"
                        and r.path.startswith("/v1/messages/batches/")]
                return len(gets) >= 5
            what = "5 polls of the submitted batch"
        hit = wait_for(cond, p, 120)
        if not check(f"{name}: signal sent while the run was going", hit and p.poll() is None,
                     f"the CLI ended before {what} (rc {p.poll()})\n{tail(log)}"):
            p.kill()
            p.wait()
            return res
        with meter.lock:
            at_signal, posts_at_signal = meter.n_graded, meter.posts
        p.send_signal(sig)
        try:
            rc1 = p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc1 = p.wait()
            rc1 = f"hung, killed ({rc1})"
        res["first_run_s"] = time.perf_counter() - t0
        time.sleep(0.5)   # let handlers still sleeping in their delay finish (and grade)
        with meter.lock:
            after_exit = meter.n_graded
        stored_first, _, open_first = store_state(out / "labels.sqlite")
        batches_before = len(server.requests_to("/v1/messages/batches", "POST"))
        rc2, wall2 = run_cli(args, server, log)
        batches = len(server.requests_to("/v1/messages/batches", "POST"))
    rows, summary = read_rows(out), read_summary(out)
    lab, fail, neither = coverage(rows)
    docs_twice, extra = graded_twice(meter, rows)
    _, cost_store, open_batches = store_state(out / "labels.sqlite")
    cost_rows = sum(r["cost_usd"] for r in rows)
    cost_paid = price(meter.ledger, batch=mode == "batch")
    # answers the server produced in the first run that never reached the store
    lost = after_exit - stored_first
    res.update({"rc_signal": rc1, "rc_restart": rc2, "restart_s": wall2, "graded_at_signal": at_signal,
                "answered_after_signal": after_exit - at_signal, "posts_at_signal": posts_at_signal,
                "graded_first_run": after_exit, "stored_first_run": stored_first, "lost": lost,
                "open_batches_after_kill": open_first,
                "graded_twice": docs_twice, "extra_grades": extra, "rows": len(rows),
                "labelled": lab, "failed": fail, "neither": neither,
                "batches_created": batches if mode == "batch" else None,
                "batches_before_restart": batches_before if mode == "batch" else None,
                "open_batches_left": open_batches, "restart_sent": summary.get("calls", {}).get("sent"),
                "cost_rows": cost_rows, "cost_store": cost_store, "cost_paid": cost_paid,
                "unrecorded_usd": cost_paid - cost_store})
    expect_rc1 = 130 if sig == signal.SIGTERM else -signal.SIGKILL
    check(f"{name}: first run rc {expect_rc1}", rc1 == expect_rc1, f"rc {rc1}\n{tail(log)}")
    check(f"{name}: restart rc 0", rc2 == 0, f"rc {rc2}\n{tail(log)}")
    check(f"{name}: final labels.jsonl covers every sampled doc", len(rows) == n and neither == 0,
          f"rows {len(rows)}, neither {neither}")
    if sig == signal.SIGTERM or mode == "batch":
        check(f"{name}: documents graded twice = 0", docs_twice == 0, f"{docs_twice}")
        check(f"{name}: every answer of the first run was stored", lost == 0,
              f"graded {after_exit}, stored {stored_first}")
        check(f"{name}: everything paid is recorded", abs(cost_paid - cost_store) <= 1e-9,
              f"paid {cost_paid!r}, recorded {cost_store!r}")
    else:
        check(f"{name}: documents graded twice <= concurrency", docs_twice <= CONCURRENCY, f"{docs_twice}")
        check(f"{name}: graded twice == answers lost with the process", docs_twice == lost == extra,
              f"twice {docs_twice} ({extra} extra grades), lost {lost}")
    if mode == "batch":
        check(f"{name}: the batch was open when killed, one batch created (the rerun collected it)",
              open_first == 1 and batches == 1 and open_batches == 0,
              f"open after kill {open_first}, created {batches}, still open {open_batches}")
    return res


# --------------------------------------------------------------------------- report


def fmt_retries(r: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(r.items())) or "none"


def report(args, per_domain: dict, p1: dict, p2: list[dict], commands: list[str], total_s: float) -> None:
    m, peer, b = p1.get("messages"), p1.get("peer"), p1.get("batch")
    print()
    print(f"### `curate label` against the local fake API ({MODEL}, rubric {RUBRIC})")
    print()
    print(f"Input: first <= {max(per_domain.values())} documents of each of {len(per_domain)} corpora in "
          f"../shared/corpora ({sum(per_domain.values())} documents, domain = corpus). "
          f"Faults on /v1/messages by request index: 429 (retry-after 0.2 s) every 10th, "
          f"529 every 250th, otherwise 50 ms latency. Machine: {os.cpu_count()} cores. "
          f"Client: the CLI in a subprocess; server: this process.")
    print()
    if m:
        print("| measurement | value |")
        print("|---|---|")
        print(f"| sampled (domains) | {m['sampled']} ({m['domains']}: "
              + ", ".join(f"{d} {k}" for d, k in m["sampled_by_domain"].items()) + ") |")
        print(f"| messages, concurrency {CONCURRENCY}: labelled / failed with reason / neither | "
              f"{m['labelled']} / {m['failed']} / {m['neither']} |")
        print(f"| messages: grading docs/s (server-side: first call to last grade) | "
              f"{m['docs_per_s']:.1f} ({m['grading_s']:.1f} s) |")
        print(f"| messages: latency-bound ceiling for these faults at concurrency {CONCURRENCY} (zero CPU) | "
              f"{m['ceiling_docs_per_s']:.1f} docs/s |")
        print(f"| messages: CLI wall (start-up, read + sample, estimate, grading, write) | {m['cli_wall_s']:.1f} s |")
        print(f"| retries in summary.calls.retries (server sent 429/529) | {fmt_retries(m['retries'])} "
              f"({m['server_error_replies']}) |")
        print(f"| calls: POST /v1/messages, answers, count_tokens | {m['posts']}, {m['answers']}, "
              f"{m['count_tokens_calls']} |")
        tr, ts = m["tokens_rows"], m["tokens_server"]
        print(f"| tokens labels.jsonl vs server usage (in / out / cache write / read) | "
              f"{tr['input']} / {tr['output']} / {tr['cache_write']} / {tr['cache_read']} vs "
              f"{'same' if tr == ts else ts} |")
        print(f"| cost: re-priced server usage / label store / sum of labels.jsonl rows | "
              f"${m['cost_server']:.6f} / ${m['cost_store']:.6f} / ${m['cost_rows']:.6f} "
              f"(rows rounded to 6 decimals: {m['cost_rows'] - m['cost_server']:+.1e}) |")
        est = m["estimate"]
        if est:
            print(f"| estimate printed before sending (expected / upper) | ${est.get('expected_usd')} / "
                  f"${est.get('upper_usd')} (no cache discount: errs high) |")
    if peer:
        print(f"| peer: naive sequential SDK client (max_retries=2), {peer['docs']} of the docs | "
              f"{peer['docs_per_s']:.1f} docs/s, {peer['ok']} ok, {peer['failed']} failed"
              f"{' ' + str(peer['reasons']) if peer['reasons'] else ''}, "
              f"{peer['server_error_replies']} 429/529 retried by the SDK |")
        if m:
            # 8 calls in flight against 1 on a latency-bound server: up to 8x by construction
            print(f"| ours / naive (grading docs/s): concurrency {CONCURRENCY} against 1, so up to "
                  f"{CONCURRENCY}x by construction, not a measure of the client | "
                  f"{m['docs_per_s'] / peer['docs_per_s']:.1f}x |")
    if b:
        bt = b["tokens_server"]
        print(f"| batch mode, same {b['sampled']} docs: labelled / failed / neither | "
              f"{b['labelled']} / {b['failed']} / {b['neither']} |")
        print(f"| batch: CLI wall (batches created, polls) | {b['cli_wall_s']:.1f} s ({b['batches_created']}, "
              f"{b['polls']}) |")
        print(f"| batch tokens (in / out / cache write / read) | {bt['input']} / {bt['output']} / "
              f"{bt['cache_write']} / {bt['cache_read']} "
              f"({'same as messages' if m and bt == m['tokens_server'] else 'differ from messages'}) |")
        print(f"| batch cost: re-priced server usage / label store / labels.jsonl rows | "
              f"${b['cost_server']:.6f} / ${b['cost_store']:.6f} / ${b['cost_rows']:.6f} |")
        # 0.5 is our own price table's batch rate: this checks the store applied it, it
        # measures no saving
        print(f"| batch cost / messages cost (label stores): our price table's batch rate, so 0.5 by "
              f"construction; checks that the store applied it | {b['cost_ratio']:.6f} |")
    print()
    if p2:
        print(f"Kill and restart (CLI subprocess, concurrency {CONCURRENCY}; messages: 100 ms latency "
              f"+ the same 429/529 pattern; batch: the fake keeps the batch in progress for 40 polls "
              f"at --batch-poll-s 0.05):")
        print()
        print("| scenario | docs | signal when | rc (signal / rerun) | answered after the signal | "
              "answered, not stored by the killed run | docs graded twice | batches created | "
              "final rows: labelled / failed / neither | paid, not recorded |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in p2:
            if "rc_restart" not in r:
                print(f"| {r['scenario']} | {r['docs']} | not measured (the run ended before the signal) "
                      f"| | | | | | | |")
                continue
            when = (f"{r['graded_at_signal']} graded" if r["mode"] == "messages"
                    else "batch submitted, polling")
            unrecorded = r["unrecorded_usd"] if abs(r["unrecorded_usd"]) >= 1e-9 else 0.0
            print(f"| {r['scenario']} | {r['docs']} | {r['signal']} at {when} | {r['rc_signal']} / "
                  f"{r['rc_restart']} | {r['answered_after_signal']} | {r['lost']} | {r['graded_twice']} | "
                  f"{r['batches_created'] if r['batches_created'] is not None else '-'} | "
                  f"{r['labelled']} / {r['failed']} / {r['neither']} | ${unrecorded:.6f} |")
        print()
    print("Commands (ANTHROPIC_BASE_URL=<the fake's loopback URL> ANTHROPIC_API_KEY=<dummy>, cwd the "
          "repository root):")
    print()
    print("```")
    print(" ".join(["python", "benchmarks/bench_label.py", *map(shlex.quote, sys.argv[1:])]))
    for c in commands:
        print(c)
    print("```")
    print()
    failed = [c for c in CHECKS if not c[1]]
    print(f"checks: {len(CHECKS) - len(failed)} of {len(CHECKS)} passed; bench wall {total_s:.0f} s")
    for name, ok, detail in CHECKS:
        if not ok:
            print(f"  FAILED {name}: {detail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=2000, help="documents to label in part 1 (default 2000)")
    ap.add_argument("--peer-docs", type=int, default=120, help="documents for the naive peer (default 120)")
    ap.add_argument("--kill-docs", type=int, default=360, help="documents in kill scenarios a/b (default 360)")
    ap.add_argument("--batch-kill-docs", type=int, default=200, help="documents in scenario c (default 200)")
    ap.add_argument("--skip", choices=["part1", "part2"], help="leave one part out")
    ap.add_argument("--json", help="also write the figures as JSON here")
    args = ap.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"bench_label: {CORPORA} is absent: the bench reads ../shared/corpora "
                 f"(clone ../shared beside this repository, or set CURATION_CORPORA=/path)")
    t0 = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    corpus = OUT / "corpus.jsonl.gz"
    per_domain = build_corpus(corpus, max(args.docs, args.kill_docs, args.batch_kill_docs))
    commands: list[str] = []
    p1: dict = {}
    p2: list[dict] = []
    if args.skip != "part1":
        print(f"part 1: {args.docs} docs, messages, peer, batch ...", file=sys.stderr, flush=True)
        p1 = part1(corpus, args.docs, args.peer_docs, commands)
    if args.skip != "part2":
        for name, n, sig, mode in (("a SIGTERM", args.kill_docs, signal.SIGTERM, "messages"),
                                   ("b SIGKILL", args.kill_docs, signal.SIGKILL, "messages"),
                                   ("c batch SIGKILL", args.batch_kill_docs, signal.SIGKILL, "batch")):
            print(f"part 2: {name} ...", file=sys.stderr, flush=True)
            p2.append(kill_restart(name, corpus, n, sig, mode, commands))
    total = time.perf_counter() - t0
    report(args, per_domain, p1, p2, commands, total)
    if args.json:
        Path(args.json).write_text(json.dumps({"part1": p1, "part2": p2, "checks": CHECKS,
                                               "per_domain": per_domain, "wall_s": total},
                                              indent=2, default=str) + "\n")
    return 0 if all(ok for _, ok, _ in CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main())
