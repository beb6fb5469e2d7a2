"""A real Dask cluster on 127.0.0.1 for the tests and benchmarks/bench_dask.py: a
`dask scheduler` and `dask worker` processes, each its own process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class DaskCluster:
    """The scheduler picks a free port itself and writes its address to a scheduler
    file (a port chosen here could be taken before the scheduler binds it)."""

    def __init__(self, logs: Path, workers: int = 2, nanny: bool = True, timeout: float = 60):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        dask = str(Path(sys.executable).parent / "dask")
        info = self.scheduler_file = logs / "scheduler.json"
        self.procs = [subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(info)],
            stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env)]
        self.workers: list[subprocess.Popen] = []
        try:
            self.address = self._address(info, timeout)
            for i in range(workers):
                p = subprocess.Popen(
                    [dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1",
                     "--host", "127.0.0.1", "--name", f"w{i}", "--no-dashboard",
                     "--local-directory", str(logs / f"w{i}"), "--nanny" if nanny else "--no-nanny"],
                    stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env)
                self.procs.append(p)
                self.workers.append(p)
            from dask.distributed import Client
            with Client(self.address, timeout=timeout) as c:
                c.wait_for_workers(workers, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _address(self, info: Path, timeout: float) -> str:
        end = time.time() + timeout
        while time.time() < end:
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({self.procs[0].returncode}); "
                                   f"see {info.parent / 'scheduler.log'}")
            try:
                return json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise TimeoutError(f"no scheduler file {info} after {timeout} s")

    def stop(self) -> None:
        # workers first, while their scheduler can still take their goodbye
        for group in (self.workers, self.procs[:1]):
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
