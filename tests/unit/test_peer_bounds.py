"""Per-peer bounds in the node (issue 13 item 3), on the sync cores and through nodes.

* Streams and tracks are kept per ``(peer, id)``: a chunk for a stream id nothing registered
  is refused and leaves nothing behind, a peer has at most ``max_per_peer`` open, an idle one
  is forgotten after ``idle_timeout``, and another peer's chunk with the same stream id (at
  instance and sequence 2^64-1) does not disturb the legitimate sender's stream.
* Per-peer link state (the inbound gate's links, the outbound gate's lanes) of a peer quiet
  for ``peer_state_timeout`` is forgotten, only when it can be rebuilt (nothing pending), and
  traffic resumes afterwards.

Virtual time throughout (MockClock): nothing here waits for a real clock.
(Real processes over WebRTC: tests/integration/test_stream_abuse.py.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from actr_trio import ActrId, ActrType, Context, Lane, Priority, StreamChunk, Workload, route
from actr_trio._envelope import TELL, Chunk
from actr_trio._idle import IdleTable
from actr_trio._logging import STREAMS
from actr_trio._streams import StreamRegistry
from actr_trio._tracks import TrackRegistry
from actr_trio.errors import StreamIncomplete
from actr_trio.testing import LocalRealm
from actr_trio.transport import InboundFrame

A = ActrId.parse("acme:peer#1@r")
B = ActrId.parse("acme:peer#2@r")
U64_MAX = 2**64 - 1


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def registry(**bounds: Any) -> StreamRegistry[None]:
    return StreamRegistry(buffer=64, make_context=lambda peer: None, **bounds)


# -- IdleTable ---------------------------------------------------------------------------------


def test_idle_table_yields_the_quiet_keys_oldest_first() -> None:
    table: IdleTable[str] = IdleTable()
    table.touch("a", 0.0)
    table.touch("b", 1.0)
    table.touch("c", 2.0)
    table.touch("a", 3.0)  # active again: now the newest
    assert list(table.idle(now=12.5, timeout=10)) == ["b", "c"]
    assert list(table.oldest()) == ["b", "c", "a"]
    for key in table.idle(now=12.5, timeout=10):
        table.forget(key)  # a snapshot: forgetting while iterating is fine
    assert len(table) == 1
    assert "a" in table
    assert table.last("a") == 3.0


# -- streams -----------------------------------------------------------------------------------


def test_chunks_for_unregistered_streams_are_refused_and_not_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    streams = registry()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(streams.run)
            with caplog.at_level(logging.WARNING, logger=STREAMS):
                for n in range(5000):
                    chunk = Chunk(f"nobody-{n}", 1, b"x", False, n)
                    assert await streams.deliver(A, Lane.RELIABLE, chunk) == "unregistered"
                    await streams.deliver(A, Lane.LATENCY_FIRST, chunk)
            nursery.cancel_scope.cancel()

    run(main)
    stats = streams.statistics()
    assert stats.unrouted == 10_000
    assert stats.active == 0
    assert streams.open_streams(A) == 0
    lane = streams._lane
    assert not lane._workers
    assert not len(lane._activity)
    assert not lane._per_peer
    # Refusals are logged at WARNING, rate-limited: one line for the whole flood.
    refused = [r for r in caplog.records if "refused a stream" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.WARNING


def test_a_peer_holds_at_most_max_per_peer_streams_and_others_are_not_affected() -> None:
    streams = registry(max_per_peer=3)
    for n in range(6):
        streams.register(f"s{n}", _ignore)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(streams.run)
            for n in range(3):
                assert (
                    await streams.deliver(A, Lane.RELIABLE, Chunk(f"s{n}", 1, b"", False)) is None
                )
            over = Chunk("s3", 1, b"", False)
            assert await streams.deliver(A, Lane.RELIABLE, over) == "peer_limit"
            # Another peer opens its own streams, the same ids included.
            for n in range(3):
                assert (
                    await streams.deliver(B, Lane.RELIABLE, Chunk(f"s{n}", 1, b"", False)) is None
                )
            # A stream that ends frees its place.
            assert await streams.deliver(A, Lane.RELIABLE, Chunk("s0", 2, b"", True)) is None
            assert await streams.deliver(A, Lane.RELIABLE, over) is None
            assert streams.open_streams(A) == 3
            assert streams.open_streams(B) == 3
            nursery.cancel_scope.cancel()

    run(main)
    assert streams.statistics().refused == 1


def test_idle_streams_are_forgotten_after_the_timeout() -> None:
    streams = registry(max_per_peer=2, idle_timeout=10.0)
    got: list[int] = []

    async def collect(chunk: StreamChunk, ctx: object) -> None:
        got.append(chunk.sequence)

    streams.register("a", collect)
    streams.register("b", collect)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(streams.run)
            await streams.deliver(A, Lane.RELIABLE, Chunk("a", 1, b"", False, 7))
            await streams.deliver(A, Lane.RELIABLE, Chunk("b", 1, b"", False, 7))
            await trio.sleep(9)
            await streams.deliver(A, Lane.RELIABLE, Chunk("a", 2, b"", False, 7))  # "a" lives
            assert streams.open_streams(A) == 2
            await trio.sleep(6.5)  # "b" idle for 15 s at the sweep (every 5 s): closed
            assert streams.open_streams(A) == 1
            assert streams.statistics().expired == 1
            await trio.sleep(20)
            assert streams.open_streams(A) == 0
            # Forgotten means opened anew: its sequence starts over.
            await streams.deliver(A, Lane.RELIABLE, Chunk("a", 1, b"", False, 8))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    run(main)
    assert streams.statistics().expired == 2
    assert got == [1, 1, 2, 1]


def test_another_peers_chunk_at_u64_max_does_not_disturb_a_stream() -> None:
    """Ordering is per (peer, stream id): a chunk from B with the stream id A uses, at instance
    and sequence 2^64-1, is B's own stream; A's next chunks are all delivered."""
    streams = registry()
    got: list[tuple[ActrId, int]] = []

    async def collect(chunk: StreamChunk, ctx: object) -> None:
        got.append((chunk.instance, chunk.sequence))

    async def main() -> None:
        streams.register("s", collect)
        async with trio.open_nursery() as nursery:
            await nursery.start(streams.run)
            for seq in (1, 2):
                await streams.deliver(A, Lane.LATENCY_FIRST, Chunk("s", seq, b"", False, 100))
            hostile = Chunk("s", U64_MAX, b"", False, U64_MAX)
            assert await streams.deliver(B, Lane.LATENCY_FIRST, hostile) is None
            for seq in (3, 4):
                await streams.deliver(A, Lane.LATENCY_FIRST, Chunk("s", seq, b"", False, 100))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    run(main)
    mine = [item for item in got if item[0] == 100]
    assert mine == [(100, 1), (100, 2), (100, 3), (100, 4)]
    assert streams.statistics().dropped == 0  # nothing of A's counted late


# -- tracks ------------------------------------------------------------------------------------


def frame(peer: ActrId, track_id: str, sequence: int = 1) -> InboundFrame:
    return InboundFrame(
        peer=peer,
        track_id=track_id,
        sequence=sequence,
        kind="video",
        pts=sequence,
        width=1,
        height=1,
        frame=None,
    )


def test_tracks_are_kept_per_peer_bounded_and_forgotten_when_idle() -> None:
    tracks: TrackRegistry[None] = TrackRegistry(
        buffer=8, make_context=lambda peer: None, max_per_peer=2, idle_timeout=10.0
    )
    got: list[tuple[ActrId, str]] = []

    async def collect(item: InboundFrame, ctx: object) -> None:
        got.append((item.peer, item.track_id))

    for name in ("cam", "mic", "screen"):
        tracks.register(name, collect)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(tracks.run)
            for n in range(2000):  # announcements of tracks nobody registered
                tracks.deliver(frame(A, f"junk-{n}"))
            for name in ("cam", "mic", "screen"):
                tracks.deliver(frame(A, name))
            tracks.deliver(frame(B, "cam"))
            await trio.testing.wait_all_tasks_blocked()
            assert tracks.open_tracks(A) == 2
            assert tracks.open_tracks(B) == 1
            await trio.sleep(16)
            assert tracks.open_tracks(A) == tracks.open_tracks(B) == 0
            nursery.cancel_scope.cancel()

    run(main)
    stats = tracks.statistics()
    assert stats.unrouted == 2000
    assert stats.refused == 1
    assert stats.expired == 3
    assert sorted(got) == sorted([(A, "cam"), (A, "mic"), (B, "cam")])


# -- through nodes -----------------------------------------------------------------------------


async def _ignore(chunk: object, ctx: object) -> None:
    await trio.lowlevel.checkpoint()


class Receiver(Workload):
    actr_type = ActrType("acme", "receiver")

    def __init__(self, streams: Sequence[str] = ("s",)) -> None:
        self.streams = streams
        self.got: list[tuple[str, int]] = []

    async def on_start(self, ctx: Context) -> None:
        for name in self.streams:
            ctx.streams.register(name, self.collect)

    async def collect(self, chunk: StreamChunk, ctx: Context) -> None:
        if not chunk.end:
            self.got.append((chunk.stream_id, chunk.sequence))

    @route("acme.Receiver.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


def test_a_reliable_stream_over_the_bound_is_refused_with_overloaded() -> None:
    receiver = Receiver(streams=("s0", "s1", "s2"))

    async def main() -> None:
        async with (
            LocalRealm(direct=False) as realm,
            realm.start(receiver, max_streams_per_peer=2) as r,
            realm.start(Sender()) as s,
        ):
            async with (
                s.open_stream(r.actr_id, "s0", lane=Lane.RELIABLE) as s0,
                s.open_stream(r.actr_id, "s1", lane=Lane.RELIABLE) as s1,
            ):
                await s0.send(b"0")
                await s1.send(b"1")
                with pytest.raises(StreamIncomplete) as refused:
                    async with s.open_stream(r.actr_id, "s2", lane=Lane.RELIABLE, timeout=5) as s2:
                        await s2.send(b"2")
                assert "streams" in str(refused.value)
            stats = r.statistics()
            assert stats.streams.refused >= 1
            assert stats.inbound.refused >= 1
            # Both streams ended: the third opens now.
            async with s.open_stream(r.actr_id, "s2", lane=Lane.RELIABLE, timeout=5) as s2:
                await s2.send(b"2")

    run(main)
    assert ("s2", 1) in receiver.got


def test_link_state_of_quiet_peers_is_forgotten_and_rebuilt() -> None:
    """Over the wire (loopback): after peer_state_timeout without traffic, the receiver forgets
    the sender's inbound links and the sender its lanes; calls go on afterwards (a new epoch
    on the sender's side, a reset on the receiver's)."""
    bounds = {"peer_state_timeout": 30.0}

    async def main() -> None:
        async with (
            LocalRealm(direct=False) as realm,
            realm.start(Receiver(), **bounds) as r,
            realm.start(Sender(), **bounds) as a,
            realm.start(Receiver(), **bounds) as b,
        ):
            for _ in range(3):
                assert await a.call(r.actr_id, "acme.Receiver.Echo", b"a") == b"a"
            ingate, wire = r._core._ingate, a._core.outgate._wire
            assert ingate is not None
            assert any(peer == a.actr_id for peer, _ in ingate._links)
            assert wire.linked(r.actr_id)
            await trio.sleep(100)
            # Traffic from someone else drives the sweep: a's links at r are forgotten...
            assert await b.call(r.actr_id, "acme.Receiver.Echo", b"b") == b"b"
            assert not any(peer == a.actr_id for peer, _ in ingate._links)
            assert r.statistics().inbound.evicted_peers >= 1
            # ...and a's lanes to r (nothing pending on them) when a next sends anywhere.
            assert await a.call(b.actr_id, "acme.Receiver.Echo", b"x") == b"x"
            assert not wire.linked(r.actr_id)
            assert a.statistics().outbound.evicted_peers >= 1
            # Rebuilt on the next call: a new epoch from a, taken at seq 1 by r.
            assert await a.call(r.actr_id, "acme.Receiver.Echo", b"again") == b"again"

    run(main)


def test_a_lane_with_something_pending_is_never_forgotten() -> None:
    """Eviction only forgets what can be rebuilt: a lane holding an unacknowledged envelope
    (the receiver never acks) stays, whatever the timeout."""
    from actr_trio._deadlines import DeadlineTimer
    from actr_trio._outgate import OutGate

    class Silent:
        """A transport that takes packets and never answers."""

        def __init__(self) -> None:
            self.sent = 0

        async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
            await trio.lowlevel.checkpoint()
            self.sent += len(packets)

        def forget(self, peer: ActrId) -> None:
            pass

    async def main() -> None:
        gate = OutGate(
            Silent(),  # type: ignore[arg-type]
            max_payload=1024,
            deadlines=DeadlineTimer(),
            peer_state_timeout=10.0,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run, A)
            nursery.start_soon(
                gate.request,
                B,
                "acme.X.Y",
                b"",
                TELL,
                Lane.RELIABLE,
                Priority.NORMAL,
                1e3,
                1e9,
                "t",
            )
            await trio.sleep(1)
            wire = gate._wire
            assert wire.unacked_to(B) == 1
            assert wire.evict(trio.current_time() + 100) == 0
            assert wire.linked(B)
            assert wire.unacked_to(B) == 1
            nursery.cancel_scope.cancel()

    run(main)
