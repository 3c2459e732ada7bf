"""A lane's outbox in a network link: the packets its flusher has not written yet.

Shared by the WebRTC and WebSocket links: a sender puts packets (waiting while the outbox holds
``OUTBOX_LIMIT`` bytes or more), the lane's flusher takes as many as fit its credit budget, and
a link that breaks fails every waiting and later sender with the link's error.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from typing import Final

import trio

from ..errors import PeerUnavailable, ShuttingDown

#: Bytes of packets waiting in one lane's outbox before ``put`` waits.
OUTBOX_LIMIT: Final = 1 << 20
# Frame header bytes, and bytes a packet costs in a frame beyond its own (record header; a
# little more for a fragment's total), for budgeting packets against credit.
FRAME_OVERHEAD: Final = 5
RECORD_COST: Final = 9


class Outbox:
    """Packets waiting for one lane's flusher; bounded in bytes (``put`` waits when full)."""

    def __init__(self) -> None:
        self.pending: deque[bytes] = deque()
        self.size = 0
        self.error: ShuttingDown | PeerUnavailable | None = None
        self._data = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()

    @property
    def full(self) -> bool:
        return self.size >= OUTBOX_LIMIT

    async def put(self, packets: Sequence[bytes]) -> None:
        while self.full and self.error is None:
            await self._room.park()
        if self.error is not None:
            raise copy.copy(self.error)  # a fresh exception (same type and fields) per caller
        self.pending.extend(packets)
        self.size += sum(len(p) for p in packets)
        self._data.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_pending(self) -> None:
        while not self.pending:
            await self._data.park()

    def take(self, budget: int) -> list[bytes]:
        """Pop packets in order while their encoded size fits ``budget`` (always at least one)."""
        pending = self.pending
        packets = [pending.popleft()]
        used = len(packets[0]) + RECORD_COST
        while pending and used + len(pending[0]) + RECORD_COST <= budget:
            packet = pending.popleft()
            used += len(packet) + RECORD_COST
            packets.append(packet)
        self.size -= sum(len(p) for p in packets)
        self._room.unpark_all()
        return packets

    def fail(self, error: ShuttingDown | PeerUnavailable) -> None:
        self.error = error
        self._room.unpark_all()
