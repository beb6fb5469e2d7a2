"""`curate filter`: a chain of heuristic filters (curation.filters) as one Beam pipeline.

Data flow (document text never goes through a shuffle, except the capped sample
of removed documents):

  files ─ ReadySplits (a file larger than --split-bytes: several ranges, each a work
          item and a shard of its own) ─ FilterFile: read one input file or range, check
          each document with the chain and write its shards: documents/ (kept, with
          edited text), rejected/ and, without a sample cap, removed/
        ├─ one counts record per file ──────────────────────────────┐
        └─ with --removed-sample N: the first N removed documents   ├ Flatten ─ sum ─
           per rule of this file ─ Top.SmallestPerKey(N) by input    │   WriteCounts
           order ─ WriteSample: removed/<filter>.<rule>.<fmt> ───────┘

The manifest's counts come from that counts file (what was written), and every
count is also a Beam counter in the "curation.filter" namespace, one per rule.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import threading

import apache_beam as beam
import orjson
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from curation.documents import NO_DOMAIN, Document, InputError, Rejected
from curation.config import DEFAULT_SPLIT_BYTES
from curation.fs import writing
from curation.io import (DOCUMENT_SCHEMA, REJECTED_SCHEMA, FieldMap, InputFile, document_row,
                         file_shard_name, read_documents, rejected_row, write_documents, write_rows)
from pipelines.fs import BeamFS
from pipelines.splits import ReadySplits

NS = "curation.filter"
COUNTS_FILE = "filter_counts.json"     # written by the pipeline, folded into manifest.json

REMOVED_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + [
    pa.field("reason", pa.string(), nullable=False),   # "<filter>:<rule>"
    pa.field("signals", pa.string()),                  # JSON object, sorted keys
])

log = logging.getLogger(__name__)


def sample_name(reason: str, fmt: str) -> str:
    """The shard of one rule's removed sample: "gopher_quality:mean_word_length" ->
    "gopher_quality.mean_word_length.parquet"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", reason.replace(":", ".")) + "." + fmt


def signals_json(signals: dict) -> str | None:
    if not signals:
        return None
    # orjson: shortest float repr (deterministic), NaN/inf as null, never fails on odd keys
    return orjson.dumps(signals, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                        default=str).decode("utf-8")


def removed_row(doc: Document, reason: str, signals: dict) -> dict:
    return {**document_row(doc), "reason": reason, "signals": signals_json(signals)}


# ---------------------------------------------------------------- counts

def new_counts() -> dict:
    return {"files": 0, "input": 0, "kept": 0, "removed": 0, "rejected": 0, "edited": 0,
            "blank_lines": 0, "other_records": 0, "removed_written": 0, "removed_by_reason": {},
            "removed_written_by_reason": {}, "rejected_by_cause": {}, "domains": {}}


def _domain_counts() -> dict:
    return {"input": 0, "kept": 0, "removed": {}, "rejected": 0, "edited": 0}


def merge_counts(a: dict, b: dict) -> dict:
    """a += b for nested dicts of ints (sums are order-free: any runner, same result)."""
    for k, v in b.items():
        if isinstance(v, dict):
            merge_counts(a.setdefault(k, {}), v)
        else:
            a[k] = a.get(k, 0) + v
    return a


def count_reject(r: Rejected, counts: dict, dom: dict, rejected) -> None:
    """A rejected record: counted overall, by cause and for its domain, then written."""
    counts["rejected"] += 1
    dom["input"] += 1
    dom["rejected"] += 1
    by_cause = counts["rejected_by_cause"]
    by_cause[r.cause] = by_cause.get(r.cause, 0) + 1
    rejected.write(rejected_row(r))


class SumCounts(beam.CombineFn):
    """Adds up nested count dicts; `new` makes the stage's empty one."""

    def __init__(self, new=None):
        self.new = new or new_counts

    def create_accumulator(self):
        return self.new()

    def add_input(self, acc, counts):
        return merge_counts(acc, counts)

    def merge_accumulators(self, accs):
        out = self.new()
        for a in accs:
            merge_counts(out, a)
        return out

    def extract_output(self, acc):
        return acc


# ---------------------------------------------------------------- writing beside the main shard

_DONE, _ABORT = object(), object()


class _Aborted(Exception):
    pass


class SideWriter:
    """A second shard written while the main loop writes documents/: a thread runs
    write_rows over a bounded queue, so a file whose documents are mostly removed
    never sits in memory. Nothing is created until the first row; `abort()` leaves
    no file behind (write_rows deletes its temporary)."""

    BATCH = 256

    def __init__(self, path: str, schema: pa.Schema, fmt: str, fs):
        self.path, self.schema, self.fmt, self.fs = path, schema, fmt, fs
        self.count = 0
        self._buf: list[dict] = []
        self._q: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ended = False

    def _rows(self):
        while True:
            item = self._q.get()
            if item is _DONE or item is _ABORT:
                self._ended = True
                if item is _ABORT:
                    raise _Aborted()
                return
            yield from item

    def _run(self):
        try:
            write_rows(self.path, self._rows(), self.schema, fmt=self.fmt, fs=self.fs)
        except BaseException as e:   # noqa: BLE001 - handed to the main thread in close()
            self._error = e
            while not self._ended:   # drain, so a producer blocked on put() wakes up
                item = self._q.get()
                self._ended = item is _DONE or item is _ABORT

    def _put(self, item):
        if self._thread is None:
            self._q = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, name="side-writer", daemon=True)
            self._thread.start()
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def write(self, row: dict) -> None:
        self._buf.append(row)
        self.count += 1
        if len(self._buf) >= self.BATCH:
            self._put(self._buf)
            self._buf = []

    def close(self) -> int:
        if self._buf:
            self._put(self._buf)
            self._buf = []
        if self._thread is not None:
            self._q.put(_DONE)
            self._thread.join()
            if self._error is not None and not isinstance(self._error, _Aborted):
                raise self._error
        return self.count

    def abort(self) -> None:
        if self._thread is not None:
            if self._thread.is_alive():
                self._q.put(_ABORT)
            self._thread.join()


# ---------------------------------------------------------------- the per-file step

class FilterFile(beam.DoFn):
    """One input file -> its documents/, rejected/ (and uncapped removed/) shards,
    one counts record, and with a sample cap its first `sample` removed documents
    per rule as (reason, (ordinal, row)) on the "sample" output."""

    def __init__(self, output: str, fmt: str, fields: FieldMap, max_doc_bytes: int,
                 strict: bool, chain_spec: dict, sample: int | None):
        self.output, self.fmt, self.fields = output, fmt, fields
        self.max_doc_bytes, self.strict = max_doc_bytes, strict
        self.chain_spec, self.sample = chain_spec, sample

    def setup(self):
        from curation.filters import load_chain
        self.fs = BeamFS()
        # once per worker: tables, language models, block lists, evaluation n-grams (gs:// too)
        self.chain = load_chain(**self.chain_spec, fs=self.fs)
        self.logged_errors = 0

    def process(self, item):
        _, file = item           # a whole input file, or a split of one (pipelines.splits)
        join, fs = self.fs.join, self.fs
        shard = lambda sub: join(self.output, sub, file_shard_name("part", file, self.fmt))  # noqa: E731
        rejected = SideWriter(shard("rejected"), REJECTED_SCHEMA, self.fmt, fs)
        removed = None if self.sample is not None else SideWriter(shard("removed"), REMOVED_SCHEMA, self.fmt, fs)
        counts = new_counts()
        counts["files"] = int(file.part == 0)   # a split file counts once
        if self.chain.tallies:   # only then: other chains' counts (and manifests) stay as they were
            counts["tallies"] = dict.fromkeys(self.chain.tallies, 0)
        samples: dict[str, list] = {}
        reader = read_documents(file, self.fields, max_doc_bytes=self.max_doc_bytes,
                                strict=self.strict, fs=fs)
        try:
            write_documents(shard("documents"), self._kept(file, reader, counts, rejected, removed, samples),
                            fmt=self.fmt, fs=fs)
            rejected.close()
            if removed is not None:
                removed.close()
        except BaseException:
            rejected.abort()
            if removed is not None:
                removed.abort()
            raise
        counts["blank_lines"] = reader.stats.blank_lines
        counts["other_records"] = reader.stats.other_records
        if counts["input"] != counts["kept"] + counts["removed"] + counts["rejected"]:
            raise RuntimeError(f"{file.path}: counts do not balance: {counts}")
        self._count(counts)
        yield counts
        for reason in sorted(samples):
            for ordinal, row in samples[reason]:
                yield TaggedOutput("sample", (reason, (ordinal, row)))

    def _kept(self, file: InputFile, reader, counts, rejected, removed, samples):
        """The kept documents of `file`, in input order; everything else is routed
        to rejected/removed (or the sample) and counted on the way."""
        chain = self.chain
        by_reason, domains = counts["removed_by_reason"], counts["domains"]
        tallies = counts.get("tallies")
        for rec in reader:
            counts["input"] += 1
            if isinstance(rec, Rejected):
                dom = domains.setdefault(self.fields.domain or NO_DOMAIN, _domain_counts())
                self._reject(rec, counts, dom, rejected)
                continue
            dom = domains.setdefault(rec.domain or NO_DOMAIN, _domain_counts())
            try:
                v = chain.check(rec.text, rec.meta)
            except Exception as e:  # noqa: BLE001 - one bad document must not end the run
                r = Rejected(file=file.path, line=rec.line, cause="filter_error",
                             detail=f"{type(e).__name__}: {e}"[:1000], raw_prefix=rec.text[:200],
                             raw_bytes=len(rec.text.encode("utf-8", "surrogatepass")))
                if self.strict:
                    raise InputError(r) from e
                if self.logged_errors < 3:
                    self.logged_errors += 1
                    log.warning("filter error at %s:%s (document %s)", file.path, rec.line, rec.id,
                                exc_info=True)
                self._reject(r, counts, dom, rejected)
                continue
            dom["input"] += 1
            if v.keep:
                counts["kept"] += 1
                dom["kept"] += 1
                if v.text is not None:
                    counts["edited"] += 1
                    dom["edited"] += 1
                    rec.text = v.text
                if tallies is not None:   # summed over kept documents: what documents/ holds
                    for key in tallies:
                        tallies[key] += int(v.signals.get(key, 0))
                yield rec
                continue
            reason = v.reason
            counts["removed"] += 1
            by_reason[reason] = by_reason.get(reason, 0) + 1
            dom["removed"][reason] = dom["removed"].get(reason, 0) + 1
            # removed/ shows the document as it came in; the signals say why it went
            if removed is not None:
                removed.write(removed_row(rec, reason, v.signals))
                counts["removed_written"] += 1
                w = counts["removed_written_by_reason"]
                w[reason] = w.get(reason, 0) + 1
            elif self.sample:
                got = samples.setdefault(reason, [])
                if len(got) < self.sample:   # input order within a file: the first N are its smallest
                    got.append((rec.ordinal, removed_row(rec, reason, v.signals)))

    def _reject(self, r: Rejected, counts, dom, rejected):
        count_reject(r, counts, dom, rejected)

    def _count(self, counts):
        # once per file, from the same numbers the counts record carries
        for name in ("input", "kept", "removed", "rejected", "edited", "blank_lines", "other_records"):
            Metrics.counter(NS, name).inc(counts[name])
        for reason in self.chain.reasons:   # every rule, zero or not
            Metrics.counter(NS, reason).inc(counts["removed_by_reason"].get(reason, 0))
        for reason, n in counts["removed_by_reason"].items():
            if reason not in self.chain.reasons:
                Metrics.counter(NS, reason).inc(n)
        for cause, n in counts["rejected_by_cause"].items():
            Metrics.counter(NS, f"rejected_{cause}").inc(n)
        for key, n in counts.get("tallies", {}).items():
            Metrics.counter(NS, f"tally_{key}").inc(n)


# ---------------------------------------------------------------- the capped sample and the counts file

def _ordinal(item):
    return item[0]


class WriteSample(beam.DoFn):
    """One rule's sample (already the N first in input order) -> removed/<rule>.<fmt>."""

    def __init__(self, output: str, fmt: str):
        self.output, self.fmt = output, fmt

    def setup(self):
        self.fs = BeamFS()

    def process(self, kv):
        reason, items = kv
        rows = [row for _, row in sorted(items, key=_ordinal)]
        path = self.fs.join(self.output, "removed", sample_name(reason, self.fmt))
        n = write_rows(path, rows, REMOVED_SCHEMA, fmt=self.fmt, fs=self.fs)
        counts = new_counts()
        counts["removed_written"] = n
        counts["removed_written_by_reason"] = {reason: n}
        yield counts


class WriteCounts(beam.DoFn):
    def __init__(self, output: str):
        self.output = output

    def process(self, counts):
        fs = BeamFS()
        path = fs.join(self.output, COUNTS_FILE)
        with writing(fs, path) as f:
            f.write(json.dumps(counts, sort_keys=True, indent=1).encode("utf-8"))
        yield path


def build_filter(p: beam.Pipeline, files: list[InputFile], *, output: str, fmt: str,
                 fields: FieldMap, chain_spec: dict, removed_sample: int | None,
                 max_doc_bytes: int, strict: bool, split_bytes: int = DEFAULT_SPLIT_BYTES):
    """Add the filter transforms to `p`; returns the PCollection holding the path of
    the counts file. Input files larger than `split_bytes` are read in ranges, each
    its own work item and shard (pipelines.splits)."""
    files_kv = p | "Files" >> ReadySplits(files, split_bytes)
    res = (files_kv
           | "SpreadFiles" >> beam.Reshuffle()
           | "FilterFiles" >> beam.ParDo(FilterFile(output, fmt, fields, max_doc_bytes, strict,
                                                    chain_spec, removed_sample))
           .with_outputs("sample", main="counts"))
    parts = [res.counts]
    if removed_sample:
        written = (res.sample
                   | "FirstNPerRule" >> beam.combiners.Top.SmallestPerKey(removed_sample, key=_ordinal)
                   | "WriteSample" >> beam.ParDo(WriteSample(output, fmt)))
        parts.append(written)
    return (tuple(parts)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounts())
            | "WriteCounts" >> beam.ParDo(WriteCounts(output)))
