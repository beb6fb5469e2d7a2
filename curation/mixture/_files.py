"""Small file helpers of the mixture search (local run directories)."""
from __future__ import annotations

import os
import uuid


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one:
    a hidden temporary name in the same directory, fsync, then rename into place."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
