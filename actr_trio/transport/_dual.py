"""The node's network transport: WebRTC and direct WebSocket links behind one ``Transport``.

Choosing a lane for a peer (:meth:`DualTransport.send`), first match wins:

1. an open WebSocket link to it, whoever dialled (a peer that dialled us is answered on the
   link it opened);
2. the lane that last carried data to or from it;
3. WebSocket if the peer advertises an address (``SignalingSession.peer_address``) and
   ``Config.websocket_lane`` is ``"prefer"``; otherwise WebRTC.

Fallback: when the chosen lane fails to reach the peer (``PeerUnavailable``: refused,
unreachable, the proof failed, no answer in time), the other lane is tried once, if it applies
(WebSocket needs an advertised address and ``websocket_lane`` other than ``"never"``), and the
switch is counted and logged. WebRTC stays the default: a peer that advertises nothing, e.g.
behind a NAT, is only ever reached over WebRTC. Media tracks always use WebRTC
(:meth:`publish_track`), whatever carries the data.

``inbound`` is the WebSocket transport's channel; WebRTC's batches are moved into it by one task
(:meth:`_pump_webrtc`), so both lanes' flow control still waits on the runtime's reads (the pump
holds at most one batch).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio

from .._config import Config
from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT
from ..errors import PeerUnavailable
from ._abc import Inbound, InboundPackets, MediaSource, SignalingSession, Transport
from ._websocket import WebSocketStatistics, WebSocketTransport

if TYPE_CHECKING:
    from ._websocket_link import Link

__all__ = ["DualStatistics", "DualTransport"]

log = logging.getLogger(TRANSPORT)

LaneName = Literal["webrtc", "websocket"]
WEBRTC: Final = "webrtc"
WEBSOCKET: Final = "websocket"
#: Peers whose last lane is remembered (least recently used forgotten first).
MAX_ROUTES: Final = 4096


@attrs.frozen
class DualStatistics:
    """Counters of the node's network transport (a snapshot).

    Attributes:
        links: the lane each peer is reached over now (``"websocket"`` or ``"webrtc"``),
            by peer, for peers linked or remembered.
        fallbacks_to_webrtc: sends that failed to open a WebSocket link and went over WebRTC.
        fallbacks_to_websocket: sends that failed to open a WebRTC link and went over a
            WebSocket link.
        websocket: the WebSocket transport's own counters.
        webrtc: the WebRTC transport's own counters (its ``statistics()``), or None.
    """

    links: dict[ActrId, str]
    fallbacks_to_webrtc: int
    fallbacks_to_websocket: int
    websocket: WebSocketStatistics
    webrtc: Any


class DualTransport:
    """WebRTC and WebSocket links, chosen per peer (see the module docstring).

    Args:
        config: ``websocket_lane`` and ``listen``; the rest is for the two transports.
        webrtc: the WebRTC transport (default: ``WebRTCTransport(config)``).
        websocket: the WebSocket transport (default: ``WebSocketTransport(config)``).
    """

    name: Final = "dual"

    def __init__(
        self,
        config: Config,
        *,
        webrtc: Transport | None = None,
        websocket: WebSocketTransport | None = None,
    ) -> None:
        if webrtc is None:
            from ._webrtc import WebRTCTransport

            webrtc = WebRTCTransport(config)
        self._config = config
        self._webrtc = webrtc
        self._websocket = websocket if websocket is not None else WebSocketTransport(config)
        self._session: SignalingSession | None = None
        self._routes: OrderedDict[ActrId, LaneName] = OrderedDict()
        self._fallbacks = {WEBRTC: 0, WEBSOCKET: 0}

    def __repr__(self) -> str:
        return f"<DualTransport {self._websocket!r} {self._webrtc!r}>"

    @property
    def websocket(self) -> WebSocketTransport:
        return self._websocket

    @property
    def webrtc(self) -> Transport:
        return self._webrtc

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        """What peers sent over either lane; ends once both transports closed."""
        return self._websocket.inbound

    def statistics(self) -> DualStatistics:
        """A snapshot: the lane of each peer and both transports' counters."""
        links: dict[ActrId, str] = dict(self._routes)
        for peer in self._websocket.open_links():
            links[peer] = WEBSOCKET
        webrtc_statistics = getattr(self._webrtc, "statistics", None)
        return DualStatistics(
            links=links,
            fallbacks_to_webrtc=self._fallbacks[WEBRTC],
            fallbacks_to_websocket=self._fallbacks[WEBSOCKET],
            websocket=self._websocket.statistics(),
            webrtc=None if webrtc_statistics is None else webrtc_statistics(),
        )

    def links(self) -> dict[ActrId, str]:
        """The lane each linked or remembered peer is reached over now."""
        return self.statistics().links

    # ------------------------------------------------------------------ lifecycle

    async def listen(self, *, task_status: trio.TaskStatus[str | None]) -> None:
        """Bind ``Config.listen`` (see ``WebSocketTransport.listen``)."""
        await self._websocket.listen(task_status=task_status)

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run both transports until cancelled; ``started`` once both may send."""
        self._session = session
        pump = self._websocket.inbound_sender()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._websocket.run, session)
            try:
                await nursery.start(self._webrtc.run, session)
            except BaseException:
                pump.close()
                raise
            nursery.start_soon(self._pump_webrtc, pump)
            task_status.started()

    async def _pump_webrtc(self, pump: trio.MemorySendChannel[tuple[Link | None, Inbound]]) -> None:
        with pump:
            async for item in self._webrtc.inbound:
                if isinstance(item, InboundPackets) and item.peer not in self._routes:
                    self._remember(item.peer, WEBRTC)
                try:
                    await pump.send((None, item))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return

    # ------------------------------------------------------------------ sending

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        """Send on the lane chosen for ``peer``, falling back to the other one once.

        Raises:
            PeerUnavailable: neither lane reaches the peer (the last lane's error).
            ShuttingDown: the transport is closed.
        """
        first = self._choose(peer)
        try:
            await self._by_name(first).send(peer, lane, packets)
        except PeerUnavailable as exc:
            other: LaneName = WEBRTC if first == WEBSOCKET else WEBSOCKET
            if self._routes.get(peer) == first:
                del self._routes[peer]
            if not self._applies(peer, other):
                raise
            self._fallbacks[other] += 1
            log.info("no %s link to %s (%s): trying %s", first, peer, exc, other)
            await self._by_name(other).send(peer, lane, packets)
            self._remember(peer, other)
            return
        self._remember(peer, first)

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        """Media goes over WebRTC whatever lane carries the data (tracks need it)."""
        await self._webrtc.publish_track(peer, track)

    def forget(self, peer: ActrId) -> None:
        """Drop both links to ``peer`` and the lane remembered for it."""
        self._routes.pop(peer, None)
        self._websocket.forget(peer)
        self._webrtc.forget(peer)

    def _choose(self, peer: ActrId) -> LaneName:
        if self._websocket.linked(peer):
            return WEBSOCKET
        remembered = self._routes.get(peer)
        if remembered is not None:
            return remembered
        if self._config.websocket_lane == "prefer" and self._address(peer) is not None:
            return WEBSOCKET
        return WEBRTC

    def _applies(self, peer: ActrId, lane: LaneName) -> bool:
        if lane == WEBRTC:
            return True
        return self._config.websocket_lane != "never" and self._address(peer) is not None

    def _address(self, peer: ActrId) -> str | None:
        # A session wrapper without peer_address (a test double) advertises nothing.
        lookup = getattr(self._session, "peer_address", None)
        return None if lookup is None else lookup(peer)

    def _by_name(self, lane: LaneName) -> Transport:
        return self._websocket if lane == WEBSOCKET else self._webrtc

    def _remember(self, peer: ActrId, lane: LaneName) -> None:
        self._routes[peer] = lane
        self._routes.move_to_end(peer)
        while len(self._routes) > MAX_ROUTES:
            self._routes.popitem(last=False)
