"""Head to head: `curate dedup` against datatrove's MinHash dedup, speed and quality.

    python benchmarks/bench_dedup.py                      # 10k and 100k docs, then quality
    python benchmarks/bench_dedup.py --sizes 10000 --repeat 3
    python benchmarks/bench_dedup.py --only datatrove     # test the peer half alone
    python benchmarks/bench_dedup.py --curate-cmd 'curate' --curate-args '--backend numba'

Speed, for each size N (corpora from make_web_corpus.py, built when missing, under
benchmarks/data/web_<N/1000>k, 16 JSONL.gz shards):
  ours       CURATE_CMD dedup --input 'DIR/*.jsonl.gz' --output OUT --threshold 0.8
             --num-perm 128 --ngram 5 --output-format jsonl.gz --overwrite [--curate-args]
             (cwd: the repo root; default CURATE_CMD is `<this python> -m pipelines.cli`;
             env CURATE_CMD too; --ours-format parquet for our default format)
  datatrove  benchmarks/.venv-datatrove/bin/python benchmarks/bench_datatrove_dedup.py
             --input DIR --workers W --no-clusters
Output formats: both write gzip-compressed JSONL by default here. They do not write the
same things: ours writes the kept documents, one row per member of a duplicate cluster
(ids and reasons, no text) and a manifest; datatrove writes the kept documents, the
removed documents with their text, and its signatures and buckets as files between
stages.
Each child is timed from spawn to exit (wall: interpreter start, imports, reading,
writing outputs all count, for both), and its process tree's memory is sampled
every 100 ms from here (memwatch.py: PSS summed over the tree is the headline;
summed RSS and wait4's ru_maxrss of the largest process are printed too), and so are
its CPU seconds (user + system over the tree): docs per CPU-second is the figure that
other people's load on a shared machine moves least. With
--repeat R the two alternate R times and the median wall (and max memory) is kept.
docs/s per core divides by the cores each used: ours, --ours-cores (default: the
machine's cores, the pipeline's default --direct_num_workers); datatrove, --dt-workers
(default 1). Ratios are ours / datatrove measured in this same run: the machine is
shared and noisy, only same-run ratios mean anything.

Where datatrove's time goes: its timed run also times every call of spaCy's word
tokeniser (bench_datatrove_dedup.py, one worker), printed as a share of its in-process
total.

Quality: both on ../shared/corpora/neardup_dev.jsonl.gz, scored with neardup_score
(ours from OUT/clusters/*.parquet), plus the datasketch MinHashLSH baseline.

Results: printed, and written to OUT_ROOT/results.json (default benchmarks/out/bench_dedup).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from memwatch import TreeMemory  # noqa: E402
from neardup_score import (DEFAULT_CORPUS, DEFAULT_TRUTH, load_truth, read_clusters,  # noqa: E402
                           score_clusters)

DT_PYTHON = os.path.join(HERE, ".venv-datatrove", "bin", "python")
VENV_HELP = """datatrove's virtual environment is missing; create it with
  python -m venv benchmarks/.venv-datatrove
  benchmarks/.venv-datatrove/bin/pip install 'datatrove==0.10.1' 'xxhash<4' regex tokenizers spacy orjson"""


def corpus_dir(data_dir: str, n: int) -> str:
    return os.path.join(data_dir, f"web_{n // 1000}k" if n % 1000 == 0 else f"web_{n}")


def ensure_corpus(data_dir: str, n: int) -> str:
    d = corpus_dir(data_dir, n)
    if not os.path.exists(os.path.join(d, "corpus_manifest.json")):
        import make_web_corpus
        make_web_corpus.main(["--n", str(n), "--out", d])
    return d


def measure(cmd: list[str], log_path: str, *, cwd: str = REPO, env=None) -> dict:
    """Run cmd; wall seconds, exit code, peak memory of its process tree."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path + ".out", "wb") as out, open(log_path + ".err", "wb") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        except OSError as e:   # e.g. `curate` not on PATH yet
            return {"cmd": " ".join(shlex.quote(c) for c in cmd), "rc": None, "wall_s": 0.0,
                    "cpu_s": None,
                    "peak_pss_mib": None, "peak_rss_sum_mib": None, "max_processes": 0,
                    "samples": 0, "ru_maxrss_largest_process_mib": None, "stdout": "",
                    "stderr_tail": f"cannot start {cmd[0]!r}: {e}"}
        mem = TreeMemory(proc.pid).start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        mem.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path + ".out", "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(log_path + ".err", "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    return {"cmd": " ".join(shlex.quote(c) for c in cmd), "rc": proc.returncode,
            "wall_s": round(wall, 3), **mem.as_dict(),
            "ru_maxrss_largest_process_mib": round(ru.ru_maxrss / 1024, 1),
            # both are lower bounds: wait4's rusage misses children never reaped, the
            # samples miss each process's last 100 ms
            "cpu_s": round(max(ru.ru_utime + ru.ru_stime, mem.cpu_s), 2),
            "cpu_s_rusage": round(ru.ru_utime + ru.ru_stime, 2),
            "stdout": stdout, "stderr_tail": stderr[-3000:]}


# ----------------------------------------------------------------------------- ours

def curate_cmd(a) -> list[str]:
    base = a.curate_cmd or os.environ.get("CURATE_CMD") or f"{shlex.quote(sys.executable)} -m pipelines.cli"
    return shlex.split(base)


def run_ours(a, input_glob: str, out: str, log: str) -> dict:
    cmd = curate_cmd(a) + ["dedup", "--input", input_glob, "--output", out,
                           "--threshold", "0.8", "--num-perm", "128", "--ngram", "5",
                           "--output-format", a.ours_format, "--overwrite"] + shlex.split(a.curate_args or "")
    if a.ours_cores and not any(x.startswith("--direct_num_workers") for x in cmd):
        cmd.append(f"--direct_num_workers={a.ours_cores}")
    r = measure(cmd, log)
    man_path = os.path.join(out, "manifest.json")
    if r["rc"] == 0 and os.path.exists(man_path):
        with open(man_path, encoding="utf-8") as f:
            man = json.load(f)
        c = man.get("counts", {})
        r.update(status=man.get("status"), docs=c.get("input"), kept=c.get("kept"),
                 removed_exact=c.get("removed_exact"), removed_near=c.get("removed_near"),
                 rejected=c.get("rejected"), timings=man.get("timings_s"))
        bal = all(isinstance(c.get(k), int) for k in ("input", "kept", "removed_exact",
                                                       "removed_near", "rejected"))
        r["balanced"] = bal and c["input"] == (c["kept"] + c["removed_exact"]
                                               + c["removed_near"] + c["rejected"])
    else:
        r["status"] = "failed"
    return r


# ------------------------------------------------------------------------ datatrove

def run_datatrove(a, input_dir: str, work: str, log: str, *, neardup: bool = False) -> dict:
    cmd = [a.dt_python, os.path.join(HERE, "bench_datatrove_dedup.py"), "--work", work,
           "--workers", str(a.dt_workers)]
    cmd += ["--neardup"] if neardup else ["--input", input_dir, "--no-clusters"]
    r = measure(cmd, log)
    if r["rc"] == 0:
        try:
            inner = json.loads(r["stdout"])
        except ValueError:
            inner = None
        if inner:
            r["status"] = "complete"
            r["inner"] = inner
            r.update(docs=inner["docs"], kept=inner["kept"], removed=inner["removed"])
            return r
    r["status"] = "failed"
    return r


# -------------------------------------------------------------------------- report

def _mib(r):
    return r.get("peak_pss_mib")


def summarize(ours_runs, dt_runs, cores_ours, cores_dt) -> dict:
    def agg(runs, cores):
        ok = [r for r in runs if r.get("status") == "complete" and r.get("docs")]
        if not ok:
            return None
        wall = statistics.median(r["wall_s"] for r in ok)
        cpu = statistics.median(r["cpu_s"] for r in ok)
        docs = ok[0]["docs"]
        return {"docs": docs, "wall_s": round(wall, 3), "walls": [r["wall_s"] for r in ok],
                "docs_per_s": round(docs / wall, 1), "cores": cores,
                "docs_per_s_per_core": round(docs / wall / cores, 1),
                "cpu_s": cpu, "docs_per_cpu_s": round(docs / cpu, 1),
                "peak_pss_mib": max(_mib(r) for r in ok),
                "peak_rss_sum_mib": max(r["peak_rss_sum_mib"] for r in ok),
                "ru_maxrss_largest_process_mib": max(r["ru_maxrss_largest_process_mib"] for r in ok),
                "kept": ok[0].get("kept")}
    o, d = agg(ours_runs, cores_ours), agg(dt_runs, cores_dt)
    s = {"ours": o, "datatrove": d}
    if o and d:
        s["ratio_ours_over_datatrove"] = {
            "docs_per_s": round(o["docs_per_s"] / d["docs_per_s"], 2),
            "docs_per_s_per_core": round(o["docs_per_s_per_core"] / d["docs_per_s_per_core"], 2),
            "docs_per_cpu_s": round(o["docs_per_cpu_s"] / d["docs_per_cpu_s"], 2),
            "peak_memory": round(o["peak_pss_mib"] / d["peak_pss_mib"], 2),
        }
    return s


def print_speed(n, s, ran):
    print(f"\n== speed, {n} docs ==")
    print(f"{'':10} {'wall s':>8} {'docs/s':>9} {'cores':>5} {'docs/s/core':>11} {'CPU s':>8} "
          f"{'docs/CPU s':>10} {'peak PSS MiB':>12} {'RSS sum':>8} {'kept':>7}")
    for name in ("ours", "datatrove"):
        x = s[name]
        if name not in ran:
            print(f"{name:10} not run")
            continue
        if x is None:
            print(f"{name:10} failed (see the logs)")
            continue
        print(f"{name:10} {x['wall_s']:8.1f} {x['docs_per_s']:9.1f} {x['cores']:5d} "
              f"{x['docs_per_s_per_core']:11.1f} {x['cpu_s']:8.1f} {x['docs_per_cpu_s']:10.1f} "
              f"{x['peak_pss_mib']:12.1f} "
              f"{x['peak_rss_sum_mib']:8.1f} {str(x['kept']):>7}")
    if "ratio_ours_over_datatrove" in s:
        r = s["ratio_ours_over_datatrove"]
        print(f"ours / datatrove: docs/s x{r['docs_per_s']}, per core x{r['docs_per_s_per_core']}, "
              f"per CPU-second x{r['docs_per_cpu_s']}, peak memory x{r['peak_memory']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="corpus sizes (comma-separated)")
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "bench_dedup"))
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs per size (median wall)")
    ap.add_argument("--only", choices=["ours", "datatrove"], help="run one side only")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--curate-cmd", help="command that runs our CLI (default: python -m pipelines.cli; "
                                         "or env CURATE_CMD), e.g. 'curate'")
    ap.add_argument("--curate-args", default="", help="extra flags for curate dedup, e.g. '--backend numba'")
    ap.add_argument("--ours-cores", type=int, default=0,
                    help="pass --direct_num_workers=K to ours (default: leave the pipeline's default, "
                         "every core)")
    ap.add_argument("--dt-python", default=DT_PYTHON)
    ap.add_argument("--dt-workers", type=int, default=1)
    ap.add_argument("--ours-format", choices=["jsonl.gz", "parquet"], default="jsonl.gz",
                    help="our output format (default jsonl.gz, the format datatrove writes)")
    a = ap.parse_args(argv)

    do_ours, do_dt = a.only in (None, "ours"), a.only in (None, "datatrove")
    if do_dt and not os.path.exists(a.dt_python):
        print(VENV_HELP, file=sys.stderr)
        return 2
    cores_ours = a.ours_cores or os.cpu_count() or 1
    cores_dt = max(1, min(a.dt_workers, os.cpu_count() or 1))
    os.makedirs(a.out, exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:] if argv is None else argv,
               "ours_format": a.ours_format,
               "machine": {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()},
               "speed": {}, "quality": {}}

    if not a.no_speed:
        for n in [int(x) for x in a.sizes.split(",") if x.strip()]:
            d = ensure_corpus(a.data_dir, n)
            ours_runs, dt_runs = [], []
            for i in range(a.repeat):
                # alternate which goes first, so drift in machine load hits both
                order = [("ours", do_ours), ("datatrove", do_dt)]
                if i % 2:
                    order.reverse()
                for name, enabled in order:
                    if not enabled:
                        continue
                    tag = f"{os.path.basename(d)}_{name}_{i}"
                    print(f"[{time.strftime('%H:%M:%S')}] {tag} ...", file=sys.stderr, flush=True)
                    if name == "ours":
                        r = run_ours(a, os.path.join(d, "*.jsonl.gz"),
                                     os.path.join(a.out, f"ours_{os.path.basename(d)}"),
                                     os.path.join(a.out, "logs", tag))
                        ours_runs.append(r)
                    else:
                        r = run_datatrove(a, d, os.path.join(a.out, f"dt_{os.path.basename(d)}"),
                                          os.path.join(a.out, "logs", tag))
                        dt_runs.append(r)
                    print(f"    {r['status']}: {r['wall_s']:.1f} s, peak PSS {r['peak_pss_mib']} MiB"
                          + ("" if r["status"] == "complete" else f"\n{r['stderr_tail'][-1500:]}"),
                          file=sys.stderr, flush=True)
            s = summarize(ours_runs, dt_runs, cores_ours, cores_dt)
            s["runs"] = {"ours": [{k: v for k, v in r.items() if k != "stdout"} for r in ours_runs],
                         "datatrove": [{k: v for k, v in r.items() if k != "stdout"} for r in dt_runs]}
            results["speed"][str(n)] = s
            print_speed(n, s, ({"ours"} if do_ours else set()) | ({"datatrove"} if do_dt else set()))
            if s["datatrove"]:
                ok = [r for r in dt_runs if r.get("status") == "complete"]
                shares = [r["inner"]["spacy_share_of_total"] for r in ok
                          if r["inner"].get("spacy_share_of_total") is not None]
                if shares:
                    s["datatrove"]["spacy_share_of_total"] = statistics.median(shares)
                    print(f"datatrove: spaCy word tokenisation took {statistics.median(shares):.0%} of its "
                          f"in-process time (timed in the same run)")

    if not a.no_quality:
        print(f"\n== quality on {os.path.basename(DEFAULT_CORPUS)} ==")
        truth = load_truth(DEFAULT_TRUTH, DEFAULT_CORPUS)
        q = results["quality"]
        if do_ours:
            out = os.path.join(a.out, "ours_neardup_dev")
            r = run_ours(a, DEFAULT_CORPUS, out, os.path.join(a.out, "logs", "neardup_ours"))
            if r["status"] == "complete":
                q["ours"] = score_clusters(read_clusters(os.path.join(out, "clusters")), truth)
            else:
                q["ours"] = {"status": "failed", "stderr_tail": r["stderr_tail"]}
        if do_dt:
            r = run_datatrove(a, None, os.path.join(a.out, "dt_neardup_dev"),
                              os.path.join(a.out, "logs", "neardup_datatrove"), neardup=True)
            q["datatrove"] = (r["inner"]["neardup_score"] if r["status"] == "complete"
                              else {"status": "failed", "stderr_tail": r["stderr_tail"]})
        import bench_datasketch_lsh as ds
        cluster_of, info = ds.lsh_clusters(ds.read_docs(DEFAULT_CORPUS), threshold=0.8,
                                           num_perm=128, ngram=5)
        q["datasketch_lsh"] = score_clusters(cluster_of, truth) | {"bands": info["bands"],
                                                                  "rows": info["rows"]}
        for name, s in q.items():
            if "f1" in s:
                print(f"{name:15} F1 {s['f1']:.4f}  precision {s['precision']:.4f}  "
                      f"recall {s['recall']:.4f}  (tp {s['tp']}, fp {s['fp']}, fn {s['fn']}, "
                      f"largest cluster {s['largest_cluster']})")
            else:
                print(f"{name:15} failed:\n{s.get('stderr_tail', '')[-1500:]}")

    results["machine"]["loadavg_end"] = os.getloadavg()
    path = os.path.join(a.out, "results.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
