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
SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]

# name -> (input, extra flags); neardup_dev is not redistributable: its case needs ../shared
CASES = {
    "demo_default": ("demo", []),
    "neardup_dev_default": (str(SHARED / "neardup_dev.jsonl.gz"), []),
    "neardup_dev_verify_exact": (str(SHARED / "neardup_dev.jsonl.gz"), ["--verify", "exact"]),
}


def golden_path(name: str) -> Path:
    return GOLDEN / f"dedup_{name}.tsv.gz"


def available(name: str) -> bool:
    src = CASES[name][0]
    return src == "demo" or Path(src).exists()


def run_case(name: str, out: Path) -> None:
    from pipelines.cli import main
    src, extra = CASES[name]
    inputs = ["--demo"] if src == "demo" else ["--input", src]
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
        if not available(name):
            print(f"{name}: input missing, skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as d:
            run_case(name, Path(d) / "out")
            lines = decisions(Path(d) / "out")
        write_golden(name, lines)
        print(f"{name}: {lines[0][2:]}; {lines[1][2:]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
