"""Run manifests: what ran, with which parameters and versions, how long it took,
and counts whose balance (input = kept + removed + rejected) is checked."""
from __future__ import annotations

import json
import platform
from importlib import metadata


class BalanceError(RuntimeError):
    pass


def package_versions(names=("curation", "apache-beam", "numpy", "numba", "pyarrow", "xxhash",
                            "datasketch", "cupy-cuda12x")) -> dict:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def check_balance(counts: dict, removed_keys=("removed_exact", "removed_near")) -> dict:
    """The conservation law, computed from counted values, never assumed."""
    removed = sum(int(counts.get(k, 0)) for k in removed_keys)
    accounted = int(counts.get("kept", 0)) + removed + int(counts.get("rejected", 0))
    return {
        "input": int(counts.get("input", 0)),
        "kept_plus_removed_plus_rejected": accounted,
        "ok": int(counts.get("input", 0)) == accounted,
    }


def chain_links(stages: list[tuple[str, dict]]) -> list[dict]:
    """Conservation across stages: for each consecutive pair of (name, counts) in run
    order, what the first kept is what the second read."""
    return [{"from": a, "to": b, "kept": int(ca["kept"]), "read": int(cb["input"]),
             "ok": int(ca["kept"]) == int(cb["input"])}
            for (a, ca), (b, cb) in zip(stages, stages[1:])]


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
