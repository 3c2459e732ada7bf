"""The node process of the cross-process runtime rows (W5-W8): ``python -m benchmarks._runtime_node``.

Usage: ``python -m benchmarks._runtime_node --signaling URL [--realm bench] [--listen
127.0.0.1:0]``. Runs :class:`BenchWorker` on a networked node (WebRTC, loopback ICE only, no
STUN; with ``--listen``, peers link to it over the direct WebSocket lane) until SIGTERM.
The benchmark process starts it, finds it by discovery, measures, and kills it.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Final

import trio

from actr_trio import ActrType, Context, StreamChunk, Workload, route

WORKER: Final = ActrType("actr-bench", "worker")
CLIENT: Final = ActrType("actr-bench", "client")
REALM: Final = "bench"
STREAM_ID: Final = "bench-stream"
#: One stream id per burst: a stream whose end marker was lost (LatencyFirst) keeps its last
#: sequence at the receiver, so reopening the same id would have its chunks dropped as late.
STREAM_IDS: Final = tuple(f"{STREAM_ID}-{i}" for i in range(4))

ECHO: Final = "bench.Worker.Echo"
TELL: Final = "bench.Worker.Tell"
COUNT: Final = "bench.Worker.Count"
STREAM_REPORT: Final = "bench.Worker.StreamReport"


class BenchWorker(Workload):
    """Echoes calls, counts tells, and counts stream chunks (with their arrival time)."""

    actr_type = WORKER

    def __init__(self) -> None:
        self.tells = 0
        self.chunks = 0
        self.chunk_bytes = 0
        self.ended = False
        # time.monotonic() of the last chunk: CLOCK_MONOTONIC, the same clock in every process
        # of this machine, so the sender can stop its clock at the last delivered chunk.
        self.last_chunk_at = 0.0

    async def on_start(self, ctx: Context) -> None:
        for stream_id in STREAM_IDS:
            ctx.streams.register(stream_id, self.on_chunk)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        if chunk.end:
            self.ended = True
            return
        self.chunks += 1
        self.chunk_bytes += len(chunk.payload)
        self.last_chunk_at = time.monotonic()

    @route(ECHO)
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route(TELL)
    async def tell(self, request: bytes, ctx: Context) -> bytes:
        self.tells += 1
        return b""

    @route(COUNT)
    async def count(self, request: bytes, ctx: Context) -> bytes:
        """Tells handled so far; ``b"reset"`` also sets the counters back to zero."""
        n = self.tells
        if request == b"reset":
            self.tells = 0
        return b"%d" % n

    @route(STREAM_REPORT)
    async def stream_report(self, request: bytes, ctx: Context) -> bytes:
        """``chunks bytes ended last_chunk_at``; ``b"reset"`` also starts a new count."""
        text = f"{self.chunks} {self.chunk_bytes} {int(self.ended)} {self.last_chunk_at!r}"
        if request == b"reset":
            self.chunks = self.chunk_bytes = 0
            self.ended = False
            self.last_chunk_at = 0.0
        return text.encode()


class BenchClient(Workload):
    """The measuring node (no routes: it drives everything through its ActrRef)."""

    actr_type = CLIENT


def main() -> None:
    from actr_trio.testing import serve_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--realm", default=REALM)
    parser.add_argument(
        "--listen", default=None, help="HOST:PORT to accept direct WebSocket links on"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    options = {} if args.listen is None else {"listen": args.listen}
    trio.run(lambda: serve_worker(BenchWorker(), args.signaling, realm=args.realm, **options))


if __name__ == "__main__":
    main()
