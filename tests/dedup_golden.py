"""Dedup's decisions frozen as files, so that a rewrite of the dedup graph (issue 13:
packed shuffles, signatures fetched per candidate) can be held to the same decisions
as the implementation it replaces.

A golden file lists, per case, the sorted clusters/ rows (id, cluster id, reason) and
the number and a hash of the kept ids in documents/; no text. Regenerate (only when a
change of decisions is intended, and say so in the commit):

    python -m tests.dedup_golden --write
"""
from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]

# name -> (input, extra flags). "variants" is the demo corpus (redistributable, in the
# package) with planted near-duplicate variants, built deterministically by variants_corpus
CASES = {
    "demo_default": ("demo", []),
    "demo_variants_default": ("variants", []),
    "demo_variants_verify_exact": ("variants", ["--verify", "exact"]),
}


def variants_corpus(out: Path, share: float = 0.2, seed: int = 12) -> Path:
    """A folder holding the demo corpus plus, for a seeded `share` of its documents, a variant of each:
    1-4% of words replaced, truncated to 80-95%, another document's first lines put
    in front, or an edit and a truncation together (a spread of true Jaccards around
    the threshold, so the decisions exercise verification)."""
    import json
    import random
    from curation.demo import demo_files
    docs = []
    for path in demo_files():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f)
    rng = random.Random(seed)
    variants = []
    for i in sorted(rng.sample(range(len(docs)), int(len(docs) * share))):
        d, words = docs[i], docs[i]["text"].split(" ")
        kind = rng.choice(["edit", "truncate", "header", "edit+truncate"])
        if "edit" in kind:
            for _ in range(max(1, int(len(words) * rng.uniform(0.01, 0.04)))):
                words[rng.randrange(len(words))] = f"w{rng.randrange(10**6)}"
        if "truncate" in kind:
            words = words[:max(1, int(len(words) * rng.uniform(0.8, 0.95)))]
        text = " ".join(words)
        if kind == "header":
            text = "\n".join(docs[rng.randrange(len(docs))]["text"].split("\n")[:3]) + "\n" + text
        variants.append({"id": f"{d['id']}~{kind}", "domain": d["domain"], "text": text})
    # the keep rule follows input paths: the demo files and the variants sit in one
    # directory, demo first, so the order is the same wherever the checkout lives
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    for path in demo_files():
        shutil.copy(path, out / f"0-{Path(path).name}")
    with gzip.GzipFile(out / "1-variants.jsonl.gz", "wb", mtime=0) as f:
        f.write("".join(json.dumps(v) + "\n" for v in variants).encode("utf-8"))
    return out


def golden_path(name: str) -> Path:
    return GOLDEN / f"dedup_{name}.tsv.gz"


def run_case(name: str, out: Path) -> None:
    from pipelines.cli import main
    src, extra = CASES[name]
    inputs = ["--demo"] if src == "demo" else ["--input", str(variants_corpus(out.parent / "variants_input"))]
    rc = main(["dedup", *inputs, "--output", str(out), *extra, *FAST])
    if rc != 0:
        raise RuntimeError(f"curate dedup exited {rc} for case {name}")


def decisions(out: Path) -> list[str]:
    """What a dedup output decided, as sorted text lines."""
    from curation.io import read_rows
    clusters = sorted(f"{r['id']}\t{r['cluster_id']}\t{r['reason'] or '-'}"
                      for p in sorted((out / "clusters").glob("*")) for r in read_rows(str(p)))
    kept = sorted(r["id"] for p in sorted((out / "documents").glob("*")) for r in read_rows(str(p)))
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()
    return [f"# documents: {len(kept)} kept, sha256 of the sorted ids {digest}",
            f"# clusters: {len(clusters)} rows (id, cluster_id, reason)", *clusters]


def read_golden(name: str) -> list[str]:
    with gzip.open(golden_path(name), "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def write_golden(name: str, lines: list[str]) -> None:
    GOLDEN.mkdir(exist_ok=True)
    # mtime 0: the same decisions give the same bytes
    with open(golden_path(name), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))


def main(argv: list[str]) -> int:
    import tempfile
    if argv != ["--write"]:
        print(__doc__, file=sys.stderr)
        return 2
    for name in CASES:
        with tempfile.TemporaryDirectory() as d:
            run_case(name, Path(d) / "out")
            lines = decisions(Path(d) / "out")
        write_golden(name, lines)
        print(f"{name}: {lines[0][2:]}; {lines[1][2:]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
