"""``actr-trio demo``: two nodes exchanging RPCs, priorities and a stream.

By default it starts a signaling server on 127.0.0.1, a worker node in a separate process and
a client node here, talking over WebRTC. ``--local`` runs both nodes in this process on
``LocalRealm`` instead (no network at all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from typing import Final

import trio

from ._context import Context
from ._ids import ActrId, ActrType
from ._lanes import Lane, Priority
from ._node import ActrRef
from ._router import Workload, route
from ._streams import StreamChunk

WORKER: Final = ActrType("actr-demo", "worker")
CLIENT: Final = ActrType("actr-demo", "client")
JOB_SECONDS: Final = 0.02
NORMAL_JOBS: Final = 20
HIGH_JOBS: Final = 4
STREAM_CHUNKS: Final = 500

DESCRIPTION: Final = """\
Two nodes exchange RPCs, priorities and a stream, and print what happened.

By default it starts a signaling server on 127.0.0.1, a worker node in a second
process and a client node in this one; they talk over WebRTC on the loopback
interface only. --local runs both nodes in this process instead (no network).

examples:
  actr-trio demo
  actr-trio demo --local
  actr-trio --log-level debug demo"""


class DemoWorker(Workload):
    """Echoes, runs jobs (slowly, so a backlog forms) and counts stream chunks."""

    actr_type = WORKER

    def __init__(self) -> None:
        self.order: list[str] = []
        self.chunks: list[int] = []

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("demo-stream", self.on_chunk)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        if not chunk.end:
            self.chunks.append(chunk.sequence)

    @route("demo.Worker.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("demo.Worker.Job")
    async def job(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(JOB_SECONDS)
        self.order.append(request.decode())
        return b""

    @route("demo.Worker.Report")
    async def report(self, request: bytes, ctx: Context) -> bytes:
        in_order = self.chunks == sorted(self.chunks)
        return f"{' '.join(self.order)}|{len(self.chunks)}|{in_order}".encode()


class DemoClient(Workload):
    """Drives the scenario from the outside (through its ActrRef)."""

    actr_type = CLIENT


async def scenario(ref: ActrRef, worker: ActrId) -> None:
    """The demo itself, the same over LocalRealm and WebRTC."""
    print(f"client {ref.actr_id} -> worker {worker}")
    rtts = []
    for i in range(200):
        started = time.perf_counter()
        assert await ref.call(worker, "demo.Worker.Echo", b"ping %d" % i) == b"ping %d" % i
        rtts.append((time.perf_counter() - started) * 1e6)
    rtts.sort()
    print(
        f"200 echo RPCs: p50 {statistics.median(rtts):.0f} us, p99 {rtts[int(len(rtts) * 0.99) - 1]:.0f} us"
    )

    # A flood of NORMAL work: each job takes longer than a tell, so a backlog builds up at the
    # worker (a tell returns once the worker's mailbox committed it). Then HIGH control
    # messages, which overtake that backlog.
    for i in range(NORMAL_JOBS):
        await ref.tell(worker, "demo.Worker.Job", f"n{i:02}".encode())
    for i in range(HIGH_JOBS):
        await ref.tell(worker, "demo.Worker.Job", f"H{i}".encode(), priority=Priority.HIGH)

    async with ref.open_stream(worker, "demo-stream", lane=Lane.RELIABLE) as stream:
        for i in range(STREAM_CHUNKS):
            await stream.send(b"chunk %d" % i)

    # The report is queued behind the jobs (NORMAL, FIFO), so it sees them all handled.
    order, chunks, in_order = (
        (await ref.call(worker, "demo.Worker.Report", b"", priority=Priority.LOW))
        .decode()
        .split("|")
    )
    print(
        f"handled order ({NORMAL_JOBS} NORMAL jobs queued first, then {HIGH_JOBS} HIGH; nNN = NORMAL):"
    )
    print("  " + order)
    print(f"stream: {chunks}/{STREAM_CHUNKS} chunks delivered, in order: {in_order}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .testing import add_pair_arguments

    add_pair_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .testing import pair_main

    trio.run(
        partial(
            pair_main,
            args,
            worker=DemoWorker,
            client=DemoClient,
            scenario=scenario,
            worker_command=[
                sys.executable,
                "-m",
                "actr_trio.cli",
                "--log-level",
                args.log_level,
                "demo",
                "--role",
                "worker",
            ],
        )
    )
    return 0
