"""`curate demo` from scratch against its 10-minute target on this machine, with the
time per stage; then the same command again (every stage reused) for the cost of a
resume. No network, no API key (the run's fallbacks are printed).

    python benchmarks/bench_demo.py [--output benchmarks/out/demo] [Beam options...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 600.0


def run(out: Path, extra: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out),
                    "--progress", "lines", *extra], check=True, env=env,
                   stderr=subprocess.DEVNULL if "--quiet" in sys.argv else None)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", default="benchmarks/out/demo")
    ap.add_argument("--quiet", action="store_true", help="hide the run's own log")
    args, extra = ap.parse_known_args()
    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    first = run(out, extra)
    doc = json.loads((out / "run.json").read_text())
    again = run(out, extra)
    print(f"\ncurate demo on {os.cpu_count()} cores, from scratch: {first:.1f} s wall "
          f"({first / TARGET_S:.2f}x of the {TARGET_S:.0f} s target)")
    for s in doc["stages"]:
        if s["status"] == "complete":
            print(f"  {s['name']:8s} {s['seconds']:7.1f} s")
    print(f"rerun (every stage reused, report regenerated): {again:.1f} s")
    for note in doc["fallbacks"]:
        print(f"fallback: {note}")


if __name__ == "__main__":
    main()
