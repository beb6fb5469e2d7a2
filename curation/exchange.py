"""Work files of `curate dedup`: packed arrays on disk (or gs://) instead of records
in a shuffle.

The signing pass writes, per input unit (a file, or a split of one):

- a signature side file: every valid document's ordinal and id, its MinHash
  signature as a fixed-size row and, for ``--verify exact``, its shingle hashes;
  verification reads only the rows of the documents on candidate edges;
- exact keys and band keys, cut into partitions by key (packed values written one
  after another into a unit's keys file, each partition a byte range), so one worker
  per partition reads what it must group from every unit without any shuffle.

Everything here is plain NumPy on the `curation.fs` protocol; the pipeline layer
decides who calls what. The formats are internal to one run (the work folder is
removed when the run succeeds).
"""
from __future__ import annotations

import json
import struct

import numpy as np

from curation.fs import FS, default_fs, read_range, writing

MAGIC = b"CPK1"
_HEAD = struct.Struct("<4sI")
# Rows of the signature file read in one request when they lie this close together.
_GAP_ROWS = 64
_GAP_BYTES = 64 << 10


def pack(**arrays: np.ndarray) -> bytes:
    """Named NumPy arrays as one bytes value (a small JSON header, then raw data)."""
    meta, blobs = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        meta.append([name, a.dtype.str, list(a.shape)])
        blobs.append(a.tobytes())
    head = json.dumps(meta, separators=(",", ":")).encode("ascii")
    return b"".join([_HEAD.pack(MAGIC, len(head)), head, *blobs])


def unpack(buf: bytes) -> dict[str, np.ndarray]:
    """The arrays of `pack`, as read-only views of `buf`."""
    magic, n = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError("not a packed-array value (bad magic)")
    pos = _HEAD.size + n
    out = {}
    for name, dtype, shape in json.loads(buf[_HEAD.size:pos]):
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(buf, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += count * dt.itemsize
    return out


def write_packed(fs: FS, path: str, **arrays: np.ndarray) -> int:
    """Write `pack(**arrays)` to `path` through a temporary name; returns its size."""
    data = pack(**arrays)
    with writing(fs, path) as f:
        f.write(data)
    return len(data)


def read_packed(fs: FS, path: str) -> dict[str, np.ndarray]:
    with fs.open_read(path) as f:
        return unpack(f.read())


def concat(parts: list[dict[str, np.ndarray]], names: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Concatenate the same-named arrays of several packed values (empty when none)."""
    return {k: (np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dt))
            for k, dt in names.items()}


def partition_of(keys: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of 64-bit hash keys: their high bits, so the low bits stay free to
    order keys inside a partition."""
    return ((np.asarray(keys, dtype=np.uint64) >> np.uint64(40)) % np.uint64(partitions)).astype(np.int64)


def split_by(part: np.ndarray, **arrays: np.ndarray):
    """Yield (partition, {name: rows of that partition}) for every non-empty partition."""
    order = np.argsort(part, kind="stable")
    ps = part[order]
    cuts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1], True]) if len(ps) else np.zeros(1, np.int64)
    for a, b in zip(cuts[:-1], cuts[1:]):
        sel = order[a:b]
        yield int(ps[a]), {k: v[sel] for k, v in arrays.items()}


# ---------------------------------------------------------------- signature side files


class SideFileWriter:
    """Streams one unit's side file set: ``<stem>.sig`` (rows of num_perm uint32, row
    ``i`` for ordinal ``first + i``, zeros where the unit has no document at that
    ordinal: a rejected record or a blank line), ``<stem>.sh`` (shingle hashes, exact
    verification only) and, on close, ``<stem>.idx`` (ordinals, id offsets and bytes,
    shingle offsets). Rows found by arithmetic let verification read a signature
    without the unit's index, so its reads grow with the candidates, not with the
    units each verifying worker touches."""

    def __init__(self, fs: FS, stem: str, num_perm: int, shingles: bool):
        self.fs, self.stem, self.num_perm, self.shingles = fs, stem, num_perm, shingles
        self._sig = fs.open_write(stem + ".sig.tmp")
        self._sh = fs.open_write(stem + ".sh.tmp") if shingles else None
        self._ords, self._id_lens, self._sh_lens, self._prio = [], [], [], []
        self._ids = []
        self.bytes_written = 0
        self.first = self.last = None   # ordinals of the first and last document
        self._rows = 0                  # .sig rows written

    def add(self, ordinals: np.ndarray, ids: list[str], signatures: np.ndarray,
            shingles: list[np.ndarray] | None = None, priority: np.ndarray | None = None) -> None:
        """``priority``: per document, what a survivor policy ranks by (higher first)."""
        sig = np.ascontiguousarray(signatures, dtype=np.uint32)
        if sig.shape != (len(ordinals), self.num_perm):
            raise ValueError(f"signatures of shape {sig.shape} for {len(ordinals)} documents")
        ords = np.asarray(ordinals, dtype=np.int64)
        if len(ords):
            if np.any(np.diff(ords) <= 0) or (self.last is not None and ords[0] <= self.last):
                raise ValueError(f"{self.stem}: ordinals must be added in increasing order")
            if self.first is None:
                self.first = ords[0]
            self.last = ords[-1]
            pos = ords - self.first
            need = int(pos[-1]) + 1 - self._rows
            if need != len(ords):
                block = np.zeros((need, self.num_perm), dtype=np.uint32)
                block[pos - self._rows] = sig
                sig = block
            self._sig.write(sig.tobytes())
            self.bytes_written += sig.nbytes
            self._rows += need
        self._ords.append(ords)
        if priority is not None:
            self._prio.append(np.asarray(priority, dtype=np.float64))
        enc = [i.encode("utf-8", "surrogatepass") for i in ids]
        self._id_lens.append(np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc)))
        self._ids.append(b"".join(enc))
        if self._sh is not None:
            for s in shingles:
                b = np.ascontiguousarray(s, dtype=np.uint32).tobytes()
                self._sh.write(b)
                self.bytes_written += len(b)
            self._sh_lens.append(np.fromiter((len(s) for s in shingles), dtype=np.int64,
                                             count=len(shingles)))

    def close(self) -> int:
        """Finish the set; returns the number of documents."""
        self._sig.close()
        self.fs.rename(self.stem + ".sig.tmp", self.stem + ".sig")
        ords = np.concatenate(self._ords) if self._ords else np.zeros(0, np.int64)
        id_off = np.r_[0, np.cumsum(np.concatenate(self._id_lens))] if self._id_lens else np.zeros(1, np.int64)
        arrays = {"ordinal": ords, "id_offsets": id_off.astype(np.int64),
                  "id_bytes": np.frombuffer(b"".join(self._ids), dtype=np.uint8)}
        if self._prio:
            arrays["priority"] = np.concatenate(self._prio)
        if self._sh is not None:
            self._sh.close()
            self.fs.rename(self.stem + ".sh.tmp", self.stem + ".sh")
            lens = np.concatenate(self._sh_lens) if self._sh_lens else np.zeros(0, np.int64)
            arrays["shingle_offsets"] = np.r_[0, np.cumsum(lens)].astype(np.int64)
        self.bytes_written += write_packed(self.fs, self.stem + ".idx", **arrays)
        return len(ords)


class SideFile:
    """Random access to one unit's side files: rows are found by ordinal and read
    with ranged reads, so fetching k signatures costs k rows, not the file."""

    def __init__(self, fs: FS | None, stem: str, num_perm: int, first: int | None = None):
        """``first``: the unit's first ordinal, when the caller knows it; signatures are
        then read without loading the index (ids and shingles still load it)."""
        self.fs, self.stem, self.num_perm = default_fs(fs), stem, num_perm
        self._idx = None
        self.first = int(first) if first is not None else None

    @property
    def idx(self) -> dict[str, np.ndarray]:
        if self._idx is None:
            self._idx = read_packed(self.fs, self.stem + ".idx")
        return self._idx

    @property
    def ordinals(self) -> np.ndarray:
        return self.idx["ordinal"]

    def rows_of(self, ordinals: np.ndarray) -> np.ndarray:
        """Row numbers of `ordinals`; every one must be in this unit."""
        ordinals = np.asarray(ordinals, dtype=np.int64)
        rows = np.searchsorted(self.ordinals, ordinals)
        bad = (rows >= len(self.ordinals)) | (self.ordinals[np.minimum(rows, len(self.ordinals) - 1)] != ordinals) \
            if len(self.ordinals) else np.ones(len(ordinals), bool)
        if np.any(bad):
            raise KeyError(f"{self.stem}: ordinal {int(ordinals[np.argmax(bad)])} is not in this side file")
        return rows

    def ids(self, ordinals: np.ndarray) -> list[str]:
        rows = self.rows_of(ordinals)
        off, blob = self.idx["id_offsets"], self.idx["id_bytes"]
        return [bytes(blob[off[r]:off[r + 1]]).decode("utf-8", "surrogatepass") for r in rows]

    def priority(self, ordinals: np.ndarray) -> np.ndarray:
        """What the survivor policy ranks `ordinals` by (written when one was set)."""
        if "priority" not in self.idx:
            raise KeyError(f"{self.stem}: no priorities were written (no survivor policy)")
        return self.idx["priority"][self.rows_of(ordinals)]

    def signatures(self, ordinals: np.ndarray) -> np.ndarray:
        ordinals = np.asarray(ordinals, dtype=np.int64)
        if self.first is None:
            self.first = int(self.ordinals[0]) if len(self.ordinals) else 0
        rows = ordinals - self.first
        width = self.num_perm * 4
        try:
            if np.any(rows < 0):
                raise OSError("before the first row")
            out = _read_rows(self.fs, self.stem + ".sig", rows, width).view(np.uint32)
        except OSError:
            raise KeyError(f"{self.stem}: an ordinal of {ordinals.tolist()[:8]} is not in this side file") from None
        out = out.reshape(len(rows), self.num_perm)
        # a gap row is all zeros; a signature never is (each value is a minimum over
        # the document's shingles, or the maximum for a document without any)
        gap = ~out.any(axis=1)
        if np.any(gap):
            raise KeyError(f"{self.stem}: ordinal {int(ordinals[np.argmax(gap)])} is not in this side file")
        return out

    def shingles(self, ordinals: np.ndarray) -> list[np.ndarray]:
        """Shingle sets of `ordinals`, read in coalesced ranges (runs of documents
        less than _GAP_BYTES apart are one read)."""
        rows = self.rows_of(ordinals)
        off = self.idx["shingle_offsets"]
        out = [None] * len(rows)
        order = np.argsort(rows, kind="stable")
        rs = rows[order]
        if not len(rs):
            return out
        starts, ends = off[rs] * 4, off[rs + 1] * 4
        cuts = np.flatnonzero(np.r_[True, starts[1:] - ends[:-1] > _GAP_BYTES, True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            lo, hi = int(starts[a]), int(ends[b - 1])
            block = read_range(self.fs, self.stem + ".sh", lo, hi - lo)
            for k in range(a, b):
                out[order[k]] = np.frombuffer(block, dtype=np.uint32, count=int(ends[k] - starts[k]) // 4,
                                              offset=int(starts[k]) - lo)
        return out


def _read_rows(fs: FS, path: str, rows: np.ndarray, width: int) -> np.ndarray:
    """Fixed-width rows `rows` of a file as (len(rows), width) uint8, read in
    coalesced ranges in file order."""
    out = np.empty((len(rows), width), dtype=np.uint8)
    if not len(rows):
        return out
    order = np.argsort(rows, kind="stable")
    rs = rows[order]
    cuts = np.flatnonzero(np.r_[True, np.diff(rs) > _GAP_ROWS, True])
    for a, b in zip(cuts[:-1], cuts[1:]):
        lo, hi = int(rs[a]), int(rs[b - 1]) + 1
        block = read_range(fs, path, lo * width, (hi - lo) * width)
        block = np.frombuffer(block, dtype=np.uint8).reshape(hi - lo, width)
        out[order[a:b]] = block[rs[a:b] - lo]
    return out


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs, sorted by a then b."""
    if not len(a):
        return a, b
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    return a[keep], b[keep]
