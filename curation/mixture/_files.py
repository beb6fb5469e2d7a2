"""The one atomic writer for local files: run directories of the mixture search, its
exports, labels and classifier models.

Stdlib only and no Beam, so `classifiers` may import it as well as `curation.mixture`.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path` to write to, by any means (a stream, a library
    that saves by name); on a clean exit it is fsynced and renamed onto `path`, and on an
    exception removed. A reader sees the old file or the whole new one, never a part.

    The temporary name is hidden (``.NAME.<uuid>.tmp``, so ``part-*`` globs skip it) and
    unique (concurrent writers of one path do not meet). It does not exist yet: whatever
    creates it gives it the usual mode, ``0o666 & ~umask``, which the rename keeps.
    Parent directories are created."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
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
    """Write `data` to `path` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
