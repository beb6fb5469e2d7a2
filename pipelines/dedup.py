"""`curate dedup`: exact and MinHash-LSH near-duplicate removal as one Beam pipeline.

Data flow (text is read twice and never shuffled; only small records move):

  files ─ SignFile ──(exact key → ordinal, id, signature, band keys)── GroupByKey
        ├─ exact groups: first occurrence is the representative, the rest get an
        │  edge to it
        ├─ representatives ─ (band, partition) arrays of band keys ─ GroupByKey ─
        │  sort each partition, link each bucket member to the bucket minimum ─
        │  Distinct ─ verify (two joins with the signatures)
        ├─ exact + verified edges ─ large-star/small-star rounds ─ (node, root)
        └─ decisions grouped per input file ─ WriteShard re-reads that file and
           writes kept documents, cluster rows and rejected records

Keep rule: each cluster keeps its minimum node, i.e. the first occurrence in input
order (inputs sorted by path, then line or row); every other member is removed as
an exact duplicate (same normalised text as an earlier document) or a near
duplicate, and its `cluster_id` is the kept document's id.
"""
from __future__ import annotations

import numpy as np
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from curation.components import large_star, small_star
from curation.documents import Rejected, split_ordinal
from curation.io import (REJECTED_SCHEMA, FieldMap, InputFile, read_documents, rejected_row,
                         shard_name, write_documents, write_rows)
from curation.lsh import band_keys, bucket_min_edges, exact_jaccard
from curation.minhash import MinHasher, estimate_jaccard

import pyarrow as pa

from pipelines.fs import BeamFS

NS = "curation.dedup"

CLUSTER_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
])

EXACT, NEAR = "exact_duplicate", "near_duplicate"


def _counter(name):
    return Metrics.counter(NS, name)


class SignFile(beam.DoFn):
    """Pass 1: one input file -> (exact key, signature record) per valid document."""

    def __init__(self, fields: FieldMap, minhash: dict, bands: int, rows: int,
                 verify: str, max_doc_bytes: int, strict: bool, batch_size: int):
        self.fields, self.minhash, self.bands, self.rows = fields, minhash, bands, rows
        self.verify, self.max_doc_bytes, self.strict = verify, max_doc_bytes, strict
        self.batch_size = batch_size
        self.signed = _counter("signed_documents")

    def setup(self):
        self.mh = MinHasher(**self.minhash)   # once per worker: compiles/loads kernels
        self.fs = BeamFS()

    def process(self, item):
        _, file = item
        batch = []
        for rec in read_documents(file, self.fields, max_doc_bytes=self.max_doc_bytes,
                                  strict=self.strict, fs=self.fs):
            if isinstance(rec, Rejected):
                continue  # counted and written once, by WriteShard
            batch.append(rec)
            if len(batch) >= self.batch_size:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def _flush(self, docs):
        out = self.mh.sign_batch([d.text for d in docs])
        keys = band_keys(out.signatures, self.bands, self.rows)
        self.signed.inc(len(docs))
        for i, d in enumerate(docs):
            has_shingles = int(out.num_shingles[i]) > 0
            if self.verify == "exact" and has_shingles:
                payload = self.mh.shingle_hashes(d.text).tobytes()
            else:
                payload = out.signatures[i].tobytes()
            yield out.exact_keys[i], (d.ordinal, d.id, payload,
                                      keys[i].tobytes() if has_shingles else None)


def resolve_exact(kv):
    """First occurrence represents the group; the others get an edge to it."""
    _, members = kv
    members = sorted(members, key=lambda m: m[0])
    rep = members[0]
    rep_node = (rep[0], rep[1], False)
    for m in members[1:]:
        yield TaggedOutput("edges", ((m[0], m[1], True), rep_node))
    yield rep


class BandPartitions(beam.DoFn):
    """A batch of representatives -> per (band, partition) one element holding the
    band keys, ordinals and ids as arrays. Buckets are then found by sorting inside
    each partition, so the shuffle moves bands * partitions elements per batch
    instead of one element per document and band."""

    def __init__(self, bands: int, partitions: int):
        self.bands, self.partitions = bands, partitions

    def process(self, batch):
        rows = [r for r in batch if r[3] is not None]
        if not rows:
            return
        keys = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.uint64).reshape(len(rows), self.bands)
        ords = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ids = np.array([r[1] for r in rows], dtype=object)
        for j in range(self.bands):
            part = (keys[:, j] >> np.uint64(40)) % np.uint64(self.partitions)
            order = np.argsort(part, kind="stable")
            ps = part[order]
            cuts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1], True])
            for a, b in zip(cuts[:-1], cuts[1:]):
                sel = order[a:b]
                yield (j, int(ps[a])), (keys[sel, j].tobytes(), ords[sel].tobytes(), ids[sel].tolist())


def partition_edges(kv):
    """All buckets of one (band, partition): each member linked to its bucket's minimum."""
    _, chunks = kv
    chunks = list(chunks)
    keys = np.concatenate([np.frombuffer(c[0], dtype=np.uint64) for c in chunks])
    ords = np.concatenate([np.frombuffer(c[1], dtype=np.int64) for c in chunks])
    ids = [i for c in chunks for i in c[2]]
    for x, m in zip(*bucket_min_edges(keys, ords)):
        yield (int(ords[x]), ids[x], False), (int(ords[m]), ids[m], False)


class AttachSignature(beam.DoFn):
    """Join step 1: attach the larger end's signature, re-key by the smaller end."""

    def process(self, kv):
        _, grouped = kv
        sigs, edges = grouped["sig"], grouped["edge"]
        if not edges:
            return
        sig = sigs[0]
        for e in edges:
            yield e[1][0], (e, sig)


class VerifyEdge(beam.DoFn):
    """Join step 2: keep an edge when its Jaccard (estimated or exact) reaches the threshold."""

    def __init__(self, threshold: float, verify: str):
        self.threshold, self.verify = threshold, verify
        self.candidates = _counter("near_candidate_edges")
        self.accepted = _counter("near_edges_verified")
        self.dropped = _counter("near_edges_below_threshold")

    def process(self, kv):
        _, grouped = kv
        sigs, pending = grouped["sig"], grouped["edge"]
        if not pending:
            return
        sig_root = sigs[0]
        for edge, sig_x in pending:
            self.candidates.inc()
            if self.verify == "exact":
                j = exact_jaccard(np.frombuffer(sig_x, dtype=np.uint32),
                                  np.frombuffer(sig_root, dtype=np.uint32))
            else:
                j = estimate_jaccard(np.frombuffer(sig_x, dtype=np.uint32),
                                      np.frombuffer(sig_root, dtype=np.uint32))
            if j >= self.threshold:
                self.accepted.inc()
                yield edge
            else:
                self.dropped.inc()


class _StarFn(beam.DoFn):
    def __init__(self, round_index: int, kind: str):
        self.kind = kind
        self.changed_nodes = Metrics.counter(NS, f"cc_round_{round_index:02d}_{kind}_changed")
        self.fn = large_star if kind == "large" else small_star

    def process(self, kv):
        u, nbrs = kv
        out, changed = self.fn(u, nbrs)
        if changed:
            self.changed_nodes.inc()
            yield TaggedOutput("changed", 1)
        yield from out


class ConnectedComponents(beam.PTransform):
    """Alternating large-star/small-star rounds, unrolled `max_rounds` times.

    A Beam graph is fixed before it runs, so the rounds are unrolled; rounds after
    convergence pass the star edges through unchanged. The change count of the
    last round is checked: a graph that needed more rounds fails the run."""

    def __init__(self, max_rounds: int):
        super().__init__()
        self.max_rounds = max_rounds

    def expand(self, edges):
        last_changes = None
        for i in range(self.max_rounds):
            ls = (edges
                  | f"R{i:02d}LargeBoth" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
                  | f"R{i:02d}LargeGroup" >> beam.GroupByKey()
                  | f"R{i:02d}LargeStar" >> beam.ParDo(_StarFn(i, "large")).with_outputs("changed", main="edges"))
            ss = (ls.edges
                  | f"R{i:02d}SmallOrient" >> beam.Map(lambda e: (e[0], e[1]) if e[0] > e[1] else (e[1], e[0]))
                  | f"R{i:02d}SmallGroup" >> beam.GroupByKey()
                  | f"R{i:02d}SmallStar" >> beam.ParDo(_StarFn(i, "small")).with_outputs("changed", main="edges"))
            edges = ss.edges
            if i == self.max_rounds - 1:
                last_changes = ((ls.changed, ss.changed) | "LastRoundChanges" >> beam.Flatten()
                                | "CountLastRound" >> beam.combiners.Count.Globally())
        labels = (edges
                  | "Labels" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[1])])
                  | "DistinctLabels" >> beam.Distinct())
        return labels | "CheckConverged" >> beam.ParDo(
            _CheckConverged(self.max_rounds), AsSingleton(last_changes))


class _CheckConverged(beam.DoFn):
    def __init__(self, max_rounds):
        self.max_rounds = max_rounds

    def process(self, label, last_changes):
        if last_changes:
            raise RuntimeError(
                f"connected components did not converge in {self.max_rounds} rounds "
                f"({last_changes} nodes still changed in the last round); rerun with a "
                f"larger --cc-max-rounds")
        yield label


def decide(label):
    """(node, root) -> (file index, decision) for every document in a cluster."""
    node, root = label
    ordinal, _, is_exact = node
    kept = node == root
    reason = None if kept else (EXACT if is_exact else NEAR)
    yield split_ordinal(ordinal)[0], (ordinal, root[1], kept, reason)


class WriteShard(beam.DoFn):
    """Pass 2: re-read one input file and route each record to exactly one place."""

    def __init__(self, output: str, fmt: str, fields: FieldMap, max_doc_bytes: int, strict: bool):
        self.output, self.fmt, self.fields = output, fmt, fields
        self.max_doc_bytes, self.strict = max_doc_bytes, strict
        self.c = {name: _counter(name) for name in
                  ("input", "input_documents", "kept", "removed_exact", "removed_near",
                   "rejected", "cluster_rows", "blank_lines")}

    def setup(self):
        self.fs = BeamFS()

    def process(self, kv):
        index, grouped = kv
        (file,) = grouped["file"]
        decisions = {}
        for group in grouped["dec"]:
            for ordinal, cluster_id, kept, reason in group:
                decisions[ordinal] = (cluster_id, kept, reason)
        seen = 0
        rejected, clusters = [], []

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
                if d is None:
                    self.c["kept"].inc()
                    yield rec
                    continue
                seen += 1
                cluster_id, kept, reason = d
                clusters.append({"id": rec.id, "cluster_id": cluster_id, "kept": kept,
                                 "reason": reason, "source": rec.source, "line": rec.line})
                if kept:
                    self.c["kept"].inc()
                    yield rec
                else:
                    self.c["removed_exact" if reason == EXACT else "removed_near"].inc()

        join = self.fs.join
        write_documents(join(self.output, "documents", shard_name("part", index, self.fmt)),
                        kept_docs(), fmt=self.fmt, fs=self.fs)
        self.c["blank_lines"].inc(reader.stats.blank_lines)
        if seen != len(decisions):
            raise RuntimeError(
                f"{file.path}: {len(decisions) - seen} documents decided in the first pass were "
                f"not found when re-reading it; did the input change during the run?")
        if clusters:
            self.c["cluster_rows"].inc(len(clusters))
            write_rows(join(self.output, "clusters", shard_name("part", index, self.fmt)),
                       clusters, CLUSTER_SCHEMA, fmt=self.fmt, fs=self.fs)
        if rejected:
            write_rows(join(self.output, "rejected", shard_name("part", index, self.fmt)),
                       [rejected_row(r) for r in rejected], REJECTED_SCHEMA, fmt=self.fmt, fs=self.fs)
        yield index


def build_dedup(p: beam.Pipeline, files: list[InputFile], *, output: str, fmt: str,
                fields: FieldMap, minhash: dict, bands: int, rows: int, threshold: float,
                verify: str, cc_max_rounds: int, max_doc_bytes: int, strict: bool,
                batch_size: int, lsh_partitions: int = 64):
    """Add the dedup transforms to `p`; returns the PCollection of written shard indices."""
    files_kv = p | "Files" >> beam.Create([(f.index, f) for f in files])
    signed = (files_kv
              | "SpreadFiles" >> beam.Reshuffle()
              | "Sign" >> beam.ParDo(SignFile(fields, minhash, bands, rows, verify,
                                              max_doc_bytes, strict, batch_size)))
    exact = (signed
             | "GroupExact" >> beam.GroupByKey()
             | "ResolveExact" >> beam.FlatMap(resolve_exact).with_outputs("edges", main="reps"))
    reps = exact.reps

    candidates = (reps
                  | "BatchReps" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
                  | "BandKeys" >> beam.ParDo(BandPartitions(bands, lsh_partitions))
                  | "GroupBuckets" >> beam.GroupByKey()
                  | "BucketEdges" >> beam.FlatMap(partition_edges)
                  | "DistinctCandidates" >> beam.Distinct())
    if verify == "none":
        near = candidates
    else:
        sigs = reps | "SigByOrdinal" >> beam.Map(lambda r: (r[0], r[2]))
        half = ({"sig": sigs, "edge": candidates | "KeyByMember" >> beam.Map(lambda e: (e[0][0], e))}
                | "JoinMember" >> beam.CoGroupByKey()
                | "AttachMember" >> beam.ParDo(AttachSignature()))
        near = ({"sig": sigs, "edge": half}
                | "JoinRoot" >> beam.CoGroupByKey()
                | "Verify" >> beam.ParDo(VerifyEdge(threshold, verify)))

    labels = ((exact.edges, near)
              | "AllEdges" >> beam.Flatten()
              | "Components" >> ConnectedComponents(cc_max_rounds))
    per_file = (labels
                | "Decide" >> beam.FlatMap(decide)
                | "GroupByFile" >> beam.GroupByKey())
    return ({"file": files_kv, "dec": per_file}
            | "JoinFiles" >> beam.CoGroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShard(output, fmt, fields, max_doc_bytes, strict)))
