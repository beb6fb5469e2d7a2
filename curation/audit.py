"""`curate dedup-audit`: a person checks a dedup run's decisions in about ten minutes.

`build_audit(OUT, AUDIT)` draws a seeded, stratified sample of document pairs from a
`curate dedup` output and writes

- AUDIT/pairs.json: every sampled pair (its stratum, the stratum's population, the
  estimated Jaccard, both documents' id, source, line and text), the run's settings
  and a fingerprint of the sample;
- AUDIT/audit.html: one self-contained page showing each pair side by side with the
  word differences highlighted, a same / different / unsure choice per pair, and a
  button that saves the choices as choices.json (kept in the browser meanwhile).

`score_audit(AUDIT)` turns the saved choices into the precision of the near-duplicate
removals and the recall near the threshold, with 95% intervals (AUDIT/score.json).

The pairs (t: the run's threshold, v: its verify threshold, both on the estimated
Jaccard of the run's own signatures):

- removed: every removed near duplicate with the document its cluster kept, in bands
  of their estimate: [0, v) (members that only chained to the kept document), [v, t)
  (accepted by the verify tolerance), [t, mid), [mid, 0.95), [0.95, 1]. Populations are
  exact. Exact duplicates are counted, not sampled: their normalised texts are equal.
- unmatched: candidate missed removals. Among a seeded sample of documents, LSH tuned
  to t - 0.15 finds the pairs in different clusters with an estimate of at least
  t - 0.15; every cluster (or single document) with such a pair to an earlier cluster
  is represented by its closest one, in [t - 0.15, v) (below the verify threshold) or
  [v, 1] (the verification would have accepted it: LSH never proposed the pair, or the
  run's check against the kept document split it). One per cluster, so that a group of
  variants split over c clusters counts c - 1 misses, in documents like the removals.
  Populations are scaled from the sample (exact when the sample is the whole corpus).

Memory: the cluster rows, the signatures of the kept documents of near-duplicate
clusters and of the document sample, one number per removed near duplicate; texts only
of the sampled pairs. No Beam: this runs where `curate report` does.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import json
import os
import re
from collections import defaultdict
from html import escape
from typing import Callable

import numpy as np
import xxhash

from curation.config import ConfigError
from curation.documents import Rejected
from curation.fs import write_atomic
from curation.io import read_documents
from curation.lsh import band_keys
from curation.minhash import MinHasher, estimate_jaccard
from curation.outputs import MANIFEST, read_manifest, verify_files
from curation.report.funnel import input_files_of, word_diff
from curation.report.rundir import rows

FORMAT = "curate-dedup-audit"
VERSION = 1
PAIRS, PAGE, CHOICES, SCORE = "pairs.json", "audit.html", "choices.json", "score.json"
OURS = (PAIRS, PAGE, CHOICES, SCORE)
CHOICE_VALUES = ("same", "different", "unsure")
TEXT_WORDS = 2000          # words of each document kept in pairs.json and shown
NEAR_MISS_WIDTH = 0.15     # unmatched pairs are searched from t - 0.15 up
CANDIDATE_MISS = 0.01      # LSH for that search misses a pair at its lower edge at most this often
FOLD_CONTEXT, FOLD_OVER = 25, 100   # runs of common words longer than FOLD_OVER show only their ends
HIGH = 0.95                # the top removed band: near-identical
BOOTSTRAP = 4000
_SIGN_BATCH = 1024
_WORD = re.compile(r"\S+")


class AuditError(ConfigError):
    """The audit cannot be built or scored as asked; `exit_code` 2 for a usage error,
    1 when the data no longer agree (inputs changed since the run)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------ strata

def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x not in (0.0, 1.0) else str(int(x))


def make_strata(threshold: float, verify_threshold: float, near_miss: bool = True) -> list[dict]:
    """The strata, lowest estimate first within each group: [lo, hi) bands (the last
    of each group closed at 1)."""
    t, v = threshold, min(verify_threshold, threshold)
    mid = round((t + HIGH) / 2, 4)
    cuts = [0.0] + ([v] if v < t else []) + [t] + ([mid, HIGH] if t < HIGH else []) + [1.0]
    why = {0.0: f"only chained to the kept document: estimate below the verify threshold {_fmt(v)}"
                if v < t else "estimate below the threshold"}
    if v < t:
        why[v] = f"accepted by the verify tolerance: estimate in [{_fmt(v)}, threshold {_fmt(t)})"
    strata = []
    for lo, hi in zip(cuts, cuts[1:]):
        closed = hi == 1.0
        sid = f"removed[{_fmt(lo)},{_fmt(hi)}{']' if closed else ')'}"
        strata.append({"id": sid, "group": "removed", "lo": lo, "hi": hi,
                       "label": "removed near duplicate and its kept document, " +
                                why.get(lo, f"estimate in [{_fmt(lo)}, {_fmt(hi)}{']' if closed else ')'}")})
    if near_miss:
        lo = max(0.0, t - NEAR_MISS_WIDTH)
        split = v if v > lo else t
        for a, b, what in ((lo, split, f"estimate in [{_fmt(lo)}, {_fmt(split)}): below the verify "
                                        f"threshold, so never matched"),
                           (split, 1.0, f"estimate at or above the verify threshold {_fmt(split)}, "
                                        f"yet apart: LSH never proposed the pair, or the run "
                                        f"split it off from the kept document")):
            closed = b == 1.0
            strata.append({"id": f"unmatched[{_fmt(a)},{_fmt(b)}{']' if closed else ')'}",
                           "group": "unmatched", "lo": a, "hi": b,
                           "label": "a cluster (or single document) left apart from an earlier "
                                    "one, by its closest pair to it: " + what})
    return strata


def _stratum_of(j: float, strata: list[dict]) -> dict | None:
    for s in strata:
        if s["lo"] <= j < s["hi"] or (s["hi"] == 1.0 and j == 1.0 and s["lo"] <= j):
            return s
    return None


def candidate_bands(lo: float, num_perm: int) -> tuple[int, int, float]:
    """(bands, rows, probability a pair at `lo` becomes a candidate): the most rows per
    band for which a pair at `lo` is missed at most CANDIDATE_MISS of the time."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        p = 1.0 - (1.0 - lo ** r) ** b
        if 1.0 - p <= CANDIDATE_MISS:
            return b, r, p
    return num_perm, 1, 1.0 - (1.0 - lo) ** num_perm


# ------------------------------------------------------------------ reading the run

def _check_out(out: str) -> dict:
    if not os.path.isdir(out):
        raise AuditError(f"{out} does not exist or is not a directory")
    m = read_manifest(out)
    if m is None:
        raise AuditError(f"{out} has no readable {MANIFEST}: give the output directory of "
                         f"`curate dedup` (in a `curate run` directory: RUN/dedup)")
    if m.get("command") != "dedup":
        raise AuditError(f"{out} is the output of `curate {m.get('command')}`, not of `curate dedup`")
    if m.get("status") != "complete":
        raise AuditError(f"{out}/{MANIFEST} says status {m.get('status')!r}: the dedup run did not "
                         f"complete; rerun it first")
    clusters = [rel for rel in (m.get("files") or {}) if rel.startswith("clusters/")]
    problems = verify_files(out, m.get("files") or {}, only=clusters)
    if problems:
        raise AuditError(f"{out}/clusters/ is not what the run wrote: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""), 1)
    return m


def _settings(m: dict) -> dict:
    p = m.get("parameters") or {}
    lsh, mh, cfg = p.get("lsh") or {}, p.get("minhash") or {}, p.get("config") or {}
    t = float(lsh.get("threshold", cfg.get("threshold", 0.8)))
    verify = lsh.get("verify", cfg.get("verify", "estimate"))
    v = float(lsh["verify_threshold"]) if verify == "estimate" and "verify_threshold" in lsh else t
    return {"threshold": t, "verify_threshold": v, "verify": verify,
            "num_perm": int(mh.get("num_perm", cfg.get("num_perm", 128))),
            "seed": int(mh.get("seed", cfg.get("seed", 1))),
            "ngram": int(mh.get("ngram", cfg.get("ngram", 5))),
            "char_ngrams": bool(mh.get("char_ngrams", cfg.get("char_ngrams", False))),
            "family": mh.get("family", cfg.get("family", "minhash")),
            "bands": lsh.get("bands"), "rows": lsh.get("rows")}


def _inputs(out: str, m: dict):
    listed = (m.get("parameters") or {}).get("files") or []
    if not listed:
        raise AuditError(f"{out}/{MANIFEST} lists no input files")
    for f in listed:
        path = f["path"]
        if "://" in path:
            raise AuditError(f"input {path} is not on this machine: dedup-audit re-reads the run's "
                             f"inputs locally")
        if not os.path.exists(path):
            rel = "" if os.path.isabs(path) else (" (a relative path: run dedup-audit from the "
                                                  "directory curate dedup ran in)")
            raise AuditError(f"input {path}, listed in {out}/{MANIFEST}, cannot be read now{rel}", 1)
        if f.get("bytes") is not None and os.path.isfile(path) and os.path.getsize(path) != f["bytes"]:
            raise AuditError(f"input {path} changed since the dedup run ({f['bytes']:,} bytes then, "
                             f"{os.path.getsize(path):,} now): its texts would not be the ones "
                             f"judged; rerun curate dedup", 1)
    spec = input_files_of(m, "dedup", [])
    if spec is None:   # checked above; kept for a clear message should the rules differ
        raise AuditError(f"the input files listed in {out}/{MANIFEST} cannot be read now", 1)
    return spec


def _read_clusters(out: str) -> tuple[dict, dict]:
    """(source, line) -> (cluster_id, kept, reason, id) for every cluster row, and
    cluster_id -> the keys of its kept rows (one, unless ids repeat in the corpus)."""
    member: dict[tuple, tuple] = {}
    kept_of: dict[str, list] = defaultdict(list)
    for r in rows(os.path.join(out, "clusters")):
        key = (str(r["source"]), int(r["line"]))
        cid = str(r["cluster_id"])
        member[key] = (cid, bool(r["kept"]), r.get("reason"), str(r["id"]))
        if r["kept"]:
            kept_of[cid].append(key)
    return member, dict(kept_of)


def _priority(seed: int, key: tuple) -> int:
    return xxhash.xxh64_intdigest(f"{key[0]}\x00{key[1]}".encode("utf-8", "surrogatepass"),
                                  seed=seed & 0xFFFFFFFFFFFFFFFF)


class _Pass1:
    """Signatures of near-duplicate clusters' kept documents, the estimate of every
    removed near duplicate against its kept document, and a bottom-k sample (by a
    seeded hash of (source, line)) of k documents with their signatures."""

    def __init__(self, mh: MinHasher, member: dict, kept_of: dict, near_clusters: set,
                 k: int, seed: int):
        self.mh, self.member, self.kept_of, self.near_clusters = mh, member, kept_of, near_clusters
        self.k, self.seed = k, seed
        self.kept_sig: dict[tuple, np.ndarray] = {}
        self.waiting: dict[str, list] = defaultdict(list)   # members read before their kept doc
        self.removed: dict[tuple, tuple] = {}               # member key -> (kept key, estimate)
        self.heap: list = []                # (-priority, key, signature, has words)
        self.pending: list = []
        self.documents = 0
        self.found: set = set()

    def add(self, doc) -> None:
        key = (doc.source, int(doc.line))
        self.documents += 1
        role = None
        m = self.member.get(key)
        if m is not None:
            self.found.add(key)
            cid, kept, reason, _ = m
            if cid in self.near_clusters and (kept or reason == "near_duplicate"):
                role = "kept" if kept else "near"
        prio = _priority(self.seed, key) if self.k else None
        sample = prio is not None and (len(self.heap) < self.k or prio < -self.heap[0][0])
        if role or sample:
            self.pending.append((key, doc.text, role, prio if sample else None))
            if len(self.pending) >= _SIGN_BATCH:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = self.mh.sign_batch([t for _, t, _, _ in self.pending])
        for (key, _, role, prio), sig, n in zip(self.pending, batch.signatures, batch.num_shingles):
            if role == "kept":
                self.kept_sig[key] = sig.copy()
                cid = self.member[key][0]
                for mk, msig in self.waiting.pop(cid, []):
                    self._member(mk, msig)
            elif role == "near":
                cid = self.member[key][0]
                if all(k in self.kept_sig for k in self.kept_of.get(cid, [])) and self.kept_of.get(cid):
                    self._member(key, sig)
                else:
                    self.waiting[cid].append((key, sig.copy()))
            if prio is not None:
                # a document without words stays in the sample (it is drawn like any
                # other) but pairs with nothing, as in the run's LSH
                item = (-prio, key, sig.copy(), bool(n > 0))
                if len(self.heap) < self.k:
                    heapq.heappush(self.heap, item)
                elif prio < -self.heap[0][0]:
                    heapq.heapreplace(self.heap, item)
        self.pending = []

    def _member(self, key, sig) -> None:
        cid = self.member[key][0]
        best = None
        for kk in self.kept_of.get(cid, []):
            if kk in self.kept_sig:
                j = float(estimate_jaccard(sig, self.kept_sig[kk]))
                if best is None or j > best[1]:
                    best = (kk, j)
        if best is not None:
            self.removed[key] = best

    def finish(self) -> None:
        self.flush()
        for cid, waiting in list(self.waiting.items()):
            for mk, msig in waiting:
                self._member(mk, msig)
        self.waiting.clear()


# ------------------------------------------------------------------ unmatched pairs

def _bucket_pairs(keys: np.ndarray) -> np.ndarray:
    """Every pair (i < j) sharing a key in some band, encoded i * n + j, unique."""
    n = keys.shape[0]
    out = []
    for j in range(keys.shape[1]):
        k = keys[:, j]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ends = np.r_[starts[1:], len(ks)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            idx = np.sort(order[s:e]).astype(np.int64)
            a, b = np.triu_indices(e - s, 1)
            out.append(idx[a] * n + idx[b])
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _unmatched_pairs(heap, member, kept_of, order_of, strata, num_perm) -> tuple[dict, dict]:
    """Among the sampled documents, every cluster (or single document) with a pair in
    the window to a document of an earlier cluster, by its closest such pair: one
    candidate missed removal each (a group of variants split over c clusters gives
    c - 1). Returns stratum id -> [(key in the earlier cluster, key in the later one,
    estimate)], and the search's facts."""
    um = [s for s in strata if s["group"] == "unmatched"]
    got: dict[str, list] = {s["id"]: [] for s in um}
    lo = min(s["lo"] for s in um)
    b, r, p = candidate_bands(max(lo, 1e-6), num_perm)
    info = {"candidate_bands": b, "candidate_rows": r,
            "candidate_probability_at_lower_edge": round(p, 4), "candidate_pairs": 0,
            "pairs_in_window": 0}
    items = sorted((x for x in heap if x[3]), key=lambda x: x[1])
    if len(items) < 2:
        return got, info
    keys = [x[1] for x in items]
    sigs = np.stack([x[2] for x in items])

    def home(k):   # a document's cluster, named by the position of the document it keeps
        m = member.get(k)
        return order_of(kept_of[m[0]][0]) if m is not None and kept_of.get(m[0]) else order_of(k)

    homes = [home(k) for k in keys]
    codes: dict = {}
    cl = np.array([codes.setdefault(h, len(codes)) for h in homes], dtype=np.int64)
    enc = _bucket_pairs(band_keys(sigs, b, r))
    info["candidate_pairs"] = int(len(enc))
    n = len(items)
    a, c = enc // n, enc % n
    apart = cl[a] != cl[c]
    a, c = a[apart], c[apart]
    best: dict = {}     # the later cluster -> (estimate, earlier doc, later doc)
    for s in range(0, len(a), 1 << 16):
        aa, cc = a[s:s + (1 << 16)], c[s:s + (1 << 16)]
        est = estimate_jaccard(sigs[aa], sigs[cc])
        for i, k, j in zip(aa.tolist(), cc.tolist(), est.tolist()):
            if j < lo:
                continue
            info["pairs_in_window"] += 1
            if homes[k] < homes[i]:
                i, k = k, i
            cand = (j, keys[i], keys[k])
            cur = best.get(homes[k])
            if cur is None or (cand[0], cur[1], cur[2]) > (cur[0], cand[1], cand[2]):
                best[homes[k]] = cand
    for j, ka, kb in best.values():
        got[_stratum_of(j, um)["id"]].append((ka, kb, j))
    return got, info


# ------------------------------------------------------------------ the sample

def allocate(budget: int, capacities: list[int]) -> list[int]:
    """`budget` spread equally over the strata with room, round robin from the first
    (lowest estimate); a stratum takes at most its capacity, the rest goes on."""
    alloc = [0] * len(capacities)
    while budget > 0:
        room = [i for i, c in enumerate(capacities) if alloc[i] < c]
        if not room:
            break
        for i in room:
            if budget == 0:
                break
            alloc[i] += 1
            budget -= 1
    return alloc


def _allocate_groups(sample: int, share: float, removed_caps: list[int], unmatched_caps: list[int]):
    n_un = int(round(sample * share)) if unmatched_caps else 0
    n_rem = sample - n_un
    rem = allocate(n_rem, removed_caps)
    un = allocate(n_un + (n_rem - sum(rem)), unmatched_caps) if unmatched_caps else []
    left = n_un + (n_rem - sum(rem)) - sum(un)
    if left > 0:
        rem = allocate(n_rem + left, removed_caps)
    return rem, un


def _draw(candidates: list, k: int, seed: int, index: int) -> list:
    candidates = sorted(candidates, key=lambda x: (x[0], x[1]))
    if k >= len(candidates):
        return candidates
    rng = np.random.default_rng([seed, index])
    pick = np.sort(rng.choice(len(candidates), size=k, replace=False))
    return [candidates[i] for i in pick.tolist()]


def _cut(text: str, words: int = TEXT_WORDS) -> tuple[str, int, bool]:
    """The text up to its `words`-th word, with its own spacing; its word count; cut?"""
    total = len(text.split())
    if total <= words:
        return text.strip(), total, False
    end = 0
    for i, m in enumerate(_WORD.finditer(text), 1):
        if i == words:
            end = m.end()
            break
    return text[:end].strip(), total, True


def _read_texts(files, fields, max_bytes, wanted: set) -> dict:
    """(source, line) -> {id, domain, text, words, truncated} for the wanted keys: pass 2,
    reading only the files that hold some, and each only as far as its last one."""
    by_source: dict[str, set] = defaultdict(set)
    for k in wanted:
        by_source[k[0]].add(k[1])
    out = {}
    for f in files:
        lines = by_source.get(f.path)
        if not lines:
            continue
        left = set(lines)
        with read_documents(f, fields, max_doc_bytes=max_bytes) as reader:
            for rec in reader:
                if isinstance(rec, Rejected) or rec.line not in left:
                    continue
                text, words, cut = _cut(rec.text)
                out[(rec.source, int(rec.line))] = {"id": str(rec.id), "domain": rec.domain,
                                                    "text": text, "words": words, "truncated": cut}
                left.discard(rec.line)
                if not left:
                    break
    missing = wanted - set(out)
    if missing:
        k = sorted(missing)[0]
        raise AuditError(f"{len(missing)} sampled documents were not found when the inputs were "
                         f"read again (first: {k[0]} line {k[1]}): did the inputs change?", 1)
    return out


def _fingerprint(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k not in ("fingerprint", "dedup_output")}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _write_atomic(path: str, data: str) -> None:
    write_atomic(path, data.encode("utf-8"))


def _dump(doc: dict) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def _prepare_audit_dir(audit: str, out: str) -> dict | None:
    """Check AUDIT may be written; returns the pairs.json already there (or None)."""
    ra, ro = os.path.realpath(audit), os.path.realpath(out)
    if ra == ro or ra.startswith(ro.rstrip("/") + "/"):
        raise AuditError(f"--output {audit} is inside the dedup output {out}: its files would be "
                         f"foreign to {out}/{MANIFEST} (and to curate verify); write it elsewhere")
    if os.path.exists(audit) and not os.path.isdir(audit):
        raise AuditError(f"--output {audit} is a file, not a directory")
    if not os.path.isdir(audit):
        return None
    foreign = sorted(n for n in os.listdir(audit)
                     if n not in OURS and not (n.startswith(".") and n.endswith(".tmp")))
    if foreign:
        raise AuditError(f"--output {audit} holds files that are not an audit's "
                         f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                         f"give a new or an earlier audit's directory")
    try:
        with open(os.path.join(audit, PAIRS), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _kept_choices(audit: str, earlier: dict) -> str:
    return (f"{audit}/{CHOICES} holds choices for the audit already in {audit} (fingerprint "
            f"{earlier.get('fingerprint')}), and this sample differs: move {CHOICES} away or "
            f"give another --output")


def build_audit(out: str, audit: str, *, sample: int = 200, seed: int = 0,
                near_miss_docs: int = 50_000, near_miss_share: float = 0.25,
                log: Callable[[str], None] = lambda m: None) -> dict:
    """Sample the pairs of the dedup output `out` and write AUDIT/pairs.json and
    AUDIT/audit.html (see the module's docstring); returns the pairs.json document."""
    if sample < 1:
        raise AuditError(f"--sample must be at least 1, got {sample}")
    if near_miss_docs < 0:
        raise AuditError(f"--near-miss-docs must be >= 0, got {near_miss_docs}")
    if not 0.0 <= near_miss_share <= 1.0:
        raise AuditError(f"--near-miss-share must be in [0, 1], got {near_miss_share}")
    params = {"sample": sample, "seed": seed, "near_miss_docs": near_miss_docs,
              "near_miss_share": near_miss_share, "text_words": TEXT_WORDS}
    m = _check_out(out)
    earlier = _prepare_audit_dir(audit, out)
    if earlier is not None and earlier.get("audit") != params and \
            os.path.exists(os.path.join(audit, CHOICES)):
        raise AuditError(_kept_choices(audit, earlier))
    st = _settings(m)
    files, fields, max_bytes = _inputs(out, m)
    counts = m.get("counts") or {}

    member, kept_of = _read_clusters(out)
    near_clusters = {v[0] for v in member.values() if v[2] == "near_duplicate"}
    n_exact = sum(1 for v in member.values() if v[2] == "exact_duplicate")
    n_near = sum(1 for v in member.values() if v[2] == "near_duplicate")
    log(f"dedup-audit: {len(member):,} cluster rows ({n_near:,} near and {n_exact:,} exact "
        f"duplicates removed); pass 1 over {len(files)} input file(s)")

    mh = MinHasher(num_perm=st["num_perm"], seed=st["seed"], ngram=st["ngram"],
                   char_ngrams=st["char_ngrams"], family=st["family"])
    p1 = _Pass1(mh, member, kept_of, near_clusters, near_miss_docs if near_miss_docs > 1 else 0, seed)
    for f in files:
        with read_documents(f, fields, max_doc_bytes=max_bytes) as reader:
            for rec in reader:
                if isinstance(rec, Rejected):
                    continue
                p1.add(rec)
    p1.finish()
    docs = p1.documents
    if counts.get("input_documents") is not None and docs != int(counts["input_documents"]):
        raise AuditError(f"the inputs hold {docs:,} documents now, the dedup run read "
                         f"{int(counts['input_documents']):,}: they changed since; rerun curate dedup", 1)
    lost = len(member) - len(p1.found)
    if lost:
        raise AuditError(f"{lost:,} documents of clusters/ were not found in the inputs by (source, "
                         f"line): the inputs changed since the run; rerun curate dedup", 1)
    if len(p1.removed) != n_near:
        raise AuditError(f"{n_near - len(p1.removed):,} removed near duplicates have no kept "
                         f"document in their cluster in clusters/: the output is damaged", 1)
    if counts.get("removed_near") is not None and n_near != int(counts["removed_near"]):
        raise AuditError(f"clusters/ holds {n_near:,} near duplicates, {out}/{MANIFEST} counts "
                         f"{int(counts['removed_near']):,}", 1)

    strata = make_strata(st["threshold"], st["verify_threshold"], near_miss=near_miss_docs > 1)
    pools: dict[str, list] = {s["id"]: [] for s in strata}
    rem_strata = [s for s in strata if s["group"] == "removed"]
    for mk, (kk, j) in p1.removed.items():
        pools[_stratum_of(j, rem_strata)["id"]].append((kk, mk, j))

    search: dict = {"documents_sampled": 0}
    if near_miss_docs > 1:
        index = {f.path: f.index for f in files}
        found, info = _unmatched_pairs(p1.heap, member, kept_of, lambda k: (index[k[0]], k[1]),
                                       strata, st["num_perm"])
        ms = len(p1.heap)
        # a simple random sample of ms of the docs documents holds a given pair with
        # probability ms(ms-1) / (docs(docs-1)): exact for a cluster left apart by one
        # pair, an overcount for one with several (and 1 when the sample is everything)
        scale = (docs * (docs - 1)) / (ms * (ms - 1)) if ms > 1 else None
        search = {"documents": docs, "documents_sampled": ms,
                  "asked": near_miss_docs, "pair_scale": scale, **info,
                  "window": [max(0.0, st["threshold"] - NEAR_MISS_WIDTH), 1.0]}
        for sid, lst in found.items():
            pools[sid] = lst
    for s in strata:
        s["available"] = len(pools[s["id"]])
        if s["group"] == "removed":
            s["population"] = len(pools[s["id"]])
            s["population_is_estimate"] = False
        else:
            s["found_in_sample"] = len(pools[s["id"]])
            sc = search.get("pair_scale")
            s["population"] = round(len(pools[s["id"]]) * sc, 1) if sc is not None else None
            s["population_is_estimate"] = True

    un_strata = [s for s in strata if s["group"] == "unmatched"]
    rem_alloc, un_alloc = _allocate_groups(sample, near_miss_share,
                                           [s["available"] for s in rem_strata],
                                           [s["available"] for s in un_strata])
    chosen = []
    for i, (s, k) in enumerate(zip(rem_strata + un_strata, rem_alloc + un_alloc)):
        s["sampled"] = k
        for a, b, j in _draw(pools[s["id"]], k, seed, i):
            chosen.append((s, a, b, j))
    del pools
    log(f"dedup-audit: {docs:,} documents read; {len(chosen)} pairs drawn "
        f"({sum(rem_alloc)} removed, {sum(un_alloc)} unmatched); pass 2 for their texts")

    texts = _read_texts(files, fields, max_bytes, {k for _, a, b, _ in chosen for k in (a, b)})
    order = np.random.default_rng([seed, 1 << 20]).permutation(len(chosen)).tolist()
    width = max(3, len(str(len(chosen))))
    pairs = []
    for n, i in enumerate(order, 1):
        s, a, b, j = chosen[i]
        pairs.append({"id": f"p{n:0{width}d}", "stratum": s["id"], "group": s["group"],
                      "estimated_jaccard": round(j, 6),
                      "a": {"source": a[0], "line": a[1], **texts[a]},
                      "b": {"source": b[0], "line": b[1], **texts[b]}})
    doc = {
        "format": FORMAT, "version": VERSION,
        "dedup": {"settings": st, "counts": {k: counts.get(k) for k in (
            "input", "input_documents", "kept", "removed_exact", "removed_near", "rejected")},
                  "kept_check": m.get("kept_check")},
        "audit": params,
        "exact_duplicates": {"removed": n_exact, "sampled": 0,
                             "why": "exact duplicates have the same normalised text (lower-cased "
                                    "words): nothing to judge, so they are counted, not sampled"},
        "unmatched_search": search,
        "strata": [{k: s[k] for k in ("id", "group", "label", "lo", "hi", "population",
                                      "population_is_estimate", "found_in_sample", "available",
                                      "sampled") if k in s} for s in strata],
        "pairs": pairs,
    }
    doc["fingerprint"] = _fingerprint(doc)
    doc["dedup_output"] = out
    if earlier is not None and earlier.get("fingerprint") != doc["fingerprint"] and \
            os.path.exists(os.path.join(audit, CHOICES)):
        raise AuditError(_kept_choices(audit, earlier))
    os.makedirs(audit, exist_ok=True)
    stale = os.path.join(audit, SCORE)
    if os.path.exists(stale) and (earlier or {}).get("fingerprint") != doc["fingerprint"]:
        os.remove(stale)       # the score of another sample
    _write_atomic(os.path.join(audit, PAIRS), _dump(doc))
    _write_atomic(os.path.join(audit, PAGE), render_page(doc))
    if not pairs:
        log("dedup-audit: nothing to judge: the run removed no near duplicates and no "
            "unmatched pair was found")
    log(f"dedup-audit: {len(pairs)} pairs -> {os.path.join(audit, PAGE)} (and {PAIRS}); "
        f"open the page, judge each pair, save the choices into {audit}, then run "
        f"curate dedup-audit {audit} --score")
    return doc


# ------------------------------------------------------------------ the page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f4f5f7;line-height:1.45}
.bar{position:sticky;top:0;z-index:2;background:#263238;color:#fff;padding:8px 20px;display:flex;gap:14px;align-items:center;flex-wrap:wrap}
.bar h1{font-size:17px;margin:0 8px 0 0}
.bar button,.bar label.load{font:inherit;font-size:14px;padding:4px 12px;border-radius:4px;border:1px solid #90a4ae;background:#eceff1;color:#222;cursor:pointer}
.bar label.load input{display:none}
#progress{font-weight:600}
#unsaved,#status{font-size:13px;color:#ffe082}
main{max-width:1400px;margin:0 auto;padding:8px 20px 60px}
.intro{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:6px 18px;margin:14px 0;font-size:14px}
.intro li{margin:3px 0}
article.pair{background:#fff;border:1px solid #d0d7de;border-left:6px solid #b0bec5;border-radius:6px;margin:16px 0;padding:6px 16px 10px}
article.pair[data-choice=same]{border-left-color:#2e7d32}
article.pair[data-choice=different]{border-left-color:#c62828}
article.pair[data-choice=unsure]{border-left-color:#f9a825}
article.pair h2{font-size:16px;margin:6px 0}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.doc{border:1px solid #e0e0e0;background:#fcfcfc;border-radius:4px;min-width:0}
.doc .meta{font-size:12px;color:#555;padding:4px 8px;border-bottom:1px solid #eee;word-break:break-all}
.doc .text{font-size:13px;padding:6px 8px;max-height:55vh;overflow:auto;word-break:break-word}
del{background:#ffd7d5;text-decoration:line-through}
ins{background:#ccf2d1;text-decoration:none}
p.same-words{font-size:12.5px;color:#666;margin:4px 0}
.fold{color:#607d8b;font-style:italic;font-size:12px}
.more{display:none}
article.whole .more{display:inline}
article.whole .fold{display:none}
button.whole{font-size:12px;margin-left:10px;padding:1px 8px}
fieldset.choice{border:0;padding:8px 0 0;margin:0;display:flex;gap:10px;align-items:center}
fieldset.choice legend{float:left;font-weight:600;margin-right:8px}
fieldset.choice label{border:1px solid #b0bec5;border-radius:4px;padding:3px 12px;cursor:pointer;user-select:none}
fieldset.choice label:has(input:checked){background:#263238;color:#fff}
"""

SCRIPT = """(function () {
  "use strict";
  var VALUES = ["same", "different", "unsure"];
  var audit = document.body.getAttribute("data-audit");
  var KEY = "curate-dedup-audit:" + audit;
  var pairs = Array.prototype.slice.call(document.querySelectorAll("article.pair"));
  var ids = pairs.map(function (p) { return p.id; });
  var choices = {}, unsaved = 0, store = null;
  try { store = window.localStorage; } catch (e) { store = null; }
  function say(msg) { document.getElementById("status").textContent = msg; }
  function keep() {
    if (!store) { say("this browser keeps nothing between visits: save your choices to a file"); return; }
    try { store.setItem(KEY, JSON.stringify(choices)); }
    catch (e) { say("the browser refused to keep the choices (" + e.name + "): save them to a file"); }
  }
  function restore() {
    if (!store) return;
    var saved = {};
    try { saved = JSON.parse(store.getItem(KEY) || "{}") || {}; } catch (e) { saved = {}; }
    ids.forEach(function (id) { if (VALUES.indexOf(saved[id]) >= 0) choices[id] = saved[id]; });
  }
  function show() {
    var n = 0;
    pairs.forEach(function (p) {
      var c = choices[p.id] || "";
      Array.prototype.forEach.call(p.querySelectorAll("input[type=radio]"), function (r) {
        r.checked = r.value === c;
      });
      p.setAttribute("data-choice", c);
      if (c) n++;
    });
    document.getElementById("progress").textContent = n + " of " + pairs.length + " judged";
    document.getElementById("unsaved").textContent =
      unsaved ? unsaved + " change" + (unsaved > 1 ? "s" : "") + " not saved to a file yet" : "";
  }
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.type === "radio" && t.name.indexOf("choice-") === 0 && VALUES.indexOf(t.value) >= 0) {
      choices[t.name.slice(7)] = t.value;
      unsaved++;
      keep();
      show();
    }
  });
  document.getElementById("save").addEventListener("click", function () {
    var ordered = {};
    ids.forEach(function (id) { if (choices[id]) ordered[id] = choices[id]; });
    var text = JSON.stringify({audit: audit, choices: ordered}, null, 1) + "\\n";
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
    a.download = "choices.json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 60000);
    unsaved = 0;
    show();
    say("choices.json saved: put it in the audit directory and run curate dedup-audit AUDIT --score");
  });
  document.getElementById("load").addEventListener("change", function (e) {
    var f = e.target.files[0];
    if (!f) return;
    var r = new FileReader();
    r.onload = function () {
      var d;
      try { d = JSON.parse(r.result); } catch (err) { say(f.name + " is not JSON: " + err.message); return; }
      if (!d || d.audit !== audit) {
        say(f.name + " holds the choices of another audit (" + String(d && d.audit) + "), not of " + audit);
        return;
      }
      var n = 0;
      ids.forEach(function (id) {
        var c = d.choices && d.choices[id];
        if (VALUES.indexOf(c) >= 0) { choices[id] = c; n++; }
      });
      keep();
      show();
      say(n + " choices loaded from " + f.name);
    };
    r.readAsText(f);
    e.target.value = "";
  });
  document.addEventListener("click", function (e) {
    var t = e.target;
    if (t.classList && t.classList.contains("whole")) {
      var p = t.closest("article.pair");
      var on = p.classList.toggle("whole");
      t.textContent = on ? "Show differences only" : "Show whole texts";
    }
  });
  document.getElementById("next").addEventListener("click", function () {
    var p = pairs.filter(function (x) { return !choices[x.id]; })[0];
    if (p) p.scrollIntoView({block: "start"}); else say("every pair is judged");
  });
  restore();
  show();
})();
"""

# no fetch of any kind; only this page's own script runs (by its hash)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; "
       f"img-src data:; form-action 'none'; base-uri 'none'")


def _e(s) -> str:
    return escape(str(s), quote=True)


def _segments(segs: list, tag: str) -> str:
    """Differences marked with `tag`; long runs of common words folded to their ends
    (the whole run stays in the page, shown by "Show whole texts")."""
    out = []
    for op, t in segs:
        if op != "=":
            out.append(f"<{tag}>{_e(t)}</{tag}>")
            continue
        w = t.split(" ")
        if len(w) <= FOLD_OVER:
            out.append(_e(t))
            continue
        head, mid, tail = w[:FOLD_CONTEXT], w[FOLD_CONTEXT:-FOLD_CONTEXT], w[-FOLD_CONTEXT:]
        out.append(f'{_e(" ".join(head))} <span class="fold">[… {len(mid):,} words the same on '
                   f'both sides …]</span><span class="more">{_e(" ".join(mid))}</span> '
                   f'{_e(" ".join(tail))}')
    return " ".join(out)


def _doc_meta(name: str, d: dict) -> str:
    words = (f"first {TEXT_WORDS:,} of {d['words']:,} words" if d["truncated"]
             else f"{d['words']:,} words")
    return (f'<div class="meta"><b>{name}</b> · id {_e(d["id"])} · {_e(d["source"])} line '
            f'{_e(d["line"])} · {words}</div>')


def _pair_html(p: dict, n: int, total: int) -> str:
    d = word_diff(p["a"]["text"], p["b"]["text"], limit=TEXT_WORDS)
    same = all(op == "=" for op, _ in d["left"] + d["right"])
    note = ('<p class="same-words">The shown words are the same on both sides: the texts differ '
            'only in spacing' + (" or after the shown words" if p["a"]["truncated"] or p["b"]["truncated"]
                                 else "") + ".</p>") if same else ""
    pid = _e(p["id"])
    radios = "".join(f'<label><input type="radio" name="choice-{pid}" value="{v}"> {v}</label>'
                     for v in CHOICE_VALUES)
    return (f'<article class="pair" id="{pid}" data-choice="">'
            f'<h2>Pair {n} of {total} <small>({pid})</small> <button type="button" class="whole">'
            f"Show whole texts</button></h2>{note}"
            f'<div class="sides"><div class="doc">{_doc_meta("A", p["a"])}'
            f'<div class="text">{_segments(d["left"], "del")}</div></div>'
            f'<div class="doc">{_doc_meta("B", p["b"])}'
            f'<div class="text">{_segments(d["right"], "ins")}</div></div></div>'
            f'<fieldset class="choice"><legend>Duplicates?</legend>{radios}</fieldset></article>')


def render_page(doc: dict) -> str:
    """audit.html: one file, inline CSS and script, every corpus text escaped."""
    st = doc["dedup"]["settings"]
    pairs = doc["pairs"]
    fp = _e(doc["fingerprint"])
    exact = doc["exact_duplicates"]["removed"]
    intro = (
        '<section class="intro">'
        f"<p>{len(pairs)} pairs of documents from a <code>curate dedup</code> run (threshold "
        f"{_fmt(st['threshold'])} on the Jaccard of word {st['ngram']}-grams, {st['num_perm']} "
        f"permutations). For each pair choose:</p><ul>"
        "<li><b>same</b>: one is a copy of the other with edits (boilerplate, navigation, a few "
        "changed or added sentences, truncation): keeping both adds nothing;</li>"
        "<li><b>different</b>: distinct content, even on the same subject or from the same template;</li>"
        "<li><b>unsure</b>: you cannot tell (not counted in the scores).</li></ul>"
        "<p>Words only in A are <del>struck through</del>, words only in B <ins>marked</ins>; long "
        "runs of words the two share are folded to their ends (<b>Show whole texts</b> unfolds "
        "them). The "
        "pairs are in random order and the page does not say why a pair was drawn (removed as a "
        "near duplicate, or left apart), so that it does not lead the choice. Texts longer than "
        f"{TEXT_WORDS:,} words are cut there. {exact:,} exact duplicates (same lower-cased words) "
        "were removed too: they are not sampled.</p>"
        "<p>Choices are kept in this browser as you go. When done, <b>Save choices</b> downloads "
        f"<code>choices.json</code>: put it in the audit directory and run <code>curate dedup-audit "
        f"AUDIT --score</code>. <b>Load choices</b> reads a saved file back. Audit {fp}.</p></section>")
    body = "".join(_pair_html(p, i, len(pairs)) for i, p in enumerate(pairs, 1))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Dedup audit {fp}</title><style>{CSS}</style></head>"
            f'<body data-audit="{fp}"><div class="bar"><h1>Dedup audit</h1>'
            '<span id="progress"></span><button type="button" id="save">Save choices</button>'
            '<label class="load">Load choices<input type="file" id="load" accept=".json,application/json">'
            '</label><button type="button" id="next">Next unjudged</button>'
            '<span id="unsaved"></span><span id="status"></span></div>'
            f"<main>{intro}{body}</main><script>{SCRIPT}</script></body></html>\n")


# ------------------------------------------------------------------ scoring

def wilson(same: int, n: int) -> list[float] | None:
    """The 95% Wilson score interval of same / n (SciPy's); None for no judgments."""
    if n == 0:
        return None
    from scipy.stats import binomtest
    ci = binomtest(same, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _load_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise AuditError(f"{path} does not exist ({what})") from None
    except (OSError, ValueError) as e:
        raise AuditError(f"{path} cannot be read as JSON ({what}): {e}") from None
    if not isinstance(d, dict):
        raise AuditError(f"{path} is not a JSON object ({what})")
    return d


def _read_choices(path: str, doc: dict) -> dict[str, str]:
    if not os.path.exists(path):
        raise AuditError(f"no choices at {path}: open audit.html, judge the pairs, press "
                         f"\"Save choices\" and put the downloaded choices.json there (or give "
                         f"--choices FILE)")
    c = _load_json(path, "the choices saved from audit.html")
    if c.get("audit") != doc["fingerprint"]:
        raise AuditError(f"{path} holds the choices of another audit ({c.get('audit')!r}); this "
                         f"audit is {doc['fingerprint']!r}: save the choices from this audit's page")
    ch = c.get("choices")
    if not isinstance(ch, dict):
        raise AuditError(f"{path} has no \"choices\" object")
    ids = {p["id"] for p in doc["pairs"]}
    unknown = sorted(set(ch) - ids)
    if unknown:
        raise AuditError(f"{path} names pairs this audit does not have: {', '.join(unknown[:5])}")
    bad = sorted(k for k, v in ch.items() if v not in CHOICE_VALUES and v not in (None, ""))
    if bad:
        raise AuditError(f"{path}: choice {ch[bad[0]]!r} for {bad[0]} is not one of "
                         f"{', '.join(CHOICE_VALUES)}")
    return {k: v for k, v in ch.items() if v}


def _interval(x: np.ndarray) -> list[float]:
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]


def score_audit(audit: str, choices: str | None = None) -> dict:
    """Precision and recall from the saved choices; writes AUDIT/score.json."""
    if not os.path.isdir(audit):
        raise AuditError(f"{audit} does not exist or is not a directory")
    doc = _load_json(os.path.join(audit, PAIRS), "written by curate dedup-audit --output")
    if doc.get("format") != FORMAT:
        raise AuditError(f"{audit}/{PAIRS} is not a dedup audit's pairs file")
    path = choices or os.path.join(audit, CHOICES)
    ch = _read_choices(path, doc)
    seed = int(doc["audit"]["seed"])

    tally = {s["id"]: {"same": 0, "different": 0, "unsure": 0, "unjudged": 0} for s in doc["strata"]}
    for p in doc["pairs"]:
        tally[p["stratum"]][ch.get(p["id"], "unjudged")] += 1
    strata = []
    for s in doc["strata"]:
        t = tally[s["id"]]
        n = t["same"] + t["different"]
        strata.append({"id": s["id"], "group": s["group"], "label": s["label"],
                       "population": s["population"], "population_is_estimate": s["population_is_estimate"],
                       "sampled": s["sampled"], **t, "judged": n,
                       "share_same": t["same"] / n if n else None, "wilson_95": wilson(t["same"], n)})
    rng = np.random.default_rng([seed, 7])
    notes = []

    def boot(s):
        return rng.binomial(s["judged"], s["share_same"], size=BOOTSTRAP) / s["judged"]

    removed = [s for s in strata if s["group"] == "removed"]
    total_removed = sum(s["population"] for s in removed)
    covered = [s for s in removed if s["population"] and s["judged"]]
    uncovered = [s for s in removed if s["population"] and not s["judged"]]
    precision = None
    prec_draws = None
    if covered:
        w = np.array([s["population"] for s in covered], dtype=float)
        shares = np.array([s["share_same"] for s in covered])
        prec_draws = sum(wi * boot(s) for wi, s in zip(w, covered)) / w.sum()
        lo = sum(wi * s["wilson_95"][0] for wi, s in zip(w, covered)) / w.sum()
        hi = sum(wi * s["wilson_95"][1] for wi, s in zip(w, covered)) / w.sum()
        precision = {"estimate": float((w * shares).sum() / w.sum()), "interval_95": _interval(prec_draws),
                     "conservative_range": [lo, hi],
                     "removed_near_duplicates": total_removed,
                     "covered_population": int(w.sum())}
        if uncovered:
            notes.append(f"{sum(s['population'] for s in uncovered):,} removed near duplicates are in "
                         f"strata with no judged pair ({', '.join(s['id'] for s in uncovered)}): the "
                         f"precision covers the other {int(w.sum()):,}.")
    elif total_removed:
        notes.append("No removed pair was judged same or different: no precision.")
    else:
        notes.append("The run removed no near duplicates: no precision to measure.")

    recall = None
    unmatched = [s for s in strata if s["group"] == "unmatched"]
    search = doc.get("unmatched_search") or {}
    if not unmatched:
        notes.append("The audit searched no unmatched pairs (--near-miss-docs 0): no recall.")
    elif precision is not None:
        missing = [s for s in unmatched if s["population"] and not s["judged"]]
        if missing:
            notes.append(f"Unmatched pairs were found but none judged in "
                         f"{', '.join(s['id'] for s in missing)}: no recall.")
        else:
            tp = total_removed * precision["estimate"]
            fn = sum(s["population"] * s["share_same"] for s in unmatched if s["population"])
            tp_d = total_removed * prec_draws
            fn_d = sum(s["population"] * boot(s) for s in unmatched if s["population"])
            rec_d = tp_d / np.maximum(tp_d + fn_d, 1e-12)
            fn_hi = sum(s["population"] * s["wilson_95"][1] for s in unmatched if s["population"])
            fn_lo = sum(s["population"] * s["wilson_95"][0] for s in unmatched if s["population"])
            tp_lo = total_removed * precision["conservative_range"][0]
            tp_hi = total_removed * precision["conservative_range"][1]
            recall = {"estimate": tp / (tp + fn) if tp + fn else None,
                      "interval_95": _interval(rec_d) if tp + fn else None,
                      "conservative_range": [tp_lo / (tp_lo + fn_hi) if tp_lo + fn_hi else 0.0,
                                             tp_hi / (tp_hi + fn_lo) if tp_hi + fn_lo else 1.0],
                      "true_positives": tp, "false_negatives": fn,
                      "window": search.get("window"),
                      "counts": "documents: TP the near duplicates removed rightly, FN the "
                                "clusters left apart from an earlier one whose closest pair "
                                "is judged same (one removal each)"}
            if not any(s["population"] for s in unmatched):
                notes.append(f"No unmatched pair in the window was found among the "
                             f"{search.get('documents_sampled', 0):,} sampled documents: recall "
                             f"near the threshold is 1 as far as this sample can see.")
    score = {"audit": doc["fingerprint"], "choices_file": os.path.abspath(path),
             "pairs": len(doc["pairs"]),
             "judged": {k: sum(t[k] for t in tally.values())
                        for k in ("same", "different", "unsure", "unjudged")},
             "strata": strata, "precision": precision, "recall": recall,
             "exact_duplicates": doc["exact_duplicates"],
             "bootstrap": {"resamples": BOOTSTRAP, "seed": [seed, 7],
                           "what": "stratified: each stratum's judged pairs resampled with "
                                   "replacement; stratum populations held fixed"},
             "notes": notes}
    _write_atomic(os.path.join(audit, SCORE), _dump(score))
    return score


def _r(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def score_lines(score: dict) -> list[str]:
    """The score as a short table, for the terminal."""
    j = score["judged"]
    lines = [f"{score['pairs']} pairs: {j['same'] + j['different']} judged ({j['same']} same, "
             f"{j['different']} different), {j['unsure']} unsure, {j['unjudged']} not judged"]
    w = max(len(s["id"]) for s in score["strata"]) if score["strata"] else 10
    lines.append(f"{'stratum':<{w}}  {'population':>10}  {'judged':>6}  {'same':>4}  "
                 f"{'share same':>10}  95% Wilson")
    for s in score["strata"]:
        pop = "-" if s["population"] is None else (
            f"~{s['population']:,.0f}" if s["population_is_estimate"] else f"{s['population']:,}")
        ci = "-" if s["wilson_95"] is None else f"{s['wilson_95'][0]:.2f}-{s['wilson_95'][1]:.2f}"
        lines.append(f"{s['id']:<{w}}  {pop:>10}  {s['judged']:>6}  {s['same']:>4}  "
                     f"{_r(s['share_same'], 2):>10}  {ci}")
    p, r = score["precision"], score["recall"]
    if p is not None:
        lines.append(f"precision of the {p['removed_near_duplicates']:,} near-duplicate removals: "
                     f"{_r(p['estimate'])} (95% {_r(p['interval_95'][0])}-{_r(p['interval_95'][1])}; "
                     f"every stratum at its Wilson bound: {_r(p['conservative_range'][0])}-"
                     f"{_r(p['conservative_range'][1])})")
    if r is not None and r["estimate"] is not None:
        win = r.get("window") or [None, None]
        lines.append(f"recall near the threshold: {_r(r['estimate'])} (95% {_r(r['interval_95'][0])}-"
                     f"{_r(r['interval_95'][1])}); TP {r['true_positives']:,.0f}, FN "
                     f"~{r['false_negatives']:,.0f}: counts only misses estimated at Jaccard >= "
                     f"{_r(win[0], 2)}")
    ex = score["exact_duplicates"]["removed"]
    lines.append(f"{ex:,} exact duplicates were removed too: not sampled (same normalised text)")
    lines.extend(score["notes"])
    return lines
