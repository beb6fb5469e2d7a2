"""Input files -> work items below the file (curation.splits), as a Beam transform.

  plan (driver: one size lookup per file, a footer read per large Parquet file;
        a warning names each gzip/zstd file too large to be one worker's job)
   ├─ whole files and Parquet splits: ready as planned ───────────────────────────┐
   └─ JSONL splits ─ SpreadRanges ─ CountRanges: newlines per byte range, read    ├ Flatten
        in parallel ─ GroupByFile ─ FirstLines: prefix sum -> each split's first   │
        line number ──────────────────────────────────────────────────────────────┘

What crosses the shuffle is one small record per split, never data. The count pass
reads each split JSONL file once more; the alternative, numbering lines relative to
the split and fixing them after the fact, would rewrite every output shard.
"""
from __future__ import annotations

import apache_beam as beam

from curation.config import DEFAULT_SPLIT_BYTES
from curation.io import InputFile
from curation.splits import count_range, needs_count, plan_splits, resolve_first_lines
from pipelines.fs import BeamFS


def split_key(f: InputFile) -> tuple[int, int]:
    """A work item's key: its file's index and its part (0 for a whole file)."""
    return f.index, f.part


class _CountRange(beam.DoFn):
    def setup(self):
        self.fs = BeamFS()

    def process(self, split: InputFile):
        yield split.index, (split, count_range(split, self.fs))


def _first_lines(kv):
    _, items = kv
    items = list(items)
    for f in resolve_first_lines([s for s, _ in items], [c for _, c in items]):
        yield split_key(f), f


class ReadySplits(beam.PTransform):
    """``p | ReadySplits(files, split_bytes)`` -> (key, InputFile) for every work
    item: a whole file (``key = (index, 0)``, the InputFile as given) or a split of
    one (``(index, part)``, with ``first_line`` resolved), ready for
    `curation.io.read_documents`. Name its outputs with `curation.io.file_shard_name`.
    Files at or below `split_bytes` come through unchanged."""

    def __init__(self, files: list[InputFile], split_bytes: int = DEFAULT_SPLIT_BYTES, fs=None):
        super().__init__()
        self.files, self.split_bytes, self.fs = list(files), split_bytes, fs

    def expand(self, pbegin):
        plan = plan_splits(self.files, self.fs or BeamFS(), self.split_bytes)
        ready = [(split_key(f), f) for f in plan if not needs_count(f)]
        counted = [f for f in plan if needs_count(f)]
        items = pbegin | "Planned" >> beam.Create(ready)
        if not counted:
            return items
        lines = (pbegin
                 | "Ranges" >> beam.Create(counted)
                 | "SpreadRanges" >> beam.Reshuffle()
                 | "CountRanges" >> beam.ParDo(_CountRange())
                 | "GroupByFile" >> beam.GroupByKey()
                 | "FirstLines" >> beam.FlatMap(_first_lines))
        return (items, lines) | "AllSplits" >> beam.Flatten()
