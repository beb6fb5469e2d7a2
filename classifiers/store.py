"""The persistent label store: a document is graded once per (content, rubric, model).

An SQLite file (one writer; WAL so readers never block it) keyed by the document's
exact-duplicate key (the same text gives the same key, whatever its id), the
rubric's content key (an edited rubric is a new rubric) and the model. A rerun, or
a run resumed after a crash, looks every document up first and sends only those
without a label, so nothing is paid for twice. Message batches in flight are
recorded too: a resumed run collects a batch it already paid for instead of
submitting its documents again.

Failures are stored with their reason; they are not labels, and a later run may try
them again (``pending`` treats them as missing unless told otherwise).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    content_key TEXT NOT NULL,
    rubric TEXT NOT NULL,
    model TEXT NOT NULL,
    score INTEGER,
    reasoning TEXT,
    error TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    mode TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (content_key, rubric, model)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    rubric TEXT NOT NULL,
    model TEXT NOT NULL,
    custom_ids TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


# what a retry adds to rather than replaces: every call was paid for
_SUMMED = {"attempts", "input_tokens", "output_tokens", "cache_read_tokens",
           "cache_write_tokens", "cost_usd"}


@dataclass(frozen=True)
class Label:
    content_key: str
    rubric: str
    model: str
    score: int | None = None
    reasoning: str | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    mode: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None


class LabelStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.on_put = None      # called after each put (progress reporting)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, content_keys: Iterable[str], rubric: str, model: str) -> dict[str, Label]:
        keys = list(dict.fromkeys(content_keys))
        out: dict[str, Label] = {}
        cols = ", ".join(Label.__dataclass_fields__)
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                rows = self._db.execute(
                    f"SELECT {cols} FROM labels WHERE rubric = ? AND model = ? AND content_key IN "
                    f"({', '.join('?' * len(chunk))})", (rubric, model, *chunk)).fetchall()
                for row in rows:
                    out[row[0]] = Label(*row)
        return out

    def pending(self, content_keys: Iterable[str], rubric: str, model: str, *,
                retry_failed: bool = True) -> list[str]:
        """The keys that still need a call: no label yet (or only a failure, if retried)."""
        keys = list(dict.fromkeys(content_keys))
        have = self.get(keys, rubric, model)
        return [k for k in keys if k not in have or (retry_failed and not have[k].ok)]

    def put(self, label: Label) -> None:
        """Store a result. A stored success is never replaced by a later failure; a
        retry's tokens, cost and attempts add to those already stored."""
        row = asdict(label)
        cols = list(row)
        with self._lock:
            self._db.execute(
                f"INSERT INTO labels ({', '.join(cols)}, updated_at) VALUES "
                f"({', '.join('?' * len(cols))}, ?) "
                "ON CONFLICT (content_key, rubric, model) DO UPDATE SET "
                + ", ".join(f"{c} = labels.{c} + excluded.{c}" if c in _SUMMED else f"{c} = excluded.{c}"
                            for c in cols[3:])
                + ", updated_at = excluded.updated_at "
                "WHERE labels.score IS NULL OR labels.error IS NOT NULL",
                (*row.values(), time.time()))
        if self.on_put is not None and label.score is not None:
            self.on_put()

    def spent_usd(self, rubric: str | None = None, model: str | None = None) -> float:
        sql, args = "SELECT COALESCE(SUM(cost_usd), 0) FROM labels WHERE 1=1", []
        if rubric is not None:
            sql, args = sql + " AND rubric = ?", args + [rubric]
        if model is not None:
            sql, args = sql + " AND model = ?", args + [model]
        with self._lock:
            return float(self._db.execute(sql, args).fetchone()[0])

    # --- batches in flight -------------------------------------------------------------

    def add_batch(self, batch_id: str, rubric: str, model: str, custom_ids: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, 'submitted', ?)",
                             (batch_id, rubric, model, json.dumps(custom_ids), time.time()))

    def open_batches(self, rubric: str, model: str) -> dict[str, list[str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id, custom_ids FROM batches WHERE rubric = ? AND model = ? AND "
                "status = 'submitted' ORDER BY created_at", (rubric, model)).fetchall()
        return {b: json.loads(ids) for b, ids in rows}

    def close_batch(self, batch_id: str, status: str = "collected") -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))
