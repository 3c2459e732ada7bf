"""The fast path: stream chunks and media frames (fast-path order, isolation)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actr_trio import ActrType, Context, Lane, StreamChunk, Workload, route
from actr_trio._envelope import Chunk
from actr_trio._streams import StreamRegistry
from actr_trio.errors import StreamIncomplete
from actr_trio.testing import LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")


class Receiver(Workload):
    actr_type = ActrType("acme", "receiver")

    def __init__(self) -> None:
        self.chunks: dict[str, list[bytes]] = {}
        self.ended: dict[str, trio.Event] = {}
        self.block_slow = trio.Event()
        self.handled = 0

    async def on_start(self, ctx: Context) -> None:
        for name in ("a", "b"):
            self.ended[name] = trio.Event()
            ctx.streams.register(name, self.collect)
        self.ended["slow"] = trio.Event()
        ctx.streams.register("slow", self.slow)
        ctx.streams.register("boom", self.boom)

    async def collect(self, chunk: StreamChunk, ctx: Context) -> None:
        if chunk.end:
            self.ended[chunk.stream_id].set()
        else:
            self.chunks.setdefault(chunk.stream_id, []).append(chunk.payload)

    async def slow(self, chunk: StreamChunk, ctx: Context) -> None:
        await self.block_slow.wait()

    async def boom(self, chunk: StreamChunk, ctx: Context) -> None:
        raise RuntimeError("callback failed")

    @route("demo.Recv.Ping")
    async def ping(self, request: bytes, ctx: Context) -> bytes:
        self.handled += 1
        return b"pong"


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


async def test_chunks_arrive_in_order_per_stream_and_streams_interleave() -> None:
    receiver = Receiver()
    async with LocalRealm() as realm, realm.start(receiver) as r, realm.start(Sender()) as s:
        async with (
            s.open_stream(r.actr_id, "a", lane=Lane.RELIABLE) as a,
            s.open_stream(r.actr_id, "b") as b,
        ):
            for i in range(200):
                await a.send(b"a%d" % i)
                await b.send(b"b%d" % i)
        with trio.fail_after(10):
            await receiver.ended["a"].wait()
            # Stream b is LatencyFirst: even its end marker may be dropped, so wait for quiet
            # (no threads or sockets here: loopback and an in-memory mailbox).
            await trio.testing.wait_all_tasks_blocked()
    assert receiver.chunks["a"] == [b"a%d" % i for i in range(200)]
    # LatencyFirst may drop when the buffer is full, never reorders.
    got_b = receiver.chunks.get("b", [])
    assert got_b
    assert got_b == sorted(got_b, key=lambda c: int(c[1:]))


async def test_slow_and_failing_callbacks_do_not_stall_others_or_the_state_path() -> None:
    receiver = Receiver()
    async with (
        LocalRealm(stream_buffer=4) as realm,
        realm.start(receiver) as r,
        realm.start(Sender()) as s,
    ):
        async with (
            s.open_stream(r.actr_id, "slow") as slow,
            s.open_stream(r.actr_id, "boom") as boom,
        ):
            for i in range(20):
                await slow.send(b"%d" % i)
                await boom.send(b"%d" % i)
            async with s.open_stream(r.actr_id, "a") as a:
                await a.send(b"fine")
            with trio.fail_after(10):
                await receiver.ended["a"].wait()
                assert await s.call(r.actr_id, "demo.Recv.Ping", b"") == b"pong"
        stats = r.statistics().streams
        assert stats.failed_callbacks >= 1
        assert stats.dropped >= 1  # the slow stream's small buffer overflowed on LatencyFirst
        receiver.block_slow.set()
    assert receiver.chunks["a"] == [b"fine"]


async def test_unregistered_stream_is_counted_not_fatal() -> None:
    receiver = Receiver()
    async with LocalRealm() as realm, realm.start(receiver) as r, realm.start(Sender()) as s:
        # On a reliable lane the sender learns it: the chunks are refused, not acknowledged.
        with pytest.raises(StreamIncomplete, match="no callback for stream 'nobody'"):
            async with s.open_stream(r.actr_id, "nobody", lane=Lane.RELIABLE) as stream:
                await stream.send(b"x")
        assert await s.call(r.actr_id, "demo.Recv.Ping", b"") == b"pong"
        assert r.statistics().streams.unrouted >= 1


async def test_register_twice_raises_and_closed_stream_refuses() -> None:
    receiver = Receiver()
    async with LocalRealm() as realm, realm.start(receiver) as r, realm.start(Sender()) as s:
        with pytest.raises(KeyError):
            r.streams.register("a", receiver.collect)
        async with s.open_stream(r.actr_id, "a") as stream:
            await stream.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await stream.send(b"late")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["x", "y", "z"]), st.integers(1, 30)), max_size=60))
def test_registry_delivers_increasing_sequences_per_stream(arrivals: list[tuple[str, int]]) -> None:
    """Whatever order chunks arrive in (LatencyFirst is unordered), each stream's callback sees
    strictly increasing sequence numbers, and every chunk newer than the last delivered one."""
    delivered: dict[str, list[int]] = {}

    async def main() -> None:
        registry = StreamRegistry(buffer=1000, make_context=lambda peer: None)  # type: ignore[arg-type,return-value]

        async def callback(chunk: StreamChunk, ctx: object) -> None:
            delivered.setdefault(chunk.stream_id, []).append(chunk.sequence)

        for name in "xyz":
            registry.register(name, callback)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            for stream_id, seq in arrivals:
                await registry.deliver(None, Lane.LATENCY_FIRST, Chunk(stream_id, seq, b"", False))  # type: ignore[arg-type]
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for stream_id in "xyz":
        expected: list[int] = []
        for name, seq in arrivals:
            if name == stream_id and (not expected or seq > expected[-1]):
                expected.append(seq)
        assert delivered.get(stream_id, []) == expected


class FakeTrack:
    """A Trio-native media source for the loopback transport."""

    kind = "video"

    def __init__(self, track_id: str, frames: int) -> None:
        self.id = track_id
        self._left = frames

    async def recv(self) -> object:
        await trio.lowlevel.checkpoint()
        if self._left == 0:
            raise EOFError
        self._left -= 1
        return type("Frame", (), {"pts": self._left, "width": 4, "height": 2})()


async def test_track_frames_reach_the_callback() -> None:
    frames: list[tuple[str, int, int]] = []
    done = trio.Event()

    class Viewer(Workload):
        actr_type = ActrType("acme", "viewer")

        async def on_start(self, ctx: Context) -> None:
            async def on_frame(frame: object, ctx: Context) -> None:
                frames.append((frame.track_id, frame.sequence, frame.width))  # type: ignore[attr-defined]
                if len(frames) == 5:
                    done.set()

            ctx.tracks.register("cam", on_frame)

    async with LocalRealm() as realm, realm.start(Viewer()) as v, realm.start(Sender()) as s:
        await s.publish_track(v.actr_id, FakeTrack("cam", 5))
        with trio.fail_after(10):
            await done.wait()
        assert v.statistics().tracks.delivered == 5
    assert frames == [("cam", i, 4) for i in range(1, 6)]


async def test_a_stream_can_be_reopened_after_its_end_marker_was_lost() -> None:
    """Each opening carries a newer instance: the receiver restarts the sequence for it and
    drops late chunks of the older opening."""
    got: list[tuple[int, int]] = []
    seen_all = trio.Event()

    async def callback(chunk: StreamChunk, ctx: object) -> None:
        got.append((chunk.instance, chunk.sequence))
        if len(got) == 4:
            seen_all.set()

    registry = StreamRegistry(buffer=16, make_context=lambda peer: None)  # type: ignore[arg-type,return-value]
    registry.register("s", callback)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        for chunk in (
            Chunk("s", 1, b"", False, 100),
            Chunk("s", 2, b"", False, 100),  # ...and its end marker is lost
            Chunk("s", 1, b"", False, 200),  # the sender opens the stream again
            Chunk("s", 3, b"", False, 100),  # a late chunk of the first opening: dropped
            Chunk("s", 2, b"", False, 200),
        ):
            await registry.deliver(None, Lane.LATENCY_FIRST, chunk)  # type: ignore[arg-type]
        with trio.fail_after(5):
            await seen_all.wait()
        nursery.cancel_scope.cancel()
    assert got == [(100, 1), (100, 2), (200, 1), (200, 2)]
    assert registry.statistics().dropped == 1
