"""W3, the durable mailbox alone: how close ``SqliteMailbox`` itself comes to batched SQLite.

The ``actr_trio-normal``/``-full`` rows send tells through nodes (the envelope path *and* the
mailbox); these rows take the node away and keep only what the mailbox does for each tell:
``SENDERS`` concurrent tasks each ``accept`` one envelope (64 B, a 128-bit request id, the
three priorities in turn), wait for its commit, then ``complete`` it, as a handler would. The
clock stops once the last completion is committed too (``flush``), so every message is one
insert and one pop made durable, as in the SQLite baseline. This uses the mailbox's internal
API (``actr_trio._mailbox_sqlite``): it measures a component, not the public surface.

``envelopes_per_commit`` is the group commit's batch size (accepts per transaction).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

import trio

import benchmarks.workloads  # noqa: F401  (the workload ids, also when imported on its own)
from actr_trio._lanes import Priority
from actr_trio._mailbox import Accept, Accepted
from actr_trio._mailbox_sqlite import SqliteMailbox
from benchmarks._harness import Measurement, runtime
from benchmarks._runtime_common import PAYLOAD, SENDERS, run_trio, split, warmup

CALLER = "bench:actr-bench/sender#1"
PRIORITIES = tuple(Priority)


async def _burst(mailbox: SqliteMailbox, size: int) -> float:
    """Seconds for ``size`` accepts and completions from ``SENDERS`` tasks, all committed."""
    # Random 128-bit request ids as a node makes them, drawn before the clock starts (a node
    # cuts them from a pooled urandom read: next to nothing per envelope).
    ids = iter([secrets.token_hex(16) for _ in range(size)])

    async def sender(n: int) -> None:
        for i in range(n):
            item = Accept(CALLER, next(ids), PRIORITIES[i % 3], PAYLOAD)
            (outcome,) = await mailbox.accept([item])
            if not isinstance(outcome, Accepted):
                raise RuntimeError(f"not accepted: {outcome}")
            mailbox.complete(outcome.envelope.id, None)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in split(size, SENDERS):
            if n:
                nursery.start_soon(sender, n)
    await mailbox.flush()
    return time.perf_counter() - t0


def _mailbox_alone(size: int, synchronous: str) -> Measurement:
    async def main(path: Path) -> Measurement:
        mailbox = SqliteMailbox(path, synchronous=synchronous)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(mailbox.run)
            await _burst(mailbox, warmup(size))
            before = mailbox.statistics()
            elapsed = await _burst(mailbox, size)
            after = mailbox.statistics()
            nursery.cancel_scope.cancel()
        if after.completed - before.completed != size:
            raise RuntimeError(f"{after.completed - before.completed} of {size} completed")
        # Each burst ends with one flush transaction of its own; the rest carried the accepts.
        commits = max(1, after.transactions - before.transactions - 1)
        return {"msgs_per_s": size / elapsed, "envelopes_per_commit": size / commits}

    with tempfile.TemporaryDirectory(prefix="actr-bench-mailbox-alone-") as tmp:
        return run_trio(main, Path(tmp) / "mailbox.sqlite3")


@runtime(
    "W3",
    "actr_trio-mailbox-normal",
    label=f"SqliteMailbox alone (WAL, NORMAL) in /tmp: {SENDERS} tasks accept 1, await commit, complete",
    compare_to=("sqlite-normal-batch256",),
)
def w3_mailbox_normal(size: int) -> Measurement:
    return _mailbox_alone(size, "NORMAL")


@runtime(
    "W3",
    "actr_trio-mailbox-full",
    label=f"SqliteMailbox alone (WAL, FULL) in /tmp: {SENDERS} tasks accept 1, await commit, complete",
    compare_to=("sqlite-full-batch256",),
)
def w3_mailbox_full(size: int) -> Measurement:
    return _mailbox_alone(size, "FULL")
