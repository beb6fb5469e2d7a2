"""The signature benchmark times every side the same way: the same documents, one call
per round each, the order flipping every round (issue 12: datasketch once got a
fifth of the documents and one run against our best of several)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_signatures_times_every_side_alike():
    r = subprocess.run([sys.executable, "benchmarks/bench_signatures.py", "--selftest"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "selftest: ok" in r.stdout
