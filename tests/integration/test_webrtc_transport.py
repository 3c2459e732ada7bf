"""WebRTC-specific behaviour of ``WebRTCTransport`` (the rest is in the conformance suite).

Two transports in this process, on 127.0.0.1 only, signaling through ``MemorySignaling``.
"""

from __future__ import annotations

import fractions
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aioice.ice
import attrs
import pytest
import trio
import trio.testing
from aiortc import VideoStreamTrack
from av import VideoFrame

from actr_trio._config import Config
from actr_trio._identity import NodeKey
from actr_trio._ids import ActrId, ActrType
from actr_trio._lanes import Lane
from actr_trio.errors import TransportError
from actr_trio.testing._memory_signaling import MemorySignaling
from actr_trio.transport import InboundFrame, InboundPackets, Relay, SignalingSession
from actr_trio.transport._binding import open_description
from actr_trio.transport._webrtc import WebRTCTransport

pytestmark = pytest.mark.integration

CONFIG = Config(realm="webrtc", ice_addresses=("127.0.0.1",))


class SyntheticVideo(VideoStreamTrack):
    """30 fps black 320x240 frames, generated in memory."""

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=320, height=240, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base)
        return frame


@attrs.define(eq=False)
class RecordingSession:
    """A SignalingSession that remembers every relay it sent (to inspect the SDP)."""

    inner: SignalingSession
    sent: list[tuple[ActrId, str, str]] = attrs.field(factory=list)

    @property
    def actr_id(self) -> ActrId:
        return self.inner.actr_id

    @property
    def node_key(self) -> NodeKey:
        return self.inner.node_key

    @property
    def credential(self) -> bytes:
        return self.inner.credential

    @property
    def issuer_key(self) -> bytes:
        return self.inner.issuer_key

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        return await self.inner.discover(actr_type)

    async def send_relay(self, target: ActrId, kind: str, payload: str) -> None:
        self.sent.append((target, kind, payload))
        await self.inner.send_relay(target, kind, payload)

    @property
    def relays(self) -> trio.abc.ReceiveChannel[Relay]:
        return self.inner.relays


@attrs.define(eq=False)
class Pair:
    a: WebRTCTransport
    b: WebRTCTransport
    sa: RecordingSession
    sb: RecordingSession


@asynccontextmanager
async def webrtc_pair() -> AsyncIterator[Pair]:
    signaling = MemorySignaling("webrtc")
    async with trio.open_nursery() as nursery:
        sa = RecordingSession(
            await nursery.start(signaling.connector().run, ActrType("t", "a"), None)
        )
        sb = RecordingSession(
            await nursery.start(signaling.connector().run, ActrType("t", "b"), None)
        )
        a, b = WebRTCTransport(CONFIG), WebRTCTransport(CONFIG)
        await nursery.start(a.run, sa)
        await nursery.start(b.run, sb)
        yield Pair(a, b, sa, sb)
        nursery.cancel_scope.cancel(reason="test done")


async def _next_packets(transport: WebRTCTransport) -> InboundPackets:
    while True:
        item = await transport.inbound.receive()
        if isinstance(item, InboundPackets):
            return item


async def test_offers_only_the_configured_loopback_address() -> None:
    original = aioice.ice.get_host_addresses
    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            await pair.a.send(pair.sb.actr_id, Lane.SIGNAL, [b"hi"])
            assert (await _next_packets(pair.b)).packets == [b"hi"]
    sdps = [
        open_description(
            payload,
            kind="offer" if kind == "offer" else "answer",
            source=session.actr_id,
            local=target,
            issuer_key=session.issuer_key,
            now=time.time(),
        ).sdp
        for session in (pair.sa, pair.sb)
        for target, kind, payload in session.sent
        if kind != "ice"
    ]
    assert {kind for _, kind, _ in pair.sa.sent + pair.sb.sent} == {"offer", "answer"}
    candidates = [
        line for sdp in sdps for line in sdp.splitlines() if line.startswith("a=candidate:")
    ]
    assert candidates
    for line in candidates:
        address = line.split()[4]
        assert address == "127.0.0.1", line
    assert "stun:" not in "".join(sdps)
    # The gathering hook is gone once no transport runs.
    assert aioice.ice.get_host_addresses is original


async def test_loop_closes_cleanly_without_leaks(caplog: pytest.LogCaptureFixture) -> None:
    threads_before = set(threading.enumerate())
    with caplog.at_level(logging.WARNING), trio.fail_after(30):
        async with webrtc_pair() as pair:
            await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"x"])
            await _next_packets(pair.b)
            await pair.a.publish_track(pair.sb.actr_id, SyntheticVideo())
            while not isinstance(await pair.b.inbound.receive(), InboundFrame):
                pass
        gc.collect()
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "Task was destroyed but it is pending" not in messages
    assert "was never awaited" not in messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], messages
    # Trio keeps idle to_thread workers ("Trio thread N") cached for reuse: not ours to end.
    # aiortc's decoder/encoder threads and anything else started for the links must be gone.
    leaked = [
        t
        for t in set(threading.enumerate()) - threads_before
        if t.is_alive() and not t.name.startswith("Trio thread")
    ]
    assert leaked == []


@pytest.mark.parametrize("publisher", ["offerer", "answerer"])
async def test_media_track_frames_arrive_as_inbound_frames(publisher: str) -> None:
    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            # A opens the link (offerer); either side then publishes on a pre-provisioned slot.
            await pair.a.send(pair.sb.actr_id, Lane.SIGNAL, [b"open"])
            await _next_packets(pair.b)
            if publisher == "offerer":
                sender, receiver, sender_id, receiver_id = pair.a, pair.b, pair.sa, pair.sb
            else:
                sender, receiver, sender_id, receiver_id = pair.b, pair.a, pair.sb, pair.sa
            track = SyntheticVideo()
            await sender.publish_track(receiver_id.actr_id, track)
            frames: list[InboundFrame] = []
            while len(frames) < 5:
                item = await receiver.inbound.receive()
                if isinstance(item, InboundFrame):
                    frames.append(item)
            # One video slot per link by default: a second video track has nowhere to go.
            with pytest.raises(TransportError, match="no free video slot"):
                await sender.publish_track(receiver_id.actr_id, SyntheticVideo())
    assert {f.track_id for f in frames} == {track.id}
    assert {f.peer for f in frames} == {sender_id.actr_id}
    assert all(isinstance(f.frame, VideoFrame) for f in frames)
    assert all((f.width, f.height, f.kind) == (320, 240, "video") for f in frames)
    assert [f.sequence for f in frames] == sorted({f.sequence for f in frames})
    assert receiver.statistics().media_frames_received >= 5


async def test_glare_ends_with_one_link_each_way() -> None:
    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pair.a.send, pair.sb.actr_id, Lane.SIGNAL, [b"from a"])
                nursery.start_soon(pair.b.send, pair.sa.actr_id, Lane.SIGNAL, [b"from b"])
            assert (await _next_packets(pair.b)).packets == [b"from a"]
            assert (await _next_packets(pair.a)).packets == [b"from b"]
            for transport in (pair.a, pair.b):
                stats = transport.statistics()
                assert stats.peers == 1
                assert stats.links_opened == 1
                assert stats.links_failed == 0
    offers = [kind for _, kind, _ in pair.sa.sent + pair.sb.sent if kind == "offer"]
    assert len(offers) in (1, 2)  # both may offer; only the lower id's offer is answered


async def test_link_is_reused_and_counts_frames() -> None:
    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            for i in range(3):
                await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"%d" % i] * 100)
            got: list[bytes] = []
            while len(got) < 300:
                got.extend((await _next_packets(pair.b)).packets)
            stats = pair.a.statistics()
    assert stats.links_opened == 1
    assert stats.packets_sent == 300
    assert stats.frames_sent <= 3  # coalesced: 100 small packets per frame
    assert [kind for _, kind, _ in pair.sa.sent] == ["offer"]


async def test_unknown_peer_fails_fast_and_is_not_kept() -> None:
    from actr_trio.errors import PeerUnavailable

    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            nobody = ActrId("webrtc", 424242, ActrType("t", "ghost"))
            with pytest.raises(PeerUnavailable):
                await pair.a.send(nobody, Lane.RELIABLE, [b"?"])
            assert pair.a.statistics().peers == 0
            with pytest.raises(PeerUnavailable):
                await pair.a.send(nobody, Lane.RELIABLE, [b"?"])


async def test_malformed_frame_closes_the_link_and_the_next_send_reopens_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from actr_trio.transport._webrtc_link import Channel

    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"one"])
            assert (await _next_packets(pair.b)).packets == [b"one"]
            link = pair.a._links[pair.sb.actr_id]
            assert link.port is not None
            # A peer that writes garbage on a lane (a bug or an attacker): B must not crash.
            # Malformed input is a WARNING (rate-limited), never an ERROR.
            with caplog.at_level(logging.WARNING):
                link.port.write_soon(Channel.RELIABLE, [b"\x09garbage"])
                await link.broken.wait()
            malformed = [r for r in caplog.records if "malformed frame" in r.getMessage()]
            assert [r.levelno for r in malformed] == [logging.WARNING]
            while pair.a._links.get(pair.sb.actr_id) is link:
                await trio.testing.wait_all_tasks_blocked()
            await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"two"])
            assert (await _next_packets(pair.b)).packets == [b"two"]
            assert pair.a.statistics().links_opened == 2


async def test_peer_that_never_answers_is_unavailable_within_the_bound() -> None:
    from actr_trio.errors import PeerUnavailable

    signaling = MemorySignaling("webrtc")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sa = await nursery.start(signaling.connector().run, ActrType("t", "a"), None)
            # Registered with signaling, but no transport reads its relays.
            silent = await nursery.start(signaling.connector().run, ActrType("t", "b"), None)
            a = WebRTCTransport(CONFIG, connect_timeout=1.0)
            await nursery.start(a.run, sa)
            with pytest.raises(PeerUnavailable, match="did not connect within"):
                await a.send(silent.actr_id, Lane.RELIABLE, [b"anyone?"])
            stats = a.statistics()
            assert stats.peers == 0
            assert stats.links_failed == 1
            nursery.cancel_scope.cancel()


async def test_restarted_peer_gets_a_new_link() -> None:
    signaling = MemorySignaling("webrtc")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sa = await nursery.start(signaling.connector().run, ActrType("t", "a"), None)
            sb = await nursery.start(signaling.connector().run, ActrType("t", "b"), None)
            a = WebRTCTransport(CONFIG)
            await nursery.start(a.run, sa)
            for generation in range(2):
                b = WebRTCTransport(CONFIG)
                with trio.CancelScope() as b_scope:
                    async with trio.open_nursery() as b_nursery:
                        await b_nursery.start(b.run, sb)
                        message = b"generation %d" % generation
                        await a.send(sb.actr_id, Lane.RELIABLE, [message])
                        assert (await _next_packets(b)).packets == [message]
                        b_scope.cancel(reason="peer restarts")
                # A notices the closed connection and drops the link; the next send reopens.
                while a.statistics().peers:
                    await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().links_opened == 2
            nursery.cancel_scope.cancel()


async def test_forget_opens_a_new_link_and_delivers_on_it() -> None:
    """The runtime drops a link whose peer stopped acknowledging; the next send opens another
    (through signaling), which is how a restarted peer is reached before ICE consent fails."""
    with trio.fail_after(30):
        async with webrtc_pair() as pair:
            await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"before"])
            assert (await _next_packets(pair.b)).packets == [b"before"]
            pair.a.forget(pair.sb.actr_id)
            pair.a.forget(pair.sb.actr_id)  # a second call is a no-op
            await pair.a.send(pair.sb.actr_id, Lane.RELIABLE, [b"after"])
            assert (await _next_packets(pair.b)).packets == [b"after"]
            stats = pair.a.statistics()
            assert stats.links_forgotten == 1
            assert stats.links_opened == 2
            assert [kind for _, kind, _ in pair.sa.sent].count("offer") == 2
