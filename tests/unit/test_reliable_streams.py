"""A stream on a reliable lane keeps its promise: every chunk is acknowledged (and resent until
it is), or leaving the block raises ``StreamIncomplete`` naming how many chunks were not
acknowledged. LatencyFirst stays best effort. (A receiver SIGKILLed over WebRTC:
tests/integration/test_stream_crash.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from actr_trio import (
    ActrRef,
    ActrType,
    Context,
    Lane,
    StreamChunk,
    StreamSender,
    Workload,
    route,
)
from actr_trio.errors import StreamIncomplete
from actr_trio.testing import FaultyTransport, LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

CHUNKS = 200
BEFORE_STOP = 78
LOSSY_CHUNKS = 60


class Collector(Workload):
    """Collects the chunks of stream "s" (the payload is the chunk's number)."""

    actr_type = ActrType("acme", "collector")

    def __init__(self) -> None:
        self.got: list[int] = []
        self.ended = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("s", self.collect)

    async def collect(self, chunk: StreamChunk, ctx: Context) -> None:
        if chunk.end:
            self.ended.set()
        else:
            self.got.append(int(chunk.payload))

    @route("acme.Collector.Mark")
    async def mark(self, request: bytes, ctx: Context) -> bytes:
        return b""


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


async def test_reliable_stream_closes_once_every_chunk_is_acknowledged() -> None:
    collector = Collector()
    async with LocalRealm() as realm, realm.start(collector) as r, realm.start(Sender()) as s:
        async with s.open_stream(r.actr_id, "s", lane=Lane.RELIABLE) as stream:
            for i in range(CHUNKS):
                await stream.send(b"%d" % i)
        # Leaving the block waited for the acks: nothing left to acknowledge.
        assert (stream.sent, stream.acknowledged) == (CHUNKS, CHUNKS)
        with trio.fail_after(10):
            await collector.ended.wait()
    assert collector.got == list(range(CHUNKS))


async def test_reliable_stream_over_a_lossy_lane_resends_until_every_chunk_arrived() -> None:
    collector = Collector()
    async with (
        LocalRealm() as realm,
        realm.start(collector) as r,
        realm.start(
            Sender(), wrap_transport=lambda t: FaultyTransport(t, drop=0.05, duplicate=0.05, seed=7)
        ) as s,
    ):
        with trio.fail_after(30):
            async with s.open_stream(r.actr_id, "s", lane=Lane.RELIABLE) as stream:
                for i in range(LOSSY_CHUNKS):
                    await stream.send(b"%d" % i)
            await collector.ended.wait()
        assert stream.acknowledged == LOSSY_CHUNKS
    assert collector.got == list(range(LOSSY_CHUNKS))


async def _send_until_stop(
    s: ActrRef, receiver: ActrRef, stream: StreamSender, stop: Callable[[], Awaitable[None]]
) -> None:
    """Send chunks 0..77, make sure they are acknowledged, stop the receiver, send the rest."""
    for i in range(BEFORE_STOP):
        await stream.send(b"%d" % i)
    # A tell on the same lane returns once acknowledged; acks are cumulative on the link, so
    # every chunk sent before it is acknowledged too.
    await s.tell(receiver.actr_id, "acme.Collector.Mark", b"")
    assert stream.acknowledged == BEFORE_STOP
    await stop()  # the receiver goes away mid-stream
    for i in range(BEFORE_STOP, CHUNKS):
        await stream.send(b"%d" % i)


async def test_close_names_the_chunks_a_vanished_receiver_did_not_acknowledge() -> None:
    collector = Collector()
    async with LocalRealm() as realm, realm.start(Sender()) as s, realm.start(collector) as r:
        with trio.fail_after(10), pytest.raises(StreamIncomplete) as caught:
            async with s.open_stream(r.actr_id, "s", lane=Lane.RELIABLE, timeout=1.0) as stream:
                await _send_until_stop(s, r, stream, r.shutdown)
        error = caught.value
        assert (error.stream_id, error.sent, error.unacknowledged) == ("s", CHUNKS, 122)
        assert not error.end_acknowledged
        assert (
            f"stream 's' to {r.actr_id} on RELIABLE: 122 of 200 chunks were not acknowledged"
            in str(error)
        )
        assert stream.acknowledged == BEFORE_STOP
    assert collector.got == list(range(BEFORE_STOP))


async def test_reliable_chunks_for_a_stream_without_callback_are_refused() -> None:
    collector = Collector()
    async with LocalRealm() as realm, realm.start(collector) as r, realm.start(Sender()) as s:
        with pytest.raises(StreamIncomplete, match=r"2 of 2 chunks .* no callback for stream 'x'"):
            async with s.open_stream(r.actr_id, "x", lane=Lane.RELIABLE) as stream:
                await _send_two(stream)
        assert r.statistics().streams.unrouted == 3  # two chunks and the end marker
        # The receiver keeps serving.
        await s.tell(r.actr_id, "acme.Collector.Mark", b"")


async def test_latency_first_close_never_waits_or_raises() -> None:
    """Best effort: the receiver is gone, chunks vanish, and closing says nothing."""
    collector = Collector()
    async with LocalRealm() as realm, realm.start(Sender()) as s, realm.start(collector) as r:
        await r.shutdown()
        with trio.fail_after(5):
            async with s.open_stream(r.actr_id, "s") as stream:
                await stream.send(b"0")
        assert (stream.sent, stream.acknowledged) == (1, 0)


async def test_an_error_in_the_block_wins_over_missing_acks() -> None:
    collector = Collector()
    async with LocalRealm() as realm, realm.start(Sender()) as s, realm.start(collector) as r:
        await r.shutdown()
        with trio.fail_after(5), pytest.raises(KeyError):
            async with s.open_stream(r.actr_id, "s", lane=Lane.RELIABLE, timeout=30) as stream:
                await _send_and_fail(stream)


async def _send_two(stream: StreamSender) -> None:
    await stream.send(b"1")
    await stream.send(b"2")


async def _send_and_fail(stream: StreamSender) -> None:
    await stream.send(b"0")
    raise KeyError("the block's own failure")
