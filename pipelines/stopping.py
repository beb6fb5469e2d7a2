"""A graceful stop for work that holds paid-for calls in flight."""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_on_signals(name: str) -> Iterator[threading.Event]:
    """While active, the first SIGINT/SIGTERM sets the yielded event (the work finishes
    and stores the calls in flight); a second one kills, as usual."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        signal.signal(signum, signal.SIG_DFL)
        print(f"{name}: stopping: waiting for calls in flight (signal again to kill)",
              file=sys.stderr)

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
