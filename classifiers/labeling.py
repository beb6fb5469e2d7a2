"""`curate label`: sample seed documents and label them (library half; no Beam).

One pass over the inputs draws a deterministic sample stratified by domain
(classifiers.sampling), then one labeler grades it:

- ``claude``: the rubric's grade from Claude through the official SDK, with Message
  Batches (``batch``) or concurrent Messages calls (``messages``); ``auto`` picks batches
  from ``BATCH_MIN_DOCS`` documents still to grade. Results go to a persistent label
  store first (classifiers.store), so a rerun pays only for what is missing. Before
  sending, the estimated cost is printed from token counts (the Token Counting API on a
  few sampled requests, extrapolated by characters) and configured prices.
- ``heuristic``: no API: a score on the rubric's scale from how many of four heuristic
  rule sets a document passes; these labels say ``labeler: heuristic``.
- ``field``: labels a corpus already carries (``--labels-from-field``), numbers as they
  are or strings through ``--label-map``.

DIR/labels.jsonl has one line per sampled document, labelled or failed with the
reason; DIR/summary.json has the counts, tokens and cost. Both are written
atomically, the summary last. When no sampled document got a label (a refused key, a
field the documents do not carry), both are still written and :class:`NothingLabelled`
says why and what to check.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from classifiers.grading import BATCH_DISCOUNT, PRICES, request_params
from classifiers.rubrics import Rubric, load_rubric
from classifiers.sampling import SampleStats, sample_documents
from classifiers.store import Label, LabelStore
from curation.config import ConfigError, LabelConfig
from curation.documents import NO_DOMAIN, Document
from curation.io import FieldMap, expand_sources, read_documents
from curation.minhash import exact_key, normalize
from curation.outputs import check_stage_paths, claim_output, locked_output

LABELS_FILE = "labels.jsonl"
SUMMARY_FILE = "summary.json"
STORE_FILE = "labels.sqlite"
BATCH_MIN_DOCS = 200          # below this, concurrent Messages calls finish sooner
PROBE_DOCS = 8                # documents whose tokens are counted for the estimate
EXPECTED_OUTPUT_TOKENS = 120  # a score and one or two sentences through the tool
HEURISTIC = "heuristic"
BUDGET_NOT_SENT = "not sent: --max-usd budget reached"


class NothingLabelled(RuntimeError):
    """Every sampled document failed. Raised by run_label after labels.jsonl and
    summary.json are written; the message names the commonest reason and the likely
    fix, ``summary`` is what was written."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


# (what the stored reason contains, the likely fix); the first match wins
_FIXES = (
    (("AuthenticationError", "(401)"), "check ANTHROPIC_API_KEY: the API refused the key"),
    (("PermissionDeniedError", "(403)"), "check ANTHROPIC_API_KEY: the key may not use this "
                                         "model or API"),
    (("NotFoundError", "(404)"), "check --model and ANTHROPIC_BASE_URL"),
    (("rate limited", "InternalServerError", "OverloadedError", "APITimeoutError",
      "APIConnectionError", "batch entry expired", "batch entry canceled"),
     "the API was unavailable or too busy: rerun the same command later (labels are kept in "
     "the store, and only the missing ones are paid for)"),
    (("no label in the field",), "check --labels-from-field: it names no field the documents "
                                 "carry"),
    (("is not a number",), "the field holds text: give --label-map VALUE=SCORE,..."),
    (("is not in --label-map",), "check --label-map: it must map every value the field "
                                 "holds"),
)


def _likely_fix(reason: str) -> str:
    for needles, fix in _FIXES:
        if any(n in reason for n in needles):
            return fix
    return "see failures_by_reason in summary.json"


def _nothing_labelled(summary: dict, out: Path) -> NothingLabelled:
    reasons = summary["failures_by_reason"]
    top = max(sorted(reasons), key=reasons.get)
    n = summary["counts"]["sampled"]
    more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    return NothingLabelled(
        f"no document was labelled: all {n} failed, {reasons[top]} with \"{top}\"{more}; "
        f"{_likely_fix(top)} (details in {out / SUMMARY_FILE})", summary)


def content_key(text: str) -> str:
    """The label store's key: the exact-duplicate key of the text, as hex."""
    return exact_key(normalize(text).encode("utf-8"), text).hex()


SHARED_ID_SEP = "#"
SHARED_ID_KEY_CHARS = 16


def row_ids(sample: list[Document], keys: list[str]) -> list[str]:
    """The ``id`` of each labels.jsonl row: the document's id, or, where different
    sampled documents share an id, ``ID#`` and the first 16 hex digits of the content
    key. A label belongs to its text, and train-classifier splits by a row's id, so rows
    must not share one; the suffix depends on the text alone (not on input order)."""
    counts = Counter(d.id for d in sample)
    return [d.id if counts[d.id] == 1 else f"{d.id}{SHARED_ID_SEP}{k[:SHARED_ID_KEY_CHARS]}"
            for d, k in zip(sample, keys)]


# --------------------------------------------------------------------------- reading


def read_sample(cfg: LabelConfig, fs=None) -> tuple[list[Document], SampleStats, dict]:
    """`fs` (a curation.fs.FS): where the inputs are; default the local disk."""
    files = expand_sources(cfg.input_sources(), fs=fs, input_format=cfg.input_format)
    fields = FieldMap(text_field=cfg.text_field, id_field=cfg.id_field,
                      domain_field=cfg.domain_field, domain=cfg.domain)
    rejected: Counter = Counter()
    readers = []

    def documents():
        for f in files:
            reader = read_documents(f, fields, max_doc_bytes=cfg.max_doc_bytes, strict=cfg.strict, fs=fs)
            readers.append(reader)
            for rec in reader:
                if isinstance(rec, Document):
                    yield rec
                else:
                    rejected[rec.cause] += 1

    stats = SampleStats()
    n = cfg.sample_size
    if n is None:
        docs = list(documents())
        n = len(docs)
        sample = sample_documents(docs, n, seed=cfg.seed, allocation=cfg.allocation, stats=stats)
    else:
        sample = sample_documents(documents(), n, seed=cfg.seed, allocation=cfg.allocation,
                                  stats=stats)
    info = {"files": len(files), "records_read": stats.seen + sum(rejected.values()),
            "rejected_by_cause": dict(sorted(rejected.items())),
            "exact_duplicates_skipped": stats.duplicates_skipped,
            "shared_ids": stats.shared_ids,
            "distinct_by_domain": dict(sorted(stats.distinct_by_domain.items())),
            "sampled_by_domain": dict(sorted(stats.sampled_by_domain.items())),
            "sample_size_asked": cfg.sample_size, "allocation": cfg.allocation,
            "seed": cfg.seed}
    return sample, stats, info


# --------------------------------------------------------------------------- other labelers


def heuristic_chain():
    from curation.filters import heuristic_label_chain
    return heuristic_label_chain()


def heuristic_grade(text: str, rubric: Rubric, chain=None) -> tuple[int, str]:
    """The share of the rule sets a document passes, mapped onto the rubric's scale."""
    chain = chain if chain is not None else heuristic_chain()
    failed = [v.reason for v in (f(text) for f in chain) if not v.keep]
    passed = len(chain) - len(failed)
    lo, hi = rubric.scale.min, rubric.scale.max
    score = lo + round(passed / len(chain) * (hi - lo))
    why = f"heuristic: passed {passed} of {len(chain)} rule sets"
    return score, why + (f"; failed {', '.join(failed)}" if failed else "")


def parse_label_map(text: str | None) -> dict[str, float] | None:
    """``"ham=1,spam=0"`` -> ``{"ham": 1.0, "spam": 0.0}``."""
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"--label-map: {part!r} is not VALUE=SCORE")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--label-map: score {value!r} for {name!r} is not a number") from None
    if not out:
        raise ConfigError("--label-map is empty")
    return out


def field_value(doc: Document, field: str) -> Any:
    node: Any = doc.meta
    for part in field.split(".") if field not in doc.meta else [field]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def imported_score(value: Any, label_map: dict[str, float] | None) -> tuple[float | None, str | None]:
    if value is None:
        return None, "no label in the field"
    if label_map is not None:
        if str(value) in label_map:
            return label_map[str(value)], None
        return None, f"value {value!r} is not in --label-map"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"value {value!r} is not a number (give --label-map VALUE=SCORE,...)"
    return float(value), None


# --------------------------------------------------------------------------- cost estimate


def price_of(model: str, prices: dict | None = None) -> tuple[float, float]:
    table = prices or PRICES
    if model not in table:
        raise ConfigError(f"no price for model {model!r}; known: {', '.join(sorted(table))}")
    return table[model]


def estimate_cost(client, rubric: Rubric, texts: list[str], cfg: LabelConfig, *, batch: bool,
                  prices: dict | None = None, log: Callable[[str], None] = print) -> dict:
    """Input tokens from the Token Counting API: the request with an empty document, and
    PROBE_DOCS sampled documents to learn tokens per character; the rest extrapolated.
    Cache discounts are left out, so the estimate errs high."""
    p_in, p_out = price_of(cfg.model, prices)

    def count(text: str) -> int:
        params = request_params(rubric, text, model=cfg.model, max_doc_chars=cfg.max_doc_chars,
                                max_tokens=cfg.max_tokens)
        params.pop("max_tokens")
        return int(client.messages.count_tokens(**params).input_tokens)

    sent_chars = [min(len(t), cfg.max_doc_chars) for t in texts]
    method = "count_tokens"
    try:
        base = count("")
        step = max(1, len(texts) // PROBE_DOCS)
        probe = list(range(0, len(texts), step))[:PROBE_DOCS]
        doc_tokens = sum(max(0, count(texts[i]) - base) for i in probe)
        doc_chars = sum(sent_chars[i] for i in probe)
        per_char = doc_tokens / doc_chars if doc_chars else 0.25
    except Exception as e:  # noqa: BLE001 - an estimate must not stop the run
        log(f"label: token counting failed ({type(e).__name__}); estimating 4 characters "
            f"per token")
        base, per_char, method = 0, 0.25, "4 characters per token"
    factor = BATCH_DISCOUNT if batch else 1.0
    per_doc = [(base + c * per_char) for c in sent_chars]
    tokens_in = sum(per_doc)
    expected = factor * (tokens_in * p_in + len(texts) * EXPECTED_OUTPUT_TOKENS * p_out) / 1e6
    upper = factor * (tokens_in * p_in + len(texts) * cfg.max_tokens * p_out) / 1e6
    return {"documents": len(texts), "input_tokens": round(tokens_in),
            "request_overhead_tokens": base, "tokens_per_char": round(per_char, 4),
            "expected_output_tokens_per_doc": EXPECTED_OUTPUT_TOKENS,
            "expected_usd": round(expected, 4), "upper_usd": round(upper, 4),
            "method": method, "batch_discount": batch,
            "prices_per_mtok": {"input": p_in, "output": p_out},
            "_per_call_upper": lambda text: factor * (
                (base + min(len(text), cfg.max_doc_chars) * per_char) * p_in
                + cfg.max_tokens * p_out) / 1e6}


# --------------------------------------------------------------------------- the run


def _atomic_write(path: Path, text: str) -> None:
    from curation.fs import write_atomic
    write_atomic(str(path), text.encode("utf-8"))


@locked_output("label", arg="cfg")   # one run at a time per output directory
def run_label(cfg: LabelConfig, *, log: Callable[[str], None] = print,
              base_url: str | None = None, prices: dict | None = None,
              sleep: Callable[[float], None] = time.sleep, stop=None, progress=None,
              fs=None) -> dict:
    """Sample, label, write DIR/labels.jsonl and DIR/summary.json; returns the summary,
    or raises NothingLabelled (after writing both) when every sampled document failed.

    ``progress`` (a curation.progress.Task) counts the sampled documents labelled.

    ``stop`` (a threading.Event) ends a Claude run early: no new calls, those in flight
    stored, nothing written but the store; raises classifiers.claude.Interrupted."""
    if not cfg.patterns():
        raise ConfigError("label needs --input")
    if not cfg.output:
        raise ConfigError("label needs --output")
    t0 = time.time()
    if cfg.prices:
        prices = {**(prices or PRICES), **cfg.prices}
    rubric = load_rubric(cfg.rubric)
    out = Path(cfg.output)
    check_stage_paths(cfg.patterns(), cfg.output, fs)   # not an input; inputs whole
    claim_output(cfg.output, (LABELS_FILE, SUMMARY_FILE), SUMMARY_FILE, "label")
    if cfg.labeler == "claude":
        price_of(cfg.model, prices)  # an unknown model fails before any reading
    try:
        sample, _, sample_info = read_sample(cfg, fs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    threshold = cfg.threshold if cfg.threshold is not None else float(rubric.threshold)
    keys = [content_key(d.text) for d in sample]
    ids = row_ids(sample, keys)
    if sample_info["shared_ids"]:
        log(f"label: {sample_info['shared_ids']} of {len(sample)} sampled documents share their "
            f"id with another (different text): each is labelled, and its row's id is "
            f"ID{SHARED_ID_SEP}KEY (KEY: the start of its content key); name a unique field "
            f"with --id-field to keep your ids")
    rows: list[dict] = []
    extra: dict[str, Any] = {}
    if progress is not None:
        progress.set_total(len(sample))

    if cfg.labeler == "claude":
        results, extra = _label_with_claude(cfg, rubric, sample, keys, out, log=log,
                                            base_url=base_url, prices=prices, sleep=sleep,
                                            stop=stop, progress=progress)
        model, rubric_key = cfg.model, rubric.key
    elif cfg.labeler == "heuristic":
        chain = heuristic_chain()
        results = {}
        for d, k in zip(sample, keys):
            score, why = heuristic_grade(d.text, rubric, chain)
            results[k] = Label(k, HEURISTIC, HEURISTIC, score=score, reasoning=why, mode=HEURISTIC)
        model, rubric_key = HEURISTIC, f"heuristic on the {rubric.name} scale"
        if progress is not None:
            progress.advance(len(sample))
    else:
        results = {}
        for d, k in zip(sample, keys):
            score, err = imported_score(field_value(d, cfg.labels_field), cfg.label_map)
            results[k] = Label(k, "field", "field", score=score, error=err,
                               reasoning=None if err else f"imported from field {cfg.labels_field!r}",
                               mode="field")
        model, rubric_key = None, f"field:{cfg.labels_field}"
        values = Counter(str(field_value(d, cfg.labels_field)) for d in sample)
        extra["field_values"] = dict(values.most_common(20))
        if progress is not None:
            progress.advance(len(sample))

    for d, k, row_id in zip(sample, keys, ids):
        lab = results.get(k)
        ok = lab is not None and lab.ok
        rows.append({
            "id": row_id, "key": k, "domain": d.domain if d.domain is not None else NO_DOMAIN,
            "score": lab.score if ok else None,
            "label": ("hq" if lab.score >= threshold else "lq") if ok else None,
            "reasoning": lab.reasoning if ok else None,
            "model": model, "rubric": rubric_key, "labeler": cfg.labeler,
            "input_tokens": lab.input_tokens if lab else 0,
            "output_tokens": lab.output_tokens if lab else 0,
            "cache_read_tokens": lab.cache_read_tokens if lab else 0,
            "cache_write_tokens": lab.cache_write_tokens if lab else 0,
            "cost_usd": round(lab.cost_usd, 6) if lab else 0.0,
            "error": None if ok else (lab.error if lab and lab.error else BUDGET_NOT_SENT
                                      if extra.get("budget_stop") else "no label"),
            "text": d.text,
        })

    summary = _summary(cfg, rubric, rows, threshold, sample_info, extra, time.time() - t0)
    _atomic_write(out / LABELS_FILE, "".join(_json_line(r) for r in rows))
    _atomic_write(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    c = summary["counts"]
    if c["sampled"] and not c["labelled"] and not extra.get("budget_stop"):
        raise _nothing_labelled(summary, out)
    return summary


def _json_line(row: dict) -> str:
    # U+2028/2029 are valid in JSON strings but end a line for str.splitlines()
    text = json.dumps(row, ensure_ascii=False, sort_keys=True)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _label_with_claude(cfg, rubric, sample, keys, out, *, log, base_url, prices, sleep, stop,
                       progress=None):
    from classifiers.claude import (BatchGrader, BudgetExceeded, MessagesGrader, Settings,
                                    make_client)
    settings = Settings(model=cfg.model, max_doc_chars=cfg.max_doc_chars,
                        max_tokens=cfg.max_tokens, concurrency=cfg.concurrency,
                        max_usd=cfg.max_usd, prices=prices)
    client = make_client(settings, base_url=base_url)
    store_path = Path(cfg.store) if cfg.store else out / STORE_FILE
    extra: dict[str, Any] = {"store": str(store_path)}
    with LabelStore(store_path) as store:
        texts = dict(zip(keys, (d.text for d in sample)))
        # batches a previous run submitted are collected first, whatever the mode: their
        # documents are paid for
        collected = BatchGrader(client, rubric, store, settings, poll_s=cfg.batch_poll_s,
                                sleep=sleep, stop=stop).collect_open()
        if collected:
            log(f"label: collected {collected} batch(es) a previous run submitted")
        extra["collected_batches"] = collected
        todo = store.pending(list(texts), rubric.key, cfg.model)
        mode = cfg.mode if cfg.mode != "auto" else (
            "batch" if len(todo) >= BATCH_MIN_DOCS else "messages")
        extra["mode"] = mode
        extra["already_labelled"] = len(texts) - len(todo)
        if progress is not None:
            progress.advance(len(texts) - len(todo))
            store.on_put = progress.advance
        spent_before = store.spent_usd(rubric.key, cfg.model)
        est = estimate_cost(client, rubric, [texts[k] for k in todo], cfg,
                            batch=mode == "batch", prices=prices, log=log)
        per_call = est.pop("_per_call_upper")
        extra["estimate"] = est
        log(f"label: {len(todo)} of {len(texts)} documents to grade with {cfg.model} "
            f"({mode}); estimated ${est['expected_usd']:.2f} (at most ${est['upper_usd']:.2f}) "
            f"for ~{est['input_tokens']:,} input tokens"
            + (f"; budget --max-usd {cfg.max_usd} (${spent_before:.2f} spent before)"
               if cfg.max_usd is not None else ""))
        if cfg.max_usd is not None and spent_before + est["upper_usd"] > cfg.max_usd:
            log("label: the estimate may exceed --max-usd: the run stops before a call could "
                "pass it; documents not sent are listed with the reason")
        if mode == "batch":
            grader = BatchGrader(client, rubric, store, settings, poll_s=cfg.batch_poll_s,
                                 sleep=sleep, estimate=per_call, stop=stop)
        else:
            grader = MessagesGrader(client, rubric, store, settings, sleep=sleep,
                                    estimate=per_call, stop=stop)
        try:
            stats = grader.grade(texts.items())
        except BudgetExceeded as e:
            log(f"label: stopped: {e}")
            extra["budget_stop"] = str(e)
            stats = grader.stats
        extra["calls"] = {"sent": stats.sent, "retries": dict(sorted(stats.retries.items()))}
        extra["spent_this_run_usd"] = round(store.spent_usd(rubric.key, cfg.model) - spent_before, 6)
        results = store.get(keys, rubric.key, cfg.model)
    return results, extra


def _summary(cfg, rubric, rows, threshold, sample_info, extra, elapsed) -> dict:
    ok = [r for r in rows if r["error"] is None]
    failures = Counter(r["error"] for r in rows if r["error"] is not None)
    per_domain: dict[str, dict] = {}
    for r in rows:
        d = per_domain.setdefault(r["domain"], {"sampled": 0, "labelled": 0, "failed": 0,
                                                "hq": 0, "lq": 0})
        d["sampled"] += 1
        d["labelled" if r["error"] is None else "failed"] += 1
        if r["label"]:
            d[r["label"]] += 1
    return {
        "command": "label",
        "labeler": cfg.labeler,
        "model": cfg.model if cfg.labeler == "claude" else None,
        "rubric": {"name": rubric.name, "key": rubric.key, "scale": rubric.scale.model_dump(),
                   "threshold": rubric.threshold} if cfg.labeler != "field" else None,
        "threshold": threshold,
        "counts": {"sampled": len(rows), "labelled": len(ok), "failed": len(rows) - len(ok),
                   "hq": sum(r["label"] == "hq" for r in rows),
                   "lq": sum(r["label"] == "lq" for r in rows)},
        "failures_by_reason": dict(sorted(failures.items())),
        "score_histogram": {str(k): v for k, v in sorted(Counter(r["score"] for r in ok).items())},
        "domains": dict(sorted(per_domain.items())),
        "tokens": {k: sum(r[f"{k}_tokens"] for r in rows)
                   for k in ("input", "output", "cache_read", "cache_write")},
        "cost_usd": round(sum(r["cost_usd"] for r in rows), 6),
        "sample": sample_info,
        "parameters": cfg.model_dump(mode="json"),
        "elapsed_s": round(elapsed, 3),
        **{k: v for k, v in extra.items()},
    }
