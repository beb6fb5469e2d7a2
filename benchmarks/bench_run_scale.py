"""`curate run` with the demo's stages on a web-length corpus (make_web_corpus.py):
time, CPU and peak memory per stage, read back from the run's own run.json (curate run
samples the whole process tree of each stage, Beam's workers included), and the peak
of the whole command measured from outside (memwatch).

    python benchmarks/bench_run_scale.py --n 1000000 [--domains 4]

The web corpus has no domain field: its shards are dealt round-robin to --domains
domains (``sources:`` in the run config). Every other setting is configs/demo.yaml's;
no API key is passed, so the labels come from the heuristic labeler and the Claude
proposer is skipped, as in `curate demo` without a key.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_dedup import curate_cmd, ensure_corpus, measure  # noqa: E402


def run_config(corpus: str, domains: int, output: str) -> dict:
    with open(os.path.join(REPO, "configs", "demo.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("demo", None)
    shards = sorted(glob.glob(os.path.join(corpus, "*.jsonl.gz")))
    if len(shards) < domains:
        raise SystemExit(f"{corpus}: {len(shards)} shards, fewer than --domains {domains}")
    cfg["sources"] = [{"input": shards[k::domains], "domain": f"d{k}"} for k in range(domains)]
    cfg["output"] = output
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="corpus size (documents)")
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "run_scale"))
    ap.add_argument("--curate-cmd", help="how to call curate (default: this Python's -m pipelines.cli)")
    ap.add_argument("--resume", action="store_true",
                    help="keep an earlier run directory (curate run reuses its finished stages)")
    a = ap.parse_args(argv)
    corpus = ensure_corpus(a.data_dir, a.n)
    os.makedirs(a.out, exist_ok=True)
    run_dir = os.path.join(a.out, f"run_{a.n}")
    if os.path.exists(run_dir) and not a.resume:
        import shutil
        shutil.rmtree(run_dir)
    cfg_path = os.path.join(a.out, f"run_{a.n}.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(run_config(corpus, a.domains, run_dir), f, sort_keys=False)
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    r = measure([*curate_cmd(a), "run", cfg_path, "--progress", "lines"],
                os.path.join(a.out, "logs", f"run_{a.n}"), env=env)
    print(f"command: {r['cmd']}")
    if r["rc"] != 0:
        print(f"curate run failed (exit {r['rc']}):\n{r['stderr_tail']}", file=sys.stderr)
        return 1
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    rows = []
    print(f"\n{a.n:,} documents, {a.domains} domains; whole command: {r['wall_s']:.1f} s wall, "
          f"{r['cpu_s']:.1f} CPU s, peak PSS {r['peak_pss_mib']:,.0f} MiB\n")
    print("| stage | status | wall s | CPU s | peak PSS (MiB) | documents out |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for st in run["stages"]:
        name = st["name"]
        mem = st.get("peak_memory_mib") or {}
        counts = st.get("counts") or {}
        out = counts.get("documents_out", counts.get("kept", ""))
        row = {"stage": name, "status": st.get("status"), "seconds": st.get("seconds"),
               "cpu_s": st.get("cpu_s"), "peak_pss_mib": mem.get("pss"), "documents_out": out}
        rows.append(row)
        fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"| {name} | {row['status']} | {fmt(row['seconds'], '.1f')} | {fmt(row['cpu_s'], '.1f')} "
              f"| {fmt(row['peak_pss_mib'], ',.0f')} | {fmt(out, ',')} |")
    with open(os.path.join(a.out, f"run_{a.n}.json"), "w") as f:
        json.dump({"documents": a.n, "domains": a.domains, "command": r["cmd"], "wall_s": r["wall_s"],
                   "cpu_s": r["cpu_s"], "peak_pss_mib": r["peak_pss_mib"], "stages": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
