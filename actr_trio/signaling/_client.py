"""The node's signaling client: trio-websocket around the sans-IO :class:`ClientProtocol`.

:meth:`SignalingClient.run` is step 1 of a node's start order: it connects,
authenticates and registers, hands the runtime a session, then keeps the registration alive
(heartbeats; reconnection with capped exponential backoff and re-registration under the same
``ActrId``) until cancelled, when it unregisters. Invariants: one reader task per connection
is the only consumer of the WebSocket; the relay channel has one owner (``run``) that closes it;
requests in flight when a connection drops fail with ``SignalingError`` at once. Its parts:
the WebSocket's opening and closing (``_client_websocket.py``), the registered connection and
its requests (``_client_link.py``) and the issuer key it trusts (``_client_trust.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, final

import attrs
import outcome
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
)

from .._acl import Visibility
from .._config import Config
from .._heartbeat_report import HeartbeatReport
from .._identity import NodeKey
from .._ids import ActrId, ActrType
from .._logging import SIGNALING, RateLimiter
from ..errors import (
    AuthError,
    ServerCertificateError,
    SessionTakenOver,
    SignalingError,
)
from ..transport._abc import Relay, SignalingConnector, SignalingSession
from ._client_link import Link
from ._client_protocol import (
    ClientProtocol,
    CredentialRenewed,
    Outgoing,
    PeersFound,
    Registered,
    RelayDelivered,
    RelayReceived,
    RequestFailed,
    SessionFailed,
)
from ._client_trust import IssuerTrust
from ._client_websocket import CONNECT_TIMEOUT, UNREGISTER_GRACE, signaling_endpoint, with_websocket
from ._protocol import (
    Frame,
    FrameError,
    encode_frame,
)
from ._reports import report_to_wire

logger = logging.getLogger(SIGNALING)

# Relays waiting for the transport to take them. Offers/answers/ICE come a few per link, so this
# absorbs a burst of links opening at once; beyond it the reader waits (backpressure), it never
# drops a relay.
RELAY_BUFFER: Final = 64
# Reconnection backoff: first retry after BACKOFF_MIN seconds, doubling up to BACKOFF_MAX.
BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 2.0
# Heartbeats per presence_timeout the server announced: 3 tolerates two lost or late ones.
_HEARTBEATS_PER_TIMEOUT: Final = 3
# Seconds the node's report may take before a heartbeat goes without it (presence first).
REPORT_BOUND: Final = 1.0
#: Most peers one discover() returns (it follows the server's pages up to this many): the
#: server's default discovery burst, so one call never waits on the budget it spends.
MAX_DISCOVERED: Final = 10_000
#: Peers' advertised listen addresses remembered (discovery results; oldest forgotten first).
MAX_ADDRESSES: Final = 4096


class _ConnectionLost(Exception):
    """Internal: the current connection ended; reconnect."""


@final
@attrs.frozen
class SignalingClientStatistics:
    """Snapshot of a signaling client.

    Attributes:
        actr_id: the registered identity (``None`` before the first registration).
        connected: whether a registered connection is up right now.
        registrations: successful registrations, the first one included.
        connection_failures: connection attempts that failed or connections that dropped.
        renewals: credentials renewed by the server on a registered connection (a
            re-registration gets a fresh one too, counted in ``registrations`` only).
    """

    actr_id: ActrId | None
    connected: bool
    registrations: int
    connection_failures: int
    renewals: int = 0


@final
class _Session:
    """The :class:`SignalingSession` handed to the runtime; valid across reconnections."""

    def __init__(
        self,
        actr_id: ActrId,
        relays: trio.MemoryReceiveChannel[Relay],
        client: SignalingClient,
        node_key: NodeKey,
    ) -> None:
        self._actr_id = actr_id
        self._relays = relays
        self._client = client
        self._node_key = node_key

    def __repr__(self) -> str:
        return f"<signaling session {self._actr_id}>"

    @property
    def actr_id(self) -> ActrId:
        """This node's identity (the same across reconnections)."""
        return self._actr_id

    @property
    def node_key(self) -> NodeKey:
        """This node's key, whose possession every registration proved."""
        return self._node_key

    @property
    def credential(self) -> bytes:
        """The newest credential the server issued (renewed before expiry, and at every
        re-registration), verified against :attr:`issuer_key`."""
        return self._client._credential

    @property
    def issuer_key(self) -> bytes:
        """The pinned issuer public key every credential was verified against."""
        pinned = self._client._trust.pinned
        assert pinned is not None  # pinned at the first registration, before this session
        return pinned

    @property
    def relays(self) -> trio.MemoryReceiveChannel[Relay]:
        """Relays addressed to this node, in arrival order; ends when ``run`` returns."""
        return self._relays

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        """Nodes of ``actr_type`` present in this node's realm (including this node), by
        serial; the server's pages followed up to :data:`MAX_DISCOVERED` peers (a WARNING
        says when more were left out).

        Raises:
            SignalingError: not connected right now (the client is reconnecting: it does not
                wait), or the connection dropped before the answer came.
            SignalingOverloaded: over the server's discovery budget for this node.

        Cancellation:
            Safe at any point; a late answer is ignored.
        """
        found: list[ActrId] = []
        cursor = 0
        while True:
            # Each page on the current connection: pages are by serial, so a page asked on a
            # new connection after a reconnection continues where the last one ended.
            link = self._client._require_link()
            request_id, frame = link.protocol.discover(actr_type, cursor)
            page, next_cursor = await link.request(request_id, frame)
            found.extend(page)
            if len(found) > MAX_DISCOVERED or (next_cursor and len(found) == MAX_DISCOVERED):
                self._client._truncated(actr_type)
                return found[:MAX_DISCOVERED]
            if not next_cursor:
                return found
            if next_cursor <= cursor:
                raise SignalingError(
                    f"signaling server sent discovery cursor {next_cursor} after {cursor}"
                )
            cursor = next_cursor

    def peer_address(self, peer: ActrId) -> str | None:
        """The listen address ``peer`` advertised (``HOST:PORT``), as the last discovery that
        listed it reported; ``None``: it advertised none, or was never discovered."""
        return self._client._addresses.get(peer)

    async def send_relay(self, target: ActrId, kind: str, payload: str) -> None:
        """Relay an offer/answer/ICE ``payload`` to ``target``; returns once the server handed
        it to the target's connection.

        Raises:
            PeerUnavailable: ``target`` is not registered (or not present) in this realm.
            SignalingError: not connected right now (no waiting), or the connection dropped.
            ConfigError: ``kind`` is not ``"offer"``, ``"answer"`` or ``"ice"``.

        Cancellation:
            Safe, but once the frame was written the relay may still be delivered.
        """
        link = self._client._require_link()
        request_id, frame = link.protocol.relay(target, kind, payload)
        await link.request(request_id, frame)


@final
class SignalingClient:
    """Connects a node to the signaling server at ``config.signaling_url`` (a SignalingConnector).

    Args:
        config: uses ``realm``, ``realm_secret``, ``signaling_url`` and ``heartbeat_interval``.
        visibility: who may discover this node, from its ACLs (``ActrSystem`` passes it);
            empty: every node of the realm.

    Raises:
        ConfigError: ``config.signaling_url`` is not set.
    """

    def __init__(self, config: Config, *, visibility: Sequence[Visibility] = ()) -> None:
        self._visibility = tuple(visibility)
        self._config = config
        self._url, self._ssl_context = signaling_endpoint(config)
        self._link: Link | None = None
        self._actr_id: ActrId | None = None  # of the current run(), for statistics()
        self._registrations = 0
        self._failures = 0
        # The issuer key every credential must be signed by (the pinned one is read at run()).
        self._trust = IssuerTrust(config.trust_anchor, config.data_dir)
        self._credential = b""
        self._renewals = 0
        self._changed = trio.Event()
        self._running = False
        self._log = RateLimiter(trio.current_time)
        # Advertised in every Register of the current run() (direct WebSocket links).
        self._listen: str | None = None
        # Listen addresses peers advertised, as discovery reported them (bounded, newest kept).
        self._addresses: OrderedDict[ActrId, str] = OrderedDict()
        self._report_source: Callable[[], Awaitable[HeartbeatReport]] | None = None

    def __repr__(self) -> str:
        return f"<SignalingClient {self._actr_id or 'unregistered'} via {self._url}>"

    def statistics(self) -> SignalingClientStatistics:
        """A snapshot of the client's connection state."""
        return SignalingClientStatistics(
            actr_id=self._actr_id,
            connected=self._link is not None,
            registrations=self._registrations,
            connection_failures=self._failures,
            renewals=self._renewals,
        )

    def report_with(self, source: Callable[[], Awaitable[HeartbeatReport]]) -> None:
        """Await ``source()`` before each heartbeat and send the node's figures with it
        (``actr-trio inspect``, the status page). A source that fails or takes longer than
        :data:`REPORT_BOUND` costs that heartbeat its report, never the heartbeat."""
        self._report_source = source

    async def wait_registrations(self, count: int) -> None:
        """Wait until the client has registered ``count`` times in total.

        The first registration counts 1 and every re-registration after a reconnection adds 1,
        so ``wait_registrations(statistics().registrations + 1)`` waits for the next one.
        """
        while self._registrations < count:
            await self._changed.wait()

    async def wait_renewals(self, count: int) -> None:
        """Wait until the server has renewed this client's credential ``count`` times in total
        (``session.credential`` is then the renewed one)."""
        while self._renewals < count:
            await self._changed.wait()

    async def run(
        self,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey | None = None,
        *,
        listen: str | None = None,
        task_status: trio.TaskStatus[SignalingSession] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, authenticate and register; then keep the registration until cancelled.

        ``task_status.started(session)`` once registered. Then: heartbeats every
        ``min(config.heartbeat_interval, presence_timeout / 3)`` seconds; when the connection
        drops (or the server is silent for its presence timeout), reconnects with exponential backoff (0.05 s doubling to 2 s) and registers again
        under the same ``ActrId``. While disconnected, ``session.discover()`` and
        ``session.send_relay()`` raise ``SignalingError`` at once (they do not wait).

        Args:
            actr_type: what this node hosts.
            previous_id: the identity to register under again (a stale session holding it is
                taken over), or ``None`` for a fresh one.
            listen: the address this node takes direct WebSocket links on (``HOST:PORT``),
                advertised in every registration; ``None``: none.

        Raises:
            AuthError: the server rejected the realm credentials (first or later connection).
            SignalingError: the first registration failed; or another connection took over
                this node's ``ActrId``.

        Cancellation:
            Sends ``Unregister`` and closes the connection within a shielded
            ``UNREGISTER_GRACE`` (1 s), ends ``session.relays`` (``EndOfChannel``), then
            returns.
        """
        if self._running:
            raise RuntimeError("SignalingClient.run() is already running")
        self._running = True
        self._actr_id = None
        self._listen = listen
        relay_send, relay_receive = trio.open_memory_channel[Relay](RELAY_BUFFER)
        session: _Session | None = None
        key = NodeKey.generate() if node_key is None else node_key
        self._trust.load()
        backoff = BACKOFF_MIN
        known_id = previous_id  # after the first registration: the id to keep

        def on_registered(actr_id: ActrId) -> None:
            nonlocal session, backoff, known_id
            backoff = BACKOFF_MIN
            known_id = actr_id
            if session is None:
                session = _Session(actr_id, relay_receive, self, key)
                task_status.started(session)

        try:
            with relay_send:  # we own the send side; receivers then see EndOfChannel
                while True:
                    try:
                        await with_websocket(
                            self._url,
                            self._ssl_context,
                            partial(
                                self._connection,
                                actr_type=actr_type,
                                previous_id=known_id,
                                node_key=key,
                                relays=relay_send,
                                on_registered=on_registered,
                            ),
                        )
                    except (AuthError, SessionTakenOver):
                        # Fatal: retrying cannot fix credentials, and a node that took over our
                        # identity must not be taken over back (two nodes would flap forever).
                        raise
                    except (
                        _ConnectionLost,
                        HandshakeError,
                        ConnectionClosed,
                        OSError,
                        SignalingError,
                        trio.TooSlowError,
                    ) as exc:
                        self._failures += 1
                        if session is None:
                            if isinstance(exc, ServerCertificateError):
                                raise  # its message already says what to fix
                            raise SignalingError(
                                f"cannot register with signaling server {self._url}: {exc}"
                            ) from exc
                        logger.warning(
                            "signaling connection to %s lost (%s); reconnecting in %.2fs",
                            self._url,
                            exc,
                            backoff,
                        )
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self._running = False

    # -- one connection -------------------------------------------------------------------------

    async def _connection(
        self,
        ws: WebSocketConnection,
        *,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey,
        relays: trio.MemorySendChannel[Relay],
        on_registered: Callable[[ActrId], None],
    ) -> None:
        """Register on ``ws`` and serve it until it drops (raises) or we are cancelled."""
        protocol = ClientProtocol(
            realm=self._config.realm,
            secret=self._config.realm_secret,
            actr_type=actr_type,
            previous_id=previous_id,
            node_key=node_key,
            trusted_issuer=self._trust.pinned,
            trust_hint=self._trust.hint(),
            visibility=self._visibility,
            listen=self._listen,
        )
        with trio.fail_after(CONNECT_TIMEOUT):
            registered, early = await self._register(ws, protocol)
        self._accept(registered)
        on_registered(registered.actr_id)
        for relay in early:
            with contextlib.suppress(trio.BrokenResourceError):
                await relays.send(relay)
        presence_timeout = registered.presence_timeout
        await self._serve(ws, protocol, relays, presence_timeout)

    async def _register(
        self, ws: WebSocketConnection, protocol: ClientProtocol
    ) -> tuple[Registered, list[Relay]]:
        """Hello, answer the challenge, register; return the (verified) registration and the
        relays that reached us before it."""
        await ws.send_message(encode_frame(protocol.hello()))
        while True:
            events = protocol.receive(await ws.get_message())
            for i, event in enumerate(events):
                if isinstance(event, Outgoing):
                    await ws.send_message(encode_frame(event.frame))
                elif isinstance(event, Registered):
                    rest = events[i + 1 :]
                    return event, [e.relay for e in rest if isinstance(e, RelayReceived)]
                elif isinstance(event, SessionFailed):
                    raise event.error
                else:
                    raise FrameError(f"unexpected {event!r} before registration")

    async def _serve(
        self,
        ws: WebSocketConnection,
        protocol: ClientProtocol,
        relays: trio.MemorySendChannel[Relay],
        presence_timeout: float,
    ) -> None:
        """Run one registered connection until it drops (raise) or we are cancelled (unregister)."""
        link = Link(ws, protocol)
        self._actr_id = self._registered_id(protocol)
        self._link = link
        self._registrations += 1
        self._notify()
        logger.info("registered with signaling as %s", self._actr_id)
        interval = min(self._config.heartbeat_interval, presence_timeout / _HEARTBEATS_PER_TIMEOUT)
        lost: list[Exception] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._read_loop, link, relays, presence_timeout, lost, nursery.cancel_scope
                )
                nursery.start_soon(self._heartbeat_loop, link, interval, lost, nursery.cancel_scope)
        finally:
            self._link = None
            self._notify()
            link.fail_pending()
            if not lost:
                # Not lost: we are being cancelled. Say goodbye, shielded and bounded
                # (with_websocket then closes the connection).
                with trio.move_on_after(UNREGISTER_GRACE, shield=True):
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send_message(encode_frame(protocol.unregister()))
        if isinstance(lost[0], (AuthError, SessionTakenOver)):
            raise lost[0]
        raise _ConnectionLost(lost[0]) from lost[0]

    async def _read_loop(
        self,
        link: Link,
        relays: trio.MemorySendChannel[Relay],
        silence: float,
        lost: list[Exception],
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                # Heartbeats are acked, so a server silent this long is gone (half-open TCP).
                with trio.move_on_after(silence) as idle:
                    data = await link.ws.get_message()
                if idle.cancelled_caught:
                    raise SignalingError(f"signaling server silent for {silence} seconds")
                for event in link.protocol.receive(data):
                    if isinstance(event, RelayReceived):
                        try:
                            await relays.send(event.relay)
                        except trio.BrokenResourceError:
                            logger.debug(
                                "relay from %s dropped: nobody reads relays", event.relay.source
                            )
                    elif isinstance(event, PeersFound):
                        self._learn_addresses(event.peers, event.addresses)
                        page = (event.peers, event.next_cursor)
                        link.resolve(event.request_id, outcome.Value(page))
                    elif isinstance(event, CredentialRenewed):
                        self._credential = event.credential
                        self._renewals += 1
                        self._notify()
                        logger.debug("credential of %s renewed", self._actr_id)
                    elif isinstance(event, RelayDelivered):
                        link.resolve(event.request_id, outcome.Value(((), 0)))
                    elif isinstance(event, RequestFailed):
                        link.resolve(event.request_id, outcome.Error(event.error))
                    elif isinstance(event, SessionFailed):
                        raise event.error
                    else:
                        raise FrameError(f"unexpected {event!r} while registered")
        except (ConnectionClosed, SignalingError) as exc:
            lost.append(exc)
            scope.cancel(reason="signaling connection lost")

    async def _heartbeat_loop(
        self, link: Link, interval: float, lost: list[Exception], scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                await trio.sleep(interval)
                report = await self._report()
                await link.ws.send_message(encode_frame(link.protocol.heartbeat(report)))
        except ConnectionClosed as exc:
            lost.append(exc)
            scope.cancel(reason="signaling connection lost")

    async def _report(self) -> Frame.NodeReport | None:
        source = self._report_source
        if source is None:
            return None
        with trio.move_on_after(REPORT_BOUND):
            try:
                return report_to_wire(await source())
            except Exception as exc:
                # Figures are a courtesy: a failing source must not cost the node its presence.
                self._log.log(
                    logger,
                    logging.WARNING,
                    ("report",),
                    "node figures for the heartbeat failed (%r); sent without them",
                    exc,
                )
        return None

    # -- identity -------------------------------------------------------------------------------

    def _accept(self, registered: Registered) -> None:
        """Keep the verified credential; pin its issuer if nothing was pinned yet (TOFU)."""
        self._credential = registered.credential
        self._trust.accept(registered.issuer_key)

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _registered_id(protocol: ClientProtocol) -> ActrId:
        actr_id = protocol.actr_id
        assert actr_id is not None
        return actr_id

    def _learn_addresses(
        self, peers: tuple[ActrId, ...], addresses: tuple[tuple[ActrId, str], ...]
    ) -> None:
        """Remember the listen addresses of a discovery page (a peer without one: forgotten)."""
        for peer in peers:
            self._addresses.pop(peer, None)
        for peer, address in addresses:
            self._addresses[peer] = address
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)

    def _require_link(self) -> Link:
        link = self._link
        if link is None:
            raise SignalingError(f"not connected to signaling server {self._url} (reconnecting)")
        return link

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _truncated(self, actr_type: ActrType) -> None:
        self._log.log(
            logger,
            logging.WARNING,
            ("truncated", actr_type),
            "discovery of %s stopped at %d peers (MAX_DISCOVERED); more are registered",
            actr_type,
            MAX_DISCOVERED,
        )


if TYPE_CHECKING:
    # mypy checks that the client and its session implement the transport contract.
    def _conforms(
        client: SignalingClient, session: _Session
    ) -> tuple[SignalingConnector, SignalingSession]:
        return client, session
