"""`--runner dask` against the local runner on the same corpus: wall time, CPU seconds
and peak memory (PSS summed over every process involved), and whether the outputs agree.

    python benchmarks/bench_dask.py [--n 100000] [--commands dedup,filter] [--repeat 1]
                                    [--workers 2]

Corpus: benchmarks/data/web_<n/1000>k from make_web_corpus.py (16 JSONL.gz shards),
built when missing. Each command runs three ways, on the same files with the same
flags and Parquet output, timed from spawn to exit and sampled every 100 ms
(memwatch.py):

  local     curate CMD ... (Beam's local runner, --direct_num_workers W)
  dask      curate CMD ... --runner dask --dask_local_workers W: the run starts its
            own cluster (scheduler in the command's process, W worker processes under
            nannies) and closes it; one process tree, measured like the local runner's
  cluster   a `dask scheduler` and W `dask worker` processes (one thread each, under
            nannies; tests/dask_cluster.py) started here before the clock starts, then
            curate CMD ... --runner dask --dask_client_address ...: the trees of the
            scheduler, the workers (memory at rest included) and the client are sampled
            together (the peak of their sum); a fresh cluster for every run

With --repeat R the three alternate R times; the median wall and the largest peak are
kept. Ratios are dask / local from this same run. Outputs: every run's manifest lists
its files with checksums; the runs of one command must list the same files with the
same checksums (the same input paths, so the records are the same bytes).
Results also go to benchmarks/out/bench_dask/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from bench_dedup import ensure_corpus  # noqa: E402
from memwatch import TreeMemory  # noqa: E402
from tests.dask_cluster import DaskCluster  # noqa: E402

MiB = 1024 * 1024


def run_measured(cmd: list[str], log: str, cluster: DaskCluster | None = None) -> dict:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log + ".out", "wb") as out, open(log + ".err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
        # one meter: the client's tree, and with a cluster its processes' trees too
        mem = TreeMemory(proc.pid, also=tuple(p.pid for p in cluster.procs) if cluster else ()).start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        mem.stop()
    res = {"cmd": " ".join(shlex.quote(c) for c in cmd), "rc": rc, "wall_s": round(wall, 2),
           "cpu_s": round(mem.cpu_s, 1), "peak_pss_mib": round(mem.peak_pss / MiB),
           "client_peak_pss_mib": round(mem.peak_pss_roots[0] / MiB)}
    if rc != 0:
        with open(log + ".err", "rb") as f:
            res["stderr_tail"] = f.read().decode("utf-8", "replace")[-2000:]
    return res


def _files(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    return {"files": m["files"], "counts": m["counts"]}


def curate() -> list[str]:
    return [sys.executable, "-m", "pipelines.cli"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--commands", default="dedup,filter")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "bench_dask"))
    a = ap.parse_args(argv)
    corpus = os.path.join(ensure_corpus(a.data_dir, a.n), "*.jsonl.gz")
    shutil.rmtree(a.out, ignore_errors=True)
    results: dict = {"n": a.n, "workers": a.workers, "cores": os.cpu_count(), "commands": {}}
    for command in a.commands.split(","):
        runs: dict[str, list] = {"local": [], "dask": [], "cluster": []}
        outputs: dict[str, dict] = {}
        for r in range(a.repeat):
            for way in runs:
                out = os.path.join(a.out, command, f"{way}{r}")
                base = curate() + [command, "--input", corpus, "--output", out]
                log = os.path.join(a.out, "logs", f"{command}_{way}{r}")
                if way == "local":
                    res = run_measured(base + [f"--direct_num_workers={a.workers}"], log)
                elif way == "dask":
                    res = run_measured(base + ["--runner", "dask", "--dask_local_workers", str(a.workers)], log)
                else:
                    os.makedirs(log + "_cluster", exist_ok=True)
                    cluster = DaskCluster(Path(log + "_cluster"), workers=a.workers)
                    try:
                        res = run_measured(base + ["--runner", "dask", "--dask_client_address",
                                                   cluster.address], log, cluster)
                    finally:
                        cluster.stop()
                print(f"{command} {way} #{r}: rc {res['rc']}, {res['wall_s']} s, "
                      f"{res['cpu_s']} CPU s, peak PSS {res['peak_pss_mib']} MiB", flush=True)
                if res["rc"] != 0:
                    print(res.get("stderr_tail", ""), file=sys.stderr)
                    return 1
                runs[way].append(res)
                got = _files(out)
                outputs.setdefault(way, got)
                shutil.rmtree(out)
        same = all(outputs[w] == outputs["local"] for w in outputs)
        summary = {}
        for way, rs in runs.items():
            summary[way] = {"wall_s": statistics.median(x["wall_s"] for x in rs),
                            "cpu_s": statistics.median(x["cpu_s"] for x in rs),
                            "peak_pss_mib": max(x["peak_pss_mib"] for x in rs),
                            "client_peak_pss_mib": max(x["client_peak_pss_mib"] for x in rs),
                            "cmd": rs[0]["cmd"]}
        loc = summary["local"]
        print(f"\n{command}, {a.n:,} documents, {a.workers} workers; outputs "
              f"{'identical' if same else 'DIFFER'} ({len(outputs['local']['files'])} files)")
        print(f"  {'':8} {'wall s':>8} {'x local':>8} {'CPU s':>8} {'peak PSS MiB':>13} {'x local':>8}")
        for way, s in summary.items():
            print(f"  {way:8} {s['wall_s']:8.1f} {s['wall_s'] / loc['wall_s']:8.2f} {s['cpu_s']:8.1f} "
                  f"{s['peak_pss_mib']:13d} {s['peak_pss_mib'] / loc['peak_pss_mib']:8.2f}")
        print(f"  (cluster: scheduler + workers + client, sampled together; the client alone "
              f"peaked at {summary['cluster']['client_peak_pss_mib']} MiB)")
        results["commands"][command] = {"summary": summary, "runs": runs, "outputs_identical": same,
                                        "counts": outputs["local"]["counts"]}
        if not same:
            print("  outputs differ: see the manifests' files in results.json", file=sys.stderr)
            results["commands"][command]["outputs"] = outputs
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0 if all(c["outputs_identical"] for c in results["commands"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
