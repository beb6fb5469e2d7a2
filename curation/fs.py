"""A small filesystem protocol.

The library reads and writes through it, so the pipeline layer can hand in an
adapter on Beam's FileSystems (gs:// and friends) while plain library users get
local files. Every function that touches files takes ``fs=None`` and falls back
to `LocalFS`.

Semantics an implementation must keep:

- ``match(pattern)`` is a glob and returns a sorted list. Local globs may return
  directories too; object stores return objects only (they have no directories).
- ``rename(src, dst)`` replaces ``dst`` if it exists. Writers rely on it to move a
  finished temporary file into place, so a partial file never has the final name.
- ``open_write`` truncates; parent "directories" are created as needed.
"""
from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import re
import uuid
from typing import BinaryIO, Iterator, Protocol, runtime_checkable


@runtime_checkable
class FS(Protocol):
    def open_read(self, path: str) -> BinaryIO: ...
    def open_write(self, path: str) -> BinaryIO: ...
    def rename(self, src: str, dst: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def delete(self, path: str) -> None: ...
    def match(self, pattern: str) -> list[str]: ...
    def isdir(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def join(self, a: str, *parts: str) -> str: ...
    def makedirs(self, path: str) -> None: ...


class LocalFS:
    """`FS` on the local disk (``os`` and ``glob``). Stateless and picklable."""

    def open_read(self, path: str) -> BinaryIO:
        return open(path, "rb")

    def read_range(self, path: str, start: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(length)

    def open_write(self, path: str) -> BinaryIO:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return open(path, "wb")

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)   # atomic on POSIX, replaces dst

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def delete(self, path: str) -> None:
        os.remove(path)

    def match(self, pattern: str) -> list[str]:
        # `**` crosses directories; hidden names (".x") only match a pattern that says so.
        return sorted(glob.glob(pattern, recursive=True))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def join(self, a: str, *parts: str) -> str:
        return os.path.join(a, *parts)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def __eq__(self, other):
        return type(other) is LocalFS

    def __hash__(self):
        return hash(LocalFS)

    def __repr__(self):
        return "LocalFS()"


def read_range(fs: FS, path: str, start: int, length: int) -> bytes:
    """Exactly `length` bytes of `path` at `start`, as one request where the filesystem
    can (its own ``read_range``; object stores' readers may fetch far more than asked
    after a seek). A file that ends first raises OSError: it was changed or cut short."""
    if hasattr(fs, "read_range"):
        data = fs.read_range(path, start, length)
    else:
        with fs.open_read(path) as f:
            f.seek(start)
            data = f.read(length)
    if len(data) != length:
        raise OSError(f"{path}: {len(data)} bytes at {start}, expected {length} (changed or cut short?)")
    return data


def default_fs(fs: FS | None = None) -> FS:
    return fs if fs is not None else LocalFS()


def is_remote(path: str) -> bool:
    """True for URLs such as gs://bucket/x (but not file://), False for local paths."""
    return "://" in path and not path.startswith("file://")


def dirname(path: str) -> str:
    """Parent of a local path or of a URL (``gs://b/x/y`` -> ``gs://b/x``)."""
    if "://" in path:
        return posixpath.dirname(path.rstrip("/"))
    return os.path.dirname(path)


def basename(path: str) -> str:
    if "://" in path:
        return posixpath.basename(path.rstrip("/"))
    return os.path.basename(path.rstrip(os.sep)) if path != os.sep else path


def normpath(path: str) -> str:
    """Local paths are normalised (``./a//b/`` -> ``a/b``); URLs lose only a trailing slash."""
    if "://" in path:
        return path.rstrip("/") if not path.endswith("://") else path
    return os.path.normpath(path)


def _temporary(path: str, fs: FS) -> str:
    """A hidden, unique name beside `path` (``.NAME.<uuid>.tmp``: ``part-*`` globs skip
    it, and retried workers writing one path do not meet)."""
    parent = dirname(path)
    name = f".{basename(path)}.{uuid.uuid4().hex[:16]}.tmp"
    return fs.join(parent, name) if parent else name


_TEMPORARY = re.compile(r"\.[^/]+\.[0-9a-f]{16}\.tmp")


def is_temporary(name: str) -> bool:
    """Whether a file's base name is one `_temporary` gives."""
    return _TEMPORARY.fullmatch(name) is not None


@contextlib.contextmanager
def writing(fs: FS | None, path: str):
    """The one writer of finished files: a stream that becomes `path` only when the
    block ends without an error. It is written under a temporary name beside `path`
    and renamed onto it (atomic on a local disk; on an object store a stage counts as
    complete only once its manifest, written last, exists); on an error the temporary
    file is removed. Parent directories are created."""
    fs = default_fs(fs)
    parent = dirname(path)
    if parent:
        fs.makedirs(parent)
    tmp = _temporary(path, fs)
    try:
        with fs.open_write(tmp) as f:
            yield f
        fs.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.delete(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """`writing` for a library that saves a local file by name (fastText, tokenizers):
    yields the temporary path to save to; on a clean exit it is fsynced and renamed onto
    `path`, on an error removed. It does not exist yet: whatever creates it gives it the
    usual mode, which the rename keeps."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, os.path.basename(_temporary(path, LocalFS())))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to the local `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
