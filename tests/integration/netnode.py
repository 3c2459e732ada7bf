"""A node process for the network integration tests: ``python netnode.py NAME --signaling URL``.

Echoes, records jobs in handling order, relays calls to the other worker, calls its caller back
(RPC both ways), collects a stream and counts the frames of a media track.
"""

from __future__ import annotations

import argparse
import logging

import trio

from actr_trio import ActrId, ActrType, Context, MediaFrame, StreamChunk, Workload, route
from actr_trio.testing import serve_worker


class NetNode(Workload):
    actr_type = ActrType("itest", "node")

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: list[str] = []
        self.chunks: list[int] = []
        self.frames = 0

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("itest-stream", self.on_chunk)
        ctx.tracks.register("itest-video", self.on_frame)

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

    @route("itest.Node.Report")
    async def report(self, request: bytes, ctx: Context) -> bytes:
        return f"{','.join(self.jobs)}|{','.join(map(str, self.chunks))}|{self.frames}".encode()

    @route("itest.Node.CallBack")
    async def call_back(self, request: bytes, ctx: Context) -> bytes:
        assert ctx.caller_id is not None
        answer = await ctx.call(ctx.caller_id, "itest.Node.Echo", b"back:" + request)
        return answer

    @route("itest.Node.Relay")
    async def relay(self, request: bytes, ctx: Context) -> bytes:
        target = ActrId.parse(request.decode())
        return await ctx.call(target, "itest.Node.Name", b"")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(
        lambda: serve_worker(
            NetNode(args.name), args.signaling, realm="itest", data_dir=args.data_dir
        )
    )


if __name__ == "__main__":
    main()
