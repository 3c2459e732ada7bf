"""``transport.inbound`` of a network link transport: what the link tasks received, handed to
the runtime, with flow-control credit given back as the runtime takes each batch.

Shared by the WebRTC and WebSocket transports: their link tasks put ``(link, item)`` on a
bounded memory channel; taking a batch of packets tells its link (``Link.took``), which
grants the sender credit for it. Credit follows what the runtime consumed, not what arrived,
so a runtime that falls behind stops its senders instead of buffering for them.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import trio

from ._abc import Inbound, InboundPackets


class CreditedLink(Protocol):
    def took(self, item: InboundPackets) -> None:
        """The runtime took ``item`` (grant its sender credit, batched as the link does)."""


L = TypeVar("L", bound=CreditedLink)


class InboundChannel(trio.abc.ReceiveChannel[Inbound], Generic[L]):
    """``transport.inbound``: grants flow-control credits as the runtime takes batches."""

    def __init__(self, recv: trio.MemoryReceiveChannel[tuple[L | None, Inbound]], name: str):
        self._recv = recv
        self._name = name

    def __repr__(self) -> str:
        waiting = self._recv.statistics().current_buffer_used
        return f"<{self._name} inbound {waiting} waiting>"

    async def receive(self) -> Inbound:
        link, item = await self._recv.receive()
        _took(link, item)
        return item

    def receive_nowait(self) -> Inbound:
        """Take one item without waiting (raises ``trio.WouldBlock`` when none waits)."""
        link, item = self._recv.receive_nowait()
        _took(link, item)
        return item

    def close(self) -> None:
        self._recv.close()

    async def aclose(self) -> None:
        self._recv.close()
        await trio.lowlevel.checkpoint()


def _took(link: CreditedLink | None, item: Inbound) -> None:
    if link is not None and isinstance(item, InboundPackets):
        link.took(item)
