"""``FaultyTransport``: wraps a transport and loses or duplicates packets on purpose.

Used to show that the runtime's end-to-end acks, retransmission and dedupe keep every promise
over a lane that really drops (as RELIABLE with maxRetransmits=8 does under load). Loss and
duplication keep the per-lane order of what is delivered, as the real lanes do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import final

import attrs
import trio

from .._ids import ActrId
from .._lanes import Lane
from ..transport._abc import Inbound, MediaSource, SignalingSession, Transport


@final
@attrs.frozen
class FaultStatistics:
    """What the wrapper did to the traffic it carried."""

    sent: int
    dropped: int
    duplicated: int


class TransportWrapper:
    """A transport that forwards everything to ``inner``: subclass it and override what a test
    should disturb (drop packets, crash, record the lifecycle)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        return self.inner.inbound

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.inner.run(session, task_status=task_status)

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        await self.inner.send(peer, lane, packets)

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        await self.inner.publish_track(peer, track)

    def forget(self, peer: ActrId) -> None:
        self.inner.forget(peer)


class FaultyTransport(TransportWrapper):
    """Drop each outgoing packet with probability ``drop``, duplicate with ``duplicate``.

    Args:
        inner: the real transport.
        drop: probability of losing a packet (0 <= drop < 1).
        duplicate: probability of sending a packet twice.
        seed: for reproducible faults.
        lanes: the lanes to disturb (default: every lane).
    """

    def __init__(
        self,
        inner: Transport,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        seed: int | None = None,
        lanes: Sequence[Lane] = tuple(Lane),
    ) -> None:
        if not 0 <= drop < 1 or not 0 <= duplicate <= 1:
            raise ValueError(
                f"drop={drop!r} must be in [0, 1) and duplicate={duplicate!r} in [0, 1]"
            )
        super().__init__(inner)
        self.drop = drop
        self.duplicate = duplicate
        self._random = random.Random(seed)
        self._lanes = frozenset(lanes)
        self._sent = self._dropped = self._duplicated = 0

    def statistics(self) -> FaultStatistics:
        return FaultStatistics(self._sent, self._dropped, self._duplicated)

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        if lane not in self._lanes:
            await self.inner.send(peer, lane, packets)
            return
        kept: list[bytes] = []
        for packet in packets:
            self._sent += 1
            roll = self._random.random()
            if roll < self.drop:
                self._dropped += 1
                continue
            kept.append(packet)
            if self._random.random() < self.duplicate:
                self._duplicated += 1
                kept.append(packet)
        if kept:
            await self.inner.send(peer, lane, kept)
        else:
            await trio.lowlevel.checkpoint()
