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


def _quiet_stderr() -> None:
    # the worker's log also reaches the controller through Beam's logging service, where
    # `curate` decides what to show; its own stderr would print every traceback twice.
    # Kept in a file (removed at a clean exit) for a worker that dies before it can log.
    import atexit
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"curate-worker-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    atexit.register(lambda: os.path.exists(path) and os.remove(path))


def main() -> None:
    pid = os.environ.get(PARENT_ENV)
    if pid and pid.isdigit():
        watch(int(pid))
        _quiet_stderr()
    from apache_beam.runners.worker import sdk_worker_main
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
