"""`curate score`: a fastText quality classifier scores every document, as one Beam pipeline.

Every document that can be scored is written with its score, P(high quality) from
`classifiers.fasttext_train.QualityModel`, in a `quality_score` column
(`curation.io.SCORED_DOCUMENT_SCHEMA`; read back by a later stage, it is
`Document.meta["quality_score"]`). Selection keeps a document iff
`quality_score >= threshold`; the others go to removed/, with their score, in the
same schema (so removed/ can be read back as input too):

  no selection     every document is kept
  --min-score X    threshold X
  --keep-top F     the threshold that keeps the top F of the scores of the whole
                   corpus (--keep-top-by domain: of each domain), never of one shard

"files" below are work items (pipelines.splits.ReadySplits): an input file larger
than --split-bytes is read as several ranges, each with shards of its own
(part-NNNNN-PPPPP).

Data flow without --keep-top (one pass; document text never goes through a shuffle):

  files ─ SpreadFiles ─ ScoreFiles: read one file, score it in batches, write its
          documents/, removed/ and rejected/ shards
        ├─ one counts record per file ───────────────────── AllCounts ─ SumCounts ─ WriteCounts
        └─ a score histogram per (file, domain) ─ Summaries: HistPerDomain ─ DomainSummaries ┐ side
                                                             └─ CorpusHist ─ CorpusSummary ──┘ inputs of
                                                                                               WriteCounts

With --keep-top F (two passes over the inputs, the model runs in the first only):

  files ─ SpreadFiles ─ ScanFiles: read, score, write _scores/part-NNNNN.npz (the
          file's scores, tie keys and domains in document order), emit its
          histograms and the file
        ├─ histograms ─ Summaries (as above) with the first-level cut(s)
        └─ scanned files ─ SpreadScanned ┬ TieScan (first-level cuts as side inputs): read
                                         │ _scores/ only, count the tie keys of the
                                         │ documents in a boundary bin that needs a
                                         │ tie-break ─ TieHistPerDomain ─ TieHists
                                         │   ─ CorpusCut / DomainCuts: the final cut(s)
                                         └ CutFiles (the final cuts as side inputs):
           re-read the file, take its scores and keys from _scores/, write documents/
           removed/ rejected/

Why the second pass re-reads the input and takes the first pass's scores instead of
re-scoring: scoring a web-length document takes ~2.3x the time of reading it
(benchmarks/bench_score.py, one core), the scores file is 20 bytes a document
(float64 score, uint64 tie key, int32 domain code), and the cut is then applied to
exactly the numbers the histograms counted, on any worker. The alternative of
writing every scored document once and moving it afterwards costs a full extra
write of the text. The driver deletes _scores/ at the end.

The cut (curation/scores.py). Scores are counted in BINS = 2**20 equal bins over
[0, 1] (bin of s = floor(s * 2**20), 1.0 in the top bin); the histograms are
integer counts, so their sums do not depend on the order workers finish in. With N
scored documents (of the corpus, or of a domain) and target = ceil(F * N) (F as
written: 0.1 is 1/10), the boundary bin b is the highest bin at which the count of
documents in bins >= b reaches the target; `s >= b / 2**20` is exactly
`bin(s) >= b`. When bin b holds more documents than the `need = target - count
above b` (classifier scores saturate: hundreds of documents can score exactly
1.0), TieScan counts, for the documents in bin b only, the top 20 bits of their
tie key (xxh3_64 of the id: the same on any worker, in any file order) in a second
histogram, and the tie-break cut t is the highest key bin at which the documents of
bin b with key bins >= t reach `need`. A document is kept iff
`bin(s) > b or (bin(s) == b and key_bin >= t)`: the target exactly, plus the
documents sharing key bin t beyond the need (~count_in(b) / 2**20). The manifest
reports the boundary bin, its count, the need, t, kept against target, asked and
achieved fractions. The tie scan reads 20 bytes a document and never the inputs or
the model; without ties it reads nothing.

Documents that cannot be scored (the model raises on one, or returns no probability)
are rejected with cause "score_error", like any malformed record.
"""
from __future__ import annotations

import json
import logging
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from curation.documents import NO_DOMAIN, Document, InputError, Rejected
from curation.fs import writing
from curation.config import DEFAULT_SPLIT_BYTES
from curation.io import (REJECTED_SCHEMA, SCORED_DOCUMENT_SCHEMA, FieldMap, InputFile,
                         file_shard_name, read_documents, scored_document_row, shard_stem, write_rows)
from curation.scores import (ScoreHistogram, corpus_summary, domain_histograms, domain_summaries,
                             domain_summary, keep_mask, needs_tie_break, summary_with_cut,
                             tie_histograms, tie_keys)
from classifiers.scoring import ModelRef, load_quality_model, read_first_pass, write_first_pass
from pipelines.filter import SideWriter, SumCounts, count_reject
from pipelines.fs import BeamFS
from pipelines.splits import ReadySplits

NS = "curation.score"
COUNTS_FILE = "score_counts.json"   # written by the pipeline, folded into manifest.json
SCORES_DIR = "_scores"              # --keep-top: the first pass's scores, deleted at the end
SCORE_ERROR = "score_error"         # rejection cause (curation.documents.REJECT_CAUSES)

log = logging.getLogger(__name__)


class HistogramFn(beam.CombineFn):
    def create_accumulator(self):
        return ScoreHistogram()

    def add_input(self, acc, hist):
        return acc.add(hist)

    def merge_accumulators(self, accs):
        out = ScoreHistogram()
        for a in accs:
            out.add(a)
        return out

    def extract_output(self, acc):
        return acc


# ---------------------------------------------------------------- counts

def new_counts() -> dict:
    return {"files": 0, "files_scanned": 0, "input": 0, "scored": 0, "kept": 0, "removed": 0,
            "rejected": 0, "blank_lines": 0, "other_records": 0, "rejected_by_cause": {}, "domains": {}}


def _domain_counts() -> dict:
    return {"input": 0, "scored": 0, "kept": 0, "removed": 0, "rejected": 0}


# ---------------------------------------------------------------- the per-file steps

def _batches(docs: Iterable, size: int) -> Iterator[list]:
    batch = []
    for d in docs:
        batch.append(d)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Scoring(beam.DoFn):
    """What both passes share: the model (one per worker process, shared by its
    threads and by both passes through `shared`), batched scoring that names the
    documents it fails on, the score_error rejection."""

    def __init__(self, model: ModelRef, shared_model, fields: FieldMap, max_doc_bytes: int,
                 strict: bool, batch_size: int):
        self.model_ref, self.shared_model = model, shared_model
        self.fields, self.max_doc_bytes, self.strict = fields, max_doc_bytes, strict
        self.batch_size = batch_size

    def setup(self):
        self.fs = BeamFS()
        self._model = None
        self.logged_errors = 0

    def model(self):
        if self._model is None:
            ref = self.model_ref
            self._model = self.shared_model.acquire(lambda: load_quality_model(ref, BeamFS())[0], tag=ref.sha256)
        return self._model

    def reader(self, file: InputFile):
        return read_documents(file, self.fields, max_doc_bytes=self.max_doc_bytes,
                              strict=self.strict, fs=self.fs)

    def score(self, file: InputFile, docs: list[Document]) -> tuple[np.ndarray, dict[int, str]]:
        """The batch's scores, NaN where scoring failed; errors: position -> detail."""
        try:
            s = np.asarray(self.model().score([d.text for d in docs]), dtype=np.float64)
            if s.shape == (len(docs),) and bool(np.all((s >= 0.0) & (s <= 1.0))):
                return s, {}
        except Exception:  # noqa: BLE001 - retried one by one below, to name the culprit
            pass
        # one document at a time: the same numbers (fastText scores each line alone)
        out, errors = np.full(len(docs), np.nan), {}
        for i, d in enumerate(docs):
            try:
                v = float(self.model().score([d.text])[0])
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"the model returned {v!r}, not a probability")
                out[i] = v
            except Exception as e:  # noqa: BLE001 - one bad document must not end the run
                errors[i] = f"{type(e).__name__}: {e}"[:1000]
                if self.logged_errors < 3:
                    self.logged_errors += 1
                    log.warning("score error at %s:%s (document %s): %s", file.path, d.line, d.id,
                                errors[i])
        if errors and self.strict:
            i = min(errors)
            raise InputError(self.score_error(file, docs[i], errors[i]))
        return out, errors

    @staticmethod
    def score_error(file: InputFile, d: Document, detail: str) -> Rejected:
        return Rejected(file=file.path, line=d.line, cause=SCORE_ERROR, detail=detail,
                        raw_prefix=d.text[:200],
                        raw_bytes=len(d.text.encode("utf-8", "surrogatepass")))


def scores_path(fs, output: str, file: InputFile) -> str:
    """The first pass's record of one work item (a file, or a split of one)."""
    return fs.join(output, SCORES_DIR, shard_stem("part", file.index, file.part if file.is_split else None)
                   + ".npz")


def _cut_of(domain: str, by: str, corpus, domains) -> dict | None:
    return corpus["cut"] if by == "corpus" else (domains.get(domain) or {}).get("cut")


class ScanFile(_Scoring):
    """--keep-top, first pass: one file -> its scores and tie keys in _scores/ (NaN
    where scoring failed), its histograms per domain on "hist", a counts record on
    "counts", and the file itself once its scores are written."""

    def __init__(self, output: str, **kw):
        super().__init__(**kw)
        self.output = output

    def setup(self):
        super().setup()
        self.model()                     # once per worker, not per element

    def process(self, item):
        _, file = item
        parts, keys, domains = [], [], []
        with self.reader(file) as reader:
            docs = (r for r in reader if isinstance(r, Document))   # rejections: second pass
            for batch in _batches(docs, self.batch_size):
                s, _ = self.score(file, batch)
                parts.append(s)
                keys.append(tie_keys(d.id for d in batch))
                domains.extend(d.domain or NO_DOMAIN for d in batch)
        scores = np.concatenate(parts) if parts else np.zeros(0)
        write_first_pass(self.fs, scores_path(self.fs, self.output, file), scores,
                         np.concatenate(keys) if keys else np.zeros(0, np.uint64), domains)
        hists = domain_histograms(scores, domains)
        counts = new_counts()
        counts["files_scanned"] = int(file.part == 0)   # a split file counts once
        for d, h in hists.items():
            counts["domains"][d] = {"scored": h.total}
            counts["scored"] += h.total
            yield TaggedOutput("hist", (d, h))
        Metrics.counter(NS, "scored").inc(counts["scored"])
        yield TaggedOutput("counts", counts)
        yield item


class TieScanFile(beam.DoFn):
    """--keep-top, between the passes: one file's _scores record -> (domain, histogram
    of the tie-key bins of its documents in the boundary bin of their cut), for the
    cuts whose boundary bin needs a tie-break (the first-level summaries are side
    inputs). Reads nothing when no cut needs one."""

    def __init__(self, output: str, by: str):
        self.output, self.by = output, by

    def setup(self):
        self.fs = BeamFS()

    def process(self, item, corpus, domains):
        _, file = item
        if self.by == "corpus":
            if not needs_tie_break(corpus["cut"]):
                return
        elif not any(needs_tie_break(s.get("cut")) for s in domains.values()):
            return
        rec = read_first_pass(self.fs, scores_path(self.fs, self.output, file))
        names = [str(n) for n in rec["domains"]]
        boundary = {}
        for name in names:
            cut = _cut_of(name, self.by, corpus, domains)
            if needs_tie_break(cut):
                boundary[name] = cut["bin"]
        groups = rec["domains"][rec["domain"]] if len(names) else np.zeros(0, dtype=str)
        for name, hist in tie_histograms(rec["scores"], rec["keys"], groups, boundary).items():
            Metrics.counter(NS, "tie_break_scanned").inc(hist.total)
            yield name, hist


class ScoreFile(_Scoring):
    """One input file -> its documents/ (kept, with their score), removed/ (below the
    threshold, with their score) and rejected/ shards, and one counts record. Without
    --keep-top it scores the file itself and emits its histograms on "hist"; with
    it, it takes the scores the first pass wrote and the cut(s) as side inputs."""

    def __init__(self, output: str, fmt: str, mode: str, min_score: float | None = None,
                 by: str = "corpus", **kw):
        super().__init__(**kw)
        self.output, self.fmt, self.mode = output, fmt, mode
        self.min_score, self.by = min_score, by

    def setup(self):
        super().setup()
        if self.mode != "keep_top":
            self.model()                 # keep_top reads scores: the model only explains failures

    def process(self, item, corpus=None, domains=None):
        _, file = item           # a whole input file, or a split of one (pipelines.splits)
        fs = self.fs
        shard = lambda sub: fs.join(self.output, sub, file_shard_name("part", file, self.fmt))  # noqa: E731
        pre = self._first_pass_scores(file) if self.mode == "keep_top" else None
        rejected = SideWriter(shard("rejected"), REJECTED_SCHEMA, self.fmt, fs)
        removed = SideWriter(shard("removed"), SCORED_DOCUMENT_SCHEMA, self.fmt, fs)
        counts = new_counts()
        counts["files"] = int(file.part == 0)   # a split file counts once
        state = {"pos": 0, "hists": {}}   # histograms summed batch by batch: nothing per document
        reader = self.reader(file)
        try:
            write_rows(shard("documents"),
                       self._kept(file, reader, counts, rejected, removed, pre, state, corpus, domains),
                       SCORED_DOCUMENT_SCHEMA, fmt=self.fmt, fs=fs)
            rejected.close()
            removed.close()
        except BaseException:
            rejected.abort()
            removed.abort()
            raise
        if pre is not None and state["pos"] != len(pre["scores"]):
            raise RuntimeError(f"{file.path} has {state['pos']} documents now but had {len(pre['scores'])} "
                               f"when it was scored: an input changed during the run")
        counts["blank_lines"] = reader.stats.blank_lines
        counts["other_records"] = reader.stats.other_records
        if counts["input"] != counts["kept"] + counts["removed"] + counts["rejected"]:
            raise RuntimeError(f"{file.path}: counts do not balance: {counts}")
        if pre is None:
            for d in sorted(state["hists"]):
                yield TaggedOutput("hist", (d, state["hists"][d]))
        self._count(counts)
        yield counts

    def _first_pass_scores(self, file: InputFile) -> dict[str, np.ndarray]:
        return read_first_pass(self.fs, scores_path(self.fs, self.output, file))

    def _kept(self, file, reader, counts, rejected, removed, pre, state, corpus, domains):
        """The kept rows of `file`, in input order; removed and rejected records go to
        their writers, everything is counted on the way."""
        by_domain = counts["domains"]
        docs = []
        for rec in reader:
            counts["input"] += 1
            if isinstance(rec, Rejected):
                dom = by_domain.setdefault(self.fields.domain or NO_DOMAIN, _domain_counts())
                self._reject(rec, counts, dom, rejected)
                continue
            docs.append(rec)
            if len(docs) >= self.batch_size:
                yield from self._decide(file, docs, counts, rejected, removed, pre, state, corpus, domains)
                docs = []
        if docs:
            yield from self._decide(file, docs, counts, rejected, removed, pre, state, corpus, domains)

    def _decide(self, file, docs, counts, rejected, removed, pre, state, corpus, domains):
        names = [d.domain or NO_DOMAIN for d in docs]
        if pre is None:
            scores, errors = self.score(file, docs)
            for d, h in domain_histograms(scores, names).items():
                state["hists"].setdefault(d, ScoreHistogram()).add(h)
            keep = (np.ones(len(docs), bool) if self.mode == "all" else
                    np.asarray(scores >= self.min_score))          # NaN: never (rejected anyway)
        else:
            start = state["pos"]
            scores = pre["scores"][start:start + len(docs)]
            keys = pre["keys"][start:start + len(docs)]
            if len(scores) != len(docs) or not np.array_equal(keys, tie_keys(d.id for d in docs)):
                raise RuntimeError(f"{file.path} holds other documents now than when it was scored "
                                   f"(count or ids differ near document {start}): an input changed "
                                   f"during the run")
            errors = {}
            for i in np.flatnonzero(np.isnan(scores)).tolist():   # failed in the first pass
                _, again = self.score(file, [docs[i]])
                errors[i] = again.get(0, "scoring failed in the first pass (not on a retry)")
            keep = np.zeros(len(docs), bool)
            group = np.array(names, dtype=str)
            for name in sorted(set(names)):
                at = group == name
                cut = _cut_of(name, self.by, corpus, domains)
                if cut is not None:                      # None: no document of it was scored
                    keep[at] = keep_mask(scores[at], keys[at], cut)
        state["pos"] += len(docs)
        by_domain = counts["domains"]
        for i, d in enumerate(docs):
            name = names[i]
            dom = by_domain.setdefault(name, _domain_counts())
            if i in errors:
                self._reject(self.score_error(file, d, errors[i]), counts, dom, rejected)
                continue
            v = float(scores[i])
            dom["input"] += 1
            if pre is None:
                counts["scored"] += 1
                dom["scored"] += 1
            row = scored_document_row(d, v)
            if keep[i]:
                counts["kept"] += 1
                dom["kept"] += 1
                yield row
            else:
                counts["removed"] += 1
                dom["removed"] += 1
                removed.write(row)

    def _reject(self, r: Rejected, counts, dom, rejected):
        count_reject(r, counts, dom, rejected)

    def _count(self, counts):
        # once per file, from the same numbers the counts record carries
        names = ("input", "kept", "removed", "rejected", "blank_lines", "other_records")
        for name in names + (("scored",) if self.mode != "keep_top" else ()):
            Metrics.counter(NS, name).inc(counts[name])
        for cause, n in counts["rejected_by_cause"].items():
            Metrics.counter(NS, f"rejected_{cause}").inc(n)


# ---------------------------------------------------------------- summaries and the counts file

class WriteCounts(beam.DoFn):
    """The summed counts and the score summaries (with the cuts) -> COUNTS_FILE."""

    def __init__(self, output: str):
        self.output = output

    def process(self, counts, corpus, domains):
        fs = BeamFS()
        path = fs.join(self.output, COUNTS_FILE)
        data = {"counts": counts, "scores": {"corpus": corpus, "domains": domains}}
        with writing(fs, path) as f:
            f.write(json.dumps(data, sort_keys=True, indent=1).encode("utf-8"))
        yield path


class Summaries(beam.PTransform):
    """Histograms per (file, domain) -> the corpus summary and {domain: summary}, each
    a one-element PCollection; the cut (keep_top) sits in the corpus's or each domain's."""

    def __init__(self, keep_top: float | None, by: str):
        super().__init__()
        self.keep_top, self.by = keep_top, by

    def expand(self, hists):
        per_domain = hists | "HistPerDomain" >> beam.CombinePerKey(HistogramFn())
        domains = (per_domain
                   | "SummariseDomains" >> beam.Map(domain_summary, self.keep_top if self.by == "domain" else None)
                   | "DomainSummaries" >> beam.combiners.ToDict())
        corpus = (per_domain
                  | "DomainHists" >> beam.Values()
                  | "CorpusHist" >> beam.CombineGlobally(HistogramFn())
                  | "CorpusSummary" >> beam.Map(summary_with_cut, self.keep_top if self.by == "corpus" else None))
        return corpus, domains


def build_score(p: beam.Pipeline, files: list[InputFile], *, output: str, fmt: str,
                fields: FieldMap, model: ModelRef, max_doc_bytes: int, strict: bool,
                batch_size: int, min_score: float | None, keep_top: float | None,
                keep_top_by: str, split_bytes: int = DEFAULT_SPLIT_BYTES):
    """Add the score transforms to `p`; returns the PCollection holding the path of
    the counts file. Input files larger than `split_bytes` are read in ranges, each
    its own work item and shard (pipelines.splits)."""
    from apache_beam.utils import shared
    common = dict(model=model, shared_model=shared.Shared(), fields=fields,
                  max_doc_bytes=max_doc_bytes, strict=strict, batch_size=batch_size)
    spread = (p
              | "Files" >> ReadySplits(files, split_bytes)
              | "SpreadFiles" >> beam.Reshuffle())
    if keep_top is None:
        mode = "all" if min_score is None else "min_score"
        res = spread | "ScoreFiles" >> beam.ParDo(
            ScoreFile(output, fmt, mode, min_score=min_score, **common)).with_outputs("hist", main="counts")
        corpus, domains = res.hist | "Summaries" >> Summaries(None, keep_top_by)
        parts = (res.counts,)
    else:
        scan = spread | "ScanFiles" >> beam.ParDo(
            ScanFile(output, **common)).with_outputs("hist", "counts", main="files")
        first_corpus, first_domains = scan.hist | "Summaries" >> Summaries(keep_top, keep_top_by)
        scanned = scan.files | "SpreadScanned" >> beam.Reshuffle()
        ties = (scanned
                | "TieScan" >> beam.ParDo(TieScanFile(output, keep_top_by), corpus=AsSingleton(first_corpus),
                                          domains=AsSingleton(first_domains))
                | "TieHistPerDomain" >> beam.CombinePerKey(HistogramFn())
                | "TieHists" >> beam.combiners.ToDict())
        corpus = first_corpus | "CorpusCut" >> beam.Map(corpus_summary, AsSingleton(ties), keep_top_by)
        domains = first_domains | "DomainCuts" >> beam.Map(domain_summaries, AsSingleton(ties), keep_top_by)
        written = (scanned
                   | "CutFiles" >> beam.ParDo(ScoreFile(output, fmt, "keep_top", by=keep_top_by, **common),
                                              corpus=AsSingleton(corpus), domains=AsSingleton(domains)))
        parts = (scan.counts, written)
    return (parts
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounts(new_counts))
            | "WriteCounts" >> beam.ParDo(WriteCounts(output), AsSingleton(corpus), AsSingleton(domains)))
