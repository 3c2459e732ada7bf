"""Issue 3 end to end: a signaling server process, two node processes and this process as a
third node, on 127.0.0.1: RPC both ways, priorities, a stream, a media track. Run on both
network lanes: WebRTC (no node listens), and direct WebSocket links (every node listens on
127.0.0.1; the media track still goes over WebRTC)."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import trio
from netprocs import Processes, netnode_argv

from actr_trio import ActrId, ActrSystem, ActrType, Context, Lane, Priority, Workload, route
from actr_trio.testing import network_config

NODE = ActrType("itest", "node")

av = pytest.importorskip("av")
aiortc_mediastreams = pytest.importorskip("aiortc.mediastreams")


class Here(Workload):
    actr_type = ActrType("itest", "here")

    @route("itest.Node.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class SyntheticVideo(aiortc_mediastreams.VideoStreamTrack):  # type: ignore[misc,name-defined]
    """A small synthetic video track (aiortc paces it at 30 fps)."""

    def __init__(self) -> None:
        super().__init__()
        self._id = "itest-video"

    @property
    def id(self) -> str:
        return self._id

    async def recv(self):  # type: ignore[no-untyped-def]
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=64, height=48)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = pts
        frame.time_base = time_base or fractions.Fraction(1, 90000)
        return frame


async def discover_two(ref: object) -> list[ActrId]:
    with trio.fail_after(60):
        while True:
            found = await ref.discover(NODE)  # type: ignore[attr-defined]
            if len(found) >= 2:
                return sorted(found)
            await trio.sleep(0.05)  # the node processes are still starting


LANES = {"webrtc": "over WebRTC", "websocket": "over WebSocket"}


@pytest.mark.parametrize("lane", list(LANES))
async def test_three_nodes(
    processes: Processes, signaling_url: str, lane: str, tmp_path: Path
) -> None:
    listen = {"listen": "127.0.0.1:0"} if lane == "websocket" else {}
    logs = {name: tmp_path / f"{name}.links" for name in ("alpha", "beta")}
    for name, path in logs.items():
        extra = ["--links", str(path)] + (["--listen", "127.0.0.1:0"] if listen else [])
        await processes.start(*netnode_argv(name, signaling_url, *extra))
    config = network_config(signaling_url, realm="itest", **listen)
    with trio.fail_after(120):
        async with ActrSystem(config).attach(Here()).start() as here:
            a, b = await discover_two(here)
            names = {
                await here.call(a, "itest.Node.Name", b""),
                await here.call(b, "itest.Node.Name", b""),
            }
            assert names == {b"alpha", b"beta"}

            # RPC both ways: a calls back into this node while handling our call...
            assert await here.call(a, "itest.Node.CallBack", b"x") == b"back:x"
            # ...and node to node, between the two processes.
            assert await here.call(a, "itest.Node.Relay", str(b).encode()) in (b"alpha", b"beta")
            assert await here.call(a, "itest.Node.Relay", str(b).encode()) != await here.call(
                a, "itest.Node.Name", b""
            )

            # Priorities: a NORMAL backlog behind a held handler, then HIGH messages. A tell
            # returns once the receiver's mailbox committed it, so when the hold is released
            # every job is queued and the order is fixed: HIGH first, then NORMAL in send order.
            await here.tell(a, "itest.Node.Hold", b"")
            for i in range(15):
                await here.tell(a, "itest.Node.Job", b"n%d" % i)
            for i in range(3):
                await here.tell(a, "itest.Node.Job", b"H%d" % i, priority=Priority.HIGH)
            async with here.open_stream(a, "itest-release", lane=Lane.SIGNAL) as release:
                await release.send(b"go")

            # A stream of chunks, in order, on the reliable lane.
            async with here.open_stream(a, "itest-stream", lane=Lane.RELIABLE) as stream:
                for i in range(300):
                    await stream.send(b"%d" % i)

            # A media track delivering frames.
            await here.publish_track(a, SyntheticVideo())
            frames = 0
            with trio.fail_after(30):
                while frames < 10:
                    await trio.sleep(0.1)  # frames arrive at 30 fps in the other process
                    jobs, chunks, frames_text = (
                        (await here.call(a, "itest.Node.Report", b"", priority=Priority.LOW))
                        .decode()
                        .split("|")
                    )
                    frames = int(frames_text)
            # The lane each peer was reached over, as statistics() shows it.
            links = here.statistics().links
            assert links[a] == lane
            assert links[b] == lane

    assert jobs.split(",") == [f"H{i}" for i in range(3)] + [f"n{i}" for i in range(15)]
    assert [int(c) for c in chunks.split(",")] == list(range(300))
    assert frames >= 10
    # Node to node (the relay) on the same lane, as the INFO line says when a link opens.
    lines = logs["alpha"].read_text() + logs["beta"].read_text()
    assert LANES[lane] in lines
    other = ({*LANES.values()} - {LANES[lane]}).pop()
    if lane == "webrtc":
        assert other not in lines
