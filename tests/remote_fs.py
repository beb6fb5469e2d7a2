"""`testremote://x` is the local path ROOT[0]/x, registered with Beam's FileSystems:
an object-store-like location (no directories, paths keep their scheme) for testing
code that reads and writes gs:// without a network. Beam finds a FileSystem by its
scheme among the subclasses imported into the process, so the in-memory runner's
workers (this process) and the driver both see it."""
from __future__ import annotations

import os
import posixpath
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

ROOT: list[str] = []
PREFIX = "testremote://"


class RemoteMirrorFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return "testremote"

    @staticmethod
    def local(path: str) -> str:
        return os.path.join(ROOT[0], path[len(PREFIX):]) if path.startswith(PREFIX) else path

    @staticmethod
    def remote(path: str) -> str:
        root = ROOT[0].rstrip("/") + "/"
        return PREFIX + path[len(root):] if path.startswith(root) else path

    def join(self, base, *paths):
        return posixpath.join(base, *paths)

    def split(self, path):
        return posixpath.split(path)

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        os.makedirs(self.local(path), exist_ok=True)

    def match(self, patterns, limits=None):
        out = super().match([self.local(p) for p in patterns], limits)
        return [MatchResult(p, [FileMetadata(self.remote(m.path), m.size_in_bytes,
                                             m.last_updated_in_seconds) for m in r.metadata_list])
                for p, r in zip(patterns, out)]

    def create(self, path, *args, **kwargs):
        return super().create(self.local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self.local(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        return super().copy([self.local(p) for p in source_file_names],
                            [self.local(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        for dst in destination_file_names:
            os.makedirs(os.path.dirname(self.local(dst)), exist_ok=True)
        return super().rename([self.local(p) for p in source_file_names],
                              [self.local(p) for p in destination_file_names])

    def exists(self, path):
        return super().exists(self.local(path))

    def size(self, path):
        return super().size(self.local(path))

    def last_updated(self, path):
        return super().last_updated(self.local(path))

    def checksum(self, path):
        return super().checksum(self.local(path))

    def metadata(self, path):
        m = super().metadata(self.local(path))
        return FileMetadata(self.remote(m.path), m.size_in_bytes, m.last_updated_in_seconds)

    def delete(self, paths):
        # LocalFileSystem.delete goes through match(), which answers in remote paths
        missing = {}
        for p in paths:
            lp = self.local(p)
            if os.path.isdir(lp):
                shutil.rmtree(lp)
            elif os.path.exists(lp):
                os.remove(lp)
            else:
                missing[p] = OSError(f"No files found to delete under: {p}")
        if missing:
            raise BeamIOError("Delete operation failed", missing)
