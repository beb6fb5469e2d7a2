"""`curate export`: the chosen mixture as training data of N tokens.

Each domain's documents (every split: the held-out splits served to compare
mixtures, not to train) are counted with the mix run's stated tokenizer (token
formats: with the export's tokenizer, each document's end-of-document token
included). N is shared out by the weights, rounded so the shares add up to N
(``domain_asks``). A domain gets whole passes over its documents in a fresh seeded
order each pass, then documents of one more pass until its share is reached, the
last one whole. Each domain overshooting by up to a document would put the total a
few documents over N (1,020,837 for 1,000,000 on the demo, 8 domains), so
``settle`` stops some domains one document short of their share, while the surplus
of the domains before them covers it: the total is then at least N and under N plus
one document, and each domain within one of its documents of its share. A domain
whose share exceeds ``max_epochs`` times its tokens is an error, before anything is
written, naming every such domain and the largest N that fits.

``--format jsonl`` (the default): ``OUTPUT/<domain>/part-NNNNN.jsonl.gz`` hold the
documents in their shuffled order (``id``, ``domain``, ``text``, ``epoch``).
``--format megatron``: ``OUTPUT/<domain>/<domain>_text_document.bin/.idx`` (the prefix
the mix run's `megatron_data_path.txt` names) and ``OUTPUT/megatron_data_path.txt``;
``--format olmo``: ``OUTPUT/<domain>/part-00000.npy`` (+ ``.csv.gz``) and
``OUTPUT/olmo_source_mixture.yaml``; both with ``OUTPUT/<domain>/documents.jsonl.gz``
(id and epoch of each document, in file order). Formats: curation.mixture.tokenized.
``OUTPUT/manifest.json`` has the tokens asked and achieved per domain.
Deterministic for a seed; files are written to temporary names and renamed, the
manifest last.

Memory: export streams. The inputs are read once, each domain's documents to a
spill file (a hidden temporary directory beside OUTPUT, removed at the end: it
needs about the corpus's size in free disk, and for token formats the token ids
too), and each shard is filled from it and written before the next. What stays in
memory per document is numbers: its offset in the spill file, split hash, token count
and place in the split order (32 bytes), and per planned document its index and epoch
(12 bytes); text only for the shard being written. Those arrays are kept, rather than
nothing per document, because the output order (a NumPy permutation of all of a
domain's documents per epoch, drawn over the split rule's order) is what exports have
always been, byte for byte.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash
import yaml

from curation.config import ConfigError
from curation.io import FieldMap
from curation.fs import atomic_path, write_atomic, writing
from curation.outputs import (locked_output, check_stage_paths, describe_changes, inventory, prepare_output,
                              read_manifest, settings_changes)


def _domain_rng(seed: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, xxhash.xxh3_64_intdigest(domain.encode("utf-8"))])


def _write_shard(path: Path, rows: list[dict]) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        # no name or time in the gzip header: byte-identical reruns
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as f:
            f.write(body)


def data_paths(mixture_path: str) -> list[str]:
    """The input paths and globs the mix run behind a mixture.yaml read (none if the file
    cannot be read: export_mixture then says why)."""
    try:
        data = yaml.safe_load(Path(mixture_path).read_text(encoding="utf-8"))["settings"]["data"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    out = list(data.get("inputs") or [])
    for v in (data.get("sources") or {}).values():
        out += [v] if isinstance(v, str) else list(v)
    return out


class _Spill:
    """One domain's documents on disk while export reads: ``[id, text]`` as ASCII JSON,
    one per line (any str round-trips, lone surrogates too), and per document its
    offset, split hash and token count as arrays: 24 bytes of memory per document,
    none of its text."""

    BATCH = 512   # texts tokenized at once

    def __init__(self, path: Path, domain: str, seed: int, tok, ids_dtype=None):
        from curation.mixture.data import split_hash
        self.path, self.domain, self.seed, self.tok = path, domain, seed, tok
        self._hash = split_hash
        self._f = open(path, "wb")
        # token formats: each document's ids too, back to back in the files' dtype, so a
        # document repeated over epochs is encoded once
        self.ids_path = path.with_suffix(".ids")
        self.ids_dtype = ids_dtype
        self._ids = open(self.ids_path, "wb") if ids_dtype is not None else None
        self._pos = 0
        self._off: list[np.ndarray] = []
        self._h: list[np.ndarray] = []
        self._cnt: list[np.ndarray] = []
        self._buf_off: list[int] = []
        self._buf_h: list[int] = []
        self._buf_text: list[str] = []

    def add(self, doc_id: str, text: str) -> None:
        line = (json.dumps([doc_id, text]) + "\n").encode("ascii")
        self._buf_off.append(self._pos)
        self._buf_h.append(self._hash(self.seed, self.domain, doc_id))
        self._buf_text.append(text)
        self._f.write(line)
        self._pos += len(line)
        if len(self._buf_text) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._buf_text:
            return
        self._off.append(np.array(self._buf_off, np.int64))
        self._h.append(np.array(self._buf_h, np.uint64))
        ids = self.tok.encode_batch(self._buf_text)
        self._cnt.append(np.array([len(x) for x in ids], np.int64))
        if self._ids is not None and ids:
            flat = np.concatenate(ids)
            if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(self.ids_dtype).max):
                raise ValueError(f"token ids outside {np.dtype(self.ids_dtype).name}")
            self._ids.write(flat.astype(self.ids_dtype).tobytes())
        self._buf_off, self._buf_h, self._buf_text = [], [], []

    def close(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, split hashes, token counts), in read order."""
        self._flush()
        self._f.close()
        if self._ids is not None:
            self._ids.close()
        cat = lambda xs, t: np.concatenate(xs) if xs else np.zeros(0, t)   # noqa: E731
        return cat(self._off, np.int64), cat(self._h, np.uint64), cat(self._cnt, np.int64)


def _read_records(f, offsets: np.ndarray) -> list[tuple[str, str]]:
    """(id, text) of the spilled documents at `offsets`, in that order (read in file
    order, so a shard's reads sweep the file once)."""
    got: dict[int, tuple[str, str]] = {}
    for off in sorted(set(int(o) for o in offsets)):
        f.seek(off)
        doc_id, text = json.loads(f.readline())
        got[off] = (doc_id, text)
    return [got[int(o)] for o in offsets]


def _export_order(f, offsets: np.ndarray, hashes: np.ndarray, domain: str,
                  fractions: tuple[float, float, float]) -> np.ndarray:
    """The read ordinals of a domain's documents in the split rule's order, train then
    valid then test (curation.mixture.data: groups by id ranked by (hash, id), each
    group's documents by (id, text)); what ``load_data_spec`` gave export when it held
    the corpus. Documents that share a hash are read back to order them: a shared id,
    or (rarely) two ids with one 64-bit hash."""
    from curation.mixture.data import _split_sizes
    n = len(hashes)
    srt = np.argsort(hashes, kind="stable")
    hs = hashes[srt]
    new_group = np.ones(n, bool)
    if n > 1:
        new_group[1:] = hs[1:] != hs[:-1]
    tied = np.zeros(n, bool)
    if n > 1:
        same = hs[1:] == hs[:-1]
        tied[1:] |= same
        tied[:-1] |= same
    if tied.any():
        starts = np.flatnonzero(tied & new_group)
        for a in starts:
            b = a + 1
            while b < n and hs[b] == hs[a]:
                b += 1
            recs = _read_records(f, offsets[srt[a:b]])
            order = sorted(range(b - a), key=lambda k: (recs[k][0], recs[k][0], recs[k][1]))
            srt[a:b] = srt[a:b][order]
            ids = [recs[k][0] for k in order]
            for k in range(1, b - a):
                new_group[a + k] = ids[k] != ids[k - 1]
    gid = np.cumsum(new_group) - 1
    groups = int(gid[-1]) + 1 if n else 0
    n_valid, n_test = _split_sizes(groups, fractions, domain)
    valid = gid < n_valid
    test = (gid >= n_valid) & (gid < n_valid + n_test)
    train = gid >= n_valid + n_test
    return np.concatenate([srt[train], srt[valid], srt[test]])


def plan_arrays(tokens: np.ndarray, asked: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """(document index, epoch) in output order until ``asked`` tokens are reached: per
    epoch one ``rng.permutation`` of the documents, taken while the tokens so far are
    short of ``asked`` (so the last document is whole); as arrays, not a Python object
    per planned document."""
    idx: list[np.ndarray] = []
    ep: list[np.ndarray] = []
    n = len(tokens)
    total, epoch = 0, 0
    if asked > 0 and n:
        while total < asked:
            perm = rng.permutation(n)
            before = total + np.concatenate(([0], np.cumsum(tokens[perm])[:-1]))
            take = int(np.searchsorted(before, asked, side="left"))
            idx.append(perm[:take])
            ep.append(np.full(take, epoch, np.int32))
            total += int(tokens[perm[:take]].sum())
            epoch += 1
    if not idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(idx).astype(np.int64), np.concatenate(ep)


def domain_asks(weights: dict[str, float], tokens: int) -> dict[str, int]:
    """Each domain's share of ``tokens``: rounded cumulatively over the sorted domains, so
    the shares add up to ``tokens`` exactly and each is within one token of
    ``w / sum(w) * tokens``."""
    total = sum(weights.values())
    out, cum, before = {}, 0.0, 0
    names = sorted(weights)
    for k, d in enumerate(names):
        cum += weights[d]
        upto = tokens if k == len(names) - 1 else int(round(tokens * cum / total))
        out[d] = upto - before
        before = upto
    return out


def settle(plans: dict[str, tuple[np.ndarray, np.ndarray]], counts: dict[str, np.ndarray],
           asks: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Where each domain stops, so that the total lands within one document of the sum of
    the asks. ``plans`` run until each ask is reached (the last document crosses it);
    over the sorted domains, a domain ends one document earlier, short of its ask,
    when the surplus the domains before it left covers the shortfall, and keeps that
    document otherwise (adding to the surplus). The surplus never goes negative and,
    after a domain that kept its crossing document, is under that document's length:
    so the total is at least the asks' sum and exceeds it by less than one document, and
    each domain is within one of its own documents of its ask. A domain keeps one
    document even when its ask is smaller (so each weight has a file to stand for)."""
    out, surplus = {}, 0
    for d in sorted(plans):
        idx, epochs = plans[d]
        if len(idx) == 0:
            out[d] = plans[d]
            continue
        over = int(counts[d][idx].sum()) - asks[d]
        short = int(counts[d][idx[-1]]) - over       # missing if the last document goes
        if over > 0 and len(idx) > 1 and short <= surplus:
            out[d] = (idx[:-1], epochs[:-1])
            surplus -= short
        else:
            out[d] = plans[d]
            surplus += over
    return out


@locked_output("export")
def export_mixture(mixture_path: str, output: str, tokens: int, *, seed: int = 0,
                   shard_docs: int = 10_000, fmt: str = "jsonl", tokenizer: str | None = None,
                   eod_id: int | None = None, log: Callable[[str], None] = print,
                   fs=None) -> dict:
    """``fs`` (a curation.fs.FS): where the mix run's inputs are (default: the local disk).
    ``fmt``: jsonl (text shards), megatron or olmo (token files, curation.mixture.tokenized,
    with ``tokenizer`` and ``eod_id``; tokens are then counted under that tokenizer, one
    EOD per document included).

    Streams: the inputs are read once into a spill file per domain beside the output
    (removed at the end), and each shard is filled from it by seeks and written before
    the next; memory holds a few arrays of numbers per document and one shard's text."""
    import shutil

    from curation.mixture.data import _check_fractions, data_spec_args, iter_corpus
    from curation.mixture.tokenized import FORMATS, ExportTokenizer, file_dtype
    from curation.mixture.tokenizer import StatedTokenizer
    t0 = time.time()
    if tokens <= 0:
        raise ConfigError(f"--tokens must be positive, got {tokens}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "jsonl" and (tokenizer is not None or eod_id is not None):
        raise ConfigError("--tokenizer and --eod-id are for --format megatron or olmo: jsonl "
                          "shards are text, counted under the mix run's tokenizer")
    mpath = Path(mixture_path)
    try:
        doc = yaml.safe_load(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"mixture file not found: {mpath}") from None
    try:
        weights = {str(k): float(v) for k, v in doc["weights"].items()}
        settings = doc["settings"]
        data = settings["data"]
        max_epochs = float(settings["constraints"]["max_epochs"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{mpath}: not a mixture.yaml written by curate mix ({e})") from None
    total_w = sum(weights.values())
    if not math.isclose(total_w, 1.0, abs_tol=1e-4) or min(weights.values()) < 0:
        raise ConfigError(f"{mpath}: weights must be non-negative and sum to 1 (sum {total_w})")
    tok = StatedTokenizer.load(str(mpath.parent))
    etok = None
    if fmt != "jsonl":
        etok = (ExportTokenizer.from_path(tokenizer, eod_id) if tokenizer is not None
                else ExportTokenizer.stated(tok, eod_id))
    dtype = file_dtype(fmt, etok.vocab_size) if etok is not None else None
    fields = FieldMap(**{k: data[k] for k in ("text_field", "id_field", "domain_field") if k in data})
    split = data.get("split") or {}
    fractions = _check_fractions((1 - split.get("valid", 0.1) - split.get("test", 0.1),
                                  split.get("valid", 0.1), split.get("test", 0.1)))
    split_seed = split.get("seed", 0)

    out = Path(output)
    check_stage_paths(data_paths(mixture_path) + [str(mpath)] + ([tokenizer] if tokenizer else []),
                      output, fs)
    # only what an earlier export wrote is cleared (anything else is refused, by name);
    # the manifest says "running" until the end, so a cut-off export never counts
    prev = read_manifest(output)
    settings = {"mixture": str(mpath), "tokens_asked": tokens, "seed": seed, "shard_docs": shard_docs,
                "format": fmt, "tokenizer_path": tokenizer, "eod_id": None if etok is None else etok.eod_id}
    # beside the output, not in it (the output holds only what the manifest lists)
    out.parent.mkdir(parents=True, exist_ok=True)
    spill_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-spill-", dir=out.parent))
    spills: dict[str, _Spill] = {}
    try:
        # every document of every split, read once, each domain to its spill file
        inputs, domains = data_spec_args(data)
        seen: set[str] = set()
        for rec in iter_corpus(inputs, domains=domains, fields=fields, fs=fs):
            seen.add(rec.domain)
            if rec.domain not in weights:
                continue
            sp = spills.get(rec.domain)
            if sp is None:
                sp = spills[rec.domain] = _Spill(spill_dir / f"{len(spills)}.jsonl", rec.domain,
                                                 split_seed, etok or tok, ids_dtype=dtype)
            sp.add(rec.id, rec.text)
        if not seen:
            raise ValueError("no documents were read")
        missing = sorted(set(weights) - seen)
        if missing:
            raise ConfigError(f"{mpath}: the data no longer has domains {missing}")
        arrays = {d: spills[d].close() for d in sorted(weights)}
        order: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        for d in sorted(weights):
            offsets, hashes, cnt = arrays[d]
            with open(spills[d].path, "rb") as f:
                order[d] = _export_order(f, offsets, hashes, d, fractions)
            # a token file holds each document's EOD too: the budget counts it
            counts[d] = cnt[order[d]] + (1 if etok is not None else 0)

        asked = domain_asks(weights, tokens)
        over = {d: (asked[d], int(counts[d].sum())) for d in asked
                if asked[d] > max_epochs * counts[d].sum()}
        if over:
            fits = min(max_epochs * counts[d].sum() / weights[d] for d in weights if weights[d] > 0)
            detail = "; ".join(f"{d}: asks {a:,} tokens, has {h:,} (at most {max_epochs:g} epochs)"
                               for d, (a, h) in sorted(over.items()))
            raise ConfigError(f"--tokens {tokens:,} is infeasible within the repetition cap: {detail}. "
                              f"The largest N that fits is {int(fits):,}")

        if prev is not None and prev.get("command") == "export" and prev.get("status") == "complete":
            changes = settings_changes({k: prev.get(k) for k in settings}, settings)
            log(f"export: replacing the complete export in {output} ({len(prev.get('files') or {})} "
                f"files); " + (f"settings changed: {describe_changes(changes)}" if changes else
                               "the same settings (an export is always rewritten)"))
        prepare_output("export", output, prev, dirs=tuple(sorted(weights)),
                       files=(MEGATRON_LINE_FILE, OLMO_MIXTURE_FILE))
        manifest_path = out / "manifest.json"
        plans = settle({d: plan_arrays(counts[d], asked[d], _domain_rng(seed, d)) for d in sorted(weights)},
                       counts, asked)
        per_domain, written = {}, {}
        for d in sorted(weights):
            idx, epochs_of = plans[d]
            ddir = out / d
            ddir.mkdir(exist_ok=True)
            if etok is None:
                shards = _write_jsonl(ddir, d, spills[d].path, arrays[d][0][order[d]], idx, epochs_of,
                                      shard_docs)
            else:
                written[d] = _write_token_files(fmt, ddir, d, spills[d], arrays[d], order[d], idx,
                                                epochs_of, etok, dtype)
                shards = 1
            achieved = int(counts[d][idx].sum())
            epochs = achieved / counts[d].sum() if counts[d].sum() else 0.0
            per_domain[d] = {"weight": weights[d], "tokens_asked": asked[d], "tokens_achieved": achieved,
                             "documents": len(idx), "distinct_documents": int(len(np.unique(idx))),
                             "available_tokens": int(counts[d].sum()), "epochs": round(epochs, 4),
                             "shards": shards}
            log(f"export: {d}: {achieved:,} of {asked[d]:,} tokens asked ({epochs:.2f} epochs)")
    finally:
        for sp in spills.values():
            sp._f.close()
            if sp._ids is not None:
                sp._ids.close()
        shutil.rmtree(spill_dir, ignore_errors=True)
    total = sum(v["tokens_achieved"] for v in per_domain.values())
    manifest = {
        "command": "export", "status": "complete", "mixture": str(mpath), "format": fmt,
        "tokens_asked": tokens, "tokens_achieved": total, "seed": seed,
        "tokenizer": tok.description if etok is None else etok.description, "max_epochs": max_epochs,
        "domains": per_domain,
        "achieved_weights": {d: v["tokens_achieved"] / total for d, v in per_domain.items()} if total else {},
        "shard_docs": shard_docs,
    }
    if etok is not None:
        manifest.update(_trainer_files(fmt, out, written, per_domain, total, etok, dtype))
        manifest.update(tokenizer_path=tokenizer, eod_id=etok.eod_id, vocab_size=etok.vocab_size,
                        dtype=dtype.name)
    manifest.update(elapsed_s=round(time.time() - t0, 3), files=inventory(output))
    write_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


MEGATRON_LINE_FILE = "megatron_data_path.txt"
OLMO_MIXTURE_FILE = "olmo_source_mixture.yaml"
TOKEN_CHUNK = 4096        # documents gathered per write


def _write_jsonl(ddir: Path, domain: str, spill: Path, offsets: np.ndarray, idx: np.ndarray,
                 epochs_of: np.ndarray, shard_docs: int) -> int:
    """The domain's shards (id, domain, text, epoch); returns how many."""
    shards = 0
    with open(spill, "rb") as f:
        for k in range(0, len(idx), shard_docs):
            part = idx[k:k + shard_docs]
            recs = _read_records(f, offsets[part])
            rows = [{"id": i, "domain": domain, "text": t, "epoch": int(e)}
                    for (i, t), e in zip(recs, epochs_of[k:k + shard_docs])]
            _write_shard(ddir / f"part-{k // shard_docs:05d}.jsonl.gz", rows)
            shards += 1
    return shards


def _write_token_files(fmt: str, ddir: Path, domain: str, spill: "_Spill", arrays, order: np.ndarray,
                       idx: np.ndarray, epochs_of: np.ndarray, etok, dtype) -> str:
    """The domain's token file(s) and documents.jsonl.gz (id and epoch of each document,
    in file order); returns the path a trainer is given (Megatron: the prefix)."""
    from curation.mixture.tokenized import with_eod, write_megatron, write_olmo
    offsets, _, raw = arrays
    starts = np.zeros(len(raw), np.int64)
    if len(raw) > 1:
        starts[1:] = np.cumsum(raw[:-1])
    where = order[idx]                         # read ordinals of the planned documents
    size = os.path.getsize(spill.ids_path)
    ids = np.memmap(spill.ids_path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
    with open(spill.path, "rb") as f, writing(None, str(ddir / DOCUMENTS_FILE)) as raw_out, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, compresslevel=6, mtime=0) as docs:
        def chunks():
            for k in range(0, len(where), TOKEN_CHUNK):
                w = where[k:k + TOKEN_CHUNK]
                recs = _read_records(f, offsets[w])
                docs.write("".join(json.dumps({"id": i, "epoch": int(e)}, ensure_ascii=False) + "\n"
                                   for (i, _t), e in zip(recs, epochs_of[k:k + TOKEN_CHUNK]))
                           .encode("utf-8"))
                yield with_eod((ids[a:a + n] for a, n in zip(starts[w].tolist(), raw[w].tolist())),
                               etok.eod_id, dtype)
        if fmt == "megatron":
            target = str(ddir / f"{domain}_text_document")
            write_megatron(target, chunks(), dtype)
            data_file = target + ".bin"
        else:
            target = data_file = str(ddir / "part-00000.npy")
            write_olmo(target, chunks())
    want = int((raw[where] + 1).sum()) * dtype.itemsize
    if os.path.getsize(data_file) != want:      # what was written, not what was meant
        raise RuntimeError(f"{data_file}: {os.path.getsize(data_file)} bytes written, {want} planned")
    return target


DOCUMENTS_FILE = "documents.jsonl.gz"


def _trainer_files(fmt: str, out: Path, written: dict[str, str], per_domain: dict, total: int,
                   etok, dtype) -> dict:
    """The blend line (megatron) or source mixture (olmo) over the files written, each
    domain weighted by its share of the tokens written, so that N tokens of training
    read each file once; domains with no document are left out."""
    from curation.mixture.tokenized import megatron_data_path, olmo_source_mixture
    shares = {d: v["tokens_achieved"] / total for d, v in per_domain.items() if v["documents"]}
    paths = {d: os.path.abspath(written[d]) for d in shares}
    if fmt == "megatron":
        line = megatron_data_path(shares, paths)
        write_atomic(out / MEGATRON_LINE_FILE, (line + "\n").encode("utf-8"))
        return {"data_path": line, "data_path_file": MEGATRON_LINE_FILE}
    text = olmo_source_mixture(shares, paths, tokens=total, tok=etok, dtype=dtype)
    write_atomic(out / OLMO_MIXTURE_FILE, text.encode("utf-8"))
    return {"olmo_source_mixture": OLMO_MIXTURE_FILE}
