"""Domain data for the mixture search: documents per domain, split into train / valid / test.

`load_corpus` reads documents through `curation.io` (JSONL/.gz/.zst, Parquet, Arrow,
saved `datasets` directories) and takes each document's domain from the record
(``FieldMap.domain_field``) or, given ``domains={domain: glob or [globs]}``, from the
pattern that matched its file (the mapping wins over the record).

The split rule (deterministic, independent of file order and of workers)
-----------------------------------------------------------------------
Within each domain, documents are grouped by a *split key*: their id, or the value of
``meta[group_field]`` when that is set and present (e.g. ``variant_of``, so that a
re-published variant lands in the same split as its original and cannot leak from
train into valid). Documents that share a key (the same id twice, a variant and its
original) always share a split. Each group gets the hash
``xxh3_64("{seed}\\0{domain}\\0{key}")``; groups are ranked by (hash, key), and the
lowest ``round(G * valid)`` of the domain's G groups go to valid, the next
``round(G * test)`` to test, the rest to train. Each split of a domain with at least
three groups gets at least one group when its fraction is positive, so a small
domain (30 chapters of a book) always has something to evaluate on. Valid and test
are disjoint by construction: every group is in exactly one split. Within a split,
documents are held in rank order (then id, then text), whatever the input order.

The sample (bounded memory, deterministic)
------------------------------------------
Only a bounded sample of each domain is held: with ``max_bytes`` (``load_corpus``)
the sample of a domain is the shortest prefix of its groups *in the split rule's
ranking* (hash, key) whose UTF-8 bytes reach ``max_bytes``; a domain that fits is held
whole, and then everything above holds exactly as without a bound. The prefix is
kept reservoir-style while reading: groups in a heap by rank, the highest evicted
while the rest still reach the bound, and a group ranked at or above one evicted
never admitted again. What it holds is a function of the documents only (not of
the file order or of who reads), and the groups it holds are whole. The split rule
then runs on the sample. Beside it, every document of the domain is counted
(``CorpusSplits.totals``: documents and bytes), so the statistics cover the whole
corpus; tokens of a sampled domain are estimated from the sample's bytes per token
(`CorpusSplits.domain_infos`). Memory: the sample (about ``max_bytes`` of text per
domain, twice that as Python strings, plus the token arrays once encoded), whatever
the corpus size.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import xxhash

from curation.documents import Document, Rejected
from curation.io import FieldMap, expand_inputs, read_documents
from curation.mixture.types import DomainInfo

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


class Tokenizer(Protocol):
    """What the data layer needs of a tokenizer (`curation.mixture.tokenizer.StatedTokenizer`)."""
    id: str

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class DomainSplit:
    """The documents of one domain in one split, in the split rule's order."""
    ids: tuple[str, ...]
    texts: tuple[str, ...]

    @property
    def documents(self) -> int:
        return len(self.texts)

    @property
    def bytes(self) -> int:
        return sum(len(t.encode("utf-8", "surrogatepass")) for t in self.texts)


@dataclass(frozen=True)
class EncodedDomain:
    """One domain split under a tokenizer: all token ids concatenated, document
    boundaries in `offsets` (document i is ``tokens[offsets[i]:offsets[i + 1]]``), and
    the UTF-8 bytes of each document (bits per byte divide by these)."""
    tokens: np.ndarray        # int32
    offsets: np.ndarray       # int64, documents + 1
    doc_bytes: np.ndarray     # int64, documents

    @property
    def documents(self) -> int:
        return len(self.doc_bytes)

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))

    @property
    def n_bytes(self) -> int:
        return int(self.doc_bytes.sum())

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def split_hash(seed: int, domain: str, key: str) -> int:
    """The split rule's hash of a group (see the module docstring)."""
    return xxhash.xxh3_64_intdigest(f"{seed}\0{domain}\0{key}".encode("utf-8", "surrogatepass"))


def _split_sizes(groups: int, fractions: tuple[float, float, float], domain: str) -> tuple[int, int]:
    _, f_valid, f_test = fractions
    n_valid = round(groups * f_valid)
    n_test = round(groups * f_test)
    if groups >= 3:
        if f_valid > 0:
            n_valid = max(1, n_valid)
        if f_test > 0:
            n_test = max(1, n_test)
    if groups - n_valid - n_test < 1:
        raise ValueError(f"domain {domain!r} has {groups} document group(s): too few for a train "
                         f"split beside valid {n_valid} and test {n_test} (fractions {fractions})")
    if (f_valid > 0 and n_valid == 0) or (f_test > 0 and n_test == 0):
        raise ValueError(f"domain {domain!r} has {groups} document group(s): at least 3 are needed "
                         f"to give train, valid and test one each")
    return n_valid, n_test


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(x) for x in fractions)
    if len(fr) != 3 or any(not math.isfinite(x) or x < 0 for x in fr) or abs(sum(fr) - 1) > 1e-9 \
            or fr[0] <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, valid, test) "
                         f"summing to 1 with train > 0, got {tuple(fractions)}")
    return fr


def _group_key(d: Document, group_field: str | None) -> str:
    if group_field is not None:
        g = d.meta.get(group_field)
        if isinstance(g, (str, int)) and not isinstance(g, bool) and str(g):
            return str(g)
    return d.id


def text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class _Group:
    """A split group in the sample's heap; the heap's top is the highest rank."""
    __slots__ = ("rank", "docs", "bytes")

    def __init__(self, rank: tuple[int, str]):
        self.rank, self.docs, self.bytes = rank, [], 0

    def __lt__(self, other: "_Group") -> bool:
        return self.rank > other.rank


class DomainSample:
    """The bounded sample of one domain (see "The sample" in the module docstring):
    `add` every document of the domain, in any order; `documents` is the sample,
    ``seen_documents`` / ``seen_bytes`` count them all."""

    def __init__(self, domain: str, seed: int, max_bytes: int | None, group_field: str | None = None):
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"the sample bound must be positive, got {max_bytes}")
        self.domain, self.seed, self.max_bytes, self.group_field = domain, seed, max_bytes, group_field
        self.seen_documents = self.seen_bytes = 0
        self.bytes = 0                          # held in the sample
        self._groups: dict[str, _Group] = {}
        self._heap: list[_Group] = []
        self._cut: tuple[int, str] | None = None   # lowest rank evicted: it and above stay out

    def add(self, doc: Document) -> None:
        n = text_bytes(doc.text)
        self.seen_documents += 1
        self.seen_bytes += n
        key = _group_key(doc, self.group_field)
        g = self._groups.get(key)
        if g is None:
            rank = (split_hash(self.seed, self.domain, key), key)
            if self._cut is not None and rank >= self._cut:
                return
            g = self._groups[key] = _Group(rank)
            heapq.heappush(self._heap, g)
        g.docs.append(doc)
        g.bytes += n
        self.bytes += n
        if self.max_bytes is not None:
            # evict the highest-ranked group while the others still reach the bound
            while len(self._heap) > 1 and self.bytes - self._heap[0].bytes >= self.max_bytes:
                top = heapq.heappop(self._heap)
                del self._groups[top.rank[1]]
                self.bytes -= top.bytes
                self._cut = top.rank if self._cut is None else min(self._cut, top.rank)

    @property
    def sampled(self) -> bool:
        """True when the sample holds less than the whole domain."""
        return self._cut is not None

    @property
    def documents(self) -> list[Document]:
        return [d for g in self._groups.values() for d in g.docs]


def split_documents(docs_by_domain: Mapping[str, Iterable[Document]], *, seed: int = 0,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    group_field: str | None = None) -> dict[str, dict[str, DomainSplit]]:
    """``{split: {domain: DomainSplit}}`` by the split rule of the module docstring."""
    fr = _check_fractions(fractions)
    out: dict[str, dict[str, DomainSplit]] = {s: {} for s in SPLITS}
    for domain in sorted(docs_by_domain):
        groups: dict[str, list[Document]] = {}
        for d in docs_by_domain[domain]:
            groups.setdefault(_group_key(d, group_field), []).append(d)
        ranked = sorted(groups, key=lambda k: (split_hash(seed, domain, k), k))
        n_valid, n_test = _split_sizes(len(ranked), fr, domain)
        parts = {"valid": ranked[:n_valid], "test": ranked[n_valid:n_valid + n_test],
                 "train": ranked[n_valid + n_test:]}
        for split, keys in parts.items():
            docs = []
            for k in keys:
                docs.extend(sorted(groups[k], key=lambda d: (d.id, d.text)))
            out[split][domain] = DomainSplit(tuple(d.id for d in docs), tuple(d.text for d in docs))
    return out


@dataclass
class CorpusSplits:
    """A corpus's domains split into train / valid / test (see the module docstring).

    ``splits[split][domain]`` is a `DomainSplit`; `encoded(tokenizer)` tokenizes every
    split once per tokenizer and keeps the arrays."""
    splits: dict[str, dict[str, DomainSplit]]
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    group_field: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)     # by cause, from the readers
    # the whole corpus per domain, {"documents", "bytes"}, read beside the sample;
    # empty when the splits were made from documents in memory (then the sample is all)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    max_bytes: int | None = None                # the sample's bound per domain
    _encoded: dict[str, dict[str, dict[str, EncodedDomain]]] = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def domains(self) -> list[str]:
        return sorted(self.splits["train"])

    def split(self, name: str) -> dict[str, DomainSplit]:
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.splits[name]

    def texts(self, split: str, domain: str) -> tuple[str, ...]:
        return self.split(split)[domain].texts

    def train_texts(self) -> list[str]:
        """Every train document's text, domains in sorted order (what tokenizers train on)."""
        return [t for d in self.domains for t in self.splits["train"][d].texts]

    def fingerprint(self) -> str:
        """sha256 over the split parameters and every document (domain, split, id, text
        hash): the identity of the data a search ran on."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"split-rule v1 seed={self.seed} fractions={self.fractions} "
                     f"group_field={self.group_field}\n".encode())
            for split in SPLITS:
                for domain in sorted(self.splits[split]):
                    part = self.splits[split][domain]
                    h.update(f"{split}\0{domain}\0{part.documents}\n".encode("utf-8", "surrogatepass"))
                    for i, t in zip(part.ids, part.texts):
                        h.update(i.encode("utf-8", "surrogatepass") + b"\0")
                        h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def encoded(self, tokenizer: Tokenizer) -> dict[str, dict[str, EncodedDomain]]:
        """``{split: {domain: EncodedDomain}}`` under `tokenizer` (computed once per tokenizer id)."""
        if tokenizer.id not in self._encoded:
            out: dict[str, dict[str, EncodedDomain]] = {}
            for split in SPLITS:
                out[split] = {}
                for domain in sorted(self.splits[split]):
                    texts = self.splits[split][domain].texts
                    ids = tokenizer.encode_batch(list(texts))
                    lengths = np.fromiter((len(x) for x in ids), np.int64, count=len(ids))
                    offsets = np.zeros(len(ids) + 1, np.int64)
                    np.cumsum(lengths, out=offsets[1:])
                    tokens = (np.concatenate(ids).astype(np.int32, copy=False) if ids
                              else np.zeros(0, np.int32))
                    doc_bytes = np.fromiter((len(t.encode("utf-8", "surrogatepass")) for t in texts),
                                            np.int64, count=len(texts))
                    out[split][domain] = EncodedDomain(tokens, offsets, doc_bytes)
            self._encoded[tokenizer.id] = out
        return self._encoded[tokenizer.id]

    def sample_documents(self, domain: str) -> int:
        return sum(self.splits[s][domain].documents for s in SPLITS if domain in self.splits[s])

    def sampled(self, domain: str) -> bool:
        """True when the splits hold a sample of the domain, not all of it."""
        t = self.totals.get(domain)
        return t is not None and t["documents"] > self.sample_documents(domain)

    def corpus_counts(self, tokenizer: Tokenizer) -> dict[str, dict]:
        """Per domain the whole corpus's ``{split: {documents, bytes, tokens}}`` plus
        ``tokens_estimated`` and ``sample_documents``. The held-out splits are all in
        the sample; train is every other document of the domain. For a sampled domain,
        train tokens = train bytes x the sample's tokens per byte (all its splits),
        rounded: an estimate from ``sample_documents`` documents."""
        enc = self.encoded(tokenizer)
        out = {}
        for d in self.domains:
            parts = {s: {"documents": enc[s][d].documents, "bytes": enc[s][d].n_bytes,
                         "tokens": enc[s][d].n_tokens} for s in SPLITS}
            sampled = self.sampled(d)
            if sampled:
                held = [parts[s] for s in SPLITS if s != "train"]
                tr = parts["train"]
                s_bytes = sum(p["bytes"] for p in parts.values())
                s_tokens = sum(p["tokens"] for p in parts.values())
                tr["documents"] = self.totals[d]["documents"] - sum(p["documents"] for p in held)
                tr["bytes"] = self.totals[d]["bytes"] - sum(p["bytes"] for p in held)
                tr["tokens"] = round(tr["bytes"] * s_tokens / s_bytes) if s_bytes else 0
            out[d] = {"splits": parts, "tokens_estimated": sampled,
                      "sample_documents": self.sample_documents(d)}
        return out

    def domain_infos(self, tokenizer: Tokenizer, extra: Mapping[str, Mapping[str, float]] | None = None
                     ) -> list[DomainInfo]:
        """One `DomainInfo` per domain (sorted): documents, UTF-8 bytes and tokens of the
        whole corpus's train split (`corpus_counts`: estimated tokens for a sampled
        domain; the proxy runs draw from its sample); `extra` per domain if given."""
        counts = self.corpus_counts(tokenizer)
        extra = extra or {}
        return [DomainInfo(name=d, documents=counts[d]["splits"]["train"]["documents"],
                           bytes=counts[d]["splits"]["train"]["bytes"],
                           tokens=counts[d]["splits"]["train"]["tokens"], extra=dict(extra.get(d, {})))
                for d in self.domains]

    def summary(self) -> dict:
        """Documents and bytes per split and domain (JSON-serialisable)."""
        return {s: {d: {"documents": p.documents, "bytes": p.bytes}
                    for d, p in sorted(self.splits[s].items())} for s in SPLITS}


def _as_list(x: str | os.PathLike | Sequence[str]) -> list[str]:
    if isinstance(x, (str, os.PathLike)):
        return [os.fspath(x)]
    return [os.fspath(p) for p in x]


def load_data_spec(data: Mapping, *, fields: FieldMap, seed: int, fractions: Sequence[float],
                   fs=None, max_bytes: int | None = None) -> CorpusSplits:
    """The corpus a mix config's data keys name: ``demo``, ``sources`` or ``inputs``."""
    kw = dict(fields=fields, seed=seed, fractions=fractions, fs=fs, max_bytes=max_bytes)
    if data.get("demo"):
        from curation.demo import demo_glob
        return load_corpus([demo_glob()], **kw)
    if data.get("sources"):
        return load_corpus(domains=data["sources"], **kw)
    return load_corpus(data["inputs"], **kw)


def data_spec_args(data: Mapping) -> tuple[list[str] | None, Mapping[str, str | Sequence[str]] | None]:
    """(inputs, domains) for `iter_corpus` from a mix config's data keys."""
    if data.get("demo"):
        from curation.demo import demo_glob
        return [demo_glob()], None
    if data.get("sources"):
        return None, data["sources"]
    return list(data["inputs"]), None


def iter_corpus(inputs: str | Sequence[str] | None = None, *,
                domains: Mapping[str, str | Sequence[str]] | None = None,
                fields: FieldMap = FieldMap(), fs=None,
                rejected: dict[str, int] | None = None) -> Iterator[Document]:
    """Every document of the inputs, its domain set, streaming: files in path order,
    records in file order. Malformed records are counted by cause into `rejected`.
    See `load_corpus` for `inputs`, `domains` and the errors."""
    if inputs is None and not domains:
        raise ValueError("load_corpus needs inputs or a {domain: glob} mapping")
    sources: list[tuple[str | None, list[str]]] = []
    if inputs is not None:
        sources.append((None, _as_list(inputs)))
    for domain, pats in sorted((domains or {}).items()):
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"domain names must be non-empty strings, got {domain!r}")
        sources.append((domain, _as_list(pats)))

    file_domain: dict[str, str | None] = {}
    for domain, pats in sources:
        for f in expand_inputs(pats, fs=fs):
            prev = file_domain.get(f.path, "\0unset")
            if prev != "\0unset" and prev is not None and domain is not None and prev != domain:
                raise ValueError(f"{f.path} is matched for two domains: {prev!r} and {domain!r}")
            if prev == "\0unset" or prev is None:
                file_domain[f.path] = domain
    files = expand_inputs(sorted(file_domain), fs=fs)
    if rejected is None:
        rejected = {}
    for f in files:
        mapped = file_domain[f.path]
        fm = fields if mapped is None else FieldMap(fields.text_field, fields.id_field,
                                                    fields.domain_field, mapped)
        for rec in read_documents(f, fm, fs=fs):
            if isinstance(rec, Rejected):
                rejected[rec.cause] = rejected.get(rec.cause, 0) + 1
                continue
            if not rec.domain:
                raise ValueError(f"{f.path}:{rec.line}: document {rec.id!r} has no domain "
                                 f"(field {fields.domain_field!r}); map its files to a domain "
                                 f"with domains={{name: glob}}")
            yield rec


def load_corpus(inputs: str | Sequence[str] | None = None, *,
                domains: Mapping[str, str | Sequence[str]] | None = None,
                fields: FieldMap = FieldMap(), seed: int = 0,
                fractions: Sequence[float] = DEFAULT_FRACTIONS,
                group_field: str | None = None, fs=None,
                max_bytes: int | None = None) -> CorpusSplits:
    """Read documents, sample and split them (see the module docstring).

    Give `inputs` (paths, globs, directories; each document's domain from its record)
    or `domains` (``{domain: glob or [globs]}``; the domain of every document of the
    matched files), or both; `fs` (a curation.fs.FS) is where they are (default: the
    local disk); `max_bytes` bounds each domain's sample (None: hold every document).
    A document without a domain, or a file matched for two domains, is a ValueError
    naming it. Malformed records are counted by cause in ``CorpusSplits.rejected``,
    not read."""
    fr = _check_fractions(fractions)
    samples: dict[str, DomainSample] = {}
    rejected: dict[str, int] = {}
    for rec in iter_corpus(inputs, domains=domains, fields=fields, fs=fs, rejected=rejected):
        s = samples.get(rec.domain)
        if s is None:
            s = samples[rec.domain] = DomainSample(rec.domain, seed, max_bytes, group_field)
        s.add(rec)
    if not samples:
        raise ValueError("no documents were read")
    by_domain = {d: s.documents for d, s in samples.items()}
    totals = {d: {"documents": s.seen_documents, "bytes": s.seen_bytes} for d, s in sorted(samples.items())}
    return CorpusSplits(split_documents(by_domain, seed=seed, fractions=fr, group_field=group_field),
                        seed=seed, fractions=fr, group_field=group_field,
                        rejected=dict(sorted(rejected.items())), totals=totals, max_bytes=max_bytes)
