"""`curate dedup --against INDEX` and `--write-index INDEX` in the Beam graph
(curation.dedup_index has the layout).

--against: each key partition, while it groups its own keys, reads the matching
partitions of every indexed generation and pairs its documents with indexed ones
(equal 128-bit exact keys, or a shared band key) ─ candidates grouped by the docs
shard of the indexed document ─ VerifyIndex reads just those indexed signatures and
ids and this run's signatures and keeps pairs that reach the threshold ─ matches
grouped by the new document's unit, where WriteShard removes it with
exact_duplicate_of_index / near_duplicate_of_index. Matched documents take no part
in this run's own clusters: DropIndexed removes their edges before the components.

--write-index: WriteShard writes a docs shard of its unit's kept documents and their
exact and band keys, cut by partition, to the work folder; after every unit is
written, IndexPartition writes each partition's keys sorted as the generation's
shards.
"""
from __future__ import annotations

import numpy as np
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from curation.dedup_index import (DedupIndex, Located, docs_shard_name, keys_in_partition,
                                  match_bands, match_exact, read_docs, read_keys, shards_for,
                                  write_docs, write_keys)
from curation.exchange import concat, pack, partition_of, split_by, unpack
from curation.fs import read_range
from curation.minhash import estimate_jaccard
from pipelines.fs import BeamFS

NS = "curation.dedup"
_I64 = np.dtype(np.int64)
_U64 = np.dtype(np.uint64)
_CAND = {"o": _I64, "i": _I64, "x": np.dtype(np.int8)}


def _counter(name):
    return Metrics.counter(NS, name)


class Sources:
    """The indexed generations a run is checked against, numbered in --against order
    (an earlier index, then an earlier generation, wins a tie). Plain data: pickled
    into every worker."""

    def __init__(self, indexes: list[DedupIndex]):
        self.paths = [ix.path for ix in indexes]
        self.table = [(i, g) for i, ix in enumerate(indexes) for g in ix.generations]
        self.located = [Located(g) for _, g in self.table]

    def __len__(self):
        return len(self.table)

    def path(self, src: int) -> str:
        return self.paths[self.table[src][0]]

    def generation(self, src: int) -> dict:
        return self.table[src][1]

    def name(self, src: int) -> str:
        """What `matched_index` says: the index path, and the generation when it has several."""
        i, g = self.table[src]
        many = sum(1 for j, _ in self.table if j == i) > 1
        return f"{self.paths[i]}#{g['generation']}" if many else self.paths[i]

    def shard_path(self, fs, src: int, kind: str, r: int) -> str:
        g = self.generation(src)
        return fs.join(self.path(src), g["dir"], kind, f"part-{r:05d}.parquet")

    def docs_path(self, fs, src: int, shard: int) -> str:
        return fs.join(self.path(src), self.generation(src)["dir"], "docs", self.located[src].names[shard])


class IndexMatcher:
    """Used by GroupPartition: this partition's documents paired with indexed ones."""

    def __init__(self, sources: Sources, partitions: int):
        self.sources, self.partitions = sources, partitions
        self.exact_matches = _counter("index_exact_matches")
        self.left_out = _counter("index_candidates_left_out")
        self.read = _counter("index_key_rows_read")

    def _shards(self, fs, src: int, kind: str, p: int, wanted: np.ndarray, first: str):
        R = int(self.sources.generation(src)["partitions"])
        for r in shards_for(p, self.partitions, R):
            path = self.sources.shard_path(fs, src, kind, r)
            ix = read_keys(fs, path, wanted)
            keep = keys_in_partition(ix[first], p, self.partitions)
            self.read.inc(int(len(keep)))
            yield {k: v[keep] for k, v in ix.items()}

    def exact(self, fs, p: int, x: dict) -> tuple[list, np.ndarray]:
        """Exact matches of partition `p`'s documents (x: k0, k1, ordinal): the outputs
        to yield, and the matched ordinals (their band keys need no candidates)."""
        if not len(x["ordinal"]):
            return [], np.zeros(0, np.int64)
        wanted = np.unique(x["k0"])
        per = []
        for src in range(len(self.sources)):
            for ix in self._shards(fs, src, "exact", p, wanted, "k0"):
                o, i = match_exact(x["k0"], x["k1"], x["ordinal"], ix)
                if len(o):
                    per.append((o, np.full(len(o), src, np.int64), i))
        if not per:
            return [], np.zeros(0, np.int64)
        o, s, i = (np.concatenate(c) for c in zip(*per))
        order = np.lexsort((i, s, o))            # the first index, then generation, wins
        o, s, i = o[order], s[order], i[order]
        first = np.r_[True, o[1:] != o[:-1]]
        o, s, i = o[first], s[first], i[first]
        self.exact_matches.inc(len(o))
        return list(self._outputs(o, s, i, 1)), o

    def bands(self, fs, p: int, b: dict, exact: np.ndarray):
        """Band-key candidates of partition `p`'s documents (b: band, key, ordinal)
        other than the `exact` matches."""
        if not len(b["ordinal"]):
            return
        rest = ~np.isin(b["ordinal"], exact)
        band, key, ords = b["band"][rest], b["key"][rest], b["ordinal"][rest]
        wanted = np.unique(key)
        for src in range(len(self.sources)):
            os_, is_ = [], []
            for ix in self._shards(fs, src, "bands", p, wanted, "key"):
                o, i, left = match_bands(band, key, ords, ix)
                self.left_out.inc(left)
                os_.append(o)
                is_.append(i)
            o = np.concatenate(os_) if os_ else np.zeros(0, np.int64)
            if len(o):
                pair = np.unique(np.stack([o, np.concatenate(is_)], axis=1), axis=0)
                yield from self._outputs(pair[:, 0], np.full(len(pair), src, np.int64), pair[:, 1], 0)

    def _outputs(self, o, s, i, exact: int):
        """Keyed by (source, docs shard of the indexed document)."""
        for src, a in split_by(s, o=o, i=i):
            shard = self.sources.located[src].locate(a["i"])
            for sh, part in split_by(shard, o=a["o"], i=a["i"]):
                yield TaggedOutput("index", ((src, sh), pack(o=part["o"], i=part["i"],
                                                             x=np.full(len(part["o"]), exact, np.int8))))


class VerifyIndex(beam.DoFn):
    """Candidates whose indexed documents share a docs shard: that shard's rows and
    this run's signatures are read, and pairs reaching the threshold become matches,
    keyed by the new document's unit: (unit key, (packed o, j, x, s, i; matched ids))."""

    def __init__(self, output: str, num_perm: int, threshold: float, sources: Sources):
        self.output, self.num_perm, self.threshold, self.sources = output, num_perm, threshold, sources
        self._cache = {}
        self.candidates = _counter("index_candidates")
        self.verified = _counter("index_matches_verified")
        self.below = _counter("index_candidates_below_threshold")

    def setup(self):
        from pipelines.dedup import _SideFiles, _Work
        self.fs = BeamFS()
        self.sides = _SideFiles(self.fs, _Work(self.fs, self.output), self.num_perm)

    def process(self, kv, signed):
        from pipelines.dedup import _units
        (src, shard), chunks = kv
        c = concat([unpack(ch) for ch in chunks], _CAND)
        if not len(c["o"]):
            return
        # a pair meets in every partition where it shares a band key: once each, exact first
        order = np.lexsort((-c["x"], c["i"], c["o"]))
        c = {k: v[order] for k, v in c.items()}
        first = np.r_[True, (c["o"][1:] != c["o"][:-1]) | (c["i"][1:] != c["i"][:-1])]
        c = {k: v[first] for k, v in c.items()}
        self.candidates.inc(int((c["x"] == 0).sum()))
        units = _units(self._cache, signed)
        need = np.unique(c["i"])
        ids, sig = read_docs(self.fs, self.sources.docs_path(self.fs, src, shard), need, self.num_perm)
        pos = np.searchsorted(need, c["i"])
        j = np.ones(len(c["o"]))
        near = c["x"] == 0
        if near.any():
            j[near] = estimate_jaccard(self.sides.fetch(units, c["o"][near], False), sig[pos[near]])
        ok = (c["x"] == 1) | (j >= self.threshold)
        self.verified.inc(int(ok.sum()))
        self.below.inc(int((~ok).sum()))
        if not ok.any():
            return
        o, jj, xx, i, p = c["o"][ok], j[ok], c["x"][ok], c["i"][ok], pos[ok]
        for u, a in split_by(units.locate(o), o=o, j=jj, x=xx, i=i, k=np.arange(len(o))):
            yield units.keys[u], (pack(o=a["o"], j=a["j"], x=a["x"], i=a["i"],
                                       s=np.full(len(a["o"]), src, np.int64)),
                                  [ids[p[k]] for k in a["k"]])


def matched_ordinals(kv):
    key, (chunk, _) = kv
    yield key, pack(o=unpack(chunk)["o"])


class KeyEdgesByUnit(beam.DoFn):
    """Edge chunks keyed by the unit of one end ('a' or 'b')."""

    def __init__(self, end: str):
        self.end, self._cache = end, {}

    def process(self, chunk, signed):
        from pipelines.dedup import _units
        e = unpack(chunk)
        units = _units(self._cache, signed)
        for u, a in split_by(units.locate(e[self.end]), a=e["a"], b=e["b"]):
            yield units.keys[u], pack(**a)


class DropIndexed(beam.DoFn):
    """Edges of one unit's documents without those matched to the index (at the
    `end` this group was keyed by)."""

    def __init__(self, end: str):
        self.end = end
        self.dropped = _counter("index_edges_dropped")

    def process(self, kv):
        _, g = kv
        matched = concat([unpack(m) for m in g["m"]], {"o": _I64})["o"]
        for chunk in g["e"]:
            e = unpack(chunk)
            keep = ~np.isin(e[self.end], matched)
            self.dropped.inc(int((~keep).sum()))
            if keep.any():
                yield pack(a=e["a"][keep], b=e["b"][keep])


class DropIndexedEdges(beam.PTransform):
    """``edges | DropIndexedEdges(matched, signed)``: the edge chunks without any edge
    that touches a document matched to the index. ``matched``: (unit key, packed
    ordinals) per unit; ``signed``: the signing pass's records as a side input (where
    each ordinal lives). Each end is joined with its unit's matches in turn."""

    def __init__(self, matched, signed):
        super().__init__()
        self.matched, self.signed = matched, signed

    def expand(self, edges):
        for end in ("a", "b"):
            keyed = edges | f"KeyBy{end.upper()}" >> beam.ParDo(KeyEdgesByUnit(end), self.signed)
            edges = ({"e": keyed, "m": self.matched}
                     | f"Join{end.upper()}" >> beam.CoGroupByKey()
                     | f"Drop{end.upper()}" >> beam.ParDo(DropIndexed(end)))
        return edges


def best_matches(chunks: list) -> dict:
    """{ordinal: (matched id, src, j, exact)} from VerifyIndex's matches of one unit:
    exact first, then the highest Jaccard, then the first source and indexed ordinal."""
    best = {}
    for chunk, ids in chunks:
        m = unpack(chunk)
        for o, j, x, s, i, mid in zip(m["o"].tolist(), m["j"].tolist(), m["x"].tolist(),
                                      m["s"].tolist(), m["i"].tolist(), ids):
            rank = (-x, -j, s, i)
            if o not in best or rank < best[o][0]:
                best[o] = (rank, mid, s, j, bool(x))
    return {o: v[1:] for o, v in best.items()}


class IndexPartition(beam.DoFn):
    """One key partition of the new generation: its kept documents' exact and band keys
    from every unit's index work file, sorted into the generation's shards."""

    def __init__(self, index_dir: str, output: str):
        self.index_dir, self.output = index_dir, output

    def setup(self):
        self.fs = BeamFS()

    def process(self, p, written):
        from pipelines.dedup import _Work
        kinds = ({"k0": _U64, "k1": _U64, "ordinal": _I64},
                 {"band": np.dtype(np.int8), "key": _U64, "ordinal": _I64})
        for kind, names in enumerate(kinds):
            parts = []
            for unit, offsets in written:
                lo, hi = int(offsets[kind][p]), int(offsets[kind][p + 1])
                if hi > lo:
                    path = _Work(self.fs, self.output).index_keys(unit)
                    parts.append(unpack(read_range(self.fs, path, lo, hi - lo)))
            a = concat(parts, names)
            write_keys(self.fs, self.fs.join(self.index_dir, "exact" if kind == 0 else "bands",
                                             f"part-{p:05d}.parquet"),
                       "exact" if kind == 0 else "bands", a)
        yield p


def write_unit_index(fs, index_dir: str, output: str, unit: str, first: int, kept: dict,
                     signed_record, num_perm: int, partitions: int):
    """For WriteShard: the unit's kept documents into a docs shard, and their keys
    (read back from the unit's keys files) cut by partition into a work file.
    Returns the byte offsets of each partition (exact, then bands)."""
    from pipelines.dedup import SideFile, _Work, write_keys_file
    work = _Work(fs, output)
    ords = np.fromiter(kept.keys(), dtype=np.int64, count=len(kept))
    order = np.argsort(ords)
    ords = ords[order]
    vals = list(kept.values())
    ids = [vals[k][0] for k in order]
    sources = [vals[k][1] for k in order]
    sig = SideFile(fs, work.side(unit), num_perm, first).signatures(ords) if len(ords) \
        else np.zeros((0, num_perm), np.uint32)
    if len(ords):
        write_docs(fs, fs.join(index_dir, "docs", docs_shard_name(first)), ords, ids, sources, sig)
    # this unit's keys, all partitions, from its keys files (each kind's partitions
    # are consecutive packed values)
    ex, bd = [], []
    for c, offsets in enumerate(signed_record[5]):
        path = work.keys(unit, c)
        for kind, dest in ((0, ex), (1, bd)):
            off = np.asarray(offsets[kind], np.int64)
            if off[-1] > off[0]:
                data = read_range(fs, path, int(off[0]), int(off[-1] - off[0]))
                off = off - off[0]
                dest.extend(unpack(data[a:z]) for a, z in zip(off[:-1].tolist(), off[1:].tolist()) if z > a)
    e = concat(ex, {"k0": _U64, "k1": _U64, "ordinal": _I64})
    b = concat(bd, {"band": np.dtype(np.int8), "key": _U64, "ordinal": _I64})
    keep_e = np.isin(e["ordinal"], ords)
    keep_b = np.isin(b["ordinal"], ords)
    kinds = [split_by(partition_of(e["k0"][keep_e], partitions),
                      **{k: v[keep_e] for k, v in e.items()}),
             split_by(partition_of(b["key"][keep_b], partitions),
                      **{k: v[keep_b] for k, v in b.items()})]
    return write_keys_file(fs, work.index_keys(unit), kinds, partitions)


class IndexPlan:
    """What a dedup run reads from and writes to indexes (plan_indexes)."""

    def __init__(self, against, threshold, write_path=None, base=None, number=None, corpus=None,
                 partitions=None):
        self.against, self.threshold, self.partitions = against, threshold, partitions
        self.sources = Sources(against) if against else None
        self.write_path, self.base, self.number, self.corpus = write_path, base, number, corpus
        self.generation_dir = None
        if write_path is not None:
            from curation.dedup_index import generation_dir
            self.generation_dir = BeamFS().join(write_path, generation_dir(number))

    def clear(self, fs) -> None:
        """A generation directory index.json does not list is a failed run's."""
        from pipelines.fs import remove_tree
        remove_tree(fs, self.generation_dir)

    def manifest(self, raw: dict) -> dict:
        if self.sources is None:
            return {}
        return {"against": {
            "indexes": [{"path": ix.path, "generations": len(ix.generations), "documents": ix.documents}
                        for ix in self.against],
            "threshold": self.threshold,
            "measure": "estimated Jaccard (the index holds signatures, not texts)",
            **{k: raw.get(f"index_{k}", 0) for k in (
                "exact_matches", "candidates", "candidates_left_out", "matches_verified",
                "candidates_below_threshold", "edges_dropped", "key_rows_read")}}}

    def commit(self, fs, documents: int) -> dict:
        """List the written generation in index.json (its last write)."""
        from curation.dedup_index import generation_entry, write_manifest
        shards = []
        for path in fs.match(fs.join(self.generation_dir, "docs", "*.parquet")):
            name = path.rsplit("/", 1)[-1]
            shards.append((name, int(name.split(".", 1)[0])))
        manifest = dict(self.base)
        partitions = self.partitions
        entry = generation_entry(self.number, partitions, documents, shards, self.corpus)
        manifest["generations"] = list(manifest["generations"]) + [entry]
        write_manifest(fs, self.write_path, manifest)
        return {"path": self.write_path, "generation": self.number, "documents": int(documents),
                "partitions": partitions, "docs_shards": len(shards)}


def plan_indexes(fs, cfg, minhash_params: dict, lsh, files_info: list[dict]) -> IndexPlan:
    """Open and check the --against indexes and plan the --write-index generation;
    IndexError_ names what is wrong."""
    import hashlib
    import json

    from curation.dedup_index import IndexError_, index_settings, new_manifest
    from curation.fs import normpath
    from curation.lsh import LSHParams

    settings = index_settings(minhash_params, lsh.bands, lsh.rows)
    write = normpath(cfg.write_index) if cfg.write_index else None
    paths = [normpath(p) for p in cfg.against]
    if len(set(paths)) != len(paths):
        raise IndexError_(f"an index is given to --against twice: {paths}")
    against = []
    for path in paths:
        if path == write and not DedupIndex.exists(path, fs):
            continue          # the first run of an incremental series: nothing indexed yet
        ix = DedupIndex(path, fs)
        ix.check(settings)
        against.append(ix)
    # an index pair's estimate is all there is: the same tolerance as --verify estimate
    threshold = LSHParams.for_threshold(cfg.threshold, cfg.num_perm, lsh.bands, lsh.rows,
                                        tolerance=cfg.verify_tolerance).verify_threshold
    if write is None:
        return IndexPlan(against, threshold)
    fingerprint = hashlib.sha256(json.dumps([[f["path"], f.get("size")] for f in files_info],
                                            sort_keys=True).encode()).hexdigest()
    corpus = {"output": cfg.output, "inputs": list(cfg.inputs or []), "files": len(files_info),
              "fingerprint": fingerprint}
    if DedupIndex.exists(write, fs):
        ix = next((a for a in against if a.path == write), None)
        if ix is None:
            old = DedupIndex(write, fs)
            raise IndexError_(
                f"{write} already holds {old.documents:,} documents in {len(old.generations)} "
                f"generation(s); to add this run as the next one, also give --against {write} "
                f"(so its documents are checked against them first), or write a new index")
        gens = ix.generations
        for k, g in enumerate(gens):
            if g["corpus"].get("fingerprint") != fingerprint:
                continue
            if k == len(gens) - 1 and g["corpus"].get("output") == cfg.output:
                # this run wrote it before and is being run again: replace it, and do not
                # match the corpus against itself
                ix.manifest["generations"] = gens[:-1]
                break
            raise IndexError_(
                f"{write} already holds these input files as generation {g['generation']} "
                f"(written by the run in {g['corpus'].get('output')}); checking them against "
                f"themselves would remove every document")
        base, number = ix.manifest, len(ix.generations)
        against = [a for a in against if a.generations]
    else:
        base, number = new_manifest(settings), 0
    return IndexPlan(against, threshold, write, base, number, corpus, cfg.lsh_partitions)
