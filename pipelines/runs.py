"""What every stage's driver does around its pipeline: describe the inputs for the
rerun check, find a previous run, clear partial outputs, write the manifest."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from curation.fs import normpath
from curation.io import FieldMap, InputFile
from curation.manifest import dumps, package_versions
from pipelines.fs import BeamFS
from pipelines.runner import UsageError


def file_stat(path: str) -> dict:
    from apache_beam.io.filesystems import FileSystems
    try:
        meta = FileSystems.match([path])[0].metadata_list[0]
    except Exception:   # noqa: BLE001 - a file we cannot stat is simply never "unchanged"
        return {"bytes": None, "mtime": None}
    return {"bytes": meta.size_in_bytes, "mtime": meta.last_updated_in_seconds}


def input_files(files: list[InputFile]) -> list[dict]:
    # sizes and modification times: a rerun over changed inputs must not be skipped
    return [{"index": f.index, "path": f.path, "format": f.format, **file_stat(f.path)}
            for f in files]


def field_map(cfg) -> FieldMap:
    """How a stage's input config names the text, id and domain of a record."""
    return FieldMap(text_field=cfg.text_field, id_field=cfg.id_field,
                    domain_field=cfg.domain_field, domain=cfg.domain)


@dataclass
class Ran:
    """A pipeline that ran to the end: its result, final state and when each phase ended."""

    result: object
    state: object
    runner: str
    t0: float
    t_plan: float
    t_run: float


def run_pipeline(p, command: str, runner: str, params: dict, *, dry_run: bool,
                 t0: float) -> Ran | dict:
    """Run the built pipeline and wait for it; under --dry_run (Dataflow builds the job
    without submitting it) the dry-run manifest instead: nothing ran."""
    t_plan = time.time()
    result = p.run()
    if dry_run:
        return {"command": command, "status": "dry_run", "runner": runner,
                "parameters": params, "job": getattr(result, "job", None)}
    state = result.wait_until_finish()
    return Ran(result, state, runner, t0, t_plan, time.time())


def manifest_head(command: str, ok: bool, ran: Ran, params: dict) -> dict:
    """What every stage's manifest.json starts with."""
    return {
        "command": command,
        "status": "complete" if ok else "failed",
        "runner": ran.runner,
        "pipeline_state": str(ran.state),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "parameters": params,
        "versions": package_versions(),
        "timings_s": {"plan": round(ran.t_plan - ran.t0, 3), "pipeline": round(ran.t_run - ran.t_plan, 3),
                      "total": round(ran.t_run - ran.t0, 3)},
    }


def is_dry_run(beam_args: list[str]) -> bool:
    return any(a.replace(" ", "=") in ("--dry_run=True", "--dry_run=true") for a in beam_args)


def previous_manifest(fs: BeamFS, output: str) -> dict | None:
    path = fs.join(output, "manifest.json")
    if not fs.exists(path):
        return None
    with fs.open_read(path) as f:
        try:
            return json.loads(f.read().decode("utf-8"))
        except ValueError:
            return None


def clear_outputs(fs: BeamFS, output: str, dirs: tuple[str, ...], files: tuple[str, ...] = ()) -> None:
    """Remove what a previous (possibly partial) run left; the manifest goes first,
    so a run interrupted while clearing is never taken for a complete one."""
    for name in ("manifest.json", *files):
        path = fs.join(output, name)
        if fs.exists(path):
            fs.delete(path)
    for sub in dirs:
        for path in fs.match(fs.join(output, sub, "*")):
            fs.delete(path)


def reuse_or_clear(command: str, fs: BeamFS, output: str, params: dict, *, dry_run: bool,
                   overwrite: bool, dirs: tuple[str, ...], files: tuple[str, ...] = ()) -> dict | None:
    """The previous manifest when OUTPUT holds a complete run with these parameters
    (and no --overwrite); otherwise None, after clearing OUTPUT for the new run."""
    if dry_run:
        return None
    prev = previous_manifest(fs, output)
    if prev and not overwrite and prev.get("status") == "complete" and prev.get("parameters") == params:
        print(f"{command}: {output} already holds a complete run with these settings; "
              f"skipping (--overwrite reruns it)", file=sys.stderr)
        return prev
    clear_outputs(fs, output, dirs, files)
    fs.makedirs(output)
    return None


def write_manifest(fs: BeamFS, output: str, manifest: dict) -> str:
    path = fs.join(output, "manifest.json")
    tmp = path + ".tmp"
    with fs.open_write(tmp) as f:
        f.write(dumps(manifest).encode("utf-8"))
    fs.rename(tmp, path)
    return path


def _absolute(path: str) -> str:
    return normpath(path) if "://" in path else os.path.abspath(path)


def _input_dirs(patterns, fs: BeamFS) -> list[str]:
    """The directories the input patterns name (a glob's matches are files)."""
    pats = [normpath(os.fspath(p)) for p in patterns]
    return [p for p in pats if not any(ch in p for ch in "*?[") and fs.isdir(p)]


def check_output_outside_inputs(files, output: str, patterns=(), fs: BeamFS | None = None) -> None:
    # clearing OUT before the run would delete inputs that live under it
    root = _absolute(output).rstrip("/") + "/"
    inside = [f.path for f in files if _absolute(f.path).startswith(root)]
    if inside:
        raise UsageError(f"--output {output} holds input files ({inside[0]}, ...); "
                         f"choose an output directory outside the inputs")
    # OUT inside an input directory: its shards would be read as inputs by the next run
    for d in _input_dirs(patterns, fs or BeamFS()):
        if root.startswith(_absolute(d).rstrip("/") + "/"):
            raise UsageError(f"--output {output} is inside the input directory {d}; "
                             f"choose an output directory outside the inputs")


def read_counts(fs: BeamFS, output: str, name: str) -> dict:
    """The counts file a pipeline writes at its end (folded into the manifest)."""
    from curation.manifest import BalanceError
    path = fs.join(output, name)
    if not fs.exists(path):
        raise BalanceError(f"the pipeline finished without writing {path}")
    with fs.open_read(path) as f:
        return json.loads(f.read().decode("utf-8"))
