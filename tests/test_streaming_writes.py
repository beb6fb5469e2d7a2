"""Issue 13: a shard writer's memory does not grow with the shard. write_rows holds at
most one chunk of Python rows and one bounded row group as Arrow, and its bytes are
those of converting each row group in one piece (what it wrote before)."""
from __future__ import annotations

import hashlib
import random
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

import curation.io.write as cio
from curation.io import DOCUMENT_SCHEMA, write_rows

WORDS = ("river stone market letter window garden engine silver harbor winter paper "
         "signal forest castle bridge lantern").split()


def _rows(n: int, seed: int = 7, words: int = 500):
    rng = random.Random(seed)
    for i in range(n):
        yield {"id": f"doc-{i}", "text": " ".join(rng.choice(WORDS) for _ in range(words)),
               "domain": "web", "source": "test", "line": i + 1, "meta": None}


def test_writer_does_not_hold_a_row_group_of_python_rows(tmp_path):
    # ~40 MB of text, one stream: the old writer held every row of a 64 MiB row group
    # as Python objects (peak >= 40 MiB traced); now at most _CHUNK_ROWS of them.
    n = 12_000
    write_rows(str(tmp_path / "warm.parquet"), _rows(10), DOCUMENT_SCHEMA)   # imports are not the writer's
    tracemalloc.start()
    try:
        written = write_rows(str(tmp_path / "big.parquet"), _rows(n), DOCUMENT_SCHEMA)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written == n
    assert peak < 16 << 20, f"Python held {peak / 2**20:.1f} MiB while writing"
    md = pq.ParquetFile(tmp_path / "big.parquet").metadata
    assert md.num_rows == n
    assert md.num_row_groups >= 4     # ~40 MB of text in groups of at most 8 MiB


def _old_parquet(path, rows, schema, group_rows, group_bytes):
    """The writer as it was: each row group converted from Python in one piece."""
    w = pq.ParquetWriter(path, schema, compression="zstd", compression_level=cio._PARQUET_ZSTD_LEVEL)
    buf, size = [], 0
    for row in rows:
        buf.append(row)
        size += cio._row_bytes(row)
        if len(buf) >= group_rows or size >= group_bytes:
            w.write_table(pa.Table.from_pylist(buf, schema=schema), row_group_size=len(buf))
            buf, size = [], 0
    if buf:
        w.write_table(pa.Table.from_pylist(buf, schema=schema), row_group_size=len(buf))
    w.close()


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_chunked_row_groups_are_byte_identical(tmp_path, monkeypatch):
    rows = list(_rows(3_000, seed=3, words=60))
    # groups ended by the row cap, by the byte cap (mid-chunk), and a chunk boundary at the end
    for group_rows, group_bytes in ((64 * 1024, 8 << 20), (2048, 1 << 30), (1500, 1 << 30),
                                    (64 * 1024, 200_000), (1024, 1 << 30)):
        monkeypatch.setattr(cio, "_ROW_GROUP_ROWS", group_rows)
        monkeypatch.setattr(cio, "_ROW_GROUP_BYTES", group_bytes)
        for k in (0, 1, 1024, 2048, 3000):
            ours, old = tmp_path / "ours.parquet", tmp_path / "old.parquet"
            assert write_rows(str(ours), iter(rows[:k]), DOCUMENT_SCHEMA) == k
            if k:
                _old_parquet(str(old), rows[:k], DOCUMENT_SCHEMA, group_rows, group_bytes)
                assert _sha(ours) == _sha(old), (group_rows, group_bytes, k)
            assert pq.read_table(ours).to_pylist() == rows[:k]
