"""What every stage's driver does around its pipeline: describe the inputs for the
rerun check, find a previous run, clear partial outputs, write the manifest."""
from __future__ import annotations

import json

from curation.io import InputFile
from curation.manifest import dumps
from pipelines.fs import BeamFS


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


def write_manifest(fs: BeamFS, output: str, manifest: dict) -> str:
    path = fs.join(output, "manifest.json")
    tmp = path + ".tmp"
    with fs.open_write(tmp) as f:
        f.write(dumps(manifest).encode("utf-8"))
    fs.rename(tmp, path)
    return path
