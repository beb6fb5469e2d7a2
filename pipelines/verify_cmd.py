"""`curate verify RUN_OR_STAGE_DIR`: reconcile a finished run's outputs with its inputs
(curation.verify), record by record, without rerunning anything. Beam is imported
only when a path is remote (gs://)."""
from __future__ import annotations

import json
import os
import sys

from pipelines.errors import UsageError

STAGES = ("dedup", "filter", "score")   # the stages whose outputs curation.verify reconciles

DESCRIPTION = (
    "Check that a dedup, filter or score output holds exactly its input records, once "
    "each: every input record (file and line or row) is in one of documents/, removed/ "
    "(dedup: clusters/ rows with kept = false) and rejected/, none twice, and no row names "
    "anything else; the rows also match the manifest's counts. RUN_OR_STAGE_DIR is a "
    "`curate run` directory (its dedup, filter and score stages are checked) or one stage's "
    "output directory. The input files are read again (JSONL: one pass over the lines; "
    "Parquet: the footers), so they must still be where the manifest says. Exit 0 with one "
    "line per stage when all holds; 1 naming the first discrepancies when not.")


def add_parser(sub):
    p = sub.add_parser("verify", help="check that a run's outputs are its input records, once each",
                       description=DESCRIPTION)
    p.add_argument("path", metavar="RUN_OR_STAGE_DIR",
                   help="a `curate run` directory or a dedup/filter/score output directory")
    return p


def _manifest(stage_dir: str) -> dict | None:
    path = os.path.join(stage_dir, "manifest.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise UsageError(f"{path} is not JSON ({e})") from None
    return data if isinstance(data, dict) else None


def _stages(path: str) -> list[tuple[str, str, dict]]:
    """(name, directory, manifest) of every stage to check under `path`."""
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such directory")
    m = _manifest(path)
    if m is not None:
        if m.get("command") not in STAGES:
            raise UsageError(f"{path}: a {m.get('command')!r} output; verify checks dedup, filter "
                             f"and score outputs (or a run directory holding them)")
        return [(m["command"], path, m)]
    found = []
    for name in STAGES:           # a `curate run` directory: one folder per stage
        d = os.path.join(path, name)
        m = _manifest(d)
        if m is not None and m.get("command") == name:
            found.append((name, d, m))
    if not found:
        raise UsageError(f"{path} holds no dedup, filter or score output (no manifest.json in it "
                         f"or in its dedup/, filter/ or score/ folders)")
    return found


def _fs_for(manifest: dict):
    params = manifest.get("parameters") or {}
    paths = [f.get("path", "") for f in params.get("files") or []]
    paths.append(str((params.get("config") or {}).get("output") or ""))
    if any("://" in p and not p.startswith("file://") for p in paths):
        from pipelines.fs import BeamFS
        return BeamFS()
    return None


def run(args) -> int:
    from curation.verify import verify_stage_dir   # numpy and pyarrow: only when verifying
    failed = 0
    for name, d, manifest in _stages(args.path):
        if manifest.get("status") == "dry_run":
            print(f"{name}: a dry run wrote nothing to check", file=sys.stderr)
            continue
        if manifest.get("status") not in (None, "complete") and not manifest.get("counts"):
            # the manifest a stage writes when it begins: the run never finished
            print(f"{name}: {d} is not complete: the run begun at {manifest.get('started_at')} "
                  f"(host {manifest.get('host')}, pid {manifest.get('pid')}) did not finish "
                  f"(status {manifest.get('status')}); rerun the stage", file=sys.stderr)
            failed += 1
            continue
        res = verify_stage_dir(d, fs=_fs_for(manifest), manifest=manifest)
        print(res.summary())
        if manifest.get("status") not in (None, "complete"):
            print(f"  (the manifest says the stage {manifest.get('status')})")
        if not res.ok:
            failed += 1
            problems = res.errors + res.discrepancies
            if not res.counts_agree.get("ok", True):
                problems.append(res.counts_message())
            for msg in problems[:10]:
                print(f"  {msg}")
    return 1 if failed else 0
