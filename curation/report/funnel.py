"""The funnel: where every input document went, per domain, in documents and tokens,
with the near-duplicate clusters and the filter rules' removed documents it meets on
the way.

Documents come from the stages' own counts (the filter and score manifests count per
domain; dedup counts only the corpus, so its per-domain split comes from matching
clusters/ (source, line) against the inputs). Tokens need the texts, read in one
streaming pass per file:

- the first stage's inputs (the files its manifest lists): input tokens per domain,
  and the texts and domains of the documents dedup removed;
- filter removed/: tokens per rule (partial when --removed-sample capped it);
- score removed/: the classifier's removals;
- the last stage's documents/: what was kept.

Rows, in order: input, exact_duplicate, near_duplicate, one "filter:<rule>" per rule
that removed anything, classifier, rejected, kept; and for tokens only
"not_on_file": input tokens minus every row whose text a file keeps. It holds the
lines the filter's line-level rules cut from documents, removed documents a
--removed-sample cap did not write, and the text of documents rejected mid-chain; the
row's label names which of these the run has, and where it has none the row must be
0 (checked). In documents every domain balances: input = the sum of the other rows
(checked, not assumed).

Memory: the cluster rows (documents in a duplicate cluster) and a bounded memo of
token counts; everything else streams.
"""
from __future__ import annotations

import difflib
import json
import os
import statistics
from collections import Counter, defaultdict
from typing import Any, Iterable

from curation.documents import NO_DOMAIN, Document, Rejected
from curation.io import FieldMap, InputFile, expand_sources, input_format, read_documents
from curation.io.warc import WARC_CAUSES
from curation.manifest import chain_links
from curation.report.rundir import RunDir, Stage, rows
from curation.report.tokens import TokenCounter

EXCERPT_CHARS = 400
EXAMPLES_PER_RULE = 3
CLUSTER_EXAMPLES = 3
CLUSTER_CANDIDATES = 4 * CLUSTER_EXAMPLES   # clusters whose texts are read to find examples
MEMBERS_PER_CLUSTER = 4        # removed members read per candidate; the one differing most is shown
DIFF_WORDS = 250
UNKNOWN_DOMAIN = "(unknown)"   # dedup removals whose input files could not be read
_TOKEN_BATCH = 512

ROW_LABELS = {
    "input": "input",
    "exact_duplicate": "exact duplicates",
    "near_duplicate": "near duplicates",
    "classifier": "classifier (below the score cut)",
    "rejected": "rejected (malformed or failed)",
    "kept": "kept",
}
CHAIN = ("dedup", "filter", "score")
EXTRACTION = "extraction:"     # funnel rows of WARC responses that yield no document
EXTRACTION_LABELS = {"not_html": "not HTML (WARC responses)",
                     "undecodable_html": "HTML that does not decode (WARC)",
                     "empty_extraction": "no main text extracted (WARC)"}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _domain(d: str | None) -> str:
    return d if d else NO_DOMAIN


class _Tokens:
    """Batches (domain, row, text) and adds the token counts when a batch is full."""

    def __init__(self, counter: TokenCounter, into: dict):
        self.counter, self.into, self.buf = counter, into, []

    def add(self, domain: str, row: str, text: str) -> None:
        self.buf.append((domain, row, text))
        if len(self.buf) >= _TOKEN_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            counts = self.counter.count_many(t for _, _, t in self.buf)
            for (d, r, _), n in zip(self.buf, counts):
                self.into[d][r] += n
            self.buf = []


# ------------------------------------------------------------------ dedup clusters

def read_clusters(stage: Stage) -> dict[str, list[dict]]:
    """cluster_id -> its members (id, kept, reason, source, line), from clusters/."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows(stage.file("clusters")):
        out[str(r["cluster_id"])].append({
            "id": str(r["id"]), "kept": bool(r["kept"]), "reason": r.get("reason"),
            "source": r.get("source"), "line": r.get("line"), "jaccard": r.get("jaccard")})
    return dict(out)


def choose_clusters(clusters: dict[str, list[dict]], n: int = CLUSTER_EXAMPLES) -> list[str]:
    """Clusters with a near duplicate first (exact ones have nothing to compare),
    then the largest, then by id: a fixed choice whatever the shard order."""
    def key(cid):
        ms = clusters[cid]
        return (not any(m["reason"] == "near_duplicate" for m in ms), -len(ms), cid)
    return sorted(clusters, key=key)[:n]


def _candidate_members(members: list[dict]) -> tuple[dict | None, list[dict]]:
    kept = next((m for m in sorted(members, key=lambda m: m["id"]) if m["kept"]), None)
    removed = sorted((m for m in members if not m["kept"]),
                     key=lambda m: (m["reason"] != "near_duplicate", m["id"]))
    return kept, removed[:MEMBERS_PER_CLUSTER]


def word_diff(a: str, b: str, limit: int = DIFF_WORDS) -> dict:
    """Word-level differences of the first `limit` words of a and b: segments
    [op, text] for each side ("=" same, "-" only in a, "+" only in b) and the share of
    words in common."""
    wa, wb = a.split()[:limit], b.split()[:limit]
    sm = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    left: list[list[str]] = []
    right: list[list[str]] = []

    def push(side, op, words):
        if not words:
            return
        text = " ".join(words)
        if side and side[-1][0] == op:
            side[-1][1] += " " + text
        else:
            side.append([op, text])

    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            push(left, "=", wa[i1:i2])
            push(right, "=", wb[j1:j2])
        else:
            push(left, "-", wa[i1:i2])
            push(right, "+", wb[j1:j2])
    return {"left": left, "right": right, "similarity": round(sm.ratio(), 4),
            "truncated": len(a.split()) > limit or len(b.split()) > limit}


# ------------------------------------------------------------------ the input pass

def _input_files(stage: Stage, notes: list[str]) -> tuple[list[InputFile], FieldMap, int] | None:
    return input_files_of(stage.data, stage.name, notes)


def input_files_of(manifest: dict | None, name: str,
                   notes: list[str]) -> tuple[list[InputFile], FieldMap, int] | None:
    """The files a stage read, as its manifest (`name` stage's manifest.json, a dict)
    lists them, with the domain a `curate run` source gave them, the field map and
    max_doc_bytes; None (and a note) when they cannot be read now."""
    params = (manifest or {}).get("parameters", {})
    cfg = params.get("config", {})
    listed = params.get("files") or []
    missing = [f["path"] for f in listed if "://" in f["path"] or not os.path.exists(f["path"])]
    if not listed or missing:
        notes.append(f"Input tokens are not available: the {name} stage's input files "
                     f"cannot be read now ({(missing or ['none listed'])[0]}"
                     f"{', ...' if len(missing) > 1 else ''}).")
        return None
    domains: dict[str, str | None] = {}
    sources = [(s["input"], s.get("domain")) for s in cfg.get("sources") or []]
    if sources:
        try:
            srcs = sources + ([(cfg["inputs"], None)] if cfg.get("inputs") else [])
            domains = {f.path: f.domain for f in expand_sources(srcs)}
        except (ValueError, KeyError) as e:
            notes.append(f"The domains of the {name} stage's sources could not be "
                         f"matched to its files again ({e}); records' own domains are used.")
    files = []
    for f in listed:
        fmt, comp = input_format(f["path"]) or (f.get("format", "jsonl"), "")
        if f.get("format") and f["format"] != fmt:      # read with --input-format
            fmt, comp = f["format"], comp if f["format"] == "jsonl" else ""
        files.append(InputFile(index=int(f["index"]), path=f["path"], format=fmt, compression=comp,
                               name=os.path.basename(f["path"]), domain=f.get("domain", domains.get(f["path"]))))
    fields = FieldMap(text_field=cfg.get("text_field", "text"), id_field=cfg.get("id_field", "id"),
                      domain_field=cfg.get("domain_field", "domain"), domain=cfg.get("domain"))
    return files, fields, int(cfg.get("max_doc_bytes", 8 << 20))


def _input_pass(stage: Stage, removed_keys: dict, wanted: set, tokens: _Tokens,
                docs: dict, notes: list[str]) -> dict[tuple, dict] | None:
    """One pass over the stage's inputs: documents and tokens per domain (input, and
    the dedup removals matched by (source, line)); returns the texts of `wanted`
    (source, line) keys, or None when the inputs cannot be read."""
    spec = _input_files(stage, notes)
    if spec is None:
        return None
    files, fields, max_bytes = spec
    texts: dict[tuple, dict] = {}
    for f in files:
        # a rejected record has no domain of its own: its source's, if it has one
        rdom = _domain(fields.domain if fields.domain is not None else f.domain)
        with read_documents(f, fields, max_doc_bytes=max_bytes) as reader:
            for rec in reader:
                if isinstance(rec, Rejected):
                    docs[rdom]["input"] += 1
                    docs[rdom][EXTRACTION + rec.cause if rec.cause in WARC_CAUSES
                               else "rejected_dedup"] += 1
                    continue
                doc: Document = rec
                d, key = _domain(doc.domain), (doc.source, doc.line)
                docs[d]["input"] += 1
                tokens.add(d, "input", doc.text)
                reason = removed_keys.get(key)
                if reason is not None:
                    docs[d][reason] += 1
                    tokens.add(d, reason, doc.text)
                if key in wanted:
                    texts[key] = {"domain": d, "text": " ".join(doc.text.split()[:DIFF_WORDS + 1])}
    tokens.flush()
    return texts


# ------------------------------------------------------------------ filter removed/

def _signals(row: dict, reason: str) -> dict:
    """The signals of the removing filter (those named "<filter>.<signal>")."""
    raw = row.get("signals")
    try:
        sig = json.loads(raw) if isinstance(raw, str) else (raw or {})
    except ValueError:
        return {}
    prefix = reason.split(":", 1)[0] + "."
    out = {}
    for k in sorted(sig):
        if k.startswith(prefix) and len(out) < 6:
            v = sig[k]
            out[k] = round(v, 4) if isinstance(v, float) else v
    return out


def _filter_removed(stage: Stage, tokens: _Tokens) -> tuple[dict, dict]:
    """Tokens and written documents per (domain, rule), and the first few removed
    documents of each rule by (id, source, line)."""
    written: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list] = defaultdict(list)
    for r in rows(stage.file("removed")):
        reason, d = str(r["reason"]), _domain(r.get("domain"))
        written[reason][d] += 1
        tokens.add(d, "filter:" + reason, r["text"])
        ex = examples[reason]
        ex.append((str(r["id"]), str(r.get("source") or ""), int(r.get("line") or 0), d,
                   r["text"], r))
        if len(ex) > 4 * EXAMPLES_PER_RULE:
            ex.sort(key=lambda e: e[:3])
            del ex[EXAMPLES_PER_RULE:]
    tokens.flush()
    out = {}
    for reason, ex in examples.items():
        ex.sort(key=lambda e: e[:3])
        out[reason] = [{"id": i, "domain": d, "excerpt": excerpt(t), "chars": len(t),
                        "signals": _signals(row, reason)}
                       for i, _, _, d, t, row in ex[:EXAMPLES_PER_RULE]]
    return {k: dict(v) for k, v in written.items()}, out


def _stream_tokens(directory: str, row: str, tokens: _Tokens) -> Counter:
    """Adds the tokens of every document in `directory` to `row`; documents per domain."""
    n: Counter = Counter()
    for r in rows(directory):
        d = _domain(r.get("domain"))
        tokens.add(d, row, r["text"])
        n[d] += 1
    tokens.flush()
    return n


# ------------------------------------------------------------------ the funnel

def _complete(rd: RunDir, name: str) -> Stage | None:
    st = rd.stage(name)
    return st if st.complete else None


def compute_funnel(rd: RunDir, counter: TokenCounter) -> dict:
    """The funnel, the dedup clusters and the filter rules' examples of a run directory
    (see the module's docstring)."""
    notes: list[str] = []
    docs: dict[str, Counter] = defaultdict(Counter)
    toks: dict[str, Counter] = defaultdict(Counter)
    tokens = _Tokens(counter, toks)
    dedup, filt, score = (_complete(rd, n) for n in CHAIN)
    present = [s for s in (dedup, filt, score) if s is not None]
    checks: list[dict] = []

    # dedup: clusters first, so the input pass can match the removed documents
    clusters: dict[str, list[dict]] = {}
    texts: dict | None = None
    if dedup is not None:
        clusters = read_clusters(dedup)
        removed_keys = {(m["source"], m["line"]): m["reason"]
                        for ms in clusters.values() for m in ms if not m["kept"]}
        wanted = set()
        for cid in choose_clusters(clusters, CLUSTER_CANDIDATES):
            kept, shown = _candidate_members(clusters[cid])
            wanted.update((m["source"], m["line"]) for m in [kept, *shown] if m)
        texts = _input_pass(dedup, removed_keys, wanted, tokens, docs, notes)
        c = dedup.data["counts"]
        if texts is None:
            # the split by domain needs the inputs: count dedup's part as one pseudo-domain
            u = docs[UNKNOWN_DOMAIN]
            u["exact_duplicate"] = int(c.get("removed_exact", 0))
            u["near_duplicate"] = int(c.get("removed_near", 0))
            u["rejected_dedup"] = int(c.get("rejected", 0))
            u["input"] = u["exact_duplicate"] + u["near_duplicate"] + u["rejected_dedup"]
            notes.append(f"Dedup's removals are counted under {UNKNOWN_DOMAIN!r}: its manifest "
                         f"does not split them by domain and the inputs cannot be read.")
        else:
            got = {"input": sum(v["input"] for v in docs.values()),
                   "removed_exact": sum(v["exact_duplicate"] for v in docs.values()),
                   "removed_near": sum(v["near_duplicate"] for v in docs.values()),
                   "rejected": sum(v["rejected_dedup"] + sum(v[EXTRACTION + c] for c in WARC_CAUSES)
                                   for v in docs.values())}
            want = {k: int(c.get(k, 0)) for k in got}
            checks.append({"name": "the inputs read again agree with the dedup manifest",
                           "ok": got == want,
                           "detail": f"read {_counts_text(got)}" + (
                               "; the manifest says the same" if got == want
                               else f"; the manifest says {_counts_text(want)}")})
    elif present:
        texts = _input_pass(present[0], {}, set(), tokens, defaultdict(Counter), notes)
    # without dedup's pass over the inputs, the first later stage's manifest gives each
    # domain's input
    counted = dedup is not None and texts is not None

    # filter: documents per rule from the manifest, tokens from removed/
    rules: list[str] = []
    filter_info: dict[str, Any] = {}
    if filt is not None:
        m = filt.data
        rules = list(m.get("removed_by_reason", {}))
        written, examples = _filter_removed(filt, tokens)
        cap = (m.get("removed_sample") or {}).get("per_rule")
        filter_info = {"rules": rules, "removed_by_reason": m.get("removed_by_reason", {}),
                       "written": written, "examples": examples, "removed_sample": cap}
        for d, v in m.get("domains", {}).items():
            for r, n in v.get("removed", {}).items():
                docs[d]["filter:" + r] += int(n)
            docs[d]["rejected_filter"] += int(v.get("rejected", 0))
            if not counted:
                docs[d]["input"] += int(v.get("input", 0))
    if score is not None:
        _stream_tokens(score.file("removed"), "classifier", tokens)
        for d, v in score.data.get("domains", {}).items():
            docs[d]["classifier"] += int(v.get("removed", 0))
            docs[d]["rejected_score"] += int(v.get("rejected", 0))
            if not counted and filt is None:
                docs[d]["input"] += int(v.get("input", 0))

    # kept: the last stage's documents
    last = present[-1] if present else None
    kept_read = last is not None and os.path.isdir(last.file("documents"))
    if last is not None and not kept_read:
        # `curate run` with data_output: the kept documents stayed where the stage wrote them
        notes.append(f"Kept tokens are not available: the {last.name} stage's documents are "
                     f"not in the run directory (its data went to data_output).")
        if last.name == "dedup":
            docs[UNKNOWN_DOMAIN]["kept"] += int(last.data["counts"].get("kept", 0))
        else:
            for d, v in last.data.get("domains", {}).items():
                docs[d]["kept"] += int(v.get("kept", 0))
    if kept_read:
        kept = _stream_tokens(last.file("documents"), "kept", tokens)
        if last.name == "dedup":
            for d, k in kept.items():
                docs[d]["kept"] += k
                if not counted:
                    docs[d]["input"] += k
        else:
            for d, v in last.data.get("domains", {}).items():
                docs[d]["kept"] += int(v.get("kept", 0))
    _chain_checks(dedup, filt, score, checks)

    return _assemble(rd, docs, toks, rules, dedup, filt, score, texts is not None, clusters,
                     texts or {}, filter_info, notes, checks, counter, kept_read)


def _chain_checks(dedup, filt, score, checks) -> None:
    ran = [(st.name, st.data["counts"]) for st in (dedup, filt, score) if st is not None]
    for lk in chain_links(ran):
        checks.append({"name": f"{lk['to']} read what {lk['from']} kept", "ok": lk["ok"],
                       "detail": f"{lk['from']} kept {_num(lk['kept'])}, {lk['to']} read {_num(lk['read'])}"})
    for st in (dedup, filt, score):
        if st is not None and "balance" in st.data:
            checks.append({"name": f"{st.name} manifest balances (input = kept + removed + rejected)",
                           "ok": bool(st.data["balance"].get("ok")),
                           "detail": _balance_text(st.data["balance"])})


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


_COUNT_WORDS = {"input": "in", "removed_exact": "exact duplicates", "removed_near": "near duplicates",
                "rejected": "rejected"}


def _counts_text(c: dict) -> str:
    return ", ".join(f"{v:,} {_COUNT_WORDS.get(k, k.replace('_', ' '))}" for k, v in c.items())


def _balance_text(b: dict) -> str:
    """A manifest's balance record in words (it holds input and kept_plus_removed_plus_rejected)."""
    rest = b.get("kept_plus_removed_plus_rejected")
    if isinstance(b.get("input"), int) and isinstance(rest, int):
        return f"input {b['input']:,} {'=' if b['input'] == rest else '≠'} kept + removed + rejected {rest:,}"
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(b.items()) if k != "ok")


def _assemble(rd, docs, toks, rules, dedup, filt, score, inputs_read, clusters, texts,
              filter_info, notes, checks, counter, kept_read=True) -> dict:
    removed_rules = [r for r in rules if sum(docs[d]["filter:" + r] for d in docs)]
    extraction = [EXTRACTION + c for c in sorted(WARC_CAUSES) if sum(docs[d][EXTRACTION + c] for d in docs)]
    keys = ["input", *extraction, "exact_duplicate", "near_duplicate",
            *("filter:" + r for r in removed_rules), "classifier", "rejected", "not_on_file", "kept"]
    ran = {"exact_duplicate": dedup, "near_duplicate": dedup, "classifier": score}
    partial = []
    if filt is not None and filter_info.get("removed_sample") is not None:
        by_reason = filt.data.get("removed_by_reason", {})
        written = filt.data.get("removed_sample", {}).get("written_by_reason", {})
        partial = ["filter:" + r for r in removed_rules if written.get(r, 0) < by_reason.get(r, 0)]

    def table(d: str) -> dict:
        v, t = docs[d], toks[d]
        dv: dict[str, int | None] = {}
        tv: dict[str, int | None] = {}
        for k in keys:
            if k in ran and ran[k] is None:
                dv[k] = tv[k] = None
                continue
            if k == "rejected":
                dv[k] = v["rejected_dedup"] + v["rejected_filter"] + v["rejected_score"]
                tv[k] = 0        # no text: malformed records; failed ones are not on file
            elif k.startswith(EXTRACTION):
                dv[k], tv[k] = v[k], 0   # no document, so no text
            elif k == "not_on_file":
                dv[k] = None
            else:
                dv[k] = v[k]
                tv[k] = t[k]
        if inputs_read:
            tv["not_on_file"] = tv["input"] - sum(x or 0 for k, x in tv.items()
                                                   if k not in ("input", "not_on_file"))
        else:   # the texts of the input and of what dedup removed are not at hand
            for k in ("input", "exact_duplicate", "near_duplicate", "not_on_file"):
                tv[k] = None
        if not kept_read:
            tv["kept"] = tv["not_on_file"] = None
        parts = sum(x or 0 for k, x in dv.items() if k != "input")
        return {"documents": dv, "tokens": tv, "balanced": dv["input"] == parts}

    domains = {d: table(d) for d in sorted(docs)}
    total_docs = {k: _sum(domains[d]["documents"][k] for d in domains) for k in keys}
    total_toks = {k: _sum(domains[d]["tokens"][k] for d in domains) for k in keys}
    total = {"documents": total_docs, "tokens": total_toks,
             "balanced": all(v["balanced"] for v in domains.values())}
    checks.append({"name": "every domain's documents balance: input = "
                           + ("each extraction cause + " if extraction else "")
                           + "exact + near + each rule + classifier + rejected + kept",
                   "ok": total["balanced"] and bool(domains),
                   "detail": ", ".join(f"{d}: {'ok' if v['balanced'] else 'NO'}"
                                       for d, v in domains.items()) or "no stage ran"})
    why, notes_more = _not_on_file(filt, score, partial, total_docs, dedup)
    notes.extend(notes_more)
    labels = {k: ROW_LABELS.get(k) or (EXTRACTION_LABELS[k[len(EXTRACTION):]] if k.startswith(EXTRACTION)
                                       else "filter " + k.split(":", 1)[-1]) for k in keys}
    labels["not_on_file"] = ("not on file: " + " + ".join(short for short, _ in why) if why
                             else "not on file (none expected)")
    residual = {d: v["tokens"]["not_on_file"] for d, v in domains.items()
                if v["tokens"]["not_on_file"] is not None}
    if residual:
        # what no file keeps is never negative, and is nothing when nothing explains it
        bad = {d: x for d, x in residual.items() if x < 0 or (x and not why)}
        checks.append({"name": "tokens: input = the rows with text on file + what the notes say is "
                               "not on file" if why else
                               "tokens: input = the rows with text on file (nothing is expected "
                               "off file)",
                       "ok": not bad,
                       "detail": ", ".join(f"{d}: {x:,} tokens not on file" for d, x in bad.items())
                       or "every domain: " + ("none negative" if why else "0 not on file")})
    return {
        "funnel": {"rows": keys, "labels": labels, "domains": domains, "total": total,
                   "tokens": counter.info(), "tokens_partial": partial,
                   "stages": [s.name for s in (dedup, filt, score) if s is not None],
                   "notes": notes},
        "clusters": _clusters_section(dedup, clusters, texts, inputs_read),
        "filter_rules": filter_info,
        "checks": checks,
    }


def _sum(values: Iterable[int | None]) -> int | None:
    vals = list(values)
    return None if vals and all(v is None for v in vals) else sum(v or 0 for v in vals)


def _not_on_file(filt, score, partial, total_docs, dedup) -> tuple[list[tuple[str, str]], list[str]]:
    """What the "not on file" token row holds in this run, as (short, long) phrases, and
    the funnel's notes."""
    out = []
    if dedup is None:
        out.append("Dedup did not run: the funnel starts at the first stage that did, and "
                   "has no duplicate rows.")
    if filt is None:
        out.append("The filter did not run: the funnel has no filter rows.")
    if score is None:
        out.append("Scoring did not run: the funnel has no classifier row.")
    why: list[tuple[str, str]] = []
    edited = filt.data["counts"].get("edited") if filt is not None else 0
    if edited and filt.data.get("tallies"):      # PII redaction edits text too
        why.append(("text the filters edited (lines cut, PII replaced)",
                    f"the text the filters changed in {edited:,} documents (lines the line-level "
                    f"rules cut, PII replaced by placeholders)"))
    elif edited:
        why.append(("lines cut by line-level rules",
                    f"the lines the filter's line-level rules cut from {edited:,} documents"))
    if partial:
        cap = filt.data["removed_sample"]["per_rule"]
        why.append((f"removed documents --removed-sample {cap} did not write",
                    f"the removed documents that --removed-sample {cap} did not write "
                    f"(rules {', '.join(p.split(':', 1)[1] for p in partial)}: their rows count "
                    f"only the documents written, so they are lower bounds)"))
    if total_docs.get("rejected"):
        out.append("Rejected records count 0 tokens: a malformed record has no text, and the "
                   "text of a document a filter or the model failed on is not kept.")
        if (filt is not None and filt.data["counts"].get("rejected")) or \
                (score is not None and score.data["counts"].get("rejected")):
            why.append(("documents rejected mid-chain",
                        "the text of documents rejected by a filter or score error"))
    out.append("Tokens not on file (input minus every row whose text a file keeps): "
               + ("; ".join(long for _, long in why) if why
                  else "nothing in this run should be off file, so the row is 0 (checked)") + ".")
    return why, out


def differs(diff: dict) -> bool:
    """Whether a word_diff shows any difference between its two sides."""
    return any(op != "=" for op, _ in diff["left"] + diff["right"])


def _cluster_examples(clusters, texts) -> tuple[list[dict], int]:
    """Up to CLUSTER_EXAMPLES clusters, each once: among the candidates in rule order, the
    kept document beside the removed member whose text differs most from it (lowest
    similarity, then id). A cluster whose members read identical in the compared words
    is passed over (returned: how many were); without texts, the first clusters by rule
    with their first removed member and no diff."""
    examples, identical = [], 0
    for cid in choose_clusters(clusters, CLUSTER_CANDIDATES):
        if len(examples) == CLUSTER_EXAMPLES:
            break
        kept, removed = _candidate_members(clusters[cid])
        if kept is None or not removed:
            continue
        kt = texts.get((kept["source"], kept["line"]))
        ex = {"cluster_id": cid, "size": len(clusters[cid]), "kept": {"id": kept["id"]},
              "removed_in_cluster": sum(not m["kept"] for m in clusters[cid])}
        if kt is None:
            m = removed[0]
            ex["shown"] = {"id": m["id"], "reason": m["reason"]}
            examples.append(ex)
            continue
        ex["kept"]["domain"] = kt["domain"]
        diffs = [(word_diff(kt["text"], mt["text"]), m, mt) for m in removed
                 if (mt := texts.get((m["source"], m["line"]))) is not None]
        diffs = [x for x in diffs if differs(x[0])]
        if not diffs:
            identical += 1
            continue
        d, m, mt = min(diffs, key=lambda x: (x[0]["similarity"], x[1]["id"]))
        ex["shown"] = {"id": m["id"], "reason": m["reason"], "domain": mt["domain"], "diff": d}
        examples.append(ex)
    return examples, identical


LARGEST_CLUSTERS = 5


def _largest(clusters: dict[str, list[dict]]) -> list[dict]:
    """The largest clusters (ties by id), each with the spread of its removed members'
    Jaccard with the kept document (clusters/ `jaccard`, where the run wrote it) and
    its least similar pair."""
    out = []
    for cid in sorted(clusters, key=lambda c: (-len(clusters[c]), c))[:LARGEST_CLUSTERS]:
        ms = clusters[cid]
        js = sorted((m["jaccard"], m["id"]) for m in ms if not m["kept"] and m.get("jaccard") is not None)
        kept = next((m["id"] for m in ms if m["kept"]), None)
        row = {"cluster_id": cid, "size": len(ms), "kept": kept, "jaccard": None, "pair": None}
        if js:
            vals = [j for j, _ in js]
            row["jaccard"] = {"min": vals[0], "median": statistics.median(vals), "max": vals[-1]}
            row["pair"] = {"kept": kept, "member": js[0][1], "jaccard": js[0][0]}
        out.append(row)
    return out


def _clusters_section(dedup, clusters, texts, inputs_read) -> dict:
    if dedup is None:
        return {"ran": False}
    sizes = Counter(len(ms) for ms in clusters.values())
    reasons = Counter(m["reason"] for ms in clusters.values() for m in ms if not m["kept"])
    examples, identical = _cluster_examples(clusters, texts)
    return {"ran": True, "clusters": len(clusters),
            "documents_in_clusters": sum(len(ms) for ms in clusters.values()),
            "removed_by_reason": dict(sorted(reasons.items())),
            "size_histogram": [[k, v] for k, v in sorted(sizes.items())],   # [size, clusters]
            "examples": examples,
            "largest": _largest(clusters),
            "kept_check": dedup.data.get("kept_check"),
            "identical_passed_over": identical,
            "texts_available": inputs_read,
            "threshold": ((dedup.data.get("parameters") or {}).get("lsh") or {}).get("threshold")}
