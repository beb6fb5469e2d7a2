"""Progress for long work: bars on a terminal, plain log lines otherwise.

Library code takes an optional ``progress`` (a `Progress`, or None for silence) and
reports through `task()`; whether that draws a bar or prints a line is decided once,
from whether the stream is a terminal."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

LOG_EVERY_S = 10.0      # plain mode: at most one line per task this often (plus start and end)


class Task:
    def __init__(self, owner: "Progress", description: str, total: int | None, unit: str):
        self.owner, self.description, self.total, self.unit = owner, description, total, unit
        self.done = 0
        self._t0 = self._last = time.monotonic()
        self._bar = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.owner._update(self)

    def set_total(self, total: int | None) -> None:
        self.total = total
        self.owner._update(self)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0


def _count(t: Task) -> str:
    if not t.done and not t.total:
        return ""
    return f"{t.done:,}" + (f"/{t.total:,}" if t.total else "") + (f" {t.unit}" if t.unit else "")


class Progress:
    """``Progress(stream)``: bars when ``stream`` is a terminal (``bars=None``), else lines."""

    def __init__(self, stream: TextIO | None = None, *, bars: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.bars = (hasattr(self.stream, "isatty") and self.stream.isatty()) if bars is None else bars
        self._rich = None
        if self.bars:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress as RichProgress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)
            self._rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[count]}"),
                                      TimeElapsedColumn(), console=Console(file=self.stream),
                                      transient=False)
            self._rich.start()

    def log(self, message: str) -> None:
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def task(self, description: str, total: int | None = None, unit: str = "") -> Iterator[Task]:
        t = Task(self, description, total, unit)
        if self._rich is not None:
            t._bar = self._rich.add_task(description, total=total, count=_count(t))
        else:
            self.log(f"{description}: started" + (f" ({total:,} {unit})" if total else ""))
        try:
            yield t
        finally:
            if self._rich is not None:
                # a task without counts (a Beam stage) ends as a full bar with its time
                total = t.total if t.total else max(t.done, 1)
                self._rich.update(t._bar, completed=total if not t.done else t.done, total=total,
                                  count=_count(t))
                self._rich.stop_task(t._bar)
            else:
                counted = f"{t.done:,}" + (f" of {t.total:,}" if t.total else "") + (f" {unit}" if unit else "")
                self.log(f"{description}: " + (f"{counted} " if t.done or t.total else "")
                         + f"done in {t.elapsed:.1f} s")

    def _update(self, t: Task) -> None:
        if self._rich is not None:
            self._rich.update(t._bar, completed=t.done, total=t.total, count=_count(t))
            return
        now = time.monotonic()
        if now - t._last >= LOG_EVERY_S:
            t._last = now
            self.log(f"{t.description}: {t.done:,}" + (f" of {t.total:,}" if t.total else "")
                     + f" {t.unit}".rstrip())

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
