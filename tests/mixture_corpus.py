"""A small real corpus for the mixture tests: the first documents of each demo domain
(about 100 KB each), written as one JSONL file per domain *without* a domain field,
so loading it exercises the {domain: glob} mapping."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from curation.demo import demo_files

PER_DOMAIN_BYTES = 100_000
PER_DOMAIN_DOCS = 150


def demo_records() -> dict[str, list[dict]]:
    """{domain: [record, ...]} of the whole demo corpus, in file order."""
    out: dict[str, list[dict]] = {}
    for path in demo_files():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                out.setdefault(rec["domain"], []).append(rec)
    return out


def write_small_corpus(root: Path) -> dict[str, str]:
    """Write the small corpus under `root`; returns {domain: glob}."""
    mapping = {}
    for domain, recs in sorted(demo_records().items()):
        size, kept = 0, []
        for r in recs:
            if size >= PER_DOMAIN_BYTES or len(kept) >= PER_DOMAIN_DOCS:
                break
            kept.append({k: v for k, v in r.items() if k != "domain"})
            size += len(r["text"].encode("utf-8"))
        d = root / domain
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "part-0.jsonl", "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        mapping[domain] = str(d / "*.jsonl")
    return mapping


class Counting:
    """A backend wrapper that counts real runs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.version = inner.name, inner.version

    def identity(self):
        return self.inner.identity()

    def run(self, *a, **k):
        self.calls += 1
        return self.inner.run(*a, **k)


def write_export_mixture(root: Path, rows: dict[str, list[dict]], weights: dict[str, float], *,
                         trained_on: str) -> Path:
    """What `curate export` reads, under `root`: each domain's rows (id, text) as one
    JSONL file without a domain field, a stated tokenizer of 320 entries trained on
    them and a mixture.yaml naming them (max_epochs 4, split seed 3); returns the
    mixture.yaml's path."""
    import yaml

    from curation.mixture.tokenizer import StatedTokenizer
    sources, texts = {}, []
    for d, rs in rows.items():
        path = root / "corpus" / d / "part-0.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
        sources[d] = str(root / "corpus" / d / "*.jsonl")
        texts += [r["text"] for r in rs]
    run = root / "mix"
    run.mkdir()
    StatedTokenizer.train(texts, vocab_size=320, trained_on=trained_on).save(str(run))
    doc = {"weights": weights,
           "settings": {"constraints": {"min_weight": 0.0, "max_epochs": 4},
                        "data": {"sources": sources, "inputs": [], "demo": False,
                                 "split": {"valid": 0.1, "test": 0.1, "seed": 3},
                                 "text_field": "text", "id_field": "id", "domain_field": "domain"}}}
    (run / "mixture.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return run / "mixture.yaml"
