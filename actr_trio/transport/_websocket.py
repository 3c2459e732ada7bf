"""Direct WebSocket transport: trio-websocket links between nodes that can reach each other.

Pure Trio (no asyncio, no aiortc). A node with ``Config.listen`` binds a TCP listener
(:meth:`WebSocketTransport.listen`, before registration, so the bound address is advertised in
it); peers learn the address from discovery (``SignalingSession.peer_address``) and dial it.
Any node can dial; only a listening node can be dialled. One connection per pair of nodes,
used in both directions, whoever dialled.

Identity. The first messages of every connection are the handshake of ``_websocket_handshake``:
each side signs the other's fresh nonce with its node key and shows its credential from
signaling, so the node at the other end of an open link is the one its credential names,
exactly as the DTLS binding proves it on WebRTC. A connection that fails the proof is closed
with a WebSocket close code and a reason (:data:`CLOSE_NOT_AUTHENTICATED`) and counted; the
dialler's senders get ``PeerNotAuthenticated``.

Admission. The listener keeps the bounds of WebRTC links (``_admission``): at most
``max_negotiating_links`` connections in their handshake at once and ``max_links`` links in
all (a connection beyond either is closed at once, before any byte is read, and counted);
each handshake must end within ``connect_timeout``; an authenticated dialler then passes
:meth:`Admission.check_offer` (its rate, the node's rate, the caps) like a WebRTC offer, and a
refusal closes the connection with :data:`CLOSE_REFUSED` and ``"CODE message"``, which the
dialler raises as ``LinkRefused``.

Glare. When both nodes dial each other at once, the connection dialled by the lower ``ActrId``
stays (as on WebRTC): the higher one's dial is closed with :data:`CLOSE_GLARE` and its senders
wait for the other connection. An authenticated connection from a peer replaces the link we
had with it (it restarted).

Lanes, framing, flow control (``_websocket_link``): the same ``FrameEncoder`` frames per lane
as WebRTC, a lane byte in front, and the same credit windows granted back on a CONTROL lane as
the runtime consumes; TCP's own backpressure does the rest. SIGNAL, RELIABLE and LATENCY_FIRST
all arrive complete and in order here (LATENCY_FIRST is still dropped, and credited at once,
when the runtime's inbound buffer is over half full). Media tracks are WebRTC-only:
:meth:`publish_track` raises ``MediaUnsupported``.

Shutdown: cancelling ``run`` closes every connection (a close frame, bounded by
:data:`CLOSE_GRACE`); the listener socket closes when ``listen`` is cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .._config import Config
from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT, RateLimiter
from ..errors import (
    LinkRefused,
    MediaUnsupported,
    PeerNotAuthenticated,
    PeerUnavailable,
    ShuttingDown,
)
from . import _websocket_handshake as handshake
from ._abc import Inbound, MediaSource, SignalingSession
from ._admission import Admission, encode_refusal
from ._frames import MAX_FRAME_SIZE, PACKET_OVERHEAD, FrameEncoder
from ._inbound import InboundChannel
from ._websocket_address import parse_address
from ._websocket_greet import (
    CLOSE_GLARE,
    CLOSE_NOT_AUTHENTICATED,
    CLOSE_REFUSED,
    CLOSE_TIMEOUT,
    CLOSE_WRONG_NODE,
    WrongNode,
    closed_during_handshake,
    greet_as_dialler,
    greet_as_listener,
)
from ._websocket_link import (
    INBOUND_BUFFER,
    INDEX_OF_LANE,
    Counters,
    Link,
    WebSocketStatistics,
)
from ._websocket_listener import RESOURCE, accept, bind_listener, remote_address, upgrade
from ._websocket_serve import link_error, serve, write_now

__all__ = ["WebSocketStatistics", "WebSocketTransport"]

log = logging.getLogger(TRANSPORT)

#: Seconds a link may take from first use (dialler) or accept (listener) to open.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds a close handshake may take at link teardown (shielded).
CLOSE_GRACE: Final = 2.0
#: A close reason is at most 123 bytes (a control frame's payload less the code).
_MAX_REASON: Final = 120


class WebSocketTransport:
    """The direct WebSocket implementation of ``Transport`` (see the module docstring).

    Args:
        config: ``listen`` (what :meth:`listen` binds), ``max_payload`` and the admission
            limits (``max_links``, ``max_negotiating_links``, ``offers_per_peer_rate``,
            ``offers_per_peer_burst``, ``offers_total_rate``) are used.
        connect_timeout: seconds a link may take to open (dial and handshake).
        max_frame_size: largest frame written per message.
    """

    name: Final = "websocket"

    def __init__(
        self,
        config: Config,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        FrameEncoder(max_frame_size)  # validates the size
        self._config = config
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        self._max_packet = config.max_payload + PACKET_OVERHEAD
        self._max_message = max_frame_size + 1
        self._session: SignalingSession | None = None
        self._local: ActrId | None = None
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._listener: trio.SocketListener | None = None
        self._address: str | None = None
        self._links: dict[ActrId, Link] = {}
        self._arrived = trio.lowlevel.ParkingLot()  # unparked when a link registers
        self._handshaking = 0  # accepted connections still in their handshake
        self._inbound_send, inbound_recv = trio.open_memory_channel[tuple[Link | None, Inbound]](
            INBOUND_BUFFER
        )
        self._inbound = InboundChannel(inbound_recv, "WebSocket")
        self._counters = Counters()
        self._admission = Admission(
            max_links=config.max_links,
            max_negotiating=config.max_negotiating_links,
            peer_rate=config.offers_per_peer_rate,
            peer_burst=config.offers_per_peer_burst,
            total_rate=config.offers_total_rate,
            max_payload=handshake.MAX_HANDSHAKE_MESSAGE,
            now=time.monotonic(),
        )
        self._rate = RateLimiter(trio.current_time)

    def __repr__(self) -> str:
        return f"<WebSocketTransport {self._local} peers={len(self._links)} at {self._address}>"

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        """What peers sent to this node; ends (EndOfChannel) when the transport closed."""
        return self._inbound

    @property
    def address(self) -> str | None:
        """The advertised listen address once :meth:`listen` bound it, else None."""
        return self._address

    def statistics(self) -> WebSocketStatistics:
        """A snapshot of this transport's counters."""
        return WebSocketStatistics(
            address=self._address,
            peers=len(self._links),
            admission=self._admission.statistics(),
            **attrs.asdict(self._counters),
        )

    def linked(self, peer: ActrId) -> bool:
        """Whether an open link to ``peer`` exists (whoever dialled)."""
        link = self._links.get(peer)
        return link is not None and link.ready.is_set() and link.failure is None

    def open_links(self) -> list[ActrId]:
        """Peers with an open link now."""
        return [peer for peer in self._links if self.linked(peer)]

    def links(self) -> dict[ActrId, str]:
        """Each peer with an open link, reached over ``"websocket"`` (``NodeStatistics.links``)."""
        return dict.fromkeys(self.open_links(), self.name)

    def inbound_sender(self) -> trio.MemorySendChannel[tuple[Link | None, Inbound]]:
        """A clone of the inbound channel's send side, for a transport that shares ``inbound``
        (``DualTransport``): items sent with ``None`` are delivered as they are; ``inbound``
        ends once ``run`` ended and every clone was closed."""
        return self._inbound_send.clone()

    # ------------------------------------------------------------------ lifecycle

    async def listen(self, *, task_status: trio.TaskStatus[str | None]) -> None:
        """Bind ``Config.listen``; ``task_status.started(address)`` with the address to
        advertise (``None`` without ``Config.listen``); hold the socket until cancelled.

        Raises:
            OSError: the address cannot be bound (in use, not this host's).
        """
        if self._config.listen is None:
            task_status.started(None)
            return
        listener, self._address = await bind_listener(self._config.listen)
        self._listener = listener
        log.info("taking direct WebSocket links on %s", self._address)
        try:
            task_status.started(self._address)
            await trio.sleep_forever()
        finally:
            self._listener = None
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started()`` once ``send`` may be called.

        Accepts connections on the socket :meth:`listen` bound, if it did. Cancellation
        closes every link; ``inbound`` then ends.
        """
        if self._session is not None:
            raise RuntimeError(f"{self!r} was already run")
        self._session = session
        self._local = session.actr_id
        try:
            with self._inbound_send:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self._listener is not None:
                        nursery.start_soon(self._serve_listener, self._listener)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            for link in self._links.values():
                for outbox in link.outboxes.values():
                    outbox.fail(ShuttingDown("transport is closed"))
            self._links.clear()

    # ------------------------------------------------------------------ sending

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        """Send ``packets`` to ``peer`` on ``lane``, dialling the peer's advertised address
        on first use.

        Raises:
            PeerUnavailable: the peer advertises no address, or the link did not open
                (``PeerNotAuthenticated``: its proof failed; ``LinkRefused``: it refused us, or
                this node holds ``max_links`` links).
            ShuttingDown: the transport is closed.
        """
        if lane not in INDEX_OF_LANE:
            raise ValueError(f"lane={lane!r} is not a data lane (media tracks need WebRTC)")
        link = await self._link_for(peer)
        if not await write_now(link, lane, packets, self._counters):
            await link.outboxes[lane].put(packets)

    def forget(self, peer: ActrId) -> None:
        """Drop the link to ``peer``; the next ``send`` dials again."""
        link = self._links.pop(peer, None)
        if link is not None:
            self._counters.links_forgotten += 1
            link.superseded = True
            link.break_("forgotten: the peer stopped acknowledging or said goodbye")

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        """Media tracks need WebRTC.

        Raises:
            MediaUnsupported: always.
        """
        await trio.lowlevel.checkpoint()
        raise MediaUnsupported(
            f"cannot publish track {track.id!r} to {peer} over a direct WebSocket link: media"
            " tracks travel over WebRTC only"
        )

    async def _link_for(self, peer: ActrId) -> Link:
        while True:
            if self._closed or self._local is None or self._nursery is None:
                raise ShuttingDown("transport is closed")
            link = self._links.get(peer)
            if link is None:
                link = self._dial(peer)
            await link.ready.wait()
            if link.failure is None:
                return link
            if link.glare:
                await self._wait_arrival(peer, link)
            elif not link.superseded:
                raise link.error()

    def _dial(self, peer: ActrId) -> Link:
        assert self._session is not None
        assert self._nursery is not None
        address = self._session.peer_address(peer)
        if address is None:
            raise PeerUnavailable(f"{peer} advertises no WebSocket address")
        refusal = self._admission.check_outbound()
        if refusal is not None:
            raise LinkRefused(f"{peer}: not linked: {refusal.message}", refusal.code)
        link = Link(peer, True, self._max_frame_size, self._max_packet, address)
        self._links[peer] = link
        self._admission.link_started()
        self._nursery.start_soon(self._run_dialled, link)
        return link

    async def _wait_arrival(self, peer: ActrId, old: Link) -> None:
        """After glare: wait (bounded) for the peer's own connection to register."""
        with trio.move_on_after(self._connect_timeout):
            while self._links.get(peer) in (None, old):
                await self._arrived.park()

    # ------------------------------------------------------------------ dialling

    async def _run_dialled(self, link: Link) -> None:
        ws: WebSocketConnection | None = None
        stream: trio.SocketStream | None = None
        try:
            async with trio.open_nursery() as ws_nursery:
                try:
                    with trio.move_on_after(self._connect_timeout) as connecting:
                        stream = await self._connect(link)
                        if stream is not None:
                            ws = await self._dial_handshake(ws_nursery, link, stream)
                    if connecting.cancelled_caught:
                        link.break_(f"did not connect within {self._connect_timeout} s")
                    if ws is not None and not link.broken.is_set():
                        await self._serve(link, ws)
                except Exception as exc:  # a bug or an unexpected library error: this link only
                    self._link_error(link, exc)
                finally:
                    # Bounded inside too; shielded here so that the link's close runs whole.
                    with trio.move_on_after(2 * CLOSE_GRACE, shield=True):
                        await self._close(link, ws)
                        # Also when the peer closed the WebSocket first (trio-websocket then
                        # leaves the TCP stream to its reader task, which is cancelled next).
                        if stream is not None:
                            await trio.aclose_forcefully(stream)
                    ws_nursery.cancel_scope.cancel()
        finally:
            self._ended(link)

    async def _connect(self, link: Link) -> trio.SocketStream | None:
        try:
            host, port = parse_address(link.address)
            return await trio.open_tcp_stream(host, port)
        except (OSError, ValueError) as exc:
            link.break_(f"direct WebSocket to {link.address} failed: {exc!r}")
            return None

    async def _dial_handshake(
        self, nursery: trio.Nursery, link: Link, stream: trio.SocketStream
    ) -> WebSocketConnection | None:
        """Connect to the peer and prove identities both ways; the link is broken on failure
        (and the connection, if there is one, still returned for the caller to close)."""
        session = self._session
        assert session is not None
        try:
            ws = await wrap_client_stream(
                nursery,
                stream,
                link.address,
                RESOURCE,
                message_queue_size=1,
                max_message_size=self._max_message,
            )
        except (OSError, HandshakeError, ConnectionClosed) as exc:
            link.break_(f"direct WebSocket to {link.address} failed: {exc!r}")
            return None
        try:
            await greet_as_dialler(ws, session, peer=link.peer)
        except PeerNotAuthenticated as exc:
            self._counters.handshakes_refused += 1
            self._rate.log(
                log,
                logging.WARNING,
                (link.peer, "proof"),
                "refused the direct WebSocket link to %s at %s: %s",
                link.peer,
                link.address,
                exc,
            )
            link.break_(f"WebSocket handshake refused: {exc}", PeerNotAuthenticated)
            await self._refuse(ws, CLOSE_NOT_AUTHENTICATED, str(exc))
        except ConnectionClosed as exc:
            closed_during_handshake(link, exc)
        return ws  # the caller closes it (link broken: without serving it)

    # ------------------------------------------------------------------ accepting

    async def _serve_listener(self, listener: trio.SocketListener) -> None:
        assert self._nursery is not None
        while True:
            stream = await accept(listener)
            if stream is None:
                return  # listen() ended: no more connections
            admission = self._admission
            if (
                self._handshaking >= admission.max_negotiating
                or admission.links + self._handshaking >= admission.max_links
            ):
                self._counters.connections_refused += 1
                self._rate.log(
                    log,
                    logging.WARNING,
                    "ws refused",
                    "refused a WebSocket connection: %d in their handshake, %d links"
                    " (max_negotiating_links=%d, max_links=%d)",
                    self._handshaking,
                    admission.links,
                    admission.max_negotiating,
                    admission.max_links,
                )
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            self._handshaking += 1
            self._nursery.start_soon(self._run_accepted, stream)

    async def _run_accepted(self, stream: trio.SocketStream) -> None:
        link: Link | None = None
        ws: WebSocketConnection | None = None
        counted = True
        try:
            async with trio.open_nursery() as ws_nursery:
                try:
                    with trio.move_on_after(self._connect_timeout) as connecting:
                        ws, link = await self._accept_handshake(ws_nursery, stream)
                    self._handshaking -= 1
                    counted = False
                    if connecting.cancelled_caught:
                        self._counters.handshake_timeouts += 1
                        log.debug("a WebSocket handshake did not finish in time")
                    if link is not None and ws is not None:
                        await self._serve(link, ws)
                except Exception as exc:  # a bug or an unexpected library error: this link only
                    if link is not None:
                        self._link_error(link, exc)
                    else:
                        log.warning("a WebSocket connection failed in its handshake: %r", exc)
                finally:
                    if counted:
                        self._handshaking -= 1
                    # Bounded inside too; shielded here so that the link's close runs whole.
                    with trio.move_on_after(2 * CLOSE_GRACE, shield=True):
                        if link is not None:
                            await self._close(link, ws)
                        elif ws is not None:
                            await self._refuse(ws, CLOSE_TIMEOUT, "handshake did not finish")
                        await trio.aclose_forcefully(stream)
                    ws_nursery.cancel_scope.cancel()
        finally:
            if link is not None:
                self._ended(link)

    async def _accept_handshake(
        self, nursery: trio.Nursery, stream: trio.SocketStream
    ) -> tuple[WebSocketConnection | None, Link | None]:
        """Upgrade, read the dialler's proof, admit it: the new link, or (ws, None) refused."""
        session = self._session
        assert session is not None
        ws = await upgrade(nursery, stream, max_message=self._max_message)
        if ws is None:
            return None, None
        try:
            hello, size = await greet_as_listener(ws, session)
        except WrongNode as exc:
            await self._refuse(ws, CLOSE_WRONG_NODE, str(exc))
            return ws, None
        except PeerNotAuthenticated as exc:
            self._counters.handshakes_refused += 1
            self._rate.log(
                log,
                logging.WARNING,
                "ws proof",
                "refused a direct WebSocket connection from %s: %s",
                remote_address(stream),
                exc,
            )
            await self._refuse(ws, CLOSE_NOT_AUTHENTICATED, str(exc))
            return ws, None
        except ConnectionClosed:
            return ws, None
        return ws, await self._admit(ws, hello.dialler, size, remote_address(stream))

    async def _admit(
        self, ws: WebSocketConnection, peer: ActrId, size: int, remote: str
    ) -> Link | None:
        """Admit the authenticated ``peer`` (or refuse it, closing ``ws``); send ACCEPT."""
        assert self._local is not None
        current = self._links.get(peer)
        if current is not None and current.dialler and not current.ready.is_set():
            if self._local < peer:
                await self._refuse(ws, CLOSE_GLARE, f"{self._local} is dialling {peer}")
                return None
            current.superseded = True
            current.break_("glare: the peer's dial is kept")
        now = time.monotonic()
        replaces = None if current is None else current.ready.is_set()
        refusal = self._admission.check_offer(peer, size, now, replaces=replaces)
        if refusal is not None:
            self._rate.log(
                log,
                logging.WARNING,
                ("ws refused", refusal.code),
                "refused a direct WebSocket link from %s: %s",
                peer,
                refusal.message,
            )
            await self._refuse(ws, CLOSE_REFUSED, encode_refusal(refusal))
            return None
        if current is not None and self._links.get(peer) is current:
            current.superseded = True
            current.break_("superseded by a new link from the peer")
        link = Link(peer, False, self._max_frame_size, self._max_packet, remote)
        self._links[peer] = link
        self._admission.link_started()
        await ws.send_message(handshake.accept())
        return link

    async def _refuse(self, ws: WebSocketConnection, code: int, reason: str) -> None:
        with trio.move_on_after(CLOSE_GRACE, shield=True):
            await ws.aclose(code, _reason(reason))

    # ------------------------------------------------------------------ an open link

    async def _serve(self, link: Link, ws: WebSocketConnection) -> None:
        self._counters.links_opened += 1
        self._admission.link_ready()
        link.opened = True
        link.ready.set()
        self._arrived.unpark_all()
        log.info(
            "linked to %s over WebSocket (%s, %s)",
            link.peer,
            "we dialled" if link.dialler else "it dialled",
            link.address,
        )
        await serve(
            link,
            ws,
            counters=self._counters,
            inbound=self._inbound_send,
            max_frame_size=self._max_frame_size,
            rate=self._rate,
        )

    def _link_error(self, link: Link, exc: Exception) -> None:
        link_error(link, exc, self._counters, self._rate)

    # ------------------------------------------------------------------ teardown

    async def _close(self, link: Link, ws: WebSocketConnection | None) -> None:
        """Fail the link's senders, close the connection (shielded, bounded)."""
        if link.failure is None:
            link.break_("transport closed")
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
        error: ShuttingDown | PeerUnavailable = (
            ShuttingDown("transport is closed") if self._closed else link.error()
        )
        for outbox in link.outboxes.values():
            outbox.fail(error)
        link.ready.set()
        if ws is not None:
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                await ws.aclose(1000, _reason(link.failure or "closed"))
        quiet = self._closed or link.superseded or link.failure == "transport closed"
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "WebSocket link to %s closed: %s",
            link.peer,
            link.failure,
        )

    def _ended(self, link: Link) -> None:
        """Account for a link whose task ended (it was counted by ``link_started``)."""
        if not link.superseded and not self._closed:
            self._counters.links_failed += 1
            if link.dialler and not link.opened:
                self._counters.dials_failed += 1
        self._admission.link_ended(was_ready=link.opened)


def _reason(text: str) -> str:
    """A close reason that fits a control frame (at most 123 bytes of UTF-8)."""
    return text.encode()[:_MAX_REASON].decode(errors="ignore")
