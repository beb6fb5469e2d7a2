"""The score stage's parts that need no Beam: which model a run scores with and how
every worker loads that same model (copied from a remote directory, checked by its
sha256), and the first pass's per-file record of scores (--keep-top)."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from classifiers.fasttext_train import METRICS_JSON, QualityModel
from curation.fs import default_fs, is_remote, writing


@dataclass(frozen=True)
class ModelRef:
    """Which model a run uses: its directory (local or remote), the model file in it,
    and that file's sha256 (None before the driver has read it)."""

    path: str
    file: str
    sha256: str | None = None


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelChanged(RuntimeError):
    pass


def load_quality_model(ref: ModelRef, fs=None):
    """(QualityModel, sha256 of its file). A remote directory (gs://...) is copied to a
    local temporary directory first (fastText reads local files only): the model file
    and metrics.json (which holds the max_chars the model was trained with). With
    `ref.sha256` set, a model file with other bytes is refused: every worker of a run
    must score with the same model."""
    fs = default_fs(fs)
    if not is_remote(ref.path):
        return _load_checked(_local(ref.path), ref)
    with tempfile.TemporaryDirectory(prefix="curation-model-") as tmp:
        for name in (ref.file, METRICS_JSON):
            src = fs.join(ref.path, name)
            if fs.exists(src):
                with fs.open_read(src) as f, open(os.path.join(tmp, name), "wb") as out:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        out.write(chunk)
        return _load_checked(tmp, ref)   # fastText holds the model in memory: tmp can go


def _load_checked(local_dir: str, ref: ModelRef):
    sha = _sha256(os.path.join(local_dir, ref.file))
    if ref.sha256 is not None and sha != ref.sha256:
        raise ModelChanged(f"the model {ref.path}/{ref.file} changed since the run started "
                           f"(sha256 {sha}, expected {ref.sha256}); rerun the stage")
    return QualityModel.load(local_dir), sha


def write_first_pass(fs, path: str, scores: np.ndarray, keys: np.ndarray, domains: list[str]) -> None:
    """One file's first-pass record, complete or absent: scores (float64, NaN where
    scoring failed), tie keys (uint64) and domain codes (int32) in document order,
    and the domain names the codes index (sorted)."""
    names = sorted(set(domains))
    code = {d: i for i, d in enumerate(names)}
    codes = np.fromiter((code[d] for d in domains), np.int32, count=len(domains))
    buf = io.BytesIO()
    np.savez(buf, scores=np.asarray(scores, np.float64), keys=np.asarray(keys, np.uint64),
             domain=codes, domains=np.array(names, dtype=str))
    with writing(fs, path) as f:
        f.write(buf.getvalue())


def read_first_pass(fs, path: str) -> dict[str, np.ndarray]:
    """`write_first_pass`'s arrays: scores, keys, domain (codes), domains (names)."""
    with fs.open_read(path) as f:
        with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
            return {k: z[k] for k in ("scores", "keys", "domain", "domains")}
