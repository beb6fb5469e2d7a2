"""`curate dedup`: exact and MinHash-LSH near-duplicate removal as one Beam pipeline.

Data flow. Text is read twice and never shuffled; no per-document record crosses a
shuffle: keys and edges move as packed int64 arrays (curation.exchange), and what
must be grouped per key range is exchanged through work files in OUTPUT/_work, one
keys file per unit (and per CHUNK_DOCS documents of it) holding every partition's
keys as a byte range, so the files written grow with the units, not units times
partitions (on an object store each file is a paid write):

  units ─ SignUnit: signatures, ids (and shingles for --verify exact) into a side
  │       file per unit; exact keys and band keys cut by key partition into ranges
  │       of a keys file
  ├─ partitions 0..P-1 ─ GroupPartition (after every unit is signed): read the
  │   partition's range of every unit's keys files;
  │   ├─ exact groups: the first occurrence represents, the rest get an edge to it
  │   └─ LSH buckets: each member linked to the bucket's minimum ordinal
  ├─ candidate edges, grouped by the pair of files they join ─ VerifyEdges reads
  │   just those rows of the two side files and keeps edges whose Jaccard
  │   (estimated, or exact) reaches the threshold (on an object store: two hops,
  │   FetchFirst and VerifySecond, the first document's rows shuffled to the second's;
  │   build_dedup's verify_by)
  ├─ exact + verified edges ─ large-star/small-star rounds on edge arrays ─ (node, root)
  ├─ labels grouped by the root's file ─ each member checked against its root (members
  │   that only chain to it are split off: resolve_against_kept) ─ the roots' ids (on
  │   an object store the members' rows come with their labels: FetchMembers)
  └─ decisions grouped per input file ─ WriteShard re-reads that file and writes kept
     documents, cluster rows and rejected records

Per document, the work files hold its exact key and ordinal (24 bytes) and one
band key with its band and ordinal per band (17 bytes each); the shuffles hold only edges,
whose number grows with the duplicates, not the corpus.

Keep rule: each cluster keeps its minimum node, i.e. the first occurrence in input
order (inputs sorted by path, then line or row); every other member that reaches
the kept-check threshold with it is removed as an exact duplicate (same normalised
text as an earlier document) or a near duplicate, and its `cluster_id` is the kept
document's id.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput

from curation.components import large_star_arrays, small_star_arrays
from curation.documents import RECORD_BITS, Rejected
from curation.exchange import (SideFile, SideFileWriter, concat, pack, partition_of, split_by,
                               unique_pairs, unpack)
from curation.config import DEFAULT_SPLIT_BYTES
from curation.fs import is_remote, read_range, writing
from curation.io import (REJECTED_SCHEMA, FieldMap, InputFile, file_shard_name, read_documents,
                         rejected_row, write_documents, write_rows)
from curation.lsh import band_keys, bucket_min_edges, exact_jaccard
from curation.minhash import MinHasher, estimate_jaccard

from pipelines.fs import BeamFS
from pipelines.splits import ReadySplits

NS = "curation.dedup"
WORK_DIR = "_work"
# documents whose keys a signing worker holds before writing them out
CHUNK_DOCS = 1 << 18
# build_dedup's verify_by when the caller gives none (None: by where the work folder is)
VERIFY_BY: str | None = None

CLUSTER_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    # the removed member's Jaccard with the kept document, by the --verify measure (the
    # signature estimate, or exact); null for the kept one and with --verify none
    pa.field("jaccard", pa.float64()),
])

# --against: which indexed document a removed one matched, and in which index
CLUSTER_SCHEMA_AGAINST = CLUSTER_SCHEMA.append(pa.field("matched_id", pa.string())).append(
    pa.field("matched_index", pa.string()))

EXACT, NEAR = "exact_duplicate", "near_duplicate"
EXACT_INDEX, NEAR_INDEX = "exact_duplicate_of_index", "near_duplicate_of_index"
_REMOVED = {EXACT: "removed_exact", NEAR: "removed_near", EXACT_INDEX: "removed_exact_index",
            NEAR_INDEX: "removed_near_index"}
_I64 = np.dtype(np.int64)
_U64 = np.dtype(np.uint64)
_EDGE = {"a": _I64, "b": _I64}


def _counter(name):
    return Metrics.counter(NS, name)


def file_of(ordinals: np.ndarray) -> np.ndarray:
    return np.asarray(ordinals, dtype=np.int64) >> RECORD_BITS


def unit_key(file: InputFile) -> str:
    """A work item's name in the work folder: its file, and its part when split."""
    return f"{file.index:06d}-{file.part:05d}" if file.is_split else f"{file.index:06d}"


class _Units:
    """Where each ordinal lives, from the signing pass's records: the units' ordinal
    ranges are disjoint and ordered like the ordinals themselves."""

    def __init__(self, signed):
        units = sorted((r for r in signed if r[2]), key=lambda r: r[3])
        self.keys = [tuple(r[0]) for r in units]
        self.stems = [r[1] for r in units]
        self.lo = np.array([r[3] for r in units], dtype=np.int64)
        self.hi = np.array([r[4] for r in units], dtype=np.int64)

    def locate(self, ordinals: np.ndarray) -> np.ndarray:
        """Index into the units of every ordinal (each must lie in one)."""
        u = np.searchsorted(self.lo, ordinals, side="right") - 1
        bad = (u < 0) | (ordinals > self.hi[np.maximum(u, 0)]) if len(self.lo) else np.ones(len(ordinals), bool)
        if np.any(bad):
            raise RuntimeError(f"ordinal {int(ordinals[np.argmax(bad)])} is in no signed unit")
        return u


def _units(cache: dict, signed) -> _Units:
    # a side input is the same list for every element of a bundle
    if cache.get("id") is not signed:
        cache.update(id=signed, units=_Units(signed))
    return cache["units"]


class _Work:
    """Paths of the work folder."""

    def __init__(self, fs, output: str):
        self.fs, self.root = fs, fs.join(output, WORK_DIR)

    def side(self, unit: str) -> str:
        return self.fs.join(self.root, "sig", unit)

    def keys(self, unit: str, chunk: int) -> str:
        return self.fs.join(self.root, "keys", f"{unit}-{chunk:04d}.cpk")

    def index_keys(self, unit: str) -> str:
        """--write-index: the unit's kept documents' keys, cut by partition."""
        return self.fs.join(self.root, "index", f"{unit}.cpk")


class SignUnit(beam.DoFn):
    """Pass 1: one unit -> its side file and keys files; yields what it wrote."""

    def __init__(self, output: str, fields: FieldMap, minhash: dict, bands: int, rows: int,
                 verify: str, max_doc_bytes: int, strict: bool, batch_size: int, partitions: int,
                 chunk_docs: int = CHUNK_DOCS, keep: str = "first"):
        self.output, self.fields, self.minhash, self.bands, self.rows = output, fields, minhash, bands, rows
        self.keep = keep
        self.no_field = _counter("keep_field_missing")
        self.verify, self.max_doc_bytes, self.strict = verify, max_doc_bytes, strict
        self.batch_size, self.partitions, self.chunk_docs = batch_size, partitions, chunk_docs
        self.signed = _counter("signed_documents")
        self.written = _counter("work_bytes_written")

    def setup(self):
        self.mh = MinHasher(**self.minhash)   # once per worker: compiles/loads kernels
        self.fs = BeamFS()
        self.work = _Work(self.fs, self.output)

    def process(self, item):
        _, file = item
        unit = unit_key(file)
        side = SideFileWriter(self.fs, self.work.side(unit), self.minhash["num_perm"],
                              shingles=self.verify == "exact")
        self._unit, self._chunks, self._held = unit, [], []
        batch = []
        for rec in read_documents(file, self.fields, max_doc_bytes=self.max_doc_bytes,
                                  strict=self.strict, fs=self.fs):
            if isinstance(rec, Rejected):
                continue  # counted and written once, by WriteShard
            batch.append(rec)
            if len(batch) >= self.batch_size:
                self._sign(batch, side)
                batch = []
        if batch:
            self._sign(batch, side)
        self._write_chunk()
        n = side.close()
        self.written.inc(side.bytes_written)
        lo, hi = (int(side.first), int(side.last)) if n else (0, -1)
        yield (file.index, file.part), unit, n, lo, hi, self._chunks

    def _sign(self, docs, side):
        out = self.mh.sign_batch([d.text for d in docs])
        ords = np.fromiter((d.ordinal for d in docs), dtype=np.int64, count=len(docs))
        has = out.num_shingles > 0
        shingles = None
        if self.verify == "exact":
            empty = np.zeros(0, np.uint32)
            shingles = [self.mh.shingle_hashes(d.text) if h else empty for d, h in zip(docs, has)]
        side.add(ords, [d.id for d in docs], out.signatures, shingles, self._priority(docs))
        self.signed.inc(len(docs))
        exact = np.frombuffer(b"".join(out.exact_keys), dtype=np.uint64).reshape(len(docs), 2)
        keys = band_keys(out.signatures[has], self.bands, self.rows)
        self._held.append((exact, ords, keys, ords[has]))
        if sum(len(h[1]) for h in self._held) >= self.chunk_docs:
            self._write_chunk()

    def _priority(self, docs) -> np.ndarray | None:
        """What --keep ranks by (higher survives): text length, or a numeric field
        (missing or not a number: lowest, and counted)."""
        if self.keep == "longest":
            return np.fromiter((len(d.text) for d in docs), dtype=np.float64, count=len(docs))
        if not self.keep.startswith("highest:"):
            return None
        name, out = self.keep.split(":", 1)[1], np.empty(len(docs), np.float64)
        for i, d in enumerate(docs):
            v = d.meta.get(name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            out[i] = float(v) if ok else -np.inf
            if not ok:
                self.no_field.inc()
        return out

    def _write_chunk(self):
        """The held keys as one keys file: each kind's partitions as consecutive packed
        values; their byte ranges (offsets, P + 1 per kind) go with the unit's record."""
        if not self._held:
            return
        exact = np.concatenate([h[0] for h in self._held])
        ords = np.concatenate([h[1] for h in self._held])
        keys = np.concatenate([h[2] for h in self._held])
        band_ords = np.concatenate([h[3] for h in self._held])
        self._held = []
        flat = keys.ravel()
        kinds = [
            split_by(partition_of(exact[:, 0], self.partitions), k0=exact[:, 0], k1=exact[:, 1], ordinal=ords),
            split_by(partition_of(flat, self.partitions), band=np.tile(np.arange(self.bands, dtype=np.int8),
                                                                       len(band_ords)),
                     key=flat, ordinal=np.repeat(band_ords, self.bands)),
        ]
        offsets = write_keys_file(self.fs, self.work.keys(self._unit, len(self._chunks)), kinds,
                                  self.partitions)
        self.written.inc(int(offsets[-1][-1]))
        self._chunks.append(offsets)


def write_keys_file(fs, path: str, kinds, partitions: int) -> tuple:
    """Several kinds of keys, each cut by partition (split_by's output), as one file:
    each kind's partitions as consecutive packed values. Returns per kind the byte
    offsets of its partitions (P + 1 values)."""
    offsets, pos = [], 0
    with writing(fs, path) as f:
        for parts in kinds:
            off = np.zeros(partitions + 1, np.int64)
            for p, a in parts:
                blob = pack(**a)
                f.write(blob)
                off[p + 1] = len(blob)
            off[0] = pos
            off = np.cumsum(off)
            pos = int(off[-1])
            offsets.append(off)
    return tuple(offsets)


def _edge_chunk(a: np.ndarray, b: np.ndarray) -> bytes:
    return pack(a=np.asarray(a, dtype=np.int64), b=np.asarray(b, dtype=np.int64))


def _pair_key(fa: np.ndarray, fb: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of an edge by the pair of files it joins (so verification opens
    few side files per group)."""
    with np.errstate(over="ignore"):
        h = (fa.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ fb.astype(np.uint64)
        h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    return ((h >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


class GroupPartition(beam.DoFn):
    """One key partition, after every unit is signed: exact groups and LSH buckets."""

    def __init__(self, output: str, partitions: int, by_unit: bool = False, matcher=None):
        self.output, self.partitions, self.by_unit = output, partitions, by_unit
        self.matcher = matcher     # --against: pairs this partition's documents with indexed ones
        self.read = _counter("work_bytes_read")
        self._cache = {}

    def setup(self):
        self.fs = BeamFS()
        self.work = _Work(self.fs, self.output)

    def _load(self, kind: int, p: int, signed, names):
        parts = []
        for _, unit, _, _, _, chunks in signed:
            for c, offsets in enumerate(chunks):
                lo, hi = int(offsets[kind][p]), int(offsets[kind][p + 1])
                if hi > lo:
                    data = read_range(self.fs, self.work.keys(unit, c), lo, hi - lo)
                    self.read.inc(len(data))
                    parts.append(unpack(data))
        return concat(parts, names)

    def process(self, p, signed):
        x = self._load(0, p, signed, {"k0": _U64, "k1": _U64, "ordinal": _I64})
        indexed = np.zeros(0, np.int64)
        if self.matcher is not None:
            out, indexed = self.matcher.exact(self.fs, p, x)
            yield from out
        if len(x["ordinal"]):
            order = np.lexsort((x["ordinal"], x["k1"], x["k0"]))
            k0, k1, ords = x["k0"][order], x["k1"][order], x["ordinal"][order]
            first = np.r_[True, (k0[1:] != k0[:-1]) | (k1[1:] != k1[:-1])]
            head = np.maximum.accumulate(np.where(first, np.arange(len(ords)), 0))
            dup = np.flatnonzero(~first)
            if len(dup):
                dups, reps = ords[dup], ords[head[dup]]
                yield TaggedOutput("edges", _edge_chunk(dups, reps))
                units = _units(self._cache, signed)
                for u, a in split_by(units.locate(dups), ordinal=dups):
                    yield TaggedOutput("dups", (units.keys[u], pack(**a)))
        del x
        b = self._load(1, p, signed, {"band": np.dtype(np.int8), "key": _U64, "ordinal": _I64})
        if self.matcher is not None:
            yield from self.matcher.bands(self.fs, p, b, indexed)
        xs, ms = [], []
        for j in np.unique(b["band"]):
            sel = np.flatnonzero(b["band"] == j)
            o = b["ordinal"][sel]
            xi, mi = bucket_min_edges(b["key"][sel], o)
            xs.append(o[xi])
            ms.append(o[mi])
        if xs:
            xe, me = np.concatenate(xs), np.concatenate(ms)
            key = (_units(self._cache, signed).locate(xe) if self.by_unit
                   else _pair_key(file_of(xe), file_of(me), self.partitions))
            for k, a in split_by(key, a=xe, b=me):
                yield k, pack(**a)


class _SideFiles:
    """Side files opened by this worker, the most recent kept (their index is small:
    ordinals and ids)."""

    def __init__(self, fs, work: _Work, num_perm: int, most: int = 32):
        self.fs, self.work, self.num_perm, self.most = fs, work, num_perm, most
        self.open: OrderedDict = OrderedDict()

    def get(self, unit: str, first: int) -> SideFile:
        if unit in self.open:
            self.open.move_to_end(unit)
        else:
            self.open[unit] = SideFile(self.fs, self.work.side(unit), self.num_perm, first)
            while len(self.open) > self.most:
                self.open.popitem(last=False)
        return self.open[unit]

    def by_unit(self, units: _Units, ordinals: np.ndarray):
        """(side file, positions into `ordinals`) for every unit holding some of them."""
        for u, a in split_by(units.locate(ordinals), pos=np.arange(len(ordinals))):
            yield self.get(units.stems[u], units.lo[u]), a["pos"]

    def fetch(self, units: _Units, ordinals: np.ndarray, exact: bool):
        """Signatures (an (n, num_perm) array) or, with `exact`, shingle sets (a list)."""
        if exact:
            out = [None] * len(ordinals)
            for side, pos in self.by_unit(units, ordinals):
                for i, g in zip(pos, side.shingles(ordinals[pos])):
                    out[i] = g
            return out
        out = np.empty((len(ordinals), self.num_perm), dtype=np.uint32)
        for side, pos in self.by_unit(units, ordinals):
            out[pos] = side.signatures(ordinals[pos])
        return out


class VerifyEdges(beam.DoFn):
    """Distinct candidate edges of one pair partition, verified by reading the two
    documents' rows from their side files."""

    def __init__(self, output: str, num_perm: int, threshold: float, verify: str):
        self.output, self.num_perm = output, num_perm
        self._cache = {}
        self.threshold, self.verify = threshold, verify
        self.candidates = _counter("near_candidate_edges")
        self.accepted = _counter("near_edges_verified")
        self.dropped = _counter("near_edges_below_threshold")

    def setup(self):
        fs = BeamFS()
        self.sides = _SideFiles(fs, _Work(fs, self.output), self.num_perm)

    def _fetch(self, units, ordinals):
        return self.sides.fetch(units, ordinals, self.verify == "exact")

    def _candidates(self, kv, signed):
        """(units, distinct candidate edges a, b) of one group, counted."""
        _, chunks = kv
        e = concat([unpack(c) for c in chunks], _EDGE)
        a, b = unique_pairs(e["a"], e["b"])
        self.candidates.inc(len(a))
        return _units(self._cache, signed), a, b

    def process(self, kv, signed):
        units, a, b = self._candidates(kv, signed)
        if self.verify == "none" or not len(a):
            if len(a):
                yield _edge_chunk(a, b)
            return
        if self.verify == "exact":
            sa, sb = self._fetch(units, a), self._fetch(units, b)
            j = np.array([exact_jaccard(x, y) for x, y in zip(sa, sb)])
        else:
            j = estimate_jaccard(self._fetch(units, a), self._fetch(units, b))
        ok = _verified(j, self.threshold, self.accepted, self.dropped)
        if ok.any():
            yield _edge_chunk(a[ok], b[ok])


def _with_rows(a: np.ndarray, b: np.ndarray, got, key: np.ndarray, exact: bool):
    """Edges (a, b) with a's signature or shingles attached, one packed value per `key`
    (where they travel to next); `got` holds a's rows, aligned with `a`."""
    for k, part in split_by(key, i=np.arange(len(a))):
        i = part["i"]
        if exact:
            sh = [got[x] for x in i]
            lens = np.fromiter((len(x) for x in sh), dtype=np.int64, count=len(sh))
            yield k, pack(a=a[i], b=b[i], off=np.r_[0, np.cumsum(lens)].astype(np.int64),
                          sh=np.concatenate(sh))
        else:
            yield k, pack(a=a[i], b=b[i], sig=got[i])


def _rows_of(parts: list[dict], exact: bool):
    """The rows `_with_rows` attached, aligned with the parts' concatenated `a`."""
    if exact:
        return [x["sh"][x["off"][k]:x["off"][k + 1]] for x in parts for k in range(len(x["a"]))]
    return np.concatenate([x["sig"] for x in parts])


def _verified(j: np.ndarray, threshold: float, accepted, dropped) -> np.ndarray:
    ok = j >= threshold
    accepted.inc(int(ok.sum()))
    dropped.inc(int((~ok).sum()))
    return ok


class FetchFirst(VerifyEdges):
    """Verification through the shuffle, hop 1 (for a work folder on an object store,
    where every ranged read is a paid request): the candidate edges whose first
    document lies in one unit read that unit's rows once and travel on to the second
    document's unit with the first's signature (or shingles) attached."""

    def process(self, kv, signed):
        units, a, b = self._candidates(kv, signed)
        if not len(a):
            return
        yield from _with_rows(a, b, self._fetch(units, a), units.locate(b), self.verify == "exact")


class VerifySecond(VerifyEdges):
    """Hop 2: the edges whose second document lies in one unit, with the first's
    signature or shingles; reads the second's rows from that unit and keeps the edges
    that reach the threshold."""

    def process(self, kv, signed):
        _, chunks = kv
        units = _units(self._cache, signed)
        parts = [unpack(c) for c in chunks]
        a = np.concatenate([x["a"] for x in parts])
        b = np.concatenate([x["b"] for x in parts])
        exact = self.verify == "exact"
        j = _jaccard(_rows_of(parts, exact), self._fetch(units, b), exact)
        ok = _verified(j, self.threshold, self.accepted, self.dropped)
        if ok.any():
            yield _edge_chunk(a[ok], b[ok])


def _keyed(u: np.ndarray, v: np.ndarray, partitions: int):
    """Rows (u, v) keyed by u's partition, one packed element per partition."""
    for k, a in split_by(u % partitions, a=u, b=v):
        yield k, pack(**a)


def both_ways(chunk: bytes, partitions: int):
    e = unpack(chunk)
    u = np.concatenate([e["a"], e["b"]])
    v = np.concatenate([e["b"], e["a"]])
    yield from _keyed(u, v, partitions)


class _StarFn(beam.DoFn):
    """One half of a large-star/small-star round over every node of a partition.

    Next to the edge arrays, a half-round sends every partition of the next one a
    marker with the changes counted so far in this round ({(half, partition): nodes},
    only when some node changed). So each large star knows whether the previous
    round changed anything anywhere; when nothing did, the edges are final stars and
    it emits them as labels at once: later rounds get no data to shuffle."""

    def __init__(self, round_index: int, kind: str, partitions: int, last: bool):
        self.round, self.kind, self.partitions, self.last = round_index, kind, partitions, last
        self.changed_nodes = Metrics.counter(NS, f"cc_round_{round_index:02d}_{kind}_changed")
        self.rows = Metrics.counter(NS, "cc_edge_rows_grouped")

    def process(self, kv):
        key, values = kv
        chunks, changes = [], {}
        for v in values:
            if isinstance(v, tuple):
                changes.update(v[1])
            else:
                chunks.append(v)
        e = concat([unpack(c) for c in chunks], _EDGE)
        self.rows.inc(len(e["a"]))
        if self.kind == "large" and self.round > 0 and not any(changes.values()):
            if len(e["a"]):                                      # converged: (node, root) rows
                yield from self._labels(*unique_pairs(e["a"][e["a"] > e["b"]], e["b"][e["a"] > e["b"]]))
            return
        fn = large_star_arrays if self.kind == "large" else small_star_arrays
        a, b, changed = fn(e["a"], e["b"])
        # a large star passes on this round's changes only; a small star adds its own
        # to those of this round's large stars
        if self.kind == "large":
            changes = {}
        if changed:
            self.changed_nodes.inc(changed)
            if self.last:
                yield TaggedOutput("changed", changed)
            changes[(self.kind, int(key))] = changed
        if self.kind == "large":
            if len(a):
                yield from _keyed(a, b, self.partitions)         # (larger end, min): small star's key
        elif self.last:
            if len(a):
                yield from self._labels(a, b)
            return
        elif len(a):
            yield from both_ways(_edge_chunk(a, b), self.partitions)
        if any(changes.values()):
            for k in range(self.partitions):
                yield k, ("changes", changes)

    def _labels(self, node, root):
        for f, part in split_by(file_of(root), a=node, b=root):  # by the root's file
            yield TaggedOutput("labels", (f, pack(**part)))


class ConnectedComponents(beam.PTransform):
    """Alternating large-star/small-star rounds, unrolled `max_rounds` times, on edge
    arrays keyed by node partition.

    A Beam graph is fixed before it runs, so the rounds are unrolled; once a round
    changes nothing, the next one emits its edges as labels and the rest run empty.
    The change count of the last round is checked: a graph that needed more rounds
    fails the run. Returns (root's file, packed (node, root)) chunks."""

    def __init__(self, max_rounds: int, partitions: int):
        super().__init__()
        self.max_rounds, self.partitions = max_rounds, partitions

    def expand(self, edges):
        P = self.partitions
        keyed = edges | "R00LargeBoth" >> beam.FlatMap(both_ways, P)
        last_changes, labels = None, []
        for i in range(self.max_rounds):
            last = i == self.max_rounds - 1
            ls = (keyed
                  | f"R{i:02d}LargeGroup" >> beam.GroupByKey()
                  | f"R{i:02d}LargeStar" >> beam.ParDo(_StarFn(i, "large", P, last))
                  .with_outputs("changed", "labels", main="edges"))
            ss = (ls.edges
                  | f"R{i:02d}SmallGroup" >> beam.GroupByKey()
                  | f"R{i:02d}SmallStar" >> beam.ParDo(_StarFn(i, "small", P, last))
                  .with_outputs("changed", "labels", main="edges"))
            keyed = ss.edges
            labels.append(ls.labels)
            if last:
                labels.append(ss.labels)
                last_changes = ((ls.changed, ss.changed) | "LastRoundChanges" >> beam.Flatten()
                                | "CountLastRound" >> beam.CombineGlobally(sum))
        return (labels | "AllLabels" >> beam.Flatten()
                | "CheckConverged" >> beam.ParDo(_CheckConverged(self.max_rounds), AsSingleton(last_changes)))


class _CheckConverged(beam.DoFn):
    def __init__(self, max_rounds):
        self.max_rounds = max_rounds

    def process(self, labels, last_changes):
        if last_changes:
            raise RuntimeError(
                f"connected components did not converge in {self.max_rounds} rounds "
                f"({last_changes} nodes still changed in the last round); rerun with a "
                f"larger --cc-max-rounds")
        yield labels


def _jaccard(x, y, exact: bool) -> np.ndarray:
    """Row-wise Jaccard of two aligned lists of shingle sets (exact) or signature arrays."""
    if exact:
        return np.array([exact_jaccard(a, b) for a, b in zip(x, y)], dtype=np.float64)
    return estimate_jaccard(x, y)


def resolve_against_kept(node: np.ndarray, root: np.ndarray, fetch, threshold: float,
                         exact: bool, chunk: int = 1 << 16,
                         rank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The guardrail against chained clusters: every member must reach `threshold`
    with the document its cluster keeps (its root), by the same measure the edges were
    verified with. Members that only chain to it through others are split off; within
    each cluster, the split members are resolved again the same way, in input order: a
    member joins the first new cluster whose kept document it reaches, or keeps itself
    and starts one. Returns the new root of every node, its Jaccard with it (NaN
    for the roots) and counts (a cluster left with one document is no cluster: the
    caller drops it).

    ``fetch(ordinals)`` gives signatures (an (n, P) array) or shingle sets (a list).
    ``rank`` (aligned with `node`, lower first) orders the split members when a survivor
    policy is not input order: the first of a new cluster is the one it keeps."""
    new_root = root.copy()
    jac = np.full(len(node), np.nan)
    member = np.flatnonzero(node != root)
    bad_parts, bad_rows = [], []           # the split members, and their rows kept for later
    for lo in range(0, len(member), chunk):
        m = member[lo:lo + chunk]
        need, inv = np.unique(np.concatenate([node[m], root[m]]), return_inverse=True)
        got = fetch(need)
        a, b = inv[:len(m)], inv[len(m):]
        if exact:
            j = _jaccard([got[i] for i in a], [got[i] for i in b], True)
        else:
            j = _jaccard(got[a], got[b], False)
        jac[m] = j
        low = j < threshold
        bad_parts.append(m[low])
        if exact:
            bad_rows.extend(got[i] for i in a[low])
        else:
            bad_rows.append(got[a[low]])
    bad = np.concatenate(bad_parts) if bad_parts else np.zeros(0, np.int64)
    counts = {"members_checked": int(len(member)), "members_split": int(len(bad)),
              "clusters_split": 0}
    if not len(bad):
        return new_root, jac, counts
    got = bad_rows if exact else np.concatenate(bad_rows)
    pos = {int(o): i for i, o in enumerate(node[bad])}
    if rank is not None:                  # else bad is in input order already (node is sorted)
        bad = bad[np.argsort(rank[bad], kind="stable")]
    for r, part in split_by(root[bad], i=bad):
        counts["clusters_split"] += 1
        subroots: list[int] = []      # ordinals of the new kept documents, in input order
        for i in part["i"]:
            o = int(node[i])
            if subroots:
                if exact:
                    j = _jaccard([got[pos[o]]] * len(subroots), [got[pos[s]] for s in subroots], True)
                else:
                    mine = got[pos[o]][None, :]
                    j = _jaccard(np.repeat(mine, len(subroots), 0),
                                 got[[pos[s] for s in subroots]], False)
                hit = np.flatnonzero(j >= threshold)
                if len(hit):
                    new_root[i] = subroots[int(hit[0])]
                    jac[i] = j[int(hit[0])]
                    continue
            subroots.append(o)
            new_root[i] = o
            jac[i] = np.nan
    return new_root, jac, counts


def by_member_file(item):
    """A labels chunk keyed by the root's file -> chunks keyed by each member's file."""
    _, chunk = item
    e = unpack(chunk)
    for f, part in split_by(file_of(e["a"]), a=e["a"], b=e["b"]):
        yield f, pack(**part)


class FetchMembers(VerifyEdges):
    """The check against the kept document through the shuffle (for a work folder on an
    object store, as verification): the labels of the members of one file read those
    members' rows once, densely, and travel on to their root's file with the signature
    (or shingles) attached, where RootIds reads only the roots' rows."""

    def process(self, kv, signed):
        _, chunks = kv
        units = _units(self._cache, signed)
        e = concat([unpack(c) for c in chunks], _EDGE)
        a, b = unique_pairs(e["a"], e["b"])
        if not len(a):
            return
        yield from _with_rows(a, b, self._fetch(units, a), file_of(b), self.verify == "exact")


def _shipped(parts: list[dict], exact: bool):
    """Members' rows that travelled with their labels: (sorted ordinals, rows)."""
    with_rows = [x for x in parts if ("sh" if exact else "sig") in x]
    if not with_rows:
        return np.zeros(0, np.int64), None
    ords = np.concatenate([x["a"] for x in with_rows])
    rows = _rows_of(with_rows, exact)
    order = np.argsort(ords, kind="stable")
    return ords[order], ([rows[k] for k in order] if exact else rows[order])


class LargeClusterError(RuntimeError):
    """A cluster above --max-cluster-size with --on-large-cluster fail."""


class RootIds(beam.DoFn):
    """Labels whose roots live in one file -> (node's unit key, (node, root) arrays, root ids),
    each member checked against its root first (`resolve_against_kept`; not with
    --verify none)."""

    def __init__(self, output: str, num_perm: int, threshold: float = 0.0, verify: str = "none",
                 max_cluster_size: int | None = None, on_large_cluster: str = "keep",
                 keep: str = "first"):
        self.output, self.num_perm = output, num_perm
        self.keep = keep
        self.threshold, self.verify = threshold, verify
        self.max_size, self.on_large = max_cluster_size, on_large_cluster
        self.large = {k: _counter(f"large_clusters_{k}") for k in ("clusters", "documents")}
        self.largest = Metrics.distribution(NS, "cluster_size")
        self._cache = {}
        self.c = {name: _counter(f"kept_check_{name}") for name in
                  ("members_checked", "members_split", "clusters_split", "new_clusters",
                   "documents_left_alone")}

    def setup(self):
        fs = BeamFS()
        self.sides = _SideFiles(fs, _Work(fs, self.output), self.num_perm)

    def _survivors(self, units, node, root):
        """--keep longest / highest:FIELD: each cluster keeps its member of highest
        priority, ties to the first in input order; returns the new roots and every
        node's rank (0 = the best of all)."""
        prio = np.empty(len(node), np.float64)
        for side, pos in self.sides.by_unit(units, node):
            prio[pos] = side.priority(node[pos])
        order = np.lexsort((node, -prio))
        rank = np.empty(len(node), np.int64)
        rank[order] = np.arange(len(node))
        comps, inv = np.unique(root, return_inverse=True)
        best = np.full(len(comps), len(node), np.int64)
        np.minimum.at(best, inv, rank)
        return node[order][best][inv], rank

    def _fetcher(self, units, parts, exact: bool):
        """fetch(ordinals) for resolve_against_kept: on an object store the members' rows
        came with their labels (FetchMembers); the rest (the roots') are read here."""
        shipped, rows = _shipped(parts, exact)

        def fetch(o):
            if not len(shipped):
                return self.sides.fetch(units, o, exact)
            pos = np.minimum(np.searchsorted(shipped, o), len(shipped) - 1)
            have = shipped[pos] == o
            rest = self.sides.fetch(units, o[~have], exact) if (~have).any() else None
            if exact:
                out, it = [None] * len(o), iter(rest or [])
                for k in range(len(o)):
                    out[k] = rows[pos[k]] if have[k] else next(it)
                return out
            out = np.empty((len(o), self.num_perm), dtype=np.uint32)
            out[have] = rows[pos[have]]
            if rest is not None:
                out[~have] = rest
            return out
        return fetch

    def _large(self, node, root, jac):
        """Count every cluster's size; flag those above --max-cluster-size and apply
        --on-large-cluster: keep them as decided, split them (every document in one is
        kept: nothing is removed on the strength of a cluster that large) or fail."""
        roots, inv, size = np.unique(root, return_inverse=True, return_counts=True)
        if len(size):
            self.largest.update(int(size.max()))     # the manifest reads only the largest
        if not self.max_size or not (size > self.max_size).any():
            return node, root, jac
        big = size > self.max_size
        self.large["clusters"].inc(int(big.sum()))
        self.large["documents"].inc(int(size[big].sum()))
        if self.on_large == "fail":
            worst = int(np.argmax(size))
            raise LargeClusterError(
                f"a cluster of {int(size[worst]):,} documents (kept document ordinal "
                f"{int(roots[worst])}) is larger than --max-cluster-size {self.max_size:,}; "
                f"--on-large-cluster fail stops the run (keep: remove its duplicates as decided; "
                f"split: keep all its documents)")
        if self.on_large == "split":
            small = ~big[inv]
            return node[small], root[small], jac[small]
        return node, root, jac

    def process(self, kv, signed):
        _, chunks = kv
        units = _units(self._cache, signed)
        parts = [unpack(c) for c in chunks]
        e = concat(parts, _EDGE)
        roots = np.unique(e["b"])
        node, root = unique_pairs(np.concatenate([e["a"], roots]), np.concatenate([e["b"], roots]))
        jac = np.full(len(node), np.nan)
        rank = None
        if self.keep == "longest" or self.keep.startswith("highest:"):
            root, rank = self._survivors(units, node, root)
            roots = np.unique(root)
        if self.verify != "none":
            exact = self.verify == "exact"
            root, jac, counts = resolve_against_kept(node, root, self._fetcher(units, parts, exact),
                                                     self.threshold, exact, rank=rank)
            # a document left alone by the check belongs to no cluster: no decision, kept
            kept, inv, size = np.unique(root, return_inverse=True, return_counts=True)
            alone = size[inv] == 1
            counts["new_clusters"] = int(np.isin(kept[size > 1], roots, invert=True).sum())
            counts["documents_left_alone"] = int(alone.sum())
            node, root, jac = node[~alone], root[~alone], jac[~alone]
            for k, v in counts.items():
                self.c[k].inc(v)
        node, root, jac = self._large(node, root, jac)
        roots = np.unique(root)
        ids = np.empty(len(roots), dtype=object)
        for side, pos in self.sides.by_unit(units, roots):
            ids[pos] = side.ids(roots[pos])
        root_ids = ids[np.searchsorted(roots, root)]
        for u, part in split_by(units.locate(node), a=node, b=root, j=jac, i=np.arange(len(node))):
            yield units.keys[u], (pack(a=part["a"], b=part["b"], j=part["j"]),
                                  root_ids[part["i"]].tolist())


class WriteShard(beam.DoFn):
    """Pass 2: re-read one unit and route each record to exactly one place."""

    def __init__(self, output: str, fmt: str, fields: FieldMap, max_doc_bytes: int, strict: bool,
                 keep: str = "first", matched_index: list[str] | None = None,
                 index: dict | None = None):
        self.output, self.fmt, self.fields = output, fmt, fields
        self.drop_all = keep == "none"
        self.max_doc_bytes, self.strict = max_doc_bytes, strict
        # --against: what `matched_index` names per source; --write-index: where and how
        self.matched_index, self.index = matched_index, index
        self.schema = CLUSTER_SCHEMA_AGAINST if matched_index is not None else CLUSTER_SCHEMA
        self.c = {name: _counter(name) for name in
                  ("input", "input_documents", "kept", "removed_exact", "removed_near",
                   "removed_exact_index", "removed_near_index", "rejected", "cluster_rows",
                   "blank_lines", "other_records", "index_documents_written")}

    def setup(self):
        self.fs = BeamFS()

    def _decisions(self, file, labels, dups, matches) -> dict:
        dup = set(concat([unpack(d) for d in dups], {"ordinal": _I64})["ordinal"].tolist())
        decisions = {}
        for chunk, root_ids in labels:
            e = unpack(chunk)
            for n, r, j, rid in zip(e["a"].tolist(), e["b"].tolist(), e["j"].tolist(), root_ids):
                if n in decisions and decisions[n][0] != rid:
                    raise RuntimeError(f"{file.path}: document ordinal {n} got two clusters")
                survivor = n == r and not self.drop_all     # --keep none: no member survives
                reason = None if survivor else (EXACT if n in dup and n != r else NEAR)
                decisions[n] = (rid, survivor, reason, None if j != j else round(j, 6), None)   # NaN: the root
        if matches:
            from pipelines.dedup_index import best_matches
            # matched documents took no part in this run's clusters (DropIndexed)
            for n, (mid, src, j, exact) in best_matches(matches).items():
                decisions[n] = (mid, False, EXACT_INDEX if exact else NEAR_INDEX, round(j, 6),
                                self.matched_index[src])
        return decisions

    def process(self, kv):
        key, grouped = kv
        (file,) = grouped["file"]
        decisions = self._decisions(file, grouped["dec"], grouped["dup"], grouped.get("idx"))
        seen = 0
        rejected, clusters, kept_rows = [], [], {}

        reader = read_documents(file, self.fields, max_doc_bytes=self.max_doc_bytes,
                                strict=self.strict, fs=self.fs)

        def kept_docs():
            nonlocal seen
            for rec in reader:
                self.c["input"].inc()
                if isinstance(rec, Rejected):
                    self.c["rejected"].inc()
                    Metrics.counter(NS, f"rejected_{rec.cause}").inc()
                    rejected.append(rec)
                    continue
                self.c["input_documents"].inc()
                d = decisions.get(rec.ordinal)
                if d is None or d[1]:
                    self.c["kept"].inc()
                    if self.index is not None:
                        kept_rows[rec.ordinal] = (rec.id, rec.source)
                    yield rec
                if d is None:
                    continue
                seen += 1
                cluster_id, kept, reason, jaccard, matched = d
                row = {"id": rec.id, "cluster_id": cluster_id, "kept": kept, "reason": reason,
                       "source": rec.source, "line": rec.line, "jaccard": jaccard}
                if matched is not None:
                    row.update(matched_id=cluster_id, matched_index=matched)
                clusters.append(row)
                if not kept:
                    self.c[_REMOVED[reason]].inc()

        join = self.fs.join
        write_documents(join(self.output, "documents", file_shard_name("part", file, self.fmt)),
                        kept_docs(), fmt=self.fmt, fs=self.fs)
        self.c["blank_lines"].inc(reader.stats.blank_lines)
        self.c["other_records"].inc(reader.stats.other_records)
        if seen != len(decisions):
            raise RuntimeError(
                f"{file.path}: {len(decisions) - seen} documents decided in the first pass were "
                f"not found when re-reading it; did the input change during the run?")
        if clusters:
            self.c["cluster_rows"].inc(len(clusters))
            write_rows(join(self.output, "clusters", file_shard_name("part", file, self.fmt)),
                       clusters, self.schema, fmt=self.fmt, fs=self.fs)
        if rejected:
            write_rows(join(self.output, "rejected", file_shard_name("part", file, self.fmt)),
                       [rejected_row(r) for r in rejected], REJECTED_SCHEMA, fmt=self.fmt, fs=self.fs)
        if self.index is None:
            yield key
            return
        from pipelines.dedup_index import write_unit_index
        (signed,) = grouped["sig"]
        unit = unit_key(file)
        offsets = write_unit_index(self.fs, self.index["dir"], self.output, unit, signed[3],
                                   kept_rows, signed, self.index["num_perm"], self.index["partitions"])
        self.c["index_documents_written"].inc(len(kept_rows))
        yield unit, offsets


def build_dedup(p: beam.Pipeline, files: list[InputFile], *, output: str, fmt: str,
                fields: FieldMap, minhash: dict, bands: int, rows: int, threshold: float,
                verify: str, cc_max_rounds: int, max_doc_bytes: int, strict: bool,
                kept_threshold: float | None = None, max_cluster_size: int | None = None,
                on_large_cluster: str = "keep", keep: str = "first",
                batch_size: int, lsh_partitions: int = 64, split_bytes: int = DEFAULT_SPLIT_BYTES,
                verify_by: str | None = None, against=None, index_dir: str | None = None,
                index_threshold: float | None = None):
    """Add the dedup transforms to `p`; returns the PCollection of written units' keys.
    Input files larger than `split_bytes` are read in ranges (pipelines.splits).

    ``verify_by``: how candidate edges meet their signatures. ``"reads"`` (the default
    for a local work folder): grouped by the pair of files they join, each group reads
    its documents' rows from the side files, one small ranged read per run of rows.
    ``"shuffle"`` (the default on an object store such as gs://, where each ranged read
    is a paid request and random reads would cost a request per candidate): two
    hops, grouped by the unit of the edge's first document, whose rows are read once
    and shuffled with the edge (num_perm x 4 bytes per candidate) to the unit of the
    second. Same decisions either way.

    ``against`` (pipelines.dedup_index.Sources): indexed generations whose documents
    this run's are matched with (pairs verified at ``index_threshold``); ``index_dir``:
    the directory of the generation this run writes (--write-index). With the
    latter, the result is the written units' (unit, offsets) instead of their keys,
    and the generation's key shards are written by the returned collection's
    consumer (pipelines.dedup_index.IndexPartition)."""
    verify_by = verify_by or VERIFY_BY or ("shuffle" if is_remote(output) else "reads")
    if verify_by not in ("reads", "shuffle"):
        raise ValueError(f"verify_by must be 'reads' or 'shuffle', got {verify_by!r}")
    two_hop = verify_by == "shuffle" and verify != "none"
    P = lsh_partitions
    cc_partitions = min(P, 16)
    num_perm = minhash["num_perm"]
    matcher = None
    if against is not None:
        from pipelines.dedup_index import IndexMatcher
        matcher = IndexMatcher(against, P)
    files_kv = p | "Files" >> ReadySplits(files, split_bytes)
    signed = (files_kv
              | "SpreadFiles" >> beam.Reshuffle()
              | "Sign" >> beam.ParDo(SignUnit(output, fields, minhash, bands, rows, verify,
                                              max_doc_bytes, strict, batch_size, P, keep=keep)))
    grouped = (p
               | "Partitions" >> beam.Create(list(range(P)))
               | "SpreadPartitions" >> beam.Reshuffle()
               | "GroupPartitions" >> beam.ParDo(GroupPartition(output, P, by_unit=two_hop, matcher=matcher),
                                                 AsList(signed))
               .with_outputs("edges", "dups", "index", main="candidates"))
    candidates = grouped.candidates | "GroupCandidates" >> beam.GroupByKey()
    if two_hop:
        near = (candidates
                | "FetchFirst" >> beam.ParDo(FetchFirst(output, num_perm, threshold, verify), AsList(signed))
                | "GroupBySecond" >> beam.GroupByKey()
                | "Verify" >> beam.ParDo(VerifySecond(output, num_perm, threshold, verify), AsList(signed)))
    else:
        near = candidates | "Verify" >> beam.ParDo(VerifyEdges(output, num_perm, threshold, verify),
                                                   AsList(signed))
    edges = (grouped.edges, near) | "AllEdges" >> beam.Flatten()
    joined = {}
    if against is not None:
        from pipelines.dedup_index import DropIndexedEdges, VerifyIndex, matched_ordinals
        matches = (grouped.index
                   | "GroupIndexCandidates" >> beam.GroupByKey()
                   | "VerifyIndex" >> beam.ParDo(VerifyIndex(output, num_perm, index_threshold or threshold,
                                                             against), AsList(signed)))
        matched = matches | "MatchedOrdinals" >> beam.FlatMap(matched_ordinals)
        edges = edges | "DropIndexed" >> DropIndexedEdges(matched, AsList(signed))
        joined["idx"] = matches
    labels = edges | "Components" >> ConnectedComponents(cc_max_rounds, cc_partitions)
    if two_hop:
        labels = (labels
                  | "ByMemberFile" >> beam.FlatMap(by_member_file)
                  | "GroupByMemberFile" >> beam.GroupByKey()
                  | "FetchMembers" >> beam.ParDo(FetchMembers(output, num_perm, threshold, verify),
                                                 AsList(signed)))
    per_root_file = (labels
                     | "GroupByRootFile" >> beam.GroupByKey()
                     | "RootIds" >> beam.ParDo(RootIds(output, num_perm, threshold if kept_threshold is None
                                                       else kept_threshold, verify,
                                                       max_cluster_size, on_large_cluster, keep),
                                               AsList(signed)))
    index = None
    if index_dir is not None:
        index = {"dir": index_dir, "num_perm": num_perm, "partitions": P}
        joined["sig"] = signed | "SignedByUnit" >> beam.Map(lambda r: (tuple(r[0]), r))
    names = [against.name(s) for s in range(len(against))] if against is not None else None
    written = ({"file": files_kv, "dec": per_root_file, "dup": grouped.dups, **joined}
               | "JoinFiles" >> beam.CoGroupByKey()
               | "WriteShards" >> beam.ParDo(WriteShard(output, fmt, fields, max_doc_bytes, strict, keep,
                                                        matched_index=names, index=index)))
    if index_dir is None:
        return written
    from pipelines.dedup_index import IndexPartition
    return (p
            | "IndexPartitions" >> beam.Create(list(range(P)))
            | "SpreadIndexPartitions" >> beam.Reshuffle()
            | "WriteIndexKeys" >> beam.ParDo(IndexPartition(index_dir, output), AsList(written)))
