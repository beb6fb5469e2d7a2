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

Scale: everything is held in memory (texts as Python strings, and once encoded the
token ids as int32 arrays, about 4 bytes per token). That suits the demo corpus
(9 MB of text, about 3M tokens) and corpora up to a few GB on one machine; a larger
corpus should be sampled per domain before the search (the proxy runs only ever draw
a few million tokens).
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

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


def split_documents(docs_by_domain: Mapping[str, Iterable[Document]], *, seed: int = 0,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    group_field: str | None = None) -> dict[str, dict[str, DomainSplit]]:
    """``{split: {domain: DomainSplit}}`` by the split rule of the module docstring."""
    fr = _check_fractions(fractions)
    out: dict[str, dict[str, DomainSplit]] = {s: {} for s in SPLITS}
    for domain in sorted(docs_by_domain):
        groups: dict[str, list[Document]] = {}
        for d in docs_by_domain[domain]:
            key = d.id
            if group_field is not None:
                g = d.meta.get(group_field)
                if isinstance(g, (str, int)) and not isinstance(g, bool) and str(g):
                    key = str(g)
            groups.setdefault(key, []).append(d)
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

    def domain_infos(self, tokenizer: Tokenizer, extra: Mapping[str, Mapping[str, float]] | None = None
                     ) -> list[DomainInfo]:
        """One `DomainInfo` per domain (sorted): documents, UTF-8 bytes and tokens of the
        train split (what a proxy run can draw from); `extra` per domain if given."""
        enc = self.encoded(tokenizer)["train"]
        extra = extra or {}
        return [DomainInfo(name=d, documents=enc[d].documents, bytes=enc[d].n_bytes,
                           tokens=enc[d].n_tokens, extra=dict(extra.get(d, {})))
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
                   fs=None) -> CorpusSplits:
    """The corpus a mix config's data keys name: ``demo``, ``sources`` or ``inputs``."""
    if data.get("demo"):
        from curation.demo import demo_glob
        return load_corpus([demo_glob()], fields=fields, seed=seed, fractions=fractions, fs=fs)
    if data.get("sources"):
        return load_corpus(domains=data["sources"], fields=fields, seed=seed, fractions=fractions, fs=fs)
    return load_corpus(data["inputs"], fields=fields, seed=seed, fractions=fractions, fs=fs)


def load_corpus(inputs: str | Sequence[str] | None = None, *,
                domains: Mapping[str, str | Sequence[str]] | None = None,
                fields: FieldMap = FieldMap(), seed: int = 0,
                fractions: Sequence[float] = DEFAULT_FRACTIONS,
                group_field: str | None = None, fs=None) -> CorpusSplits:
    """Read documents and split them (see the module docstring).

    Give `inputs` (paths, globs, directories; each document's domain from its record)
    or `domains` (``{domain: glob or [globs]}``; the domain of every document of the
    matched files), or both; `fs` (a curation.fs.FS) is where they are (default: the
    local disk). A document without a domain, or a file matched for two
    domains, is a ValueError naming it. Malformed records are counted by cause in
    ``CorpusSplits.rejected``, not read."""
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

    by_domain: dict[str, list[Document]] = {}
    rejected: dict[str, int] = {}
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
            by_domain.setdefault(rec.domain, []).append(rec)
    if not by_domain:
        raise ValueError("no documents were read")
    fr = _check_fractions(fractions)
    return CorpusSplits(split_documents(by_domain, seed=seed, fractions=fr, group_field=group_field),
                        seed=seed, fractions=fr, group_field=group_field,
                        rejected=dict(sorted(rejected.items())))
