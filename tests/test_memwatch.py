"""The process-tree meter that `curate run` records each stage with."""
import os
import subprocess
import sys
import time

import pytest

from curation.memwatch import TreeMemory, available

pytestmark = pytest.mark.skipif(not available(), reason="needs Linux /proc")


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_counts_only_what_was_spent_while_watched():
    # curate run watches each stage from the same long-lived process: what that process
    # spent on earlier stages must not be charged to the next one
    _burn(0.6)
    before = time.process_time()
    with TreeMemory(interval=0.05) as meter:
        _burn(0.2)
    spent = time.process_time() - before
    assert meter.cpu_s <= spent + 0.05
    assert meter.cpu_s >= 0.1


def test_children_started_while_watched_count_in_full_and_add_their_memory():
    code = "import time\nb = bytearray(64 << 20)\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    with TreeMemory(interval=0.05) as meter:
        base = meter.peak_pss
        subprocess.run([sys.executable, "-c", code], check=True)
    assert meter.cpu_s >= 0.3
    assert meter.peak_pss - base >= 48 << 20
    assert meter.max_procs >= 2 and meter.samples >= 2


def test_trees_watched_together_are_summed():
    # a Dask cluster and its client are separate trees: their peak is the peak of the sum
    code = "import sys, time\nb = bytearray(48 << 20)\nb[::4096] = b'x' * len(b[::4096])\nsys.stdout.write('ok\\n'); sys.stdout.flush()\ntime.sleep(30)\n"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline() == b"ok\n"
        one = TreeMemory(procs[0].pid).start().stop()
        both = TreeMemory(procs[0].pid, also=(procs[1].pid,)).start().stop()
        assert both.max_procs == 2 and one.max_procs == 1
        assert both.peak_pss - one.peak_pss >= 40 << 20
    finally:
        for p in procs:
            p.kill()
            p.wait()
