"""``actr-trio demo``: two nodes exchanging RPCs, priorities and a stream.

By default it starts a signaling server on 127.0.0.1, a worker node in a separate process and
a client node here, talking over WebRTC. ``--local`` runs both nodes in this process on
``LocalRealm`` instead (no network at all).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Final

import trio

from ._config import Config
from ._context import Context
from ._ids import ActrId, ActrType
from ._lanes import Lane, Priority
from ._node import ActrRef, ActrSystem
from ._router import Workload, route
from ._streams import StreamChunk

WORKER: Final = ActrType("actr-demo", "worker")
CLIENT: Final = ActrType("actr-demo", "client")
LOOPBACK: Final = ("127.0.0.1",)
JOB_SECONDS: Final = 0.002
NORMAL_JOBS: Final = 20
HIGH_JOBS: Final = 4
STREAM_CHUNKS: Final = 500


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
    print(f"200 echo RPCs: p50 {statistics.median(rtts):.0f} us, p99 {rtts[int(len(rtts) * 0.99) - 1]:.0f} us")

    for i in range(NORMAL_JOBS):
        await ref.tell(worker, "demo.Worker.Job", f"n{i}".encode())
    for i in range(HIGH_JOBS):
        await ref.tell(worker, "demo.Worker.Job", f"H{i}".encode(), priority=Priority.HIGH)

    async with ref.open_stream(worker, "demo-stream", lane=Lane.RELIABLE) as stream:
        for i in range(STREAM_CHUNKS):
            await stream.send(b"chunk %d" % i)

    # The report is queued behind the jobs (NORMAL, FIFO), so it sees them all handled.
    order, chunks, in_order = (
        (await ref.call(worker, "demo.Worker.Report", b"", priority=Priority.LOW)).decode().split("|")
    )
    print(f"handled order ({NORMAL_JOBS} NORMAL jobs sent first, then {HIGH_JOBS} HIGH):")
    print("  " + order)
    print(f"stream: {chunks}/{STREAM_CHUNKS} chunks delivered, in order: {in_order}")


async def _find(ref: ActrRef, actr_type: ActrType) -> ActrId:
    with trio.fail_after(20):
        while True:
            found = await ref.discover(actr_type)
            if found:
                return found[0]
            await trio.sleep(0.05)  # the worker process is still starting: poll discovery


async def run_local() -> None:
    from .testing import LocalRealm

    async with LocalRealm("demo") as realm, realm.start(DemoWorker()) as worker, realm.start(DemoClient()) as client:
        await scenario(client, worker.actr_id)


async def run_worker(url: str) -> None:
    config = Config(realm="demo", signaling_url=url, ice_addresses=LOOPBACK)
    async with ActrSystem(config).attach(DemoWorker()).start() as ref:
        print(f"worker {ref.actr_id} registered", flush=True)
        await ref.wait_for_shutdown()


async def run_networked() -> None:
    from .signaling import serve

    async with serve(host="127.0.0.1", port=0) as server:
        print(f"signaling server on {server.url}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "actr_trio.cli", "demo", "--role", "worker", "--signaling", server.url],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            config = Config(realm="demo", signaling_url=server.url, ice_addresses=LOOPBACK)
            async with ActrSystem(config).attach(DemoClient()).start() as client:
                worker = await _find(client, WORKER)
                await scenario(client, worker)
        finally:
            proc.terminate()
            try:
                await trio.to_thread.run_sync(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", help="run both nodes in-process on LocalRealm")
    parser.add_argument("--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--signaling", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.role == "worker":
        trio.run(run_worker, args.signaling)
    elif args.local:
        trio.run(run_local)
    else:
        trio.run(run_networked)
    return 0
