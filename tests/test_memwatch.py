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
