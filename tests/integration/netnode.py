"""A node process for the network integration tests: ``python netnode.py NAME --signaling URL``.

Echoes, records jobs in handling order, relays calls to the other worker, calls its caller back
(RPC both ways), collects a stream and counts the frames of a media track, records who called
it (``ctx.caller_id``). ``--allow``/``--deny`` give it an ACL; ``--warnings`` writes its
WARNING lines to a file the test reads; ``--listen HOST:PORT`` takes direct WebSocket links
(``Config.listen``) and ``--links FILE`` writes the transport's INFO lines ("linked to ... over
...") to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging

import trio

from actr_trio import (
    Acl,
    AclRule,
    ActrId,
    ActrType,
    Context,
    MediaFrame,
    StreamChunk,
    Workload,
    route,
)
from actr_trio.testing import serve_worker


class NetNode(Workload):
    actr_type = ActrType("itest", "node")

    def __init__(self, name: str, log_path: str | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.logged: set[str] = set()
        if log_path is not None:
            with contextlib.suppress(FileNotFoundError), open(log_path) as log:
                self.logged = {line.split()[0] for line in log if line.strip()}
        self.jobs: list[str] = []
        self.chunks: list[int] = []
        self.frames = 0
        self.callers: list[str] = []
        self.released = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("itest-stream", self.on_chunk)
        ctx.streams.register("itest-release", self.on_release)
        ctx.tracks.register("itest-video", self.on_frame)

    async def on_release(self, chunk: StreamChunk, ctx: Context) -> None:
        # The fast path is concurrent with the state path: it can open a gate a handler waits on.
        self.released.set()

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        if not chunk.end:
            self.chunks.append(int(chunk.payload))

    async def on_frame(self, frame: MediaFrame, ctx: Context) -> None:
        self.frames += 1

    @route("itest.Node.Name")
    async def whoami(self, request: bytes, ctx: Context) -> bytes:
        return self.name.encode()

    @route("itest.Node.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("itest.Node.Job")
    async def job(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(0.01)  # slower than a tell: a backlog builds up
        self.jobs.append(request.decode())
        return b""

    @route("itest.Node.Hold")
    async def hold(self, request: bytes, ctx: Context) -> bytes:
        """Keep the scheduler busy until a chunk on "itest-release" arrives: what is sent
        meanwhile is all queued when the scheduler next picks, whatever the machine's load."""
        await self.released.wait()
        return b""

    @route("itest.Node.Report")
    async def report(self, request: bytes, ctx: Context) -> bytes:
        return f"{','.join(self.jobs)}|{','.join(map(str, self.chunks))}|{self.frames}".encode()

    @route("itest.Node.CallBack")
    async def call_back(self, request: bytes, ctx: Context) -> bytes:
        assert ctx.caller_id is not None
        answer = await ctx.call(ctx.caller_id, "itest.Node.Echo", b"back:" + request)
        return answer

    @route("itest.Node.Record")
    async def record(self, request: bytes, ctx: Context) -> bytes:
        """Slow, with an idempotent side effect: one line per request id in a log file."""
        await trio.sleep(0.2)
        if self.log_path is not None and ctx.request_id not in self.logged:
            self.logged.add(ctx.request_id)
            async with await trio.open_file(self.log_path, "a") as log:
                await log.write(f"{ctx.request_id} {request.decode()}\n")
        return b"recorded " + request

    @route("itest.Node.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        """Fast, with the same idempotent side effect as Record."""
        if self.log_path is not None and ctx.request_id not in self.logged:
            self.logged.add(ctx.request_id)
            async with await trio.open_file(self.log_path, "a") as log:
                await log.write(f"{ctx.request_id} {request.decode()}\n")
        return request

    @route("itest.Node.Caller")
    async def caller(self, request: bytes, ctx: Context) -> bytes:
        """Record who called (as the runtime says: the authenticated peer, also on replay)."""
        self.callers.append(f"{ctx.caller_id}={request.decode()}")
        return b""

    @route("itest.Node.Callers")
    async def callers_seen(self, request: bytes, ctx: Context) -> bytes:
        return ",".join(self.callers).encode()

    @route("itest.Node.Relay")
    async def relay(self, request: bytes, ctx: Context) -> bytes:
        target = ActrId.parse(request.decode())
        return await ctx.call(target, "itest.Node.Name", b"")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--log")
    parser.add_argument("--grace", type=float, default=10.0, help="shutdown_grace, seconds")
    parser.add_argument("--allow", action="append", default=[], help="ACL allow rule (caller)")
    parser.add_argument("--deny", action="append", default=[], help="ACL deny rule (caller)")
    parser.add_argument("--warnings", help="also write WARNING lines to this file")
    parser.add_argument("--listen", help="Config.listen: take direct WebSocket links here")
    parser.add_argument("--links", help="write the transport's INFO lines to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.warnings:
        handler = logging.FileHandler(args.warnings)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        logging.getLogger("actr_trio").addHandler(handler)
    if args.links:
        links = logging.FileHandler(args.links)
        links.setFormatter(logging.Formatter("%(message)s"))
        transport = logging.getLogger("actr_trio.transport")
        transport.setLevel(logging.INFO)
        transport.addHandler(links)
    acl = None
    if args.allow or args.deny:
        acl = Acl(allow=[AclRule(p) for p in args.allow], deny=[AclRule(p) for p in args.deny])
    trio.run(
        lambda: serve_worker(
            NetNode(args.name, args.log),
            args.signaling,
            realm="itest",
            data_dir=args.data_dir,
            shutdown_grace=args.grace,
            acl=acl,
            listen=args.listen,
        )
    )


if __name__ == "__main__":
    main()
