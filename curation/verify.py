"""Conservation proven from what was written, not from counters.

A stage's counters are bumped in the same loop that routes each record, so the
balance ``input = kept + removed + rejected`` they give can only catch a lost
counter. This module reconciles a stage's *outputs* with its *inputs*, by record
position (input file, line or row: ids may repeat, positions never do):

- the input records are counted from the input files themselves: JSONL by one
  cheap pass over the lines (a record is a non-blank line, the reader's own rule,
  lines over ``max_doc_bytes`` included); Parquet from the footer's row count
  (no data read); Arrow by reading its batches' lengths;
- the outputs are read back, only their position columns (``source``/``line`` of
  documents/, removed/ and dedup's clusters/ rows with ``kept = false``;
  ``file``/``line`` of rejected/);
- every input record must be found exactly once: none missing, none twice, no
  row naming a position that is not an input record. The rows per place must also
  equal the manifest's counts.

Memory is two bytes per input position (a "is a record" and a "seen" flag per
file, NumPy arrays), never a Python object per record.

What it can prove, stated in `Reconciliation.proves`:

- a damaged input: this check's pass meets the damage where the reader met it. In
  JSON Lines a damaged stretch (corrupt or truncated compressed data) is one record,
  the reader's reject row there, as the lines inside it cannot be counted by anyone;
  lines after it are numbered as read. In Parquet every row the footer counts is a
  record, so a lost row group must have one reject row per lost row;
- filter with ``--removed-sample N`` writes only a sample of the removed
  documents: then the check proves that kept, rejected and sampled rows are
  distinct input records and that the records in no output are exactly as many as
  the removed documents not sampled, but not which records those are.

Used by the stage drivers after the pipeline (the manifest's ``reconciled``) and
by ``curate verify`` on an old run. Pure Python, NumPy and pyarrow: no Beam.
"""
from __future__ import annotations

import array
import dataclasses
import json
import posixpath
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.fs import FS, basename, default_fs
from curation.io import FieldMap, InputFile, input_format, iter_rows, read_documents
from curation.io.inputs import _READ_ERRORS   # what the reader treats as "cannot read this file"
from curation.manifest import BalanceError

__all__ = ["Part", "STAGE_PARTS", "InputRecords", "count_input_records", "Reconciler",
           "Reconciliation", "ReconcileError", "reconcile_output", "verify_stage_dir",
           "stage_counts", "MAX_EXAMPLES"]

MAX_EXAMPLES = 10          # discrepancies kept for the message and the manifest
_BATCH_ROWS = 1 << 16


class ReconcileError(BalanceError):
    """The outputs of a stage are not exactly its input records, once each."""


@dataclass(frozen=True)
class Part:
    """One output folder of a stage and which records its rows stand for."""

    name: str                    # folder under the stage's output directory
    role: str                    # "kept" | "removed" | "rejected"
    file_column: str             # the column naming the input file
    removed_only: bool = False   # dedup's clusters/: only rows with kept = false


_DOCS = Part("documents", "kept", "source")
_REJECTED = Part("rejected", "rejected", "file")
STAGE_PARTS = {
    "dedup": (_DOCS, Part("clusters", "removed", "source", removed_only=True), _REJECTED),
    "filter": (_DOCS, Part("removed", "removed", "source"), _REJECTED),
    "score": (_DOCS, Part("removed", "removed", "source"), _REJECTED),
}
ROLES = ("kept", "removed", "rejected")


# ---------------------------------------------------------------- the input side

@dataclass
class InputRecords:
    """The record positions of one input file. ``is_record[p]`` says whether
    position p (JSONL: 1-based physical line; Parquet/Arrow: 0-based row) is a
    record; ``damaged_at`` are the positions where the reader meets damage (each a
    record: its reject row stands there)."""

    file: InputFile
    is_record: np.ndarray
    blank_lines: int = 0
    damaged_at: list = field(default_factory=list)
    error: str | None = None
    other_records: int = 0           # WARC records that are not responses

    @property
    def unit(self) -> str:
        return {"jsonl": "line", "warc": "record"}.get(self.file.format, "row")


def _jsonl_records(file: InputFile, max_doc_bytes: int, fs: FS) -> InputRecords:
    # the reader's own line splitting (BOM, CRLF, over-long lines), without parsing JSON
    reader = read_documents(file, FieldMap(), max_doc_bytes=max_doc_bytes, fs=fs)
    lines = reader._jsonl_lines()
    blanks = array.array("q")
    last, damaged, error = 0, [], None
    try:
        for line_no, raw, _, _ in lines:
            last = line_no
            if raw is None:                       # over max_doc_bytes: a record (too_large)
                continue
            if not isinstance(raw, bytes):        # damage: one record (the reader's reject row)
                damaged.append(line_no)
            elif not raw.strip():
                blanks.append(line_no)
    except _READ_ERRORS as e:                     # the file cannot be opened: one record
        last, error = last + 1, f"{type(e).__name__}: {e}"
        damaged.append(last)
    finally:
        lines.close()
    is_record = np.ones(last + 1, dtype=bool)
    is_record[0] = False
    if blanks:
        is_record[np.frombuffer(blanks, dtype=np.int64)] = False
    return InputRecords(file, is_record, blank_lines=len(blanks), damaged_at=damaged, error=error)


def _columnar_records(file: InputFile, fs: FS) -> InputRecords:
    rows, error = 0, None
    try:
        with fs.open_read(file.path) as f:
            if file.format == "parquet":   # the footer counts every row, damaged ones too
                rows = pq.ParquetFile(f).metadata.num_rows
            else:
                magic = f.read(6)
                f.seek(0)
                if magic == b"ARROW1":
                    reader = pa.ipc.open_file(f)
                    for i in range(reader.num_record_batches):
                        rows += reader.get_batch(i).num_rows
                else:
                    for batch in pa.ipc.open_stream(f):
                        rows += batch.num_rows
    except _READ_ERRORS as e:
        error = f"{type(e).__name__}: {e}"
    if error is not None:   # the rows read, then one record where reading broke off
        return InputRecords(file, np.ones(rows + 1, dtype=bool), damaged_at=[rows], error=error)
    return InputRecords(file, np.ones(rows, dtype=bool))


def _warc_records(file: InputFile, fs: FS) -> InputRecords:
    from curation.io.warc import record_kinds
    kinds, error = [], None
    try:
        with fs.open_read(file.path) as f:
            for is_response in record_kinds(f):
                kinds.append(is_response)
    except _READ_ERRORS as e:   # the reader's reject row stands after the last whole record
        error = f"{type(e).__name__}: {e}"
    is_record = np.array(kinds + ([True] if error else []), dtype=bool)
    return InputRecords(file, is_record, damaged_at=[len(kinds)] if error else [], error=error,
                        other_records=int((~is_record).sum()))


def count_input_records(file: InputFile, max_doc_bytes: int, fs: FS | None = None) -> InputRecords:
    """The record positions of `file`, found as `read_documents` finds them."""
    fs = default_fs(fs)
    if file.format == "jsonl":
        return _jsonl_records(file, max_doc_bytes, fs)
    if file.format == "warc":
        return _warc_records(file, fs)
    return _columnar_records(file, fs)


# ---------------------------------------------------------------- the reconciliation

@dataclass
class Reconciliation:
    """What reconciling a stage's outputs with its inputs found."""

    stage: str
    files: int = 0
    records: int = 0                 # input records, counted from the input files
    blank_lines: int = 0
    other_records: int = 0           # WARC records other than responses: not records
    rows: dict = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    missing: int = 0                 # input records in no output
    twice: int = 0                   # extra occurrences of a record
    not_input: int = 0               # rows naming no input record
    damaged_files: list = field(default_factory=list)
    removed_sample: int | None = None
    unsampled_removed: int | None = None   # removed documents the sample left out (manifest)
    counts_agree: dict = field(default_factory=dict)
    discrepancies: list = field(default_factory=list)
    errors: list = field(default_factory=list)   # could not read an input or output

    @property
    def ok(self) -> bool:
        missing_ok = (self.missing == 0 if self.unsampled_removed is None
                      else self.missing == self.unsampled_removed)
        return (missing_ok and not self.twice and not self.not_input and not self.errors
                and self.counts_agree.get("ok", True))

    @property
    def proves(self) -> str:
        if self.unsampled_removed is None:
            what = ("every input record is in exactly one of documents/, "
                    f"{'clusters/ (kept = false)' if self.stage == 'dedup' else 'removed/'} "
                    "and rejected/, and no row there names anything else")
        else:
            what = (f"kept, rejected and the sampled removed rows (--removed-sample "
                    f"{self.removed_sample}) are distinct input records, and the input records "
                    f"in no output are as many as the removed documents not sampled "
                    f"(which ones cannot be told from the outputs)")
        if self.damaged_files:
            what += (f"; {len(self.damaged_files)} input file(s) are damaged: there a damaged "
                     f"stretch of JSON Lines is one record (its reject row), as the lines in it "
                     f"cannot be counted")
        return what

    def summary(self) -> str:
        """One line: what was reconciled, or the first discrepancy."""
        r = self.rows
        removed = f"{r['removed']} removed"
        if self.unsampled_removed is not None:
            removed = (f"{r['removed']} sampled removed (+{self.unsampled_removed} "
                       f"unsampled, by count)")
        parts = f"{r['kept']} kept + {removed} + {r['rejected']} rejected"
        if not self.ok:
            first = (self.errors or self.discrepancies or [self.counts_message()])[0]
            return (f"{self.stage}: FAILED: {self.missing} missing, {self.twice} twice, "
                    f"{self.not_input} not input records; first: {first}")
        tail = f" ({self.blank_lines} blank lines skipped)" if self.blank_lines else ""
        if self.other_records:
            tail += f" ({self.other_records} WARC records other than responses skipped)"
        if self.damaged_files:
            tail += f" ({len(self.damaged_files)} damaged input files)"
        once = "each once" if self.unsampled_removed is None else "distinct"
        return (f"{self.stage}: {self.records} input records in {self.files} file{'s' if self.files != 1 else ''} reconciled "
                f"with the outputs, {once}: {parts}{tail}")

    def counts_message(self) -> str:
        bad = {k: v for k, v in self.counts_agree.items() if k != "ok" and not v["ok"]}
        return "rows unlike the manifest's counts: " + ", ".join(
            f"{k} {v['written']} written, {v['manifest']} in the manifest" for k, v in bad.items())

    def as_manifest(self) -> dict:
        return {
            "ok": self.ok, "proves": self.proves, "files": self.files, "records": self.records,
            "blank_lines": self.blank_lines,
            **({"other_records": self.other_records} if self.other_records else {}),
            "rows": dict(self.rows), "missing": self.missing,
            "twice": self.twice, "not_input_records": self.not_input,
            "damaged_files": list(self.damaged_files),
            "removed_sample": self.removed_sample, "unsampled_removed": self.unsampled_removed,
            "counts_agree": self.counts_agree,
            "discrepancies": self.errors + self.discrepancies,
        }

    def raise_if_failed(self, manifest_path: str | None = None) -> None:
        if self.ok:
            return
        first = (self.errors + self.discrepancies)[:3] or [self.counts_message()]
        where = f" (see {manifest_path})" if manifest_path else ""
        raise ReconcileError(f"{self.stage}: the outputs are not the input records once each: "
                             + "; ".join(first) + where)


class Reconciler:
    """Positions of output rows, added batch by batch, checked against the inputs."""

    def __init__(self, stage: str, inputs: list[InputRecords]):
        self.inputs = inputs
        self.index = {r.file.path: i for i, r in enumerate(inputs)}
        self.seen = [np.zeros(len(r.is_record), dtype=bool) for r in inputs]
        self.res = Reconciliation(stage, files=len(inputs))
        self.to_locate: dict[tuple[int, int], str] = {}   # (file id, position) -> what is wrong
        self.missing_at: list[tuple[int, int]] = []

    def _say(self, msg: str) -> None:
        if len(self.res.discrepancies) < MAX_EXAMPLES:
            self.res.discrepancies.append(msg)

    def _locate_later(self, fid: int, pos: int, what: str) -> None:
        if len(self.to_locate) < MAX_EXAMPLES:   # the second pass looks for these few only
            self.to_locate.setdefault((fid, pos), what)

    def _where(self, fid: int, pos: int) -> str:
        r = self.inputs[fid]
        return f"{r.file.path} {r.unit} {pos}"

    def add(self, where: str, role: str, sources: list, lines: np.ndarray, first_row: int = 0,
            picked: np.ndarray | None = None) -> None:
        """Rows `first_row`.. of output file `where` (or, with `picked`, those rows of
        them): their input file names and positions (-1: null)."""
        n = len(lines)
        if n == 0:      # e.g. a clusters/ batch with no removed member
            return
        row_no = (lambda i: first_row + i) if picked is None else (lambda i: first_row + int(picked[i]))
        self.res.rows[role] += n
        lut = {s: self.index.get(s, -1) if s is not None else -2 for s in set(sources)}
        fids = np.fromiter((lut[s] for s in sources), dtype=np.int64, count=n)
        lines = np.asarray(lines, dtype=np.int64)
        order = np.argsort(fids, kind="stable")
        sf = fids[order]
        cuts = np.flatnonzero(np.r_[True, sf[1:] != sf[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            rows = order[a:b]
            fid = int(sf[a])
            if fid < 0:
                self.res.not_input += len(rows)
                for i in rows[:MAX_EXAMPLES].tolist():
                    what = ("a row with no input file" if fid == -2 else
                            f"a row naming {sources[i]!r}, not an input file of this stage")
                    self._say(f"{where} row {row_no(i)}: {what}")
                continue
            pos = lines[rows]
            seen = self.seen[fid]
            out = (pos < 0) | (pos >= len(seen))
            if out.any():
                self.res.not_input += int(out.sum())
                for i in rows[out][:MAX_EXAMPLES].tolist():
                    self._say(f"{where} row {row_no(i)}: {self._where(fid, int(lines[i]))} "
                              f"is not an input record (past the end of the file)")
                pos, rows = pos[~out], rows[~out]
                if not len(pos):
                    continue
            srt = np.argsort(pos, kind="stable")
            sp = pos[srt]
            again = seen[pos]
            again[srt[np.r_[False, sp[1:] == sp[:-1]]]] = True   # twice within this batch
            if again.any():
                self.res.twice += int(again.sum())
                for p in pos[again][:MAX_EXAMPLES].tolist():
                    self._locate_later(fid, p, "found twice")
            seen[pos] = True

    def finish(self) -> Reconciliation:
        res = self.res
        for fid, r in enumerate(self.inputs):
            seen, rec = self.seen[fid], r.is_record
            res.records += int(rec.sum())
            res.blank_lines += r.blank_lines
            res.other_records += r.other_records
            if r.damaged_at:
                res.damaged_files.append({"file": r.file.path, r.unit + "s": r.damaged_at[:MAX_EXAMPLES],
                                          **({"error": r.error} if r.error else {})})
            missing = rec & ~seen
            n_missing = int(missing.sum())
            res.missing += n_missing
            if n_missing and len(self.missing_at) < MAX_EXAMPLES:
                self.missing_at.extend((fid, p) for p in np.flatnonzero(missing)[:MAX_EXAMPLES].tolist())
            stray = seen & ~rec
            if stray.any():
                res.not_input += int(stray.sum())
                for p in np.flatnonzero(stray)[:MAX_EXAMPLES].tolist():
                    what = ("a blank line" if r.file.format == "jsonl" and p > 0
                            else "a WARC record other than a response" if r.file.format == "warc"
                            else "not a record")
                    self._locate_later(fid, p, f"not an input record ({what})")
        return res


def _missing_msg(rc: Reconciler, fid: int, pos: int, parts: tuple[Part, ...]) -> str:
    names = ", ".join(f"{p.name}/" + (" (kept = false)" if p.removed_only else "") for p in parts)
    return f"{rc._where(fid, pos)}: missing (in none of {names})"


# ---------------------------------------------------------------- reading the outputs

def _output_files(fs: FS, output: str, part: Part) -> list[str]:
    d = fs.join(output, part.name)
    return [p for p in fs.match(fs.join(d, "*"))
            if not basename(p).startswith(".") and input_format(p) is not None]


def _columns(part: Part) -> list[str]:
    return [part.file_column, "line"] + (["kept"] if part.removed_only else [])


def _batches(path: str, cols: list[str], fs: FS) -> Iterator[dict[str, pa.Array]]:
    """Only the named columns of an output shard, in batches (Parquet: nothing else is
    read; JSON Lines: rows parsed one at a time)."""
    if input_format(path)[0] == "parquet":
        with fs.open_read(path) as f:
            pf = pq.ParquetFile(f)
            absent = [c for c in cols if c not in pf.schema_arrow.names]
            if absent:
                raise ValueError(f"{path} has no column {absent[0]!r}")
            for b in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
                yield {c: b.column(c) for c in cols}
        return
    buf: list[dict] = []
    for row in iter_rows(path, fs):
        if not isinstance(row, dict) or any(c not in row for c in cols):
            raise ValueError(f"{path}: a row without {', '.join(cols)}")
        buf.append(row)
        if len(buf) >= _BATCH_ROWS:
            yield {c: pa.array([r[c] for r in buf]) for c in cols}
            buf = []
    if buf:
        yield {c: pa.array([r[c] for r in buf]) for c in cols}


def _walk(fs: FS, output: str, parts: tuple[Part, ...]):
    """Per batch of every output shard: (part, "folder/file", first row, sources,
    lines, picked): `picked`, for clusters/, the batch rows that are removals."""
    for part in parts:
        for path in _output_files(fs, output, part):
            where = f"{part.name}/{basename(path)}"
            row = 0
            for b in _batches(path, _columns(part), fs):
                n = len(b["line"])
                lines = pc.fill_null(b["line"], -1).to_numpy(zero_copy_only=False)
                sources = b[part.file_column].to_pylist()
                picked = None
                if part.removed_only:
                    picked = np.flatnonzero(~pc.fill_null(b["kept"], True).to_numpy(zero_copy_only=False))
                    lines, sources = lines[picked], [sources[i] for i in picked.tolist()]
                yield part, where, row, sources, lines, picked
                row += n


def _locate(rc: Reconciler, fs: FS, output: str, parts: tuple[Part, ...]) -> dict:
    """A second pass, only for the few positions to report: the output rows holding them."""
    found: dict[tuple[int, int], list[str]] = {k: [] for k in rc.to_locate}
    files = {fid for fid, _ in found}
    for _, where, first, sources, lines, picked in _walk(fs, output, parts):
        for i, (s, p) in enumerate(zip(sources, lines.tolist())):
            key = (rc.index.get(s, -1), p)
            if key[0] in files and key in found:
                found[key].append(f"{where} row {first + (i if picked is None else int(picked[i]))}")
    return found


def stage_counts(command: str, counts: dict) -> dict:
    """The manifest's counts, per place: input, kept, removed (written), rejected,
    and blank lines."""
    out = {"input": int(counts["input"]), "kept": int(counts["kept"]),
           "rejected": int(counts["rejected"]),
           "blank_lines": int(counts.get("blank_lines_skipped", 0)),
           "other_records": int(counts.get("warc_records_skipped", 0))}
    if command == "dedup":
        out["removed"] = sum(int(counts.get(k, 0)) for k in (
            "removed_exact", "removed_near", "removed_exact_index", "removed_near_index"))
    else:
        out["removed"] = int(counts["removed"])
    out["removed_written"] = int(counts.get("removed_written", out["removed"]))
    return out


def reconcile_output(command: str, output: str, files: list[InputFile], counts: dict | None = None, *,
                     max_doc_bytes: int, removed_sample: int | None = None,
                     fs: FS | None = None, read_from=None) -> Reconciliation:
    """Reconcile the outputs under `output` of one stage (`command`: dedup, filter or
    score) with its input `files`; `counts` (the manifest's) are checked against the
    rows written. `removed_sample`: filter's --removed-sample. `read_from` maps an
    input's path (as the rows name it) to where to read it now."""
    fs = default_fs(fs)
    if command not in STAGE_PARTS:
        raise ValueError(f"no reconciliation for a {command!r} stage")
    parts = STAGE_PARTS[command]
    inputs, errors = [], []
    for f in files:
        at = read_from(f.path) if read_from else f.path
        if not fs.exists(at):   # the run would have said unreadable_file; here it moved
            errors.append(f"{f.path}: the input file is not there (moved or deleted since the run?)")
            inputs.append(InputRecords(f, np.zeros(0, dtype=bool)))
            continue
        rec = count_input_records(dataclasses.replace(f, path=at), max_doc_bytes, fs)
        rec.file = f
        inputs.append(rec)
    rc = Reconciler(command, inputs)
    rc.res.errors.extend(errors)
    try:
        for part, where, first, sources, lines, picked in _walk(fs, output, parts):
            rc.add(where, part.role, sources, lines, first, picked)
    except (OSError, ValueError, pa.ArrowException) as e:
        rc.res.errors.append(f"cannot read the outputs: {type(e).__name__}: {e}")
        return rc.res
    res = rc.finish()
    if command == "filter" and removed_sample is not None:
        res.removed_sample = removed_sample
    if counts is not None:
        want = stage_counts(command, counts)
        if res.removed_sample is not None:
            res.unsampled_removed = want["removed"] - want["removed_written"]
        written = {"input": res.records, "kept": res.rows["kept"],
                   "removed": res.rows["removed"], "rejected": res.rows["rejected"],
                   "blank_lines": res.blank_lines, "other_records": res.other_records}
        claimed = {**want, "removed": want["removed_written"]}
        if not (written["other_records"] or claimed["other_records"]):
            del written["other_records"]      # no WARC input: manifests as before
        agree = {k: {"written": written[k], "manifest": claimed[k], "ok": written[k] == claimed[k]}
                 for k in written}
        agree["ok"] = all(v["ok"] for v in agree.values())
        res.counts_agree = agree
    msgs = []
    if res.unsampled_removed is not None:
        if res.missing != res.unsampled_removed:
            msgs.append(f"{res.missing} input records are in no output, but the manifest says "
                        f"{res.unsampled_removed} removed documents were left out of the sample")
    else:
        msgs.extend(_missing_msg(rc, fid, p, parts) for fid, p in rc.missing_at)
    if rc.to_locate:
        found = _locate(rc, fs, output, parts)
        msgs.extend(f"{rc._where(fid, p)}: {what}: " + (", ".join(found[(fid, p)]) or "?")
                    for (fid, p), what in sorted(rc.to_locate.items()))
    res.discrepancies = (msgs + res.discrepancies)[:MAX_EXAMPLES]
    return res


# ---------------------------------------------------------------- an old run's stage directory

def _read_manifest(path: str, fs: FS) -> dict:
    with fs.open_read(path) as f:
        return json.loads(f.read().decode("utf-8"))


def _moved(written_to: str | None, stage_dir: str, fs: FS):
    """A run directory moved or copied since it ran: its stages' inputs inside the old
    run directory (filter reads dedup/documents) are read at the same place in this
    one, where it holds them (a stage directory copied alone reads them at the old
    place). Rows still name the old paths, so those stay the files' names."""
    if not written_to or "://" in written_to or "://" in stage_dir:
        return lambda p: p
    old = posixpath.dirname(posixpath.normpath(written_to)) + "/"
    new = posixpath.dirname(posixpath.abspath(stage_dir)) + "/"
    if old == new:
        return lambda p: p

    def where(p: str) -> str:
        here = new + p[len(old):] if p.startswith(old) else None
        return here if here is not None and fs.exists(here) else p
    return where


def verify_stage_dir(stage_dir: str, fs: FS | None = None, manifest: dict | None = None) -> Reconciliation:
    """Reconcile a finished stage's output directory (dedup, filter or score) from
    its manifest: the input files and settings it lists, the counts it claims.
    Where the directory holds no documents/ (a `curate run` with --data-output),
    the data is read where the manifest says the stage wrote it."""
    fs = default_fs(fs)
    if manifest is None:
        manifest = _read_manifest(fs.join(stage_dir, "manifest.json"), fs)
    command = manifest.get("command")
    if command not in STAGE_PARTS:
        raise ValueError(f"{stage_dir}: a {command!r} manifest; only dedup, filter and score "
                         f"outputs are reconciled")
    params = manifest.get("parameters") or {}
    cfg = params.get("config") or {}
    moved = _moved(cfg.get("output"), stage_dir, fs)
    files = []
    for f in params.get("files") or []:
        fmt = input_format(f["path"])
        form = f.get("format") or fmt[0]
        files.append(InputFile(index=int(f["index"]), path=f["path"], format=form,
                               compression=fmt[1] if fmt and fmt[0] == form else ""))
    output = stage_dir
    if not fs.isdir(fs.join(stage_dir, "documents")) and cfg.get("output"):
        output = cfg["output"]
    return reconcile_output(command, output, files, manifest.get("counts"),
                            max_doc_bytes=int(cfg["max_doc_bytes"]),
                            removed_sample=cfg.get("removed_sample"), fs=fs, read_from=moved)
