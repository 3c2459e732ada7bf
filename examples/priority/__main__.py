"""priority: a backlog of NORMAL work, and HIGH control messages overtaking it.

The worker is busy: its first job (``Pause``) holds the scheduler until the client says
"resume". Meanwhile the client tells it 20 NORMAL jobs, one after another (so their order reads
``n00 n01 ...``), then 4 HIGH ones. A tell returns as soon as the worker's mailbox committed it,
so when the client sends "resume" (a chunk on a stream: the fast path runs beside the state
path) every job is queued. The scheduler always takes from the highest non-empty priority, so
the HIGH jobs run first, ahead of the NORMAL ones queued before them; within one priority the
order stays FIFO. The worker records the order it handled them in.

Run: ``python -m examples.priority`` (WebRTC, two processes) or
``python -m examples.priority --local``.
"""

from __future__ import annotations

from typing import Final

import trio

from actr_trio import (
    ActrId,
    ActrRef,
    ActrType,
    Context,
    Lane,
    Priority,
    StreamChunk,
    Workload,
    route,
)

from .. import _common

NORMAL_JOBS: Final = 20
HIGH_JOBS: Final = 4
JOB_SECONDS: Final = 0.01


class Worker(Workload):
    """Runs jobs slowly and remembers in which order."""

    actr_type = ActrType("examples", "priority-worker")

    def __init__(self) -> None:
        self.order: list[str] = []
        self.resumed = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("resume", self.on_resume)

    async def on_resume(self, chunk: StreamChunk, ctx: Context) -> None:
        self.resumed.set()

    @route("examples.Priority.Pause")
    async def pause(self, request: bytes, ctx: Context) -> bytes:
        await self.resumed.wait()
        return b""

    @route("examples.Priority.Job")
    async def job(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(JOB_SECONDS)
        self.order.append(request.decode())
        return b""

    @route("examples.Priority.Order")
    async def handled_order(self, request: bytes, ctx: Context) -> bytes:
        return " ".join(self.order).encode()


class Client(Workload):
    """The client node: it only sends."""

    actr_type = ActrType("examples", "priority-client")


async def scenario(ref: ActrRef, worker: ActrId, local: bool) -> None:
    await ref.tell(worker, "examples.Priority.Pause", b"")
    for i in range(NORMAL_JOBS):
        await ref.tell(worker, "examples.Priority.Job", f"n{i:02}".encode())
    for i in range(HIGH_JOBS):
        await ref.tell(worker, "examples.Priority.Job", f"H{i}".encode(), priority=Priority.HIGH)
    async with ref.open_stream(worker, "resume", lane=Lane.SIGNAL) as resume:
        await resume.send(b"resume")
    # NORMAL too, so FIFO puts it behind every job: when it answers, they have all run.
    order = (await ref.call(worker, "examples.Priority.Order", b"")).decode().split()
    print(f"told {NORMAL_JOBS} NORMAL jobs (nNN), then {HIGH_JOBS} HIGH jobs (HN); handled:")
    print("  " + " ".join(order))
    last_high = max(order.index(f"H{i}") for i in range(HIGH_JOBS))
    overtaken = sum(1 for name in order[last_high:] if name.startswith("n"))
    print(f"the HIGH jobs overtook {overtaken} queued NORMAL jobs")


if __name__ == "__main__":
    _common.main("priority", __doc__, worker=Worker, client=Client, scenario=scenario)
