"""Transport conformance suite: the checks every ``Transport`` must pass.

Modelled on ``trio.testing.check_two_way_stream``: the caller supplies ``make_pair``, an async
context manager factory that starts two transports A and B which can reach each other, and
:func:`check_transport` runs every check against a fresh pair. ``LoopbackTransport`` and
``WebRTCTransport`` and ``WebSocketTransport`` run it, so the in-process fake cannot drift from
the real thing.

The checks synchronise with events, channel reads and ``wait_all_tasks_blocked``, never with
sleeps; bound the whole run with ``trio.fail_after`` in the calling test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final

import attrs
import trio
import trio.testing

from .._ids import ActrId
from .._lanes import Lane
from ..errors import MediaUnsupported, PeerUnavailable, ShuttingDown
from ..transport._abc import InboundFrame, InboundPackets, MediaSource, Transport

__all__ = [
    "CHECKS",
    "MakePair",
    "TransportPair",
    "check_backpressure",
    "check_both_directions",
    "check_close",
    "check_latency_first",
    "check_ordered_reliable",
    "check_publish_track",
    "check_transport",
    "check_unknown_peer",
]

#: Large packets in the ordering check: bigger than any sensible frame, so a coalescing
#: transport must fragment and reassemble them.
BIG_PACKET: Final = 200_000


@attrs.define(eq=False)
class TransportPair:
    """Two started transports that know each other, as ``make_pair`` yields them.

    Attributes:
        a, b: the transports (``run`` already started).
        a_id, b_id: their identities.
        unknown: an identity no signaling service knows (for ``PeerUnavailable``).
        make_track: a new media source of kind ``"video"`` this transport can publish.
        close_a: stops A's ``run`` and returns once it returned.
        reliable_may_drop: the RELIABLE lane may lose packets (never reorder them), as over
            WebRTC (maxRetransmits=8); the runtime's end-to-end resends cover it. SIGNAL never
            loses.
        media: the transport carries media tracks; False (direct WebSocket links): it must
            refuse one with ``MediaUnsupported``.
    """

    a: Transport
    b: Transport
    a_id: ActrId
    b_id: ActrId
    unknown: ActrId
    make_track: Callable[[], MediaSource]
    close_a: Callable[[], Awaitable[None]]
    reliable_may_drop: bool = False
    media: bool = True


MakePair = Callable[[], AbstractAsyncContextManager[TransportPair]]


def _payload(tag: bytes, i: int, size: int = 100) -> bytes:
    head = tag + i.to_bytes(4, "big")
    return head + bytes([i % 251]) * max(0, size - len(head))


async def _collect(
    transport: Transport, lane: Lane, count: int, *, peer: ActrId | None = None
) -> list[bytes]:
    """Read ``count`` packets of ``lane`` from ``transport.inbound`` (other items are skipped)."""
    packets: list[bytes] = []
    while len(packets) < count:
        item = await transport.inbound.receive()
        if isinstance(item, InboundPackets) and item.lane is lane:
            assert peer is None or item.peer == peer, f"packet from {item.peer}, not {peer}"
            packets.extend(item.packets)
    return packets


def _sizes(total: int) -> list[int]:
    """Deterministic batch sizes 1..50 adding up to ``total``."""
    sizes, i = [], 0
    while total > 0:
        n = min(total, 1 + (i * 7) % 50)
        sizes.append(n)
        total -= n
        i += 1
    return sizes


async def _send_all(
    transport: Transport, peer: ActrId, lane: Lane, packets: Sequence[bytes]
) -> None:
    pos = 0
    for n in _sizes(len(packets)):
        await transport.send(peer, lane, packets[pos : pos + n])
        pos += n


_END: Final = b"\xffEND"


async def _deliver(
    pair: TransportPair,
    lane: Lane,
    packets: Sequence[bytes],
    *,
    sender: Callable[[], Awaitable[None]] | None = None,
    before_reading: Callable[[], Awaitable[None]] | None = None,
) -> list[bytes]:
    """Send ``packets`` A→B on an ordered lane, then end markers until one arrives.

    Returns what B received before the first marker: on an ordered lane that is everything
    that was not lost, in order. (A lossy lane may drop a marker too, hence a new marker until
    one arrives; each retry is bounded.)
    """
    got: list[bytes] = []
    arrived = trio.Event()

    async def send() -> None:
        if sender is None:
            await _send_all(pair.a, pair.b_id, lane, packets)
        else:
            await sender()
        marker = 0
        while not arrived.is_set():
            await pair.a.send(pair.b_id, lane, [_END + marker.to_bytes(4, "big")])
            marker += 1
            with trio.move_on_after(1.0):
                await arrived.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        if before_reading is not None:
            await before_reading()
        while not arrived.is_set():
            item = await pair.b.inbound.receive()
            if not isinstance(item, InboundPackets) or item.lane is not lane:
                continue
            assert item.peer == pair.a_id
            for packet in item.packets:
                if packet.startswith(_END):
                    arrived.set()
                    break
                got.append(packet)
    return got


def _assert_delivered(
    pair: TransportPair, lane: Lane, sent: Sequence[bytes], got: list[bytes]
) -> None:
    if lane is Lane.SIGNAL or not pair.reliable_may_drop:
        assert got == list(sent), f"{lane.name}: packets lost, changed or reordered"
        return
    # In order or not at all: ``got`` must be a subsequence of ``sent``.
    it = iter(sent)
    assert all(any(p == q for q in it) for p in got), f"{lane.name}: reordered or changed"
    assert got, f"{lane.name}: nothing arrived"


async def check_ordered_reliable(pair: TransportPair) -> None:
    """SIGNAL and RELIABLE deliver in send order (small packets coalesced, big ones split).

    SIGNAL delivers everything; RELIABLE too unless ``pair.reliable_may_drop``.
    """
    for lane in (Lane.SIGNAL, Lane.RELIABLE):
        packets = [_payload(b"R", i) for i in range(3000)]
        for i in (10, 1500, 2999):
            packets[i] = _payload(b"B", i, BIG_PACKET)
        got = await _deliver(pair, lane, packets)
        _assert_delivered(pair, lane, packets, got)


async def check_both_directions(pair: TransportPair) -> None:
    """A→B and B→A at the same time, each direction ordered."""
    to_b = [_payload(b"A", i) for i in range(2000)]
    to_a = [_payload(b"B", i) for i in range(2000)]
    results: dict[str, list[bytes]] = {}

    async def collect(name: str, transport: Transport, peer: ActrId) -> None:
        results[name] = await _collect(transport, Lane.RELIABLE, 2000, peer=peer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, "b", pair.b, pair.a_id)
        nursery.start_soon(collect, "a", pair.a, pair.b_id)
        nursery.start_soon(_send_all, pair.a, pair.b_id, Lane.RELIABLE, to_b)
        nursery.start_soon(_send_all, pair.b, pair.a_id, Lane.RELIABLE, to_a)
    assert results["b"] == to_b
    assert results["a"] == to_a


async def check_latency_first(pair: TransportPair) -> None:
    """LATENCY_FIRST delivers what it sent, unchanged (order and completeness not promised).

    At this low rate to a reading receiver on one host nothing is dropped in practice, so the
    check waits for every packet.
    """
    packets = [_payload(b"L", i) for i in range(50)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_all, pair.a, pair.b_id, Lane.LATENCY_FIRST, packets)
        got = await _collect(pair.b, Lane.LATENCY_FIRST, len(packets), peer=pair.a_id)
    assert sorted(got) == sorted(packets)


async def check_unknown_peer(pair: TransportPair) -> None:
    """Sending to a node no one knows raises PeerUnavailable (and the transport keeps working)."""
    try:
        await pair.a.send(pair.unknown, Lane.RELIABLE, [b"hello?"])
    except PeerUnavailable:
        pass
    else:
        raise AssertionError("send to an unknown peer did not raise PeerUnavailable")
    await pair.a.send(pair.b_id, Lane.RELIABLE, [b"still here"])
    assert await _collect(pair.b, Lane.RELIABLE, 1) == [b"still here"]


async def check_backpressure(pair: TransportPair) -> None:
    """A receiver that does not read makes SIGNAL/RELIABLE senders wait; nothing is dropped.

    8 MB is more than any transport may buffer for one lane, so the sender must block before
    it is done; once B reads, everything arrives in order (RELIABLE: see ``reliable_may_drop``;
    waiting is still required: a transport must not drop because the receiver is slow).
    """
    for lane in (Lane.SIGNAL, Lane.RELIABLE):
        await _check_backpressure_on(pair, lane)


async def _check_backpressure_on(pair: TransportPair, lane: Lane) -> None:
    packets = [_payload(b"P", i, 1024) for i in range(8000)]
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for packet in packets:
            await pair.a.send(pair.b_id, lane, [packet])
            sent += 1

    async def stuck() -> None:
        # Stuck = no progress across several moments when every task is blocked.
        still = 0
        while sent < len(packets) and still < 3:
            before = sent
            await trio.testing.wait_all_tasks_blocked()
            still = still + 1 if sent == before else 0
        assert sent < len(packets), f"{lane.name}: sender never waited for the receiver"

    got = await _deliver(pair, lane, packets, sender=sender, before_reading=stuck)
    _assert_delivered(pair, lane, packets, got)


async def check_publish_track(pair: TransportPair, frames: int = 3) -> None:
    """A published video track delivers frames to the peer as InboundFrame, in sequence (or,
    on a transport without media, is refused with ``MediaUnsupported``, and data still flows)."""
    track = pair.make_track()
    if not pair.media:
        refusal: MediaUnsupported | None = None
        try:
            await pair.a.publish_track(pair.b_id, track)
        except MediaUnsupported as exc:
            refusal = exc
        assert refusal is not None, "publish_track on a transport without media did not raise"
        assert track.id in str(refusal), f"the refusal does not name the track: {refusal}"
        await pair.a.send(pair.b_id, Lane.RELIABLE, [b"still linked"])
        assert await _collect(pair.b, Lane.RELIABLE, 1) == [b"still linked"]
        return
    await pair.a.publish_track(pair.b_id, track)
    seen: list[InboundFrame] = []
    while len(seen) < frames:
        item = await pair.b.inbound.receive()
        if isinstance(item, InboundFrame):
            assert item.peer == pair.a_id
            assert item.track_id == track.id
            assert item.kind == "video"
            assert item.width > 0
            assert item.height > 0
            seen.append(item)
    sequences = [f.sequence for f in seen]
    assert sequences == sorted(set(sequences))


async def check_close(pair: TransportPair) -> None:
    """After ``run`` ends: ``send`` raises ShuttingDown and ``inbound`` ends."""
    await pair.a.send(pair.b_id, Lane.RELIABLE, [b"before close"])
    assert await _collect(pair.b, Lane.RELIABLE, 1) == [b"before close"]
    await pair.close_a()
    try:
        await pair.a.send(pair.b_id, Lane.RELIABLE, [b"after close"])
    except ShuttingDown:
        pass
    else:
        raise AssertionError("send after close did not raise ShuttingDown")
    try:
        while True:
            await pair.a.inbound.receive()
    except trio.EndOfChannel:
        pass


#: Every check, in the order :func:`check_transport` runs them.
CHECKS: Final[tuple[Callable[[TransportPair], Awaitable[None]], ...]] = (
    check_ordered_reliable,
    check_both_directions,
    check_latency_first,
    check_unknown_peer,
    check_backpressure,
    check_publish_track,
    check_close,
)


async def check_transport(make_pair: MakePair) -> None:
    """Run every check of :data:`CHECKS`, each against a fresh pair from ``make_pair``."""
    for check in CHECKS:
        async with make_pair() as pair:
            await check(pair)
