"""Does a stage's peak memory grow with the corpus? `curate filter` and `curate score`
on web-length corpora of two sizes (make_web_corpus.py), each run's whole process tree
sampled from /proc (memwatch: PSS summed over the tree), and the ratio of the peaks.
A streaming stage gives a ratio near 1 however far apart the sizes are.

    python benchmarks/bench_stage_memory.py [--sizes 20000,80000] [--workers 2] [--stages filter,score]

Beside the tree's peak it prints the largest peak of each kind of process (the
curate controller, a Beam worker), to tell which one holds what grows.

The score stage's model is trained here from heuristic labels of the demo corpus
(`curate label --labeler heuristic`, `curate train-classifier`): its quality does not
matter, only that every document is scored.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_dedup import curate_cmd, ensure_corpus, measure  # noqa: E402
from curation.memwatch import _rss_pss, tree_pids  # noqa: E402

STAGES = ("filter", "score")


def _role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ")
    except OSError:
        return "other"
    return "worker" if b"worker_main" in cmd else "controller" if b"pipelines.cli" in cmd else "other"


class PerProcess:
    """Peak PSS of each process below this one (the curate controller, its workers),
    sampled beside measure()'s whole-tree meter: which process holds the growth."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peaks, self.roles = interval, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            for pid in tree_pids(me):
                if pid == me:
                    continue
                pss = _rss_pss(pid)[1]
                if pss > self.peaks.get(pid, 0):
                    self.peaks[pid] = pss
                    self.roles.setdefault(pid, _role(pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        """Largest peak per role, in MiB (a worker's peak: the largest of the workers)."""
        out: dict[str, float] = {}
        for pid, peak in self.peaks.items():
            role = self.roles.get(pid, "other")
            out[role] = max(out.get(role, 0.0), round(peak / 2**20, 1))
        return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,80000", help="two or more corpus sizes, comma-separated")
    ap.add_argument("--stages", default=",".join(STAGES), help="which of filter,score to run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "stage_memory"))
    ap.add_argument("--curate-cmd", help="how to call curate (default: this Python's -m pipelines.cli)")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    stages = [s for s in a.stages.split(",") if s]
    if not set(stages) <= set(STAGES):
        ap.error(f"--stages: expected some of {','.join(STAGES)}")
    curate = curate_cmd(a)
    beam = [f"--direct_num_workers={a.workers}"]
    os.makedirs(a.out, exist_ok=True)

    model = os.path.join(a.out, "model")
    if "score" in stages and not os.path.exists(os.path.join(model, "metrics.json")):
        labels = os.path.join(a.out, "labels")
        for cmd, what in (
                ([*curate, "label", "--demo", "--output", labels, "--labeler", "heuristic",
                  "--sample", "800"], "label"),
                ([*curate, "train-classifier", "--labels", os.path.join(labels, "labels.jsonl"),
                  "--output", model], "train")):
            r = measure(cmd, os.path.join(a.out, "logs", what))
            if r["rc"] != 0:
                print(f"{what} failed: {r['stderr_tail']}", file=sys.stderr)
                return 1

    rows = []
    for n in sizes:
        corpus = ensure_corpus(a.data_dir, n)
        inputs = os.path.join(corpus, "*.jsonl.gz")
        for stage in stages:
            out = os.path.join(a.out, f"{stage}_{n}")
            extra = ["--preset", "fineweb"] if stage == "filter" else ["--model", model, "--min-score", "0.5"]
            with PerProcess() as per:
                r = measure([*curate, stage, "--input", inputs, "--output", out, "--overwrite", *extra, *beam],
                            os.path.join(a.out, "logs", f"{stage}_{n}"))
            if r["rc"] != 0:
                print(f"{stage} at {n} failed: {r['stderr_tail']}", file=sys.stderr)
                return 1
            docs = json.load(open(os.path.join(out, "manifest.json")))["counts"]["input"]
            rows.append({"stage": stage, "documents": docs, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                         "peak_pss_mib": r["peak_pss_mib"], "peak_rss_sum_mib": r["peak_rss_sum_mib"],
                         "peak_pss_by_role_mib": per.summary(), "cmd": r["cmd"]})
            roles = "  ".join(f"{k} {v:,.0f}" for k, v in per.summary().items())
            print(f"{stage:6s} {docs:>9,} documents  wall {r['wall_s']:8.1f} s  CPU {r['cpu_s']:8.1f} s  "
                  f"peak PSS {r['peak_pss_mib']:8.1f} MiB  (largest per process, MiB: {roles})", flush=True)
    print()
    for stage in stages:
        own = [x for x in rows if x["stage"] == stage]
        lo, hi = own[0], own[-1]
        print(f"{stage}: {hi['documents'] / lo['documents']:.1f}x the documents -> "
              f"{hi['peak_pss_mib'] / lo['peak_pss_mib']:.2f}x the peak PSS")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"workers": a.workers, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
