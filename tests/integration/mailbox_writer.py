"""Subprocess for test_mailbox_crash.py: accept envelopes into a SqliteMailbox until killed.

Usage: ``python mailbox_writer.py PATH CALLER SYNCHRONOUS``. Several tasks accept batches of
1-5 envelopes concurrently (so group commit batches them). After each ``accept`` returns, one
line per envelope goes to stdout: ``ACK <caller> <request_id> <id>``. Every third envelope is
then completed, announced *before* ``complete`` is called with ``COMPLETE <caller> <request_id>``,
so an envelope without that line was certainly never completed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from actr_trio._lanes import Priority
from actr_trio._mailbox import Accept, Accepted
from actr_trio._mailbox_sqlite import SqliteMailbox

WORKERS = 8


async def main(path: Path, caller: str, synchronous: str) -> None:
    assert synchronous in ("NORMAL", "FULL")
    mailbox = SqliteMailbox(path, synchronous=synchronous, capacity=10_000_000)  # type: ignore[arg-type]

    async def produce(worker: int) -> None:
        for n in range(worker, 10_000_000, WORKERS):
            batch = [
                Accept(caller, f"{n}.{j}", Priority(1 + (n + j) % 3), b"x" * (n % 64))
                for j in range(1 + n % 5)
            ]
            outcomes = await mailbox.accept(batch)
            lines = []
            finish = []
            for request, outcome in zip(batch, outcomes, strict=True):
                assert isinstance(outcome, Accepted), outcome
                lines.append(f"ACK {caller} {request.request_id} {outcome.envelope.id}\n")
                if outcome.envelope.id % 3 == 0:
                    lines.append(f"COMPLETE {caller} {request.request_id}\n")
                    finish.append(outcome.envelope.id)
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
            for envelope_id in finish:
                mailbox.complete(envelope_id, b"done")

    async with trio.open_nursery() as nursery:
        await nursery.start(mailbox.run)
        print("READY", flush=True)
        for worker in range(WORKERS):
            nursery.start_soon(produce, worker)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3])
