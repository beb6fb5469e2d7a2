"""--runner dask against a real Dask cluster on 127.0.0.1: a scheduler and two workers,
each its own process, started and stopped here. Outputs must equal the local runner's
byte for byte and the manifests' counts must agree."""
from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dask.distributed")

from pipelines.cli import main  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """tcp://127.0.0.1:PORT of a scheduler with two single-threaded worker processes."""
    from dask.distributed import Client
    port = _free_port()
    logs = tmp_path_factory.mktemp("dask_logs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"],
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env)]
    try:
        _wait_port(port)
        address = f"tcp://127.0.0.1:{port}"
        for i in range(2):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--host", "127.0.0.1", "--name", f"w{i}", "--no-dashboard",
                 "--local-directory", str(logs / f"w{i}")],
                stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env))
        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _corpus(path: Path, n: int = 400) -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "neardup_dev.jsonl.gz"
    if shared.exists():
        with gzip.open(shared, "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
    else:   # a fresh clone without ../shared: near duplicates of our own
        base = [f"document {i} about topic {i % 7} with words " + " ".join(f"w{(i * j) % 97}" for j in range(60))
                for i in range(n // 2)]
        lines = [json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(base)]
        lines += [json.dumps({"id": f"e{i}", "text": t + " extra"}) + "\n" for i, t in enumerate(base)]
    lines.append('{"id": "bad", "text": 5}\n')   # a rejected record
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): gzip.decompress(p.read_bytes())
            for p in sorted(out.rglob("*.gz"))}


@pytest.mark.parametrize("command", ["dedup", "filter"])
def test_dask_cluster_matches_local_runner(cluster, tmp_path, command):
    src = _corpus(tmp_path / "in.jsonl")
    local, dask = tmp_path / "local", tmp_path / "dask"
    common = [command, "--input", str(src), "--output-format", "jsonl.gz"]
    assert main([*common, "--output", str(local)]) == 0
    assert main([*common, "--output", str(dask), "--runner", "dask", "--dask_client_address", cluster]) == 0
    a, b = _outputs(local), _outputs(dask)
    assert a and a == b
    ma = json.loads((local / "manifest.json").read_text())
    mb = json.loads((dask / "manifest.json").read_text())
    assert mb["status"] == "complete" and mb["runner"] == "DaskRunner"
    assert ma["counts"] == mb["counts"]
    assert ma["counters"] == mb["counters"]
    assert mb["counts"]["rejected"] == 1
    if command == "dedup":
        assert mb["counts"]["removed_near"] + mb["counts"]["removed_exact"] > 0
