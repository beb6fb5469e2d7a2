"""What every stage's driver does around its pipeline: describe the inputs for the
rerun check, find a previous run, clear partial outputs, write the manifest."""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from curation.fs import normpath, writing
from curation.io import FieldMap, InputFile
from curation.manifest import dumps, package_versions
from curation.outputs import (MANIFEST, OutputLock, check_apart, check_inputs_whole,
                              describe_changes, inventory, prepare_output, read_manifest,
                              remove_orphan_temporaries,
                              settings_changes, verify_files)
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
    return read_manifest(output, fs)


def locked(command: str):
    """Decorate a driver ``run_x(cfg, beam_args, ...)``: it runs holding the lock on
    cfg.output (curation.outputs.OutputLock), released however it ends."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(cfg, *args, **kwargs):
            beam_args = args[0] if args else kwargs.get("beam_args", [])
            if not getattr(cfg, "output", None) or is_dry_run(beam_args):
                # a dry run only builds the job: it writes nothing to lock
                return fn(cfg, *args, **kwargs)
            with OutputLock(cfg.output, command, BeamFS()):
                return fn(cfg, *args, **kwargs)
        return wrapper
    return deco


def reuse_or_clear(command: str, fs: BeamFS, output: str, params: dict, *, dry_run: bool,
                   overwrite: bool, dirs: tuple[str, ...], files: tuple[str, ...] = ()) -> dict | None:
    """The previous manifest when OUTPUT holds a complete run with these parameters whose
    files are as it wrote them (and no --overwrite); otherwise None, after clearing what
    previous runs of ours wrote (curation.outputs.prepare_output: anything else in
    OUTPUT is refused). Replacing a complete run says why on stderr."""
    if dry_run:
        return None
    prev = previous_manifest(fs, output)
    complete = prev is not None and prev.get("command") == command and prev.get("status") == "complete"
    if complete and not overwrite and prev.get("parameters") == params:
        problems = verify_files(output, prev["files"], fs) if isinstance(prev.get("files"), dict) else []
        if not problems:
            print(f"{command}: {output} already holds a complete run with these settings; "
                  f"skipping (--overwrite reruns it)", file=sys.stderr)
            return prev
        print(f"{command}: {output} holds a run with these settings, but its files are not as "
              f"it wrote them ({describe_changes(problems, 3)}); running again", file=sys.stderr)
    elif complete:
        n = len(prev.get("files") or {})
        what = f"its {n} files" if n else "it"
        if overwrite:
            why = "--overwrite"
        else:
            why = "settings changed: " + describe_changes(settings_changes(prev.get("parameters"), params))
        print(f"{command}: replacing the complete run in {output} ({what}); {why}", file=sys.stderr)
    prepare_output(command, output, prev, dirs=dirs, files=files, fs=fs)
    return None


def write_manifest(fs: BeamFS, output: str, manifest: dict) -> str:
    """manifest.json, written last, with the inventory of every file the run left in
    OUTPUT (``files``: relative path -> bytes and checksum) for the rerun and read checks.
    The inventory is added to ``manifest`` itself, so a driver returns what it wrote."""
    for rel in remove_orphan_temporaries(output, fs):
        print(f"removed {fs.join(output, rel)}: a temporary whose writer died "
              f"(its work was redone)", file=sys.stderr)
    manifest["files"] = inventory(output, fs)
    path = fs.join(output, MANIFEST)
    with writing(fs, path) as f:
        f.write(dumps(manifest).encode("utf-8"))
    return path


def _input_dirs(patterns, fs: BeamFS) -> list[str]:
    """The directories the input patterns name (a glob's matches are files)."""
    pats = [normpath(os.fspath(p)) for p in patterns]
    return [p for p in pats if not any(ch in p for ch in "*?[") and fs.isdir(p)]


def check_output_outside_inputs(files, output: str, patterns=(), fs: BeamFS | None = None) -> None:
    """Before anything in OUTPUT is touched: OUTPUT neither holds an input nor lies in an
    input directory, however reached (real paths: symlinks resolved), no input file is
    named twice through different paths, and inputs that are an earlier stage's output
    are exactly the files it wrote (its manifest's inventory)."""
    fs = fs or BeamFS()
    paths = [f.path for f in files]
    # clearing OUT would delete inputs under it; OUT inside an input directory: its shards
    # would be read as inputs by the next run
    check_apart(paths, output, _input_dirs(patterns, fs))
    check_inputs_whole(patterns, paths, fs)


def read_counts(fs: BeamFS, output: str, name: str) -> dict:
    """The counts file a pipeline writes at its end (folded into the manifest)."""
    from curation.manifest import BalanceError
    path = fs.join(output, name)
    if not fs.exists(path):
        raise BalanceError(f"the pipeline finished without writing {path}")
    with fs.open_read(path) as f:
        return json.loads(f.read().decode("utf-8"))


class Stage:
    """One Beam stage, as `drive` runs it. A stage declares its name, its output
    directories and top-level files (what a rerun may clear), and four steps:

    - ``plan(cfg, files, fs)``: checks and state before anything runs; returns the
      parameters that identify the run (a rerun with equal ones is skipped);
    - ``check_runner(runner)``: refuse a runner the settings cannot work with;
    - ``build(p, cfg, files)``: add the transforms to the pipeline;
    - ``collect(cfg, files, fs, ran)``: the manifest's body from what ran, whether its
      checks hold, and a function that raises for a failed check once the manifest
      (naming the failure) is written; ``finish(fs, cfg, manifest, ok)`` removes
      temporaries first.
    """

    name = ""
    namespace = ""
    dirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def plan(self, cfg, files, fs) -> dict:
        raise NotImplementedError

    def check_runner(self, runner: str) -> None:
        pass

    def build(self, p, cfg, files) -> None:
        raise NotImplementedError

    def before_run(self, fs) -> None:
        pass

    def collect(self, cfg, files, fs, ran):
        raise NotImplementedError

    def finish(self, fs, cfg, manifest: dict, ok: bool) -> None:
        pass


def checked(balance: dict, parts: dict, reconciled, ran: Ran, namespace: str) -> dict:
    """The end of a stage manifest's body: its checks and the job's counters."""
    from pipelines.runner import counters
    return {"balance": balance, "parts_agree": parts, "reconciled": reconciled.as_manifest(),
            "counters": dict(sorted(counters(ran.result, namespace).items()))}


def raise_for(balance: dict, reconciled, ok: bool, parts: dict):
    """`Stage.collect`'s raise_failed for a stage whose checks are the balance, the
    reconciliation, then its parts (`ok`: all of them)."""
    def raise_failed(path: str) -> None:
        from curation.manifest import BalanceError
        if not balance["ok"]:
            raise BalanceError(f"counts do not balance: {balance} (see {path})")
        reconciled.raise_if_failed(path)
        if not ok:
            raise BalanceError(f"the parts of the counts disagree: {parts} (see {path})")
    return raise_failed


def drive(stage: Stage, cfg, beam_args: list[str], *, overwrite: bool = False) -> dict:
    """Run any stage: inputs expanded and checked, a finished identical run reused (or
    the partial one cleared), the pipeline built and run, the manifest written last,
    then any failed check raised. Under --dry_run the job is only built."""
    from pipelines.runner import check_beam_args, make_pipeline
    from curation.io import expand_sources
    t0 = time.time()
    check_beam_args(beam_args)
    if not cfg.output:
        raise UsageError(f"{stage.name} needs --output")
    fs = BeamFS()
    try:
        files = expand_sources(cfg.input_sources(), fs=fs, input_format=cfg.input_format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_output_outside_inputs(files, cfg.output, cfg.patterns(), fs)
    params = stage.plan(cfg, files, fs)
    dry_run = is_dry_run(beam_args)
    p, runner = make_pipeline(beam_args)
    stage.check_runner(runner)
    prev = reuse_or_clear(stage.name, fs, cfg.output, params, dry_run=dry_run, overwrite=overwrite,
                          dirs=stage.dirs, files=stage.files)
    if prev is not None:
        return prev
    stage.build(p, cfg, files)
    if not dry_run:
        stage.before_run(fs)
    ran = run_pipeline(p, stage.name, runner, params, dry_run=dry_run, t0=t0)
    if not isinstance(ran, Ran):
        return ran
    body, ok, raise_failed = stage.collect(cfg, files, fs, ran)
    manifest = {**manifest_head(stage.name, ok, ran, params), **body}
    stage.finish(fs, cfg, manifest, ok)
    path = write_manifest(fs, cfg.output, manifest)
    raise_failed(path)
    return manifest
