"""What the actr_trio subjects share: the sink and sender workloads, ``trio.run`` with a
readable failure, sizes.

``tell`` returns once the receiver's mailbox committed the envelope, so one sender has one
tell in flight: the throughput rows run ``SENDERS`` concurrent sender tasks on one sender
node, and stop the clock once the receiver *handled* every tell (``msgs_per_s``);
``acked_per_s`` is the rate until every tell was accepted, i.e. committed to the receiver's
mailbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple, TypeVar

import trio

from actr_trio import ActrType, Context, StreamChunk, Workload, route
from benchmarks._runtime_node import STREAM_ID

T = TypeVar("T")

PAYLOAD: Final = b"x" * 64  # W1-W5 (as the in-process and SQLite baselines)
#: Concurrent sender tasks for the throughput rows (W1, W3, W6): ``tell`` awaits the commit.
SENDERS: Final = 256


def warmup(size: int) -> int:
    return max(1, min(size // 10, 2_000))


def run_trio(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run``; a failure inside nurseries is reported by its first leaf exception (the
    harness shows ``Type: message``, and an ExceptionGroup's message says nothing)."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise RuntimeError(f"{type(leaf).__name__}: {leaf}") from group


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative counts."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --------------------------------------------------------------------------------------------
# In-process workloads

SINK: Final = ActrType("actr-bench", "sink")
SENDER: Final = ActrType("actr-bench", "sender")


class Sink(Workload):
    """Counts tells, echoes calls, and sets ``done`` once ``expect`` tells were handled."""

    actr_type = SINK

    def __init__(self) -> None:
        self.handled = 0
        self.expect = -1
        self.done = trio.Event()
        self.chunk_seen = trio.Event()

    def arm(self, expect: int) -> None:
        self.handled = 0
        self.expect = expect
        self.done = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register(STREAM_ID, self.on_chunk)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        self.chunk_seen.set()

    @route("bench.Sink.Tell")
    async def tell(self, request: bytes, ctx: Context) -> bytes:
        self.handled += 1
        if self.handled == self.expect:
            self.done.set()
        return b""

    @route("bench.Sink.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Sender(Workload):
    actr_type = SENDER


class Burst(NamedTuple):
    """Seconds from the first tell until all were acknowledged (committed by the receiver's
    mailbox) and until all were handled."""

    acked: float
    handled: float
