"""Which documents a grader sees: a deterministic sample, stratified by domain,
without exact duplicates.

Every document gets a key, a 64-bit hash of (seed, its exact-duplicate key); each
domain keeps its documents with the smallest keys (a bottom-k sample, one pass,
memory bounded by the sample). The same corpus and seed give the same sample in any
input order and on any machine (up to which copy of an exact duplicate stands for
it). Exact duplicates (same normalised text, as `curate dedup` defines them) share a
key and are sampled at most once, as their first occurrence in input order.
Documents are told apart by what they are, not by their id: two different texts under
one id are two documents, and both may be drawn (``SampleStats.shared_ids`` counts the
drawn documents whose id another drawn document also has; curate label keeps them
apart, see classifiers.labeling).

Allocation across domains is proportional to each domain's distinct documents
(largest remainders), with at least one per domain that has any, so that small
domains are present; ``allocation="equal"`` gives each domain the same share
(what a domain cannot fill goes to the others).
"""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import xxhash

from curation.documents import NO_DOMAIN, Document
from curation.minhash import exact_key
from curation.minhash.text import normalize


@dataclass
class SampleStats:
    seen: int = 0
    duplicates_skipped: int = 0
    shared_ids: int = 0     # drawn documents whose id another drawn document also has
    distinct_by_domain: dict[str, int] = field(default_factory=dict)
    sampled_by_domain: dict[str, int] = field(default_factory=dict)


def _allocate(sizes: dict[str, int], n: int, how: str) -> dict[str, int]:
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    doms = sorted(d for d, s in sizes.items() if s > 0)
    if how == "equal":
        share = dict.fromkeys(doms, 0)
        left, open_ = n, list(doms)
        while left and open_:
            each = max(left // len(open_), 1)
            for d in list(open_):
                take = min(each, sizes[d] - share[d], left)
                share[d] += take
                left -= take
                if share[d] == sizes[d]:
                    open_.remove(d)
                if not left:
                    break
        return share
    base = {d: 1 for d in doms} if n >= len(doms) else {}
    rest = n - len(base)
    pool = {d: sizes[d] - base.get(d, 0) for d in doms}
    pool_total = sum(pool.values())
    quota = {d: rest * pool[d] / pool_total for d in doms} if pool_total else dict.fromkeys(doms, 0)
    share = {d: base.get(d, 0) + int(quota[d]) for d in doms}
    left = n - sum(share.values())
    for d in sorted(doms, key=lambda d: (-(quota[d] - int(quota[d])), d))[:left]:
        share[d] += 1
    return share


def sample_documents(docs: Iterable[Document], n: int, *, seed: int = 0,
                     allocation: Literal["proportional", "equal"] = "proportional",
                     stats: SampleStats | None = None) -> list[Document]:
    """At most ``n`` distinct documents, stratified by domain; in (domain, key) order."""
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if allocation not in ("proportional", "equal"):
        raise ValueError(f"allocation must be 'proportional' or 'equal', got {allocation!r}")
    stats = stats if stats is not None else SampleStats()
    seen_keys: set[bytes] = set()
    heaps: dict[str, list] = {}
    for doc in docs:
        stats.seen += 1
        key = exact_key(normalize(doc.text).encode("utf-8"), doc.text)
        if key in seen_keys:
            stats.duplicates_skipped += 1
            continue
        seen_keys.add(key)
        dom = doc.domain or NO_DOMAIN
        stats.distinct_by_domain[dom] = stats.distinct_by_domain.get(dom, 0) + 1
        rank = xxhash.xxh3_64_intdigest(key, seed=seed)
        heap = heaps.setdefault(dom, [])
        # a max-heap of the n smallest ranks (negated); ties broken by the key bytes
        item = (-rank, _neg(key), doc)
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif n and item > heap[0]:
            heapq.heapreplace(heap, item)
    share = _allocate(stats.distinct_by_domain, n, allocation)
    out: list[Document] = []
    for dom in sorted(heaps):
        best = sorted(heaps[dom], reverse=True)[:share.get(dom, 0)]
        stats.sampled_by_domain[dom] = len(best)
        out.extend(doc for _, _, doc in best)
    ids = Counter(d.id for d in out)
    stats.shared_ids = sum(c for c in ids.values() if c > 1)
    return out


def _neg(key: bytes) -> bytes:
    # smaller keys first on equal ranks, inside a heap ordered by the negated rank
    return bytes(255 - b for b in key)
