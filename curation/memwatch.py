"""Peak memory and CPU time of a process tree, sampled from /proc (Linux; stdlib only,
so it also runs in the benchmarks' datatrove virtual environment, through
benchmarks/memwatch.py). `curate run` records each stage's peak with it.

Two sums over the root process and all its descendants, sampled every `interval`:
* RSS: what `ps` shows; double-counts pages that forked children share with their
  parent (datatrove's multiprocess manager, Beam's forked workers);
* PSS: each shared page divided among the processes sharing it, so the sum is the
  memory the tree really holds. The headline figure in the benchmarks.
CPU: user + system seconds spent while watched by every process seen in the tree (the
last value sampled for each, less what a process had already spent at the first sample,
so a long-lived root's earlier work is not counted; a process's final < `interval` is
missed). On a shared machine CPU seconds move far less with other people's load than
wall seconds do.

    with TreeMemory(pid) as mem:      # pid: default this process
        ...
    mem.peak_rss, mem.peak_pss        # bytes
    mem.cpu_s                         # seconds
"""
from __future__ import annotations

import os
import threading


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: ppid follows the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree_pids(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = _children_map() if kids is None else kids
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:   # no smaps_rollup (old kernel): RSS from statm, PSS unknown -> RSS
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            pss = rss
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[bytes, float] | None:
    """(start time, user + system seconds) of pid; the start time tells reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    # after the command: state ppid ... utime(14th field) stime(15th) ... starttime(22nd)
    return fields[19], (int(fields[11]) + int(fields[12])) / _TICK


def _memory(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        r, s = _rss_pss(p)
        rss += r
        pss += s
    return rss, pss


def tree_memory(root: int) -> tuple[int, int, int]:
    """(sum RSS, sum PSS, number of processes) of root and its descendants, in bytes."""
    pids = tree_pids(root)
    return (*_memory(pids), len(pids))


def available() -> bool:
    """Whether this system has the /proc this meter reads (Linux)."""
    return os.path.exists(f"/proc/{os.getpid()}/stat")


class TreeMemory:
    """`also`: the roots of other trees sampled with this one (a Dask cluster beside its
    client), summed at each sample; none of them may lie in another's tree."""

    def __init__(self, pid: int | None = None, interval: float = 0.1, also: tuple[int, ...] = ()):
        self.pid = pid or os.getpid()
        self.roots = (self.pid, *also)
        self.peak_pss_roots = [0] * len(self.roots)   # each tree's own peak
        self.interval = interval
        self.peak_rss = self.peak_pss = self.max_procs = 0
        self.samples = 0
        self._cpu: dict[tuple[int, bytes], float] = {}
        self._cpu_before: dict[tuple[int, bytes], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = pss = n = 0
        kids = _children_map()   # one walk of /proc per sample, however many trees
        for k, root in enumerate(self.roots):
            pids = tree_pids(root, kids)
            r, s = _memory(pids)
            rss, pss, n = rss + r, pss + s, n + len(pids)
            self.peak_pss_roots[k] = max(self.peak_pss_roots[k], s)
            for p in pids:
                c = _cpu(p)
                if c is not None:
                    self._cpu[(p, c[0])] = c[1]
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.max_procs = max(self.max_procs, n)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> "TreeMemory":
        self.sample()
        self._cpu_before = dict(self._cpu)
        self._thread.start()
        return self

    def stop(self) -> "TreeMemory":
        self._stop.set()
        self._thread.join()
        return self

    @property
    def cpu_s(self) -> float:
        return sum(v - self._cpu_before.get(k, 0.0) for k, v in self._cpu.items())

    def __enter__(self) -> "TreeMemory":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def as_dict(self) -> dict:
        return {"peak_pss_mib": round(self.peak_pss / 2**20, 1),
                "peak_rss_sum_mib": round(self.peak_rss / 2**20, 1),
                "max_processes": self.max_procs, "samples": self.samples,
                "cpu_s_sampled": round(self.cpu_s, 2)}
