"""`curate export`: the chosen mixture as training data of N tokens.

Each domain's documents (every split: the held-out splits served to compare
mixtures, not to train) are counted with the mix run's stated tokenizer. A domain
asked for ``w * N`` tokens gets whole passes over its documents in a fresh seeded
order each pass, then documents of one more pass until the ask is met (the last one
whole, so it overshoots by less than one document). A domain whose ask exceeds
``max_epochs`` times its tokens is an error, before anything is written, naming every
such domain and the largest N that fits.

``OUTPUT/<domain>/part-NNNNN.jsonl.gz`` hold the documents in their shuffled order
(``id``, ``domain``, ``text``, ``epoch``), the layout `megatron_data_path.txt` and
`olmo_source_mixture.yaml` of the mix run refer to; ``OUTPUT/manifest.json`` has the
tokens asked and achieved per domain. Deterministic for a seed; files are written to
temporary names and renamed, the manifest last.
"""
from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash
import yaml

from curation.config import ConfigError
from curation.io import FieldMap
from curation.mixture._files import atomic_path, write_atomic
from curation.outputs import (locked_output, check_stage_paths, describe_changes, inventory, prepare_output,
                              read_manifest, settings_changes)


def _domain_rng(seed: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, xxhash.xxh3_64_intdigest(domain.encode("utf-8"))])


def plan_domain(tokens: np.ndarray, asked: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(document index, epoch) in output order until ``asked`` tokens are reached."""
    out: list[tuple[int, int]] = []
    total, epoch = 0, 0
    if asked <= 0 or len(tokens) == 0:
        return out
    while total < asked:
        for i in rng.permutation(len(tokens)):
            if total >= asked:
                break
            out.append((int(i), epoch))
            total += int(tokens[i])
        epoch += 1
    return out


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


@locked_output("export")
def export_mixture(mixture_path: str, output: str, tokens: int, *, seed: int = 0,
                   shard_docs: int = 10_000, log: Callable[[str], None] = print,
                   fs=None) -> dict:
    """``fs`` (a curation.fs.FS): where the mix run's inputs are (default: the local disk)."""
    from curation.mixture.data import load_data_spec
    from curation.mixture.tokenizer import StatedTokenizer
    t0 = time.time()
    if tokens <= 0:
        raise ConfigError(f"--tokens must be positive, got {tokens}")
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
    fields = FieldMap(**{k: data[k] for k in ("text_field", "id_field", "domain_field") if k in data})
    split = data.get("split") or {}
    fractions = (1 - split.get("valid", 0.1) - split.get("test", 0.1), split.get("valid", 0.1),
                 split.get("test", 0.1))
    splits = load_data_spec(data, fields=fields, seed=split.get("seed", 0), fractions=fractions,
                            fs=fs)
    missing = sorted(set(weights) - set(splits.domains))
    if missing:
        raise ConfigError(f"{mpath}: the data no longer has domains {missing}")

    # every document of every split, in a fixed order, with its token count
    docs: dict[str, list[tuple[str, str]]] = {}
    counts: dict[str, np.ndarray] = {}
    for d in sorted(weights):
        items = []
        for name in ("train", "valid", "test"):
            part = splits.split(name).get(d)
            if part is not None:
                items.extend(zip(part.ids, part.texts))
        docs[d] = items
        counts[d] = np.array([len(x) for x in tok.encode_batch([t for _, t in items])], np.int64)

    asked = {d: int(round(w * tokens)) for d, w in weights.items()}
    over = {d: (asked[d], int(counts[d].sum())) for d in asked
            if asked[d] > max_epochs * counts[d].sum()}
    if over:
        fits = min(max_epochs * counts[d].sum() / weights[d] for d in weights if weights[d] > 0)
        detail = "; ".join(f"{d}: asks {a:,} tokens, has {h:,} (at most {max_epochs:g} epochs)"
                           for d, (a, h) in sorted(over.items()))
        raise ConfigError(f"--tokens {tokens:,} is infeasible within the repetition cap: {detail}. "
                          f"The largest N that fits is {int(fits):,}")

    out = Path(output)
    check_stage_paths(data_paths(mixture_path) + [str(mpath)], output, fs)
    # only what an earlier export wrote is cleared (anything else is refused, by name);
    # the manifest says "running" until the end, so a cut-off export never counts
    prev = read_manifest(output)
    settings = {"mixture": str(mpath), "tokens_asked": tokens, "seed": seed, "shard_docs": shard_docs}
    if prev is not None and prev.get("command") == "export" and prev.get("status") == "complete":
        changes = settings_changes({k: prev.get(k) for k in settings}, settings)
        log(f"export: replacing the complete export in {output} ({len(prev.get('files') or {})} "
            f"files); " + (f"settings changed: {describe_changes(changes)}" if changes else
                           "the same settings (an export is always rewritten)"))
    prepare_output("export", output, prev, dirs=tuple(sorted(weights)))
    manifest_path = out / "manifest.json"
    per_domain = {}
    for d in sorted(weights):
        plan = plan_domain(counts[d], asked[d], _domain_rng(seed, d))
        ddir = out / d
        ddir.mkdir(exist_ok=True)
        for old in ddir.glob("part-*.jsonl.gz"):
            old.unlink()
        shards = 0
        for k in range(0, len(plan), shard_docs):
            rows = [{"id": docs[d][i][0], "domain": d, "text": docs[d][i][1], "epoch": e}
                    for i, e in plan[k:k + shard_docs]]
            _write_shard(ddir / f"part-{k // shard_docs:05d}.jsonl.gz", rows)
            shards += 1
        achieved = int(sum(counts[d][i] for i, _ in plan))
        epochs = achieved / counts[d].sum() if counts[d].sum() else 0.0
        per_domain[d] = {"weight": weights[d], "tokens_asked": asked[d], "tokens_achieved": achieved,
                         "documents": len(plan), "distinct_documents": len({i for i, _ in plan}),
                         "available_tokens": int(counts[d].sum()), "epochs": round(epochs, 4),
                         "shards": shards}
        log(f"export: {d}: {achieved:,} of {asked[d]:,} tokens asked ({epochs:.2f} epochs)")
    total = sum(v["tokens_achieved"] for v in per_domain.values())
    manifest = {
        "command": "export", "status": "complete", "mixture": str(mpath),
        "tokens_asked": tokens, "tokens_achieved": total, "seed": seed,
        "tokenizer": tok.description, "max_epochs": max_epochs,
        "domains": per_domain,
        "achieved_weights": {d: v["tokens_achieved"] / total for d, v in per_domain.items()} if total else {},
        "elapsed_s": round(time.time() - t0, 3),
        "shard_docs": shard_docs,
        "files": inventory(output),
    }
    write_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest
