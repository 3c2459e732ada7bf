"""A transport wrapper that counts packets and bytes per lane and direction (metrics only).

A node with ``Config.metrics`` talks to its transport through :class:`MeteredTransport`, so the
bytes of every transport implementation are counted the same way, at the one boundary between
the runtime and the transport; the transport's own figures (frames, links) are read from its
``statistics()`` at scrape time. In-process hand-overs never reach a transport and are not
counted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import trio

from ._ids import ActrId
from ._lanes import Lane
from .transport._abc import Inbound, InboundPackets, MediaSource, SignalingSession, Transport

__all__ = ["IN", "OUT", "MeteredTransport", "transport_name"]

IN: Final = "in"
OUT: Final = "out"

#: (lane, direction) -> [packets, bytes].
Traffic = dict[tuple[Lane, str], list[int]]

_NAMES: Final = {"WebRTCTransport": "webrtc", "LoopbackTransport": "loopback"}


def transport_name(transport: object) -> str:
    """The ``transport`` label of a transport object (``webrtc``, ``loopback``, ...)."""
    name = type(transport).__name__
    return _NAMES.get(name) or name.removesuffix("Transport").lower() or name


def _count(traffic: Traffic, lane: Lane, direction: str, packets: Sequence[bytes]) -> None:
    entry = traffic.get((lane, direction))
    if entry is None:
        entry = traffic[(lane, direction)] = [0, 0]
    entry[0] += len(packets)
    entry[1] += sum(map(len, packets))


@final
class _MeteredInbound(trio.abc.ReceiveChannel[Inbound]):
    def __init__(self, inner: trio.abc.ReceiveChannel[Inbound], traffic: Traffic) -> None:
        self._inner = inner
        self._traffic = traffic

    async def receive(self) -> Inbound:
        item = await self._inner.receive()
        if isinstance(item, InboundPackets):
            _count(self._traffic, item.lane, IN, item.packets)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()


@final
class MeteredTransport:
    """``inner`` with its packets and bytes counted in :attr:`traffic` (see the module
    docstring); everything else is ``inner``'s."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = transport_name(inner)
        self.traffic: Traffic = {}
        self._inbound: _MeteredInbound | None = None

    def __getattr__(self, name: str) -> object:
        # Anything beyond the Transport protocol (statistics(), test hooks) is the inner one's.
        return getattr(self.inner, name)

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.inner.run(session, task_status=task_status)

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        if self._inbound is None:
            self._inbound = _MeteredInbound(self.inner.inbound, self.traffic)
        return self._inbound

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        await self.inner.send(peer, lane, packets)
        _count(self.traffic, lane, OUT, packets)

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        await self.inner.publish_track(peer, track)

    def forget(self, peer: ActrId) -> None:
        self.inner.forget(peer)
