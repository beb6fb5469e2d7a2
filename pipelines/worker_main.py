"""The local runner's SDK worker process, ended with the `curate` process that started it.

Beam's local runner starts each worker through `/bin/sh -c`, so after a `kill -9` of
`curate` the workers are orphans that live on, holding their memory. This entry point
watches the controller's pid (passed in the environment) and exits when it is gone,
then runs Beam's own worker main unchanged."""
from __future__ import annotations

import os
import sys
import threading
import time

PARENT_ENV = "CURATE_CONTROLLER_PID"


def _alive(pid: int) -> bool:
    # started through `sh -c "exec ..."`, the worker is the controller's own child: when
    # the controller dies the worker is re-parented (a killed controller can linger as a
    # zombie that still answers kill(pid, 0))
    if os.getppid() != pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return sys.platform != "linux"


def watch(pid: int, interval: float = 0.5) -> threading.Thread:
    def loop():
        while _alive(pid):
            time.sleep(interval)
        os._exit(1)

    t = threading.Thread(target=loop, name="curate-controller-watch", daemon=True)
    t.start()
    return t


class _HeldStderr:
    """The worker's stderr, held in memory (the last 64 KiB): its log also reaches the
    controller through Beam's logging service, where `curate` decides what to show, so
    printing it here too would show every traceback twice. Shown if the worker fails."""

    LIMIT = 1 << 16

    def __init__(self):
        r, w = os.pipe()
        self.saved = os.dup(2)
        os.dup2(w, 2)
        os.close(w)
        self.buf = bytearray()
        threading.Thread(target=self._drain, args=(r,), name="curate-stderr", daemon=True).start()

    def _drain(self, fd: int) -> None:
        while chunk := os.read(fd, 1 << 16):
            self.buf += chunk
            del self.buf[:-self.LIMIT]

    def show(self, extra: str) -> None:
        sys.stderr.flush()
        time.sleep(0.1)   # let the drain thread take what was just written
        os.write(self.saved, bytes(self.buf) + extra.encode())


def main() -> None:
    pid = os.environ.get(PARENT_ENV)
    held = None
    if pid and pid.isdigit():
        watch(int(pid))
        held = _HeldStderr()
    try:
        from apache_beam.runners.worker import sdk_worker_main
        sdk_worker_main.main(sys.argv)
    except BaseException:
        if held is not None:
            import traceback
            held.show(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
