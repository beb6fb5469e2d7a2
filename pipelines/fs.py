"""curation.fs protocol on Beam's FileSystems, so the same library code reads and
writes gs:// (or any Beam filesystem) on Dataflow and local paths on a laptop."""
from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from curation.fs import is_remote


class BeamFS:
    def open_read(self, path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def read_range(self, path, start, length):
        """`length` bytes at `start`, as one request. Beam's GCS reader fetches at least
        16 MiB after every seek (its read buffer), so a small range of a large object
        read through open_read would download the rest of the object: on gs:// the
        buffer is set to the range."""
        if length <= 0:
            return b""
        if path.startswith("gs://"):
            if getattr(self, "_gcs", None) is None:
                from apache_beam.io.gcp.gcsio import GcsIO
                self._gcs = GcsIO()
            f = self._gcs.open(path, "rb", read_buffer_size=length)
        else:
            f = self.open_read(path)
        with f:
            f.seek(start)
            return f.read(length)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_gcs"}

    def open_write(self, path):
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def rename(self, src, dst):
        if FileSystems.exists(dst):
            FileSystems.delete([dst])
        FileSystems.rename([src], [dst])

    def exists(self, path):
        return FileSystems.exists(path)

    def delete(self, path):
        FileSystems.delete([path])

    def match(self, pattern):
        res = FileSystems.match([pattern])[0]
        return sorted(m.path for m in res.metadata_list)

    def size(self, path):
        return FileSystems.get_filesystem(path).size(path)

    def checksum(self, path):
        # the object store's own checksum (GCS: its CRC32C/MD5), read without downloading;
        # curation.outputs uses it for remote paths only
        return FileSystems.checksum(path)

    def isdir(self, path):
        # Object stores have no directories: a prefix with objects under it counts.
        if not is_remote(path):
            return os.path.isdir(path[len("file://"):] if path.startswith("file://") else path)
        return bool(self.match(self.join(path, "*")))

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.match(prefix + "*")})

    def join(self, a, *parts):
        return FileSystems.join(a, *parts)

    def makedirs(self, path):
        # object stores need no directories; locally, workers race to create the same one
        if not is_remote(path):
            os.makedirs(path[len("file://"):] if path.startswith("file://") else path, exist_ok=True)

    def __reduce__(self):
        return (BeamFS, ())



def remove_tree(fs: BeamFS, path: str) -> None:
    """Delete `path` and everything under it (a no-op when it is absent)."""
    if not is_remote(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        shutil.rmtree(local, ignore_errors=True)
        return
    found = FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list
    paths = [m.path for m in found]
    for i in range(0, len(paths), 1000):
        FileSystems.delete(paths[i:i + 1000])
