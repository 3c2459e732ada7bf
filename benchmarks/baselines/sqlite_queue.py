"""Raw SQLite durable queue (W3): the floor any SQLite mailbox sits on.

A table in WAL mode; each transaction inserts ``batch`` messages (64-byte payload, one of three
priorities) and pops as many (select the highest priority, oldest row; delete it), then
commits. ``batch=1`` is one commit per message, ``batch=256`` is group commit. The database is a
file in a fresh temporary directory on the same disk as /tmp (not tmpfs on this machine).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks._harness import Measurement, subject

PAYLOAD = b"x" * 64
BATCH = 256

_SCHEMA = """
CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX mailbox_order ON mailbox (priority DESC, id);
"""


def _run(path: Path, n: int, batch: int, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # synchronous is a per-connection setting: set and check it on the measuring one.
        conn.execute(f"PRAGMA synchronous={synchronous}")
        got = conn.execute("PRAGMA synchronous").fetchone()[0]
        if got != {"NORMAL": 1, "FULL": 2}[synchronous]:
            raise RuntimeError(f"synchronous={got}, wanted {synchronous}")
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(batch, n - done)
            conn.execute("BEGIN IMMEDIATE")
            for i in range(k):
                conn.execute(
                    "INSERT INTO mailbox (priority, payload) VALUES (?, ?)",
                    ((done + i) % 3, PAYLOAD),
                )
            for _ in range(k):
                row = conn.execute(
                    "SELECT id, payload FROM mailbox ORDER BY priority DESC, id LIMIT 1"
                ).fetchone()
                conn.execute("DELETE FROM mailbox WHERE id = ?", (row[0],))
            conn.execute("COMMIT")
            done += k
        elapsed = time.perf_counter() - t0
        left = conn.execute("SELECT count(*) FROM mailbox").fetchone()[0]
        if left:
            raise RuntimeError(f"{left} rows left in the queue")
        return elapsed
    finally:
        conn.close()


def _measure(size: int, synchronous: str, batch: int) -> Measurement:
    tmp = Path(tempfile.mkdtemp(prefix="actr-bench-sqlite-"))
    try:
        path = tmp / "queue.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"journal_mode={mode}")
            conn.executescript(_SCHEMA)
        finally:
            conn.close()
        _run(path, max(batch, size // 10), batch, synchronous)  # warm-up: WAL file grown
        elapsed = _run(path, size, batch, synchronous)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"msgs_per_s": size / elapsed, "commits_per_s": -(-size // batch) / elapsed}


@subject(
    "W3",
    "sqlite-normal-commit",
    label="WAL, synchronous=NORMAL, one commit per message",
    quick_size=5_000,
    full_size=20_000,
)
def w3_normal_commit(size: int) -> Measurement:
    return _measure(size, "NORMAL", 1)


@subject("W3", "sqlite-normal-batch256", label="WAL, synchronous=NORMAL, 256 messages per commit")
def w3_normal_batch(size: int) -> Measurement:
    return _measure(size, "NORMAL", BATCH)


@subject(
    "W3",
    "sqlite-full-commit",
    label="WAL, synchronous=FULL, one commit per message",
    quick_size=1_000,
    full_size=4_000,
)
def w3_full_commit(size: int) -> Measurement:
    return _measure(size, "FULL", 1)


@subject("W3", "sqlite-full-batch256", label="WAL, synchronous=FULL, 256 messages per commit")
def w3_full_batch(size: int) -> Measurement:
    return _measure(size, "FULL", BATCH)
