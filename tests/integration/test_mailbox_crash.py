"""SIGKILL a process that is accepting envelopes; the reopened mailbox lost nothing (No loss).

``mailbox_writer.py`` reports each envelope after ``accept`` returned (that is, after COMMIT).
The test kills it mid-stream several times on the same file; then every reported envelope is in
the mailbox exactly once (queued, or finished and remembered by the dedupe table), nothing is
queued twice, and ``PRAGMA integrity_check`` is ok after every kill.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
import trio

from actr_trio._config import Synchronous
from actr_trio._lanes import Priority
from actr_trio._mailbox import Accept, Duplicate
from actr_trio._mailbox_sqlite import SqliteMailbox

WRITER = Path(__file__).with_name("mailbox_writer.py")
# ACK lines read before each kill: early, mid-stream, and after a few thousand commits.
KILL_AFTER = (50, 700, 2500)

pytestmark = pytest.mark.integration


async def run_and_kill(path: Path, caller: str, synchronous: str, kill_after: int) -> list[str]:
    """Start the writer, SIGKILL it after ``kill_after`` ACK lines, return all its lines."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(WRITER), str(path), caller, synchronous],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    buffer = b""
    acks = 0
    killed = False
    try:
        while chunk := await process.stdout.receive_some():
            buffer += chunk
            if not killed:
                acks = buffer.count(b"\nACK ") + buffer.startswith(b"ACK ")
                if acks >= kill_after:
                    process.send_signal(signal.SIGKILL)  # mid-stream: it is still writing
                    killed = True
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(10, shield=True):
            await process.wait()
    assert killed, f"writer ended on its own: {buffer[-200:]!r}"
    assert process.returncode == -signal.SIGKILL
    # A line cut by the kill is incomplete and reports nothing.
    lines = buffer.decode().split("\n")
    return [line for line in lines[:-1] if line != "READY"]


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        (result,) = db.execute("PRAGMA integrity_check").fetchone()
    return str(result)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_sigkill_never_loses_a_committed_accept(
    tmp_path: Path, synchronous: Synchronous
) -> None:
    path = tmp_path / "data" / "mailbox.sqlite3"
    acked: dict[tuple[str, str], int] = {}
    completed: set[tuple[str, str]] = set()
    with trio.fail_after(120):
        for round_, kill_after in enumerate(KILL_AFTER):
            for line in await run_and_kill(path, f"w{round_}", synchronous, kill_after):
                kind, caller, request_id, *rest = line.split(" ")
                if kind == "ACK":
                    acked[(caller, request_id)] = int(rest[0])
                else:
                    assert kind == "COMPLETE", line
                    completed.add((caller, request_id))
            assert integrity(path) == "ok"

        mailbox = SqliteMailbox(path, synchronous=synchronous, capacity=10_000_000)
        async with trio.open_nursery() as nursery:
            await nursery.start(mailbox.run)
            pending = await mailbox.pending()
            queued = Counter((e.caller, e.request_id) for e in pending)
            assert not [key for key, n in queued.items() if n > 1], "queued twice"
            ids = {(e.caller, e.request_id): e.id for e in pending}
            # Never completed, so certainly still queued, under the id reported at accept.
            for key, envelope_id in acked.items():
                if key not in completed:
                    assert ids.get(key) == envelope_id, key
            # Every acknowledged envelope is remembered: a retry is a duplicate, never re-queued.
            retries = [Accept(c, r, Priority.NORMAL, b"retry") for c, r in acked]
            outcomes = await mailbox.accept(retries)
            assert all(isinstance(o, Duplicate) for o in outcomes)
            assert mailbox.statistics().accepted == 0
            nursery.cancel_scope.cancel()
    print(
        f"{synchronous}: {len(KILL_AFTER)} kills, {len(acked)} acked, {len(completed)} completed,"
        f" {len(pending)} replayed, 0 lost, 0 duplicates"
    )
    assert integrity(path) == "ok"
    assert len(acked) >= sum(KILL_AFTER)
