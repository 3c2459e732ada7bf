"""In-process transport: nodes in one ``trio.run`` hand packets to each other's inbound channel.

It keeps the transport contract exactly (ordered Signal/Reliable lanes with backpressure,
LatencyFirst drops when the receiver is full, PeerUnavailable for unknown or closed peers), so
the runtime above it behaves as it does over WebRTC. ``LocalRealm`` uses it; benchmarks use it to
measure the runtime without a network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final, final

import attrs
import trio

from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT
from ..errors import PeerUnavailable, ShuttingDown
from ._abc import Inbound, InboundFrame, InboundPackets, MediaSource, SignalingSession

log = logging.getLogger(TRANSPORT)

# Batches (not packets) waiting for the receiving node: small, because each batch already
# carries many packets; a full buffer makes reliable senders wait (backpressure).
INBOUND_BUFFER: Final = 64
# Tracks waiting to be pumped by run(); publish_track returns once its pump started.
PUBLISH_BUFFER: Final = 0
# Peers remembered for the "linked to" log line.
LINKED_KEPT: Final = 4096


@final
@attrs.frozen
class LoopbackStatistics:
    """Counters of one loopback transport."""

    sent_packets: int
    received_batches: int
    dropped_packets: int
    frames_sent: int


class LoopbackHub:
    """Where loopback transports find each other (one per LocalRealm)."""

    def __init__(self) -> None:
        self._open: dict[ActrId, LoopbackTransport] = {}

    def transport(self) -> LoopbackTransport:
        """A new transport attached to this hub (it joins when its ``run`` starts)."""
        return LoopbackTransport(self)

    def _join(self, actr_id: ActrId, transport: LoopbackTransport) -> None:
        self._open[actr_id] = transport

    def _leave(self, actr_id: ActrId, transport: LoopbackTransport) -> None:
        if self._open.get(actr_id) is transport:
            del self._open[actr_id]

    def _lookup(self, actr_id: ActrId) -> LoopbackTransport:
        try:
            return self._open[actr_id]
        except KeyError:
            raise PeerUnavailable(f"no node {actr_id} is reachable in this realm") from None


class LoopbackTransport:
    """One node's end of a :class:`LoopbackHub` (see the module docstring)."""

    def __init__(self, hub: LoopbackHub) -> None:
        self._hub = hub
        self._local: ActrId | None = None
        self._closed = False
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[Inbound](INBOUND_BUFFER)
        self._publish_send, self._publish_recv = trio.open_memory_channel[
            tuple[ActrId, MediaSource, trio.Event]
        ](PUBLISH_BUFFER)
        self._sent = 0
        self._received = 0
        self._dropped = 0
        self._frames = 0
        self._linked: set[ActrId] = set()  # peers reached so far (for the "linked" log line)

    def __repr__(self) -> str:
        return f"<LoopbackTransport {self._local} closed={self._closed}>"

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Inbound]:
        return self._inbound_recv

    def statistics(self) -> LoopbackStatistics:
        return LoopbackStatistics(self._sent, self._received, self._dropped, self._frames)

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._local = session.actr_id
        self._hub._join(session.actr_id, self)
        try:
            with self._inbound_send, self._publish_recv:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    async for peer, track, started in self._publish_recv:
                        nursery.start_soon(self._pump, peer, track, started)
        finally:
            self._closed = True
            self._hub._leave(session.actr_id, self)

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        if self._closed or self._local is None:
            raise ShuttingDown("transport is closed")
        target = self._hub._lookup(peer)
        if peer not in self._linked:
            if len(self._linked) >= LINKED_KEPT:
                self._linked.clear()  # bounded; at worst a peer is announced twice
            self._linked.add(peer)
            log.info("linked to %s over loopback", peer)
        batch = InboundPackets(self._local, lane, packets)
        self._sent += len(packets)
        if lane is Lane.LATENCY_FIRST:
            await trio.lowlevel.checkpoint()
            try:
                target._inbound_send.send_nowait(batch)
            except trio.WouldBlock:
                target._dropped += len(packets)
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise PeerUnavailable(f"{peer} closed its transport") from None
        else:
            try:
                await target._inbound_send.send(batch)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise PeerUnavailable(f"{peer} closed its transport") from None
        target._received += 1

    def links(self) -> dict[ActrId, str]:
        """The peers this transport sent to, each reached over ``"loopback"``."""
        return dict.fromkeys(self._linked, "loopback")

    def forget(self, peer: ActrId) -> None:
        """Nothing to drop: loopback links are lookups in the hub."""
        self._linked.discard(peer)

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        self._hub._lookup(peer)
        started = trio.Event()
        try:
            await self._publish_send.send((peer, track, started))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ShuttingDown("transport is closed") from None
        await started.wait()

    async def _pump(self, peer: ActrId, track: MediaSource, started: trio.Event) -> None:
        assert self._local is not None
        recv = getattr(track, "recv", None)
        if recv is None:
            raise TypeError(f"{track!r} has no recv(): not a media source")
        started.set()
        sequence = 0
        while True:
            try:
                frame = await recv()
            except EOFError:
                return
            sequence += 1
            try:
                target = self._hub._lookup(peer)
            except PeerUnavailable:
                log.info("track %s: peer %s is gone, stopping", track.id, peer)
                return
            item = InboundFrame(
                peer=self._local,
                track_id=track.id,
                sequence=sequence,
                kind=track.kind,
                pts=getattr(frame, "pts", None),
                width=int(getattr(frame, "width", 0)),
                height=int(getattr(frame, "height", 0)),
                frame=frame,
            )
            try:
                # Media is realtime: a receiver that falls behind loses frames, like RTP.
                target._inbound_send.send_nowait(item)
                self._frames += 1
            except trio.WouldBlock:
                target._dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
