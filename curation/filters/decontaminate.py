"""Evaluation-set decontamination: documents sharing a word n-gram with a held-out
benchmark are removed, or lose the matching passage.

The evaluation texts become a hashed set (:class:`NgramIndex`): a sorted uint64
array of n-gram hashes and a parallel array naming each one's benchmark, never the
texts, so it is small (10 bytes an n-gram) and travels to workers as one ``.npz``.

Words are runs of Unicode word characters (regex ``\\w``), each lower-cased: the
words of dedup's normalisation (curation.minhash.text), found in the original text
so that a match can be cut out of it. A word hashes to xxh3-64 of its UTF-8; an
n-gram of words w1..wn to splitmix64's finalizer of the polynomial
sum(h(wj) * K^(n-j)) mod 2^64 (K odd), computed for every window of a document at
once with NumPy: one array operation per word of the n-gram, not a hash call per
window.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xxhash
from pydantic import Field, model_validator

from curation.filters.base import Filter, FilterParamError, Params, Verdict
from curation.fs import default_fs, writing

SCHEME = "decon-words-xxh3-poly-v2"   # names the words and hashes above; an index records it
_WORD = re.compile(r"\w+")
_WORD_HASH = xxhash.xxh3_64_intdigest
MAX_BENCHMARKS = 1 << 16          # the benchmark array is uint16


def word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The normalised words of `text` and where each stands in it."""
    words, spans = [], []
    for m in _WORD.finditer(text):
        words.append(m.group().lower())
        spans.append(m.span())
    return words, spans


def word_hashes(words: list[str]) -> np.ndarray:
    return np.fromiter((_WORD_HASH(w.encode("utf-8", "surrogatepass")) for w in words),
                       dtype="<u8", count=len(words))


def words_of(text: str) -> list[str]:
    """The normalised words of `text` (`word_spans` without the spans: the fast path)."""
    return [w.lower() for w in _WORD.findall(text)]


_K = np.uint64(0x9E3779B97F4A7C15)


def _finalize(h: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: the polynomial's low bits mix into every bit
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every window of `n` consecutive word hashes (none if fewer)."""
    k = wh.shape[0] - n + 1
    if k <= 0:
        return np.zeros(0, dtype=np.uint64)
    wh = np.ascontiguousarray(wh, dtype=np.uint64)
    acc = wh[:k].copy()
    for j in range(1, n):             # uint64 arithmetic wraps: mod 2^64
        acc *= _K
        acc += wh[j:j + k]
    return _finalize(acc)


# ---------------------------------------------------------------- the hashed set

@dataclass(frozen=True, eq=False)
class NgramIndex:
    """The n-grams of a set of evaluation texts, hashed.

    ``hashes`` is sorted (ties by benchmark) and ``bench[i]`` indexes ``benchmarks``
    for ``hashes[i]``; a hash shared by two benchmarks appears once for each.
    ``lengths`` are the window sizes to look for: ``ngram``, and with
    ``short_texts="whole"`` the lengths of the evaluation texts shorter than it.
    ``stats`` counts, per benchmark, texts read, n-grams kept and short texts skipped.
    """

    hashes: np.ndarray
    bench: np.ndarray
    benchmarks: tuple[str, ...]
    ngram: int
    lengths: tuple[int, ...]
    stats: dict = field(default_factory=dict)
    scheme: str = SCHEME

    def __len__(self) -> int:
        return int(self.hashes.shape[0])

    def find(self, hs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `hs` that are in the set, their first benchmark id each)."""
        if len(self) == 0 or hs.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self.hashes, hs, side="left")
        pos = np.minimum(pos, len(self) - 1)
        hit = np.flatnonzero(self.hashes[pos] == hs)
        return hit, self.bench[pos[hit]].astype(np.int64)

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.scheme.encode() + b"\0" + str(self.ngram).encode() + b"\0")
        h.update(np.ascontiguousarray(self.hashes, dtype="<u8").tobytes())
        h.update(np.ascontiguousarray(self.bench, dtype="<u2").tobytes())
        h.update("\0".join(self.benchmarks).encode("utf-8"))
        return h.hexdigest()

    def summary(self) -> dict:
        return {"scheme": self.scheme, "ngram": self.ngram, "lengths": list(self.lengths),
                "ngrams": len(self), "benchmarks": self.stats, "sha256": self.digest()}

    def save(self, path: str, fs=None) -> None:
        """One ``.npz`` (no pickles), written under a temporary name then renamed."""
        meta = json.dumps({"scheme": self.scheme, "ngram": self.ngram, "lengths": list(self.lengths),
                           "benchmarks": list(self.benchmarks), "stats": self.stats}, sort_keys=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, hashes=self.hashes.astype("<u8"), bench=self.bench.astype("<u2"),
                            meta=np.array(meta))
        with writing(fs, path) as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str, fs=None) -> "NgramIndex":
        with default_fs(fs).open_read(path) as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            hashes, bench = z["hashes"].astype(np.uint64), z["bench"].astype(np.uint16)
        if meta.get("scheme") != SCHEME:
            raise ValueError(f"{path}: an n-gram index of scheme {meta.get('scheme')!r}; "
                             f"this version reads {SCHEME!r} (rebuild it)")
        if hashes.shape != bench.shape or (hashes.shape[0] and np.any(hashes[1:] < hashes[:-1])):
            raise ValueError(f"{path}: not a valid n-gram index (arrays unsorted or of different sizes)")
        return cls(hashes, bench, tuple(meta["benchmarks"]), int(meta["ngram"]),
                   tuple(meta["lengths"]), meta["stats"])


def _benchmark_name(path: str) -> str:
    name = posixpath.basename(path.replace("\\", "/"))
    for suffix in (".gz", ".zst", ".jsonl", ".json", ".ndjson"):
        name = name.removesuffix(suffix)
    return name


def _lines(path: str, data: bytes) -> list[str]:
    try:
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        elif path.endswith(".zst"):
            import zstandard
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
        return data.decode("utf-8").splitlines()
    except Exception as e:   # noqa: BLE001 - gzip, zstd and UTF-8 errors alike: a bad file, named
        raise ValueError(f"{path}: cannot be read as {'compressed ' if path.endswith(('.gz', '.zst')) else ''}"
                         f"UTF-8 JSONL: {e}") from None


def build_ngram_index(eval_files: list[str], ngram: int = 13, *, text_fields=("text",),
                      benchmark_field: str | None = "benchmark",
                      short_texts: Literal["skip", "whole"] = "skip", fs=None) -> NgramIndex:
    """The hashed n-grams of every evaluation text in `eval_files` (JSONL, .gz or
    .zst; read through `fs`, so gs:// works with the pipeline's filesystem).

    Each record contributes the strings under `text_fields` (each its own text).
    Its benchmark is the record's `benchmark_field` when that is a non-empty string,
    else the file's name without its suffixes. A text with fewer than `ngram` words
    is skipped and counted (``short_texts="skip"``), or becomes one n-gram of all its
    words (``"whole"``). A malformed line is an error naming the file and line."""
    if not eval_files:
        raise ValueError("no evaluation files")
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
    fs = default_fs(fs)
    names: dict[str, int] = {}
    stats: dict[str, dict] = {}
    parts_h, parts_b = [], []
    lengths = {ngram}
    for path in eval_files:
        with fs.open_read(path) as f:
            raw = f.read()
        default_name = _benchmark_name(path)
        for lineno, line in enumerate(_lines(path, raw), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            name = rec.get(benchmark_field) if benchmark_field else None
            name = name if isinstance(name, str) and name else default_name
            if name not in names:
                if len(names) >= MAX_BENCHMARKS:
                    raise ValueError(f"more than {MAX_BENCHMARKS} benchmarks")
                names[name] = len(names)
                stats[name] = {"texts": 0, "ngrams": 0, "skipped_short": 0}
            st = stats[name]
            for fld in text_fields:
                text = rec.get(fld)
                if not isinstance(text, str):
                    continue
                words = words_of(text)
                if not words:
                    continue
                st["texts"] += 1
                if len(words) < ngram:
                    if short_texts != "whole":
                        st["skipped_short"] += 1
                        continue
                    lengths.add(len(words))
                    hs = ngram_hashes(word_hashes(words), len(words))
                else:
                    hs = ngram_hashes(word_hashes(words), ngram)
                parts_h.append(hs)
                parts_b.append(np.full(hs.shape[0], names[name], dtype=np.uint16))
    hashes = np.concatenate(parts_h) if parts_h else np.zeros(0, dtype=np.uint64)
    bench = np.concatenate(parts_b) if parts_b else np.zeros(0, dtype=np.uint16)
    order = np.lexsort((bench, hashes))
    hashes, bench = hashes[order], bench[order]
    if hashes.shape[0]:
        keep = np.ones(hashes.shape[0], dtype=bool)
        keep[1:] = (hashes[1:] != hashes[:-1]) | (bench[1:] != bench[:-1])
        hashes, bench = hashes[keep], bench[keep]
        for i, name in enumerate(names):
            stats[name]["ngrams"] = int(np.count_nonzero(bench == i))
    return NgramIndex(hashes, bench, tuple(names), ngram, tuple(sorted(lengths)), stats)


# ---------------------------------------------------------------- the filter

class DecontaminateParams(Params):
    eval_files: list[str] | None = Field(None, min_length=1)
    index_file: str | None = Field(None, min_length=1)
    ngram: int | None = Field(None, ge=1, le=1000)
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    benchmark_field: str | None = "benchmark"
    short_texts: Literal["skip", "whole"] = "skip"
    mode: Literal["remove", "redact"] = "remove"

    @model_validator(mode="after")
    def _source(self):
        if (self.eval_files is None) == (self.index_file is None):
            raise ValueError("give eval_files (JSONL evaluation texts) or index_file "
                             "(a saved n-gram index), not both")
        if self.index_file is not None:
            building = {"text_fields", "benchmark_field", "short_texts"} & self.model_fields_set
            if building:
                raise ValueError(f"{sorted(building)} apply to building from eval_files; "
                                 "an index_file was built with its own")
        return self


class Decontaminate(Filter):
    """Removes documents that share an n-gram (default 13 words) with an evaluation
    text (``contaminated``), or with ``mode: redact`` cuts the matching passages out
    and keeps the rest (edited text; removed as ``contaminated`` only when no word is
    left).

    The evaluation texts come from ``eval_files`` (JSONL: ``text_fields`` of each
    record, benchmark from ``benchmark_field`` or the file name) or from a saved
    index (``index_file``, see :func:`build_ngram_index` and :meth:`NgramIndex.save`).
    Signals: ``benchmark`` and ``ngram`` (the first matching n-gram as the document
    has it, normalised), ``matches`` (matching windows); in redact mode
    ``redacted_words``.

    Hash collisions: with N evaluation n-grams in the set, a document window that
    matches no evaluation text is taken for one with probability N / 2^64; a document
    of m windows is falsely flagged with probability about m * N / 2^64 (10^8
    n-grams, 10^4 windows: 5e-8, about 5 false removals per 10^8 documents).
    """

    name = "decontaminate"
    rules = ("contaminated",)
    Params = DecontaminateParams
    reads_files = True

    def _setup(self) -> None:
        if self.index_file is not None:
            try:
                index = NgramIndex.load(self.index_file, fs=self.fs)
            except (OSError, ValueError, KeyError) as e:
                raise FilterParamError(f"decontaminate.index_file: {e}") from None
            if self.ngram is not None and self.ngram != index.ngram:
                raise FilterParamError(f"decontaminate.ngram: {self.ngram}, but {self.index_file!r} "
                                       f"holds {index.ngram}-grams")
        else:
            try:
                index = build_ngram_index(self.eval_files, self.ngram or 13, text_fields=self.text_fields,
                                          benchmark_field=self.benchmark_field,
                                          short_texts=self.short_texts, fs=self.fs)
            except (OSError, ValueError) as e:
                raise FilterParamError(f"decontaminate.eval_files: {e}") from None
        if len(index) == 0:
            raise FilterParamError("decontaminate: the evaluation texts give no n-grams "
                                   f"(all shorter than {index.ngram} words?): {index.stats}")
        self.index = index
        self.loaded = index.summary()

    def config(self) -> dict:
        return {**super().config(), "loaded": self.loaded}

    def check(self, text: str) -> Verdict:
        index = self.index
        words = words_of(text)
        if len(words) < index.lengths[0]:
            return Verdict(True, None, {"matches": 0})
        wh = word_hashes(words)
        found: list[tuple[int, int, int]] = []      # (first word, length, benchmark id)
        for n in index.lengths:
            hit, bench = index.find(ngram_hashes(wh, n))
            found.extend(zip(hit.tolist(), [n] * hit.shape[0], bench.tolist()))
        if not found:
            return Verdict(True, None, {"matches": 0})
        found.sort()
        i, n, b = found[0]
        sig = {"benchmark": index.benchmarks[b], "ngram": " ".join(words[i:i + n])[:300],
               "matches": len(found)}
        if self.mode == "remove":
            return self.remove("contaminated", sig)
        # redact: cut each run of matched words, from its first word's start to its
        # last word's end (what lies between two matched runs stays)
        _, spans = word_spans(text)
        covered = np.zeros(len(words) + 1, dtype=np.int32)
        for i, n, _ in found:
            covered[i] += 1
            covered[i + n] -= 1
        inside = np.cumsum(covered[:-1]) > 0
        sig["redacted_words"] = int(np.count_nonzero(inside))
        if inside.all():
            return self.remove("contaminated", sig)
        pieces, pos, w = [], 0, 0
        while w < len(words):
            if not inside[w]:
                w += 1
                continue
            start = w
            while w < len(words) and inside[w]:
                w += 1
            pieces.append(text[pos:spans[start][0]])
            pos = spans[w - 1][1]
        pieces.append(text[pos:])
        return Verdict(True, None, sig, "".join(pieces))
