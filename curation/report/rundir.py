"""Reading a run directory: which stages ran, their manifests and summaries, and
their shards, one row at a time.

A run directory holds one subdirectory per stage (the stage command's output
directory) and, when `curate run` wrote it, run.json. A stage counts as having run
when its completion file exists: the file each stage writes last.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from curation.config import ConfigError
from curation.io import input_format, iter_rows

# (stage, default directory, completion file): the file each stage writes last
STAGES = (
    ("dedup", "dedup", "manifest.json"),
    ("filter", "filter", "manifest.json"),
    ("label", "label", "summary.json"),
    ("train", "classifier", "metrics.json"),
    ("score", "score", "manifest.json"),
    ("mix", "mix", "summary.json"),
    ("export", "export", "manifest.json"),
)
RUN_JSON = "run.json"


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def shard_paths(directory: str) -> list[str]:
    """The data files of a stage's output folder, sorted; temporaries (".name") skipped."""
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
            if not n.startswith(".") and input_format(n) is not None]


def rows(directory: str) -> Iterator[dict]:
    """Every row of every shard in `directory`, streaming."""
    for path in shard_paths(directory):
        yield from iter_rows(path)


@dataclass
class Stage:
    name: str
    dir: str                       # relative to the run directory
    path: str
    ran: bool                      # its completion file exists
    data: Any = None               # the completion file's content (manifest, summary, metrics)
    status: str | None = None      # the stage's own status, else run.json's
    why_not: str | None = None     # when it did not run (or did not complete): why, in words
    run_entry: dict = field(default_factory=dict)   # its entry in run.json

    @property
    def complete(self) -> bool:
        return self.ran and self.status in (None, "complete")

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)


@dataclass
class RunDir:
    path: str
    run: dict | None               # run.json, when `curate run` wrote it
    stages: dict[str, Stage]

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def relative(self, path: str) -> str:
        """A path as the report shows it: relative when inside the run directory."""
        ap, root = os.path.abspath(path), os.path.abspath(self.path)
        return os.path.relpath(ap, root) if ap.startswith(root.rstrip("/") + "/") else path


def _why_missing(name: str, rel: str, completion: str, entry: dict, exists: bool) -> str:
    status = entry.get("status")
    if status == "disabled":
        return f"the {name} stage was disabled in the run's configuration"
    if status == "failed":
        return f"the {name} stage failed" + (f" ({entry['fallback']})" if entry.get("fallback") else "")
    if exists:
        return f"{rel}/ has no {completion}: the {name} stage did not finish"
    return f"there is no {rel}/ directory: the {name} stage did not run"


def open_run_dir(path: str) -> RunDir:
    """The stages of the run directory at `path` (ConfigError if it is not a directory)."""
    if not os.path.isdir(path):
        raise ConfigError(f"run directory {path} does not exist (or is not a directory)")
    run_path = os.path.join(path, RUN_JSON)
    run = None
    if os.path.isfile(run_path):
        try:
            run = read_json(run_path)
        except ValueError:
            run = None   # a half-written run.json: the report goes on without it
    entries = {s.get("name"): s for s in (run or {}).get("stages", []) if isinstance(s, dict)}
    stages = {}
    for name, default_dir, completion in STAGES:
        entry = entries.get(name, {})
        rel = entry.get("dir") or default_dir
        sp = os.path.join(path, rel)
        cpath = os.path.join(sp, completion)
        data, ran = None, os.path.isfile(cpath)
        if ran:
            try:
                data = read_json(cpath)
            except ValueError:
                ran = False
        st = Stage(name=name, dir=rel, path=sp, ran=ran, data=data, run_entry=entry)
        if ran:
            st.status = data.get("status") if isinstance(data, dict) and "status" in data else None
            if st.status not in (None, "complete"):
                st.why_not = f"{rel}/{completion} says status {st.status!r}"
        else:
            st.why_not = _why_missing(name, rel, completion, entry, os.path.isdir(sp))
        stages[name] = st
    return RunDir(path=path, run=run, stages=stages)
