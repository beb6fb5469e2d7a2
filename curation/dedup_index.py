"""A dedup index: the kept documents of earlier runs, for deduplicating new data
against old without touching the old (`curate dedup --write-index / --against`).

Layout (one directory, local or on an object store)::

    INDEX/index.json                      settings, and one entry per generation
    INDEX/g00000/docs/<first>.parquet     ordinal, id, source, signature (one per unit of
                                          the run; <first> is its first ordinal)
    INDEX/g00000/bands/part-<p>.parquet   key, band, ordinal: band keys of partition p,
                                          sorted by key
    INDEX/g00000/exact/part-<p>.parquet   k0, k1, ordinal: exact keys, sorted by k0

Partition p of R holds the keys with ``partition_of(key, R) == p`` (their high bits),
so a run with P partitions reads, for its partition q, only the shards r with
r = q (mod gcd(P, R)): once per shard when P == R. Inside a shard, Parquet row-group
statistics let a reader skip the key ranges none of its keys fall in, and docs shards
are read only for the row groups holding matched candidates.

A generation is listed in index.json only once its run has finished; a generation
directory that index.json does not list is a failed run's, and is ignored and
replaced. index.json is replaced atomically where the filesystem allows, and it is
the last file a run writes to the index.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.exchange import partition_of
from curation.fs import FS, default_fs, writing

FORMAT = "curation-dedup-index-v1"
MANIFEST = "index.json"
DOCS_ROW_GROUP = 4096
KEYS_ROW_GROUP = 1 << 16
# index documents a new band key is compared with at most (a bucket that large is not
# a set of near duplicates of one document); the rest are counted, not compared
MAX_BUCKET = 256
# the settings an index's signatures and band keys depend on, in the order a
# refusal names them
SETTINGS = ("normalisation", "scheme", "family", "num_perm", "seed", "ngram", "char_ngrams",
            "signature_dtype", "bands", "rows")

BANDS_SCHEMA = pa.schema([pa.field("key", pa.uint64(), nullable=False),
                          pa.field("band", pa.int8(), nullable=False),
                          pa.field("ordinal", pa.int64(), nullable=False)])
EXACT_SCHEMA = pa.schema([pa.field("k0", pa.uint64(), nullable=False),
                          pa.field("k1", pa.uint64(), nullable=False),
                          pa.field("ordinal", pa.int64(), nullable=False)])


def docs_schema(num_perm: int) -> pa.Schema:
    return pa.schema([pa.field("ordinal", pa.int64(), nullable=False),
                      pa.field("id", pa.string(), nullable=False),
                      pa.field("source", pa.string()),
                      pa.field("signature", pa.binary(4 * num_perm), nullable=False)])


class IndexError_(ValueError):
    """An index that cannot be used: missing, damaged, or built with other settings."""


def index_settings(minhash_params: dict, bands: int, rows: int) -> dict:
    """What an index's keys depend on (not the backend: every backend signs alike).
    The Unicode version of the Python that wrote it is recorded, not compared: it
    changes only code points new in it."""
    import unicodedata

    from curation.minhash.text import NORMALISATION
    s = {k: minhash_params[k] for k in SETTINGS if k in minhash_params}
    s.update(normalisation=NORMALISATION, bands=int(bands), rows=int(rows),
             unicode=unicodedata.unidata_version)
    return s


def generation_dir(g: int) -> str:
    return f"g{g:05d}"


def _write_table(fs: FS, path: str, table: pa.Table, row_group_size: int) -> None:
    with writing(fs, path) as f:
        pq.write_table(table, f, row_group_size=row_group_size, compression="zstd",
                       write_statistics=True)


def write_docs(fs: FS, path: str, ordinals: np.ndarray, ids: list[str], sources: list,
               signatures: np.ndarray) -> None:
    """One docs shard; `ordinals` increasing."""
    sig = np.ascontiguousarray(signatures, dtype=np.uint32)
    width = sig.shape[1] * 4 if sig.ndim == 2 else 0
    blob = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(ids),
                                                [None, pa.py_buffer(sig.tobytes())])
    table = pa.table({"ordinal": pa.array(np.asarray(ordinals, np.int64)),
                      "id": pa.array(ids, pa.string()), "source": pa.array(sources, pa.string()),
                      "signature": blob}, schema=docs_schema(sig.shape[1]))
    _write_table(fs, path, table, DOCS_ROW_GROUP)


def write_keys(fs: FS, path: str, kind: str, arrays: dict) -> None:
    """One partition's band keys (`kind` "bands": key, band, ordinal) or exact keys
    ("exact": k0, k1, ordinal), sorted by key."""
    schema = BANDS_SCHEMA if kind == "bands" else EXACT_SCHEMA
    order = np.lexsort(tuple(arrays[n] for n in reversed(schema.names)))
    table = pa.table({n: pa.array(np.asarray(arrays[n])[order], schema.field(n).type)
                      for n in schema.names}, schema=schema)
    _write_table(fs, path, table, KEYS_ROW_GROUP)


def _row_groups(pf: pq.ParquetFile, column: int, wanted: np.ndarray) -> list[int]:
    """Row groups whose [min, max] of `column` holds one of the sorted `wanted`."""
    md = pf.metadata
    out = []
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(column).statistics
        if st is None or not st.has_min_max:
            out.append(g)
            continue
        if np.searchsorted(wanted, st.max, side="right") > np.searchsorted(wanted, st.min, side="left"):
            out.append(g)
    return out


def read_keys(fs: FS, path: str, wanted: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of a keys shard in the row groups that may hold one of `wanted`
    (sorted first-column values); every column as a NumPy array."""
    with fs.open_read(path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        groups = _row_groups(pf, 0, wanted) if len(wanted) else []
        if not groups:
            t = pf.schema_arrow.empty_table()
        else:
            t = pf.read_row_groups(groups)
    return {n: t.column(n).to_numpy() for n in names}


def read_docs(fs: FS, path: str, ordinals: np.ndarray, num_perm: int):
    """(ids, sources, signatures) of `ordinals` (sorted, unique) from a docs shard;
    each must be in it."""
    with fs.open_read(path) as f:
        pf = pq.ParquetFile(f)
        t = pf.read_row_groups(_row_groups(pf, 0, ordinals), columns=["ordinal", "id", "signature"])
    have = t.column("ordinal").to_numpy()
    pos = np.searchsorted(have, ordinals)
    if len(ordinals) and (np.any(pos >= len(have)) or np.any(have[np.minimum(pos, len(have) - 1)] != ordinals)):
        raise IndexError_(f"{path}: an indexed ordinal is missing from its docs shard (damaged index?)")
    ids = t.column("id").to_pylist()
    col, w = t.column("signature").combine_chunks(), 4 * num_perm
    raw = np.frombuffer(col.buffers()[1], dtype=np.uint8)[col.offset * w:(col.offset + len(col)) * w]
    sig = raw.view(np.uint32).reshape(len(col), num_perm)
    return [ids[p] for p in pos], sig[pos]


def shards_for(partition: int, partitions: int, index_partitions: int) -> list[int]:
    """The index's partitions (of `index_partitions`) that can hold keys of our
    `partition` (of `partitions`): partition_of takes the same high bits modulo each."""
    g = math.gcd(partitions, index_partitions)
    return [r for r in range(index_partitions) if r % g == partition % g]


def match_exact(k0: np.ndarray, k1: np.ndarray, ords: np.ndarray, ix: dict) -> tuple[np.ndarray, np.ndarray]:
    """(new ordinal, indexed ordinal) for every new document whose 128-bit exact key is
    indexed (the first indexed copy)."""
    if not len(ords) or not len(ix["ordinal"]):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((ix["ordinal"], ix["k1"], ix["k0"]))
    i0, i1, io = ix["k0"][order], ix["k1"][order], ix["ordinal"][order]
    # a structured view orders (k0, k1) lexicographically for searchsorted
    pair = np.dtype([("a", np.uint64), ("b", np.uint64)])
    hay = np.empty(len(i0), pair)
    hay["a"], hay["b"] = i0, i1
    needle = np.empty(len(k0), pair)
    needle["a"], needle["b"] = k0, k1
    pos = np.searchsorted(hay, needle)
    hit = pos < len(hay)
    hit[hit] = (i0[pos[hit]] == k0[hit]) & (i1[pos[hit]] == k1[hit])
    return ords[hit], io[pos[hit]]


def match_bands(band: np.ndarray, key: np.ndarray, ords: np.ndarray, ix: dict,
                most: int = MAX_BUCKET) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate pairs (new ordinal, indexed ordinal) sharing a band key, at most `most`
    indexed documents per new key; and how many pairs that limit left out."""
    if not len(ords) or not len(ix["ordinal"]):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    order = np.lexsort((ix["ordinal"], ix["band"], ix["key"]))
    ik, ib, io = ix["key"][order], ix["band"][order], ix["ordinal"][order]
    lo = np.searchsorted(ik, key, side="left")
    hi = np.searchsorted(ik, key, side="right")
    n = hi - lo
    left_out = int(np.maximum(n - most, 0).sum())
    n = np.minimum(n, most)
    if not n.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), left_out
    rep = np.repeat(np.arange(len(key)), n)
    start = np.repeat(lo, n)
    within = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
    j = start + within
    ok = ib[j] == band[rep]
    return ords[rep[ok]], io[j[ok]], left_out


class DedupIndex:
    """An index directory as index.json describes it."""

    def __init__(self, path: str, fs: FS | None = None):
        self.path, self.fs = path, default_fs(fs)
        man = self.fs.join(path, MANIFEST)
        if not self.fs.exists(man):
            raise IndexError_(f"{path}: not a dedup index (no {MANIFEST}; write one with "
                              f"curate dedup --write-index)")
        try:
            with self.fs.open_read(man) as f:
                self.manifest = json.loads(f.read().decode("utf-8"))
        except ValueError as e:
            raise IndexError_(f"{path}/{MANIFEST}: not valid JSON ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise IndexError_(f"{path}: index format {self.manifest.get('format')!r}, this "
                              f"version reads {FORMAT!r}")
        for g in self.generations:
            if int(g.get("partitions", 0)) < 1 or not g.get("docs_shards") and g.get("documents"):
                raise IndexError_(f"{path}/{MANIFEST}: generation {g.get('generation')} lists no "
                                  f"partitions or docs shards (damaged index?)")

    @staticmethod
    def exists(path: str, fs: FS | None = None) -> bool:
        fs = default_fs(fs)
        return fs.exists(fs.join(path, MANIFEST))

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def generations(self) -> list[dict]:
        return self.manifest["generations"]

    @property
    def documents(self) -> int:
        return sum(int(g["documents"]) for g in self.generations)

    def check(self, settings: dict) -> None:
        """Refuse an index whose keys were made otherwise, naming the first setting
        that differs."""
        for k in SETTINGS:
            mine, theirs = settings.get(k), self.settings.get(k)
            if mine != theirs:
                raise IndexError_(
                    f"{self.path} was built with {k}={theirs!r}, this run uses {k}={mine!r}: "
                    f"its signatures and band keys cannot be compared with this run's; rerun "
                    f"with the index's settings or build a new index")


def new_manifest(settings: dict) -> dict:
    return {"format": FORMAT, "settings": settings, "generations": []}


def write_manifest(fs: FS, path: str, manifest: dict) -> None:
    with writing(fs, fs.join(path, MANIFEST)) as f:
        f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def generation_entry(g: int, partitions: int, documents: int, shards: list[tuple[str, int]],
                     corpus: dict) -> dict:
    return {"generation": g, "dir": generation_dir(g), "partitions": int(partitions),
            "documents": int(documents), "docs_shards": [[n, int(first)] for n, first in shards],
            "corpus": corpus, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def docs_shard_name(first_ordinal: int) -> str:
    return f"{int(first_ordinal):020d}.parquet"


class Located:
    """Which docs shard of a generation holds an indexed ordinal (shards are named by
    the first ordinal of the unit they came from; units do not overlap)."""

    def __init__(self, generation: dict):
        shards = sorted(generation["docs_shards"], key=lambda s: s[1])
        self.names = [s[0] for s in shards]
        self.first = np.array([s[1] for s in shards], dtype=np.int64)

    def locate(self, ordinals: np.ndarray) -> np.ndarray:
        return np.maximum(np.searchsorted(self.first, ordinals, side="right") - 1, 0)


def keys_in_partition(keys: np.ndarray, partition: int, partitions: int) -> np.ndarray:
    return partition_of(keys, partitions) == partition
