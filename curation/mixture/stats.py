"""Domain statistics for the mixture search: what each domain holds, and what the earlier
stages did to it.

Per domain, from the data (train split, as a proxy run draws from it; the valid and
test splits beside): documents, UTF-8 bytes, tokens under the stated tokenizer,
bytes per token, and the domain's share of the train tokens (its natural weight).
These cover the whole corpus. A domain larger than the sample bound
(`curation.mixture.data`) has its train tokens estimated from its sample's bytes per
token, and says so: ``tokens_estimated: true`` and ``sample: {documents, max_bytes,
note}``; the table marks its tokens with ``~`` and a note names the sample size.

From the earlier stages' manifests, when given (each is optional; a missing stage is
simply absent from the result):

- dedup (`curate dedup` manifest.json): the duplicate rate, ``(removed_exact +
  removed_near) / input``. The dedup manifest counts the whole corpus, not each
  domain, so the rate is reported once under ``stages.dedup``; a manifest that does
  carry ``domains`` ({domain: {input, removed_exact, removed_near}}) gives it per domain.
- filter (`curate filter`): per domain the removal rate ``sum(removed) / input`` and
  the rate of each rule that removed anything.
- score (`curate score`): per domain the quality-score summary (count, mean, p10,
  p50, p90 from ``scores.domains``) and the kept fraction of the scored documents.

`domain_statistics` returns a JSON-serialisable dict; `statistics_table` renders it
as a Markdown table (what the Claude proposer's prompt embeds; ``aliases`` renames
domains, e.g. to d1..dK when names are hidden); `domain_extras` turns it into the
numbers `DomainInfo.extra` holds.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from curation.mixture.data import SPLITS, CorpusSplits

Manifest = Mapping[str, Any] | str | os.PathLike | None


def load_manifest(src: Manifest, stage: str) -> dict | None:
    """A stage's manifest from a dict, a manifest.json path, or its output directory;
    None for None. ValueError if it is another stage's or did not complete."""
    if src is None:
        return None
    if isinstance(src, Mapping):
        m = dict(src)
        where = f"the {stage} manifest"
    else:
        path = os.fspath(src)
        if os.path.isdir(path):
            path = os.path.join(path, "manifest.json")
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        where = path
    if m.get("command") not in (None, stage):
        raise ValueError(f"{where} is a {m.get('command')!r} manifest, not {stage!r}")
    if m.get("status", "complete") != "complete":
        raise ValueError(f"{where}: status {m.get('status')!r}; only a complete run's counts are used")
    return m


def _rate(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 6) if whole else None


def _dedup(m: dict) -> tuple[dict, dict]:
    counts = m.get("counts", {})
    removed = int(counts.get("removed_exact", 0)) + int(counts.get("removed_near", 0))
    corpus = {"input": int(counts.get("input", 0)), "removed_exact": int(counts.get("removed_exact", 0)),
              "removed_near": int(counts.get("removed_near", 0)),
              "duplicate_rate": _rate(removed, int(counts.get("input", 0))),
              "per_domain": "domains" in m}
    per = {}
    for d, v in (m.get("domains") or {}).items():
        rem = int(v.get("removed_exact", 0)) + int(v.get("removed_near", 0))
        per[d] = {"duplicate_rate": _rate(rem, int(v.get("input", 0)))}
    return corpus, per


def _filter(m: dict) -> tuple[dict, dict]:
    counts = m.get("counts", {})
    corpus = {"input": int(counts.get("input", 0)), "removed": int(counts.get("removed", 0)),
              "removal_rate": _rate(int(counts.get("removed", 0)), int(counts.get("input", 0)))}
    per = {}
    for d, v in (m.get("domains") or {}).items():
        n = int(v.get("input", 0))
        removed = {r: int(c) for r, c in (v.get("removed") or {}).items()}
        per[d] = {"filter_removal_rate": _rate(sum(removed.values()), n),
                  "filter_removed_by_rule": {r: _rate(c, n) for r, c in sorted(removed.items()) if c}}
    return corpus, per


def _score(m: dict) -> tuple[dict, dict]:
    scores = m.get("scores", {})
    corpus_summary = scores.get("corpus", {}) or {}
    corpus = {"count": corpus_summary.get("count"), "mean": corpus_summary.get("mean"),
              "kept_fraction": (m.get("selection") or {}).get("kept_fraction")}
    per = {}
    domains = m.get("domains") or {}
    for d, s in (scores.get("domains") or {}).items():
        dec = s.get("deciles") or {}
        per[d] = {"quality": {"count": s.get("count"), "mean": s.get("mean"), "p10": dec.get("p10"),
                              "p50": dec.get("p50"), "p90": dec.get("p90")}}
        v = domains.get(d)
        if v is not None:
            per[d]["score_kept_fraction"] = _rate(int(v.get("kept", 0)), int(v.get("scored", 0)))
    return corpus, per


def domain_statistics(splits: CorpusSplits, tokenizer, *, dedup: Manifest = None,
                      filter: Manifest = None, score: Manifest = None) -> dict:   # noqa: A002
    """``{"tokenizer", "data", "split", "domains": {domain: {...}}, "stages": {...}}``
    (see the module docstring); JSON-serialisable, domains in sorted order."""
    counts = splits.corpus_counts(tokenizer)
    train_tokens = sum(counts[d]["splits"]["train"]["tokens"] for d in splits.domains)
    domains: dict[str, dict] = {}
    for d in splits.domains:
        c = counts[d]
        tr = c["splits"]["train"]
        domains[d] = {
            "documents": tr["documents"], "bytes": tr["bytes"], "tokens": tr["tokens"],
            "bytes_per_token": round(tr["bytes"] / tr["tokens"], 4) if tr["tokens"] else None,
            "token_share": round(tr["tokens"] / train_tokens, 6) if train_tokens else None,
            "splits": c["splits"],
        }
        if c["tokens_estimated"]:
            # only a sampled domain says so: an unsampled one's statistics stay as they were
            domains[d]["tokens_estimated"] = True
            domains[d]["sample"] = {"documents": c["sample_documents"],
                                    "max_bytes": splits.max_bytes,
                                    "note": f"train tokens estimated from a sample of "
                                            f"{c['sample_documents']:,} documents"}
    stages: dict[str, dict] = {}
    for stage, src, fn in (("dedup", dedup, _dedup), ("filter", filter, _filter), ("score", score, _score)):
        m = load_manifest(src, stage)
        if m is None:
            continue
        corpus, per = fn(m)
        stages[stage] = corpus
        missing = sorted(set(splits.domains) - set(per)) if per else []
        if missing:
            stages[stage]["domains_missing"] = missing
        for d, values in per.items():
            if d in domains:
                domains[d].update(values)
    return {"tokenizer": getattr(tokenizer, "description", tokenizer.id), "tokenizer_id": tokenizer.id,
            "data": splits.fingerprint(), "split": {"seed": splits.seed, "fractions": list(splits.fractions),
                                                    "group_field": splits.group_field},
            "domains": domains, "stages": stages}


def domain_extras(stats: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per domain the numbers for `DomainInfo.extra`: bytes_per_token, token_share,
    duplicate_rate, filter_removal_rate, quality_mean, quality_p50 (those known)."""
    out: dict[str, dict[str, float]] = {}
    for d, v in stats["domains"].items():
        e: dict[str, float] = {}
        for k in ("bytes_per_token", "token_share", "duplicate_rate", "filter_removal_rate",
                  "score_kept_fraction"):
            if v.get(k) is not None:
                e[k] = float(v[k])
        q = v.get("quality") or {}
        for k in ("mean", "p50"):
            if q.get(k) is not None:
                e[f"quality_{k}"] = float(q[k])
        out[d] = e
    return out


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{100 * x:.1f}%"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def statistics_table(stats: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> str:
    """A Markdown table, one row per domain (train split; stage columns only for the
    stages given). `aliases` renames domains (hiding names: ``{"web": "d1", ...}``)."""
    doms = stats["domains"]
    has = {k: any(v.get(k) is not None for v in doms.values())
           for k in ("duplicate_rate", "filter_removal_rate", "quality", "score_kept_fraction")}
    cols = ["domain", "documents", "bytes", "tokens", "bytes/token", "token share"]
    if has["duplicate_rate"]:
        cols.append("duplicates")
    if has["filter_removal_rate"]:
        cols += ["filtered", "top filter rule"]
    if has["quality"]:
        cols += ["quality mean", "quality p10/p50/p90"]
    if has["score_kept_fraction"]:
        cols.append("kept by score")
    rows = []
    names = sorted(doms, key=lambda d: (aliases or {}).get(d, d))
    for d in names:
        v = doms[d]
        tokens = ("~" if v.get("tokens_estimated") else "") + _fmt(v["tokens"])
        row = [(aliases or {}).get(d, d), _fmt(v["documents"]), _fmt(v["bytes"]), tokens,
               _fmt(v["bytes_per_token"]), _fmt(v["token_share"], pct=True)]
        if has["duplicate_rate"]:
            row.append(_fmt(v.get("duplicate_rate"), pct=True))
        if has["filter_removal_rate"]:
            rules = v.get("filter_removed_by_rule") or {}
            top = max(rules.items(), key=lambda kv: (kv[1], kv[0]), default=None)
            row += [_fmt(v.get("filter_removal_rate"), pct=True),
                    f"{top[0]} ({100 * top[1]:.1f}%)" if top else "–"]
        if has["quality"]:
            q = v.get("quality") or {}
            row += [_fmt(q.get("mean")), "/".join(_fmt(q.get(k)) for k in ("p10", "p50", "p90"))]
        if has["score_kept_fraction"]:
            row.append(_fmt(v.get("score_kept_fraction"), pct=True))
        rows.append(row)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = [f"Train split; tokens under {stats.get('tokenizer')}."]
    est = [(aliases or {}).get(d, d) for d in names if doms[d].get("tokens_estimated")]
    if est:
        notes.append("~ tokens estimated from a sample (" + ", ".join(
            f"{a}: {doms[d]['sample']['documents']:,} documents" for a, d in
            zip(est, [d for d in names if doms[d].get("tokens_estimated")])) + ").")
    dd = stats.get("stages", {}).get("dedup")
    if dd is not None and not dd.get("per_domain"):
        notes.append(f"Deduplication removed {_fmt(dd.get('duplicate_rate'), pct=True)} of the "
                     f"corpus (not counted per domain).")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
