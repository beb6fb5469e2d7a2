"""A small filesystem protocol: the library reads and writes through it, so the
pipeline layer can hand in Beam's FileSystems (gs:// and friends) while plain
library users get local files."""
from __future__ import annotations

import glob
import os
from typing import BinaryIO, Protocol


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
    def open_read(self, path):
        return open(path, "rb")

    def open_write(self, path):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return open(path, "wb")

    def rename(self, src, dst):
        os.replace(src, dst)

    def exists(self, path):
        return os.path.exists(path)

    def delete(self, path):
        os.remove(path)

    def match(self, pattern):
        return sorted(glob.glob(pattern, recursive=True))

    def isdir(self, path):
        return os.path.isdir(path)

    def listdir(self, path):
        return sorted(os.listdir(path))

    def join(self, a, *parts):
        return os.path.join(a, *parts)

    def makedirs(self, path):
        os.makedirs(path, exist_ok=True)


def default_fs(fs=None):
    return fs if fs is not None else LocalFS()
