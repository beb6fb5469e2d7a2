"""What a stage may do to its output directory, for every stage (Beam or in-process).

- Only what a run of ours wrote is ever deleted: the files its manifest lists (with
  their sizes and checksums), or, after a run that did not finish (its manifest says
  ``running``), the shards and temporaries in the stage's own subdirectories. Anything
  else in the output is refused, by name, before anything is removed.
- The output is never an input, however it is reached: paths are compared after
  resolving symlinks, and one file reached by two paths is refused.
- One run at a time per output: a lock file (``.curate.lock``) says who holds it.
  Locally it is an flock on that file, which the kernel releases when the holder dies,
  so a lock left by a dead process is taken over (with a message). Object stores
  (gs://) have no exclusive create through Beam's FileSystems: there the lock is an
  object written and read back, and a lock left by a dead process on another machine
  must be deleted by hand (the message names it); two runs started within the same
  moment can both miss each other's lock object (documented in docs/run.md).
- A complete output lists every file it wrote in its manifest (``files``: path relative
  to the output -> bytes and a checksum); a rerun's skip and the next stage's read
  check the files against it.

Library code: no Beam. Paths go through a curation.fs ``FS``.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import socket
import sys
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable

import xxhash

from curation.config import ConfigError
from curation.fs import FS, default_fs, is_remote, is_temporary, normpath, writing

MANIFEST = "manifest.json"
LOCK = ".curate.lock"
# the commands whose output directories hold a manifest.json with a `files` inventory
STAGE_COMMANDS = ("dedup", "filter", "score", "export")
_CHUNK = 1 << 20


class OutputError(ConfigError):
    """The output directory cannot be used as asked (held by another run, holds files
    that are not ours, is an input, lost a file): a one-line usage error."""


# ---------------------------------------------------------------------- paths

def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def real_path(path: str) -> str:
    """Symlinks resolved (local paths); URLs only normalised."""
    path = os.fspath(path)
    return normpath(path) if is_remote(path) else os.path.realpath(_local(path))


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") + "/"
    return path == root.rstrip("/") or path.startswith(root)


def check_apart(inputs: Iterable[str], output: str, input_dirs: Iterable[str] = ()) -> None:
    """Refuse an output that holds an input file, or lies inside an input directory, or
    an input file reached by two paths, comparing real paths (a symlink to an input
    directory is the input directory)."""
    out = real_path(output)
    seen: dict[str, str] = {}
    for p in inputs:
        r = real_path(p)
        if r in seen and seen[r] != p:
            raise OutputError(f"the inputs {seen[r]} and {p} are the same file; name it once")
        seen.setdefault(r, p)
        if _under(r, out):
            via = "" if is_remote(output) or out == os.path.abspath(_local(output)) else \
                f" (through a symlink: {output} is {out})"
            raise OutputError(f"--output {output} holds input files ({p}{via}); choose an "
                              f"output directory outside the inputs")
    for d in input_dirs:
        if _under(out, real_path(d)):
            raise OutputError(f"--output {output} is inside the input directory {d}; choose an "
                              f"output directory outside the inputs")


# ---------------------------------------------------------------------- inventory

def list_files(output: str, fs: FS | None = None) -> list[str]:
    """Every file under ``output``, as paths relative to it ('/'-separated), sorted."""
    fs = default_fs(fs)
    if not is_remote(output):
        root = _local(output)
        if not os.path.isdir(root):
            return []
        out = []
        for d, dirs, names in os.walk(root):
            dirs.sort()
            for n in names:
                out.append(os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/"))
        return sorted(out)
    prefix = output.rstrip("/") + "/"
    return sorted(p[len(prefix):] for p in fs.match(prefix + "**") if p.startswith(prefix))


def file_record(path: str, fs: FS | None = None) -> dict:
    """Bytes and a checksum: xxh3-128 of the content, streamed; on an object store the
    store's own checksum when the filesystem offers one (no download of the output)."""
    fs = default_fs(fs)
    if is_remote(path) and hasattr(fs, "checksum"):
        return {"bytes": fs.size(path), "store_checksum": str(fs.checksum(path))}
    h, n = xxhash.xxh3_128(), 0
    with fs.open_read(path) as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return {"bytes": n, "xxh3_128": h.hexdigest()}


def _bookkeeping(rel: str) -> bool:
    """Files that are never part of an output's data: the manifest (and its temporary),
    the lock."""
    base = rel.rsplit("/", 1)[-1]
    return rel in (MANIFEST, LOCK) or (base.startswith(f".{MANIFEST}") or base == MANIFEST + ".tmp")


def remove_orphan_temporaries(output: str, fs: FS | None = None) -> list[str]:
    """Delete the temporaries of writers that died before their rename (a worker killed
    mid-write whose task the runner redid elsewhere): once a run's work has finished,
    none of them is still being written. Returns their relative paths."""
    fs = default_fs(fs)
    gone = [rel for rel in list_files(output, fs) if is_temporary(rel.rsplit("/", 1)[-1])]
    for rel in gone:
        fs.delete(fs.join(output, rel))
    return gone


def inventory(output: str, fs: FS | None = None) -> dict[str, dict]:
    """``{relative path: {bytes, checksum}}`` of every data file under ``output``."""
    fs = default_fs(fs)
    return {rel: file_record(fs.join(output, rel), fs) for rel in list_files(output, fs)
            if not _bookkeeping(rel)}


def verify_files(output: str, recorded: dict[str, dict], fs: FS | None = None,
                 only: Iterable[str] | None = None) -> list[str]:
    """What differs between the files under ``output`` and the inventory ``recorded``:
    one line per file (missing, changed, or not listed); empty when they agree.
    ``only``: check just these relative paths (the ones a reader will read)."""
    fs = default_fs(fs)
    present = set(list_files(output, fs))
    names = sorted(recorded) if only is None else sorted(only)
    problems = []
    for rel in names:
        path = fs.join(output, rel)
        if rel not in recorded:
            problems.append(f"{path}: not listed in {fs.join(output, MANIFEST)}")
        elif rel not in present:
            problems.append(f"{path}: missing")
        else:
            want = recorded[rel]
            got = file_record(path, fs)
            if got.get("bytes") != want.get("bytes"):
                problems.append(f"{path}: changed ({want.get('bytes')} bytes written, "
                                f"{got.get('bytes')} now)")
            elif {k: v for k, v in got.items() if k != "bytes"} != \
                    {k: v for k, v in want.items() if k != "bytes"}:
                problems.append(f"{path}: changed (checksum differs)")
    if only is None:
        problems += [f"{fs.join(output, rel)}: not listed in {fs.join(output, MANIFEST)}"
                     for rel in sorted(present - set(recorded)) if not _bookkeeping(rel)]
    return problems


def read_manifest(output: str, fs: FS | None = None, name: str = MANIFEST) -> dict | None:
    fs = default_fs(fs)
    path = fs.join(output, name)
    if not fs.exists(path):
        return None
    try:
        with fs.open_read(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------- what is ours

def _partial_name(rel: str, dirs: tuple[str, ...], files: tuple[str, ...]) -> bool:
    """A file an unfinished run of the stage may have left: a shard or a temporary in one
    of its subdirectories, or one of its top-level files."""
    if rel in files or any(rel.startswith(f".{f}.") and rel.endswith(".tmp") for f in files):
        return True
    top, _, rest = rel.partition("/")
    if top not in dirs or not rest:
        return False
    base = rest.rsplit("/", 1)[-1]
    return (base.startswith("part-") or (base.startswith(".") and base.endswith(".tmp"))
            or base.endswith((".parquet", ".jsonl.gz", ".jsonl")))


def not_ours(output: str, command: str, prev: dict | None, dirs: tuple[str, ...],
             files: tuple[str, ...] = (), fs: FS | None = None) -> list[str]:
    """Files under ``output`` that no run of ``command`` wrote, as far as its manifest
    (``prev``) says: everything but the bookkeeping when there is no manifest."""
    fs = default_fs(fs)
    present = [r for r in list_files(output, fs) if r != LOCK]
    if prev is None:
        return [r for r in present if not r.startswith(f".{MANIFEST}")]
    listed = prev.get("files") if prev.get("status") != "running" else None
    out = []
    for rel in present:
        if _bookkeeping(rel):
            continue
        if isinstance(listed, dict):
            if rel in listed or rel in files:
                continue
        elif _partial_name(rel, dirs, files):
            continue
        out.append(rel)
    return out


def settings_changes(old, new, prefix: str = "") -> list[str]:
    """``["config.threshold: 0.8 -> 0.7", ...]``: the leaves that differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{p}: (none) -> {json.dumps(new[k], default=str)}")
            elif k not in new:
                out.append(f"{p}: {json.dumps(old[k], default=str)} -> (none)")
            else:
                out += settings_changes(old[k], new[k], p)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += settings_changes(a, b, f"{prefix}[{i}]")
        return out
    if old != new:
        return [f"{prefix}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []


def describe_changes(changes: list[str], most: int = 6) -> str:
    shown = "; ".join(changes[:most])
    return shown + (f"; and {len(changes) - most} more" if len(changes) > most else "")


def prepare_output(command: str, output: str, prev: dict | None, *, dirs: tuple[str, ...],
                   files: tuple[str, ...] = (), fs: FS | None = None,
                   log: Callable[[str], None] | None = None) -> None:
    """Make ``output`` ready for a new run of ``command``: refuse when it holds another
    command's output or any file that is not ours; otherwise mark it ``running`` (so a
    run cut off while clearing or writing is never taken for complete, and its leftovers
    are known as ours) and delete what the previous run wrote."""
    fs = default_fs(fs)
    if prev is not None and prev.get("command") != command:
        raise OutputError(f"--output {output} holds the output of `curate {prev.get('command')}` "
                          f"({fs.join(output, MANIFEST)}), not of {command}; choose another "
                          f"directory")
    if prev is None and fs.exists(fs.join(output, MANIFEST)):
        raise OutputError(f"--output {output} holds a {MANIFEST} that no run of curate wrote; "
                          f"choose another directory")
    foreign = not_ours(output, command, prev, dirs, files, fs)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"--output {output} holds {fs.join(output, foreign[0])}{more}, which no "
                          f"run of curate {command} wrote; refusing to delete it: move it, or "
                          f"choose an empty or new directory")
    fs.makedirs(output)
    old = [r for r in list_files(output, fs) if not _bookkeeping(r)]
    write_json(fs, fs.join(output, MANIFEST),
               {"command": command, "status": "running", "started_at": _now(),
                "pid": os.getpid(), "host": socket.gethostname()})
    for rel in old:
        fs.delete(fs.join(output, rel))
    if not is_remote(output):   # empty subdirectories of ours go too (not the output itself)
        for d, subdirs, names in sorted(os.walk(_local(output)), reverse=True):
            if os.path.normpath(d) != os.path.normpath(_local(output)) and not subdirs and not names:
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def write_json(fs: FS, path: str, doc: dict) -> None:
    with writing(fs, path) as f:
        f.write((json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- reading our outputs

def _glob_match(path: str, pattern: str) -> bool:
    """``*`` and ``?`` within one path component, ``**`` across (as fs.match globs)."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(path, pattern)
    a, b = path.split("/"), pattern.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b))


def _has_glob(p: str) -> bool:
    return any(ch in p for ch in "*?[")


def _dirname(p: str) -> str:
    return p.rsplit("/", 1)[0] if "/" in p else "."


def check_inputs_whole(patterns: Iterable[str], input_paths: Iterable[str],
                       fs: FS | None = None) -> None:
    """Inputs that are the output of one of our stages (a directory up to two levels
    above them holds its manifest.json) must be exactly the files that run wrote:
    a missing, extra or changed file, or an unfinished run, is an OutputError naming it."""
    fs = default_fs(fs)
    paths = [normpath(os.fspath(p)) for p in input_paths]
    cache: dict[str, dict | None] = {}

    def manifest_dir(path: str) -> str | None:
        d = _dirname(path)
        for _ in range(2):
            if d not in cache:
                m = read_manifest(d, fs)
                cache[d] = m if m is not None and m.get("command") in STAGE_COMMANDS else None
            if cache[d] is not None:
                return d
            nxt = _dirname(d)
            if nxt == d:
                break
            d = nxt
        return None

    read_by_dir: dict[str, set[str]] = {}
    for p in paths:
        d = manifest_dir(p)
        if d is None:
            continue
        m = cache[d]
        if m.get("status") != "complete":
            raise OutputError(f"input {p}: {d} holds an unfinished `curate {m.get('command')}` "
                              f"run (status {m.get('status')}); rerun that stage first")
        rel = p[len(d.rstrip("/")) + 1:] if d != "." else p
        read_by_dir.setdefault(d, set()).add(rel)
    for d, rels in sorted(read_by_dir.items()):
        recorded = cache[d].get("files")
        if not isinstance(recorded, dict):
            continue   # written before inventories: nothing to check against
        expected: set[str] = set()
        prefix = d.rstrip("/") + "/" if d != "." else ""
        for pat in patterns:
            pat = normpath(os.fspath(pat))
            if _has_glob(pat):
                expected |= {r for r in recorded if _glob_match(prefix + r, pat)}
            elif pat == d or _under(d, pat) or (_under(pat, d) and pat[len(prefix):] not in recorded):
                # a directory: every data file the run wrote under it is read
                sub = pat[len(prefix):] if _under(pat, d) and pat != d else ""
                expected |= {r for r in recorded if (not sub or _under(r, sub))
                             and not r.rsplit("/", 1)[-1].startswith(".")
                             and not r.endswith(".json")}
        problems = verify_files(d, recorded, fs, only=sorted(rels | expected))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise OutputError(f"input {problems[0]}{more}: the `curate {cache[d].get('command')}` "
                              f"output in {d} is not as that run wrote it; rerun that stage")


def check_stage_paths(patterns: Iterable[str], output: str, fs: FS | None = None) -> None:
    """For the in-process stages (label, mix, export), which read by patterns: the
    output is apart from the inputs (check_apart) and inputs that are one of our
    outputs are whole (check_inputs_whole)."""
    fs = default_fs(fs)
    files, dirs, pats = [], [], [normpath(os.fspath(p)) for p in patterns if p]
    for p in pats:
        matched = fs.match(p) if _has_glob(p) else [p]
        for m in matched:
            if fs.isdir(m):
                dirs.append(m)
                files += [fs.join(m, r) for r in list_files(m, fs)
                          if not r.rsplit("/", 1)[-1].startswith(".") and not r.endswith(".json")]
            elif fs.exists(m):
                files.append(m)
    check_apart(files, output, dirs)
    check_inputs_whole(pats, files, fs)


# ---------------------------------------------------------------------- the lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(h: dict) -> str:
    return (f"pid {h.get('pid')} on {h.get('host')}, `{h.get('command_line') or h.get('command')}`, "
            f"since {h.get('since')}")


class OutputLock:
    """One run at a time in ``output`` (see the module docstring). Use as a context
    manager; ``log`` says when a dead process's lock is taken over."""

    def __init__(self, output: str, command: str, fs: FS | None = None,
                 log: Callable[[str], None] | None = None):
        self.output, self.command, self.fs = output, command, default_fs(fs)
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.path = self.fs.join(output, LOCK)
        self._fd: int | None = None
        self._token = uuid.uuid4().hex
        self._made: str | None = None

    def _me(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "command_line": " ".join(sys.argv), "since": _now(), "token": self._token}

    def __enter__(self) -> "OutputLock":
        if is_remote(self.output):
            self._acquire_remote()
        else:
            self._acquire_local()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, holder: dict) -> OutputError:
        return OutputError(f"--output {self.output} is in use by another run ({describe_holder(holder)}); "
                           f"wait for it to end, or choose another directory")

    def _acquire_local(self) -> None:
        import fcntl
        root = _local(self.output)
        if os.path.exists(root) and not os.path.isdir(root):
            raise OutputError(f"--output {self.output} is a file, not a directory")
        if not os.path.exists(root):
            os.makedirs(root, exist_ok=True)
            self._made = root
        path = os.path.join(root, LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_fd(fd)
                os.close(fd)
                raise self._busy(holder) from None
            try:   # the holder before us may have removed the file as we opened it
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_fd(fd)
        if old.get("pid") is not None:
            self.log(f"{self.command}: taking over the lock on {self.output} left by a process "
                     f"that is no longer running ({describe_holder(old)})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._me()).encode("utf-8"), 0)
        self._fd = fd

    def _acquire_remote(self) -> None:
        fs = self.fs
        if fs.exists(self.path):
            holder = read_manifest(self.output, fs, LOCK) or {}
            dead_here = (holder.get("host") == socket.gethostname()
                         and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]))
            if not dead_here:
                raise OutputError(f"--output {self.output} is in use by another run "
                                  f"({describe_holder(holder)}); if that run is gone, delete "
                                  f"{self.path} and retry")
            self.log(f"{self.command}: taking over the lock on {self.output} left by a process "
                     f"that is no longer running ({describe_holder(holder)})")
        with fs.open_write(self.path) as f:
            f.write(json.dumps(self._me()).encode("utf-8"))
        # no exclusive create through Beam's FileSystems: read back, so that of two runs
        # that wrote the lock at once, the one overwritten sees it and stops
        got = read_manifest(self.output, fs, LOCK) or {}
        if got.get("token") != self._token:
            raise self._busy(got)
        self._fd = -1

    def release(self) -> None:
        if self._fd is None:
            return
        if is_remote(self.output):
            got = read_manifest(self.output, self.fs, LOCK) or {}
            if got.get("token") == self._token:
                self.fs.delete(self.path)
        else:
            root = _local(self.output)
            with contextlib.suppress(OSError):
                os.remove(os.path.join(root, LOCK))   # while still holding it
            os.close(self._fd)
            if self._made:   # a run refused before writing anything leaves no empty directory
                with contextlib.suppress(OSError):
                    os.rmdir(self._made)
        self._fd = None


def _read_fd(fd: int) -> dict:
    try:
        data = os.pread(fd, 1 << 16, 0)
        out = json.loads(data.decode("utf-8")) if data.strip() else {}
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def locked_output(command: str, arg: str = "output"):
    """Decorate a stage function so that it runs holding the lock on its output
    directory: ``arg`` names the parameter that is the directory, or a config object
    with an ``output`` attribute (the lock is skipped when it is unset)."""
    import functools
    import inspect

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            value = sig.bind_partial(*args, **kwargs).arguments.get(arg)
            output = getattr(value, "output", value)
            if not output:
                return fn(*args, **kwargs)
            with OutputLock(os.fspath(output), command):
                result = fn(*args, **kwargs)
                # finished: its marker file says whose the output is (claim_output)
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(_local(os.fspath(output)), OWNER))
                return result
        return wrapper
    return deco


OWNER = ".curate.owner"


def claim_output(output: str, ours: Iterable[str], marker: str, command: str) -> None:
    """For a stage that writes fixed names into ``output`` (label, train-classifier,
    mix) and deletes nothing else: a file with one of our names is overwritten only when
    a run of ``command`` was there before (its ``OWNER`` file, written when a run starts,
    or its finished ``marker``); otherwise it is someone else's, refused by name."""
    root = _local(os.fspath(output))
    owner = os.path.join(root, OWNER)
    try:
        with open(owner, encoding="utf-8") as f:
            was = json.load(f).get("command")
    except (OSError, ValueError, AttributeError):
        was = None
    if was is not None and was != command:
        raise OutputError(f"--output {output} holds the output of `curate {was}`, not of "
                          f"{command}; choose another directory")
    if was is None and not os.path.exists(os.path.join(root, marker)):
        taken = [n for n in ours if os.path.exists(os.path.join(root, n))]
        if taken:
            raise OutputError(f"--output {output} already holds {os.path.join(root, taken[0])}, "
                              f"which no run of curate {command} wrote; refusing to overwrite "
                              f"it: move it, or choose an empty or new directory")
    os.makedirs(root, exist_ok=True)
    if was is None:
        with open(owner, "w", encoding="utf-8") as f:
            json.dump({"command": command, "since": _now()}, f)
        # the OutputLock removes an output directory it made; this one now holds a file
