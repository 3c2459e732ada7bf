"""The node's signaling client: trio-websocket around the sans-IO :class:`ClientProtocol`.

:meth:`SignalingClient.run` is step 1 of a node's start order: it connects,
authenticates and registers, hands the runtime a session, then keeps the registration alive
(heartbeats; reconnection with capped exponential backoff and re-registration under the same
``ActrId``) until cancelled, when it unregisters. Invariants: one reader task per connection
is the only consumer of the WebSocket; the relay channel has one owner (``run``) that closes it;
requests in flight when a connection drops fail with ``SignalingError`` at once.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, final
from urllib.parse import urlsplit

import attrs
import outcome
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .._acl import Visibility
from .._config import Config
from .._heartbeat_report import HeartbeatReport
from .._identity import (
    ISSUER_PUB_FILE,
    NodeKey,
    decode_public_key,
    key_id,
    read_pinned_issuer,
    write_pinned_issuer,
)
from .._ids import ActrId, ActrType
from .._logging import SIGNALING, RateLimiter
from ..errors import (
    AuthError,
    ConfigError,
    ServerCertificateError,
    SessionTakenOver,
    SignalingError,
)
from ..transport._abc import Relay, SignalingConnector, SignalingSession
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
from ._protocol import (
    MAX_FRAME_SIZE,
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
# Seconds to connect, authenticate and register before the attempt counts as failed.
CONNECT_TIMEOUT: Final = 10.0
# Seconds, shielded, to say goodbye (Unregister + close handshake) when cancelled.
UNREGISTER_GRACE: Final = 1.0
# Heartbeats per presence_timeout the server announced: 3 tolerates two lost or late ones.
_HEARTBEATS_PER_TIMEOUT: Final = 3
# Seconds the node's report may take before a heartbeat goes without it (presence first).
REPORT_BOUND: Final = 1.0
#: Most peers one discover() returns (it follows the server's pages up to this many): the
#: server's default discovery burst, so one call never waits on the budget it spends.
MAX_DISCOVERED: Final = 10_000
#: Peers' advertised listen addresses remembered (discovery results; oldest forgotten first).
MAX_ADDRESSES: Final = 4096

# A request's answer: a discovery page and its next cursor ((), 0 for a relay).
_Answer = tuple[tuple[ActrId, ...], int]


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


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its answer (filled once, by the reader or by a disconnect)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: outcome.Outcome[_Answer] | None = None

    def resolve(self, result: outcome.Outcome[_Answer]) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


@attrs.define(eq=False)
class _Link:
    """The currently registered connection."""

    ws: WebSocketConnection
    protocol: ClientProtocol
    pending: dict[int, _Pending] = attrs.field(factory=dict)


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
        pinned = self._client._pinned
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
            page, next_cursor = await self._client._request(link, request_id, frame)
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
        await self._client._request(link, request_id, frame)


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
        url = config.signaling_url
        if not url:
            raise ConfigError("signaling_url must be set to use the signaling server")
        parts = urlsplit(url)
        try:
            valid = (
                parts.scheme in ("ws", "wss") and bool(parts.hostname) and parts.port is not None
            )
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:
            raise ConfigError(
                f"signaling_url={url!r} must look like ws://HOST:PORT or wss://HOST:PORT"
            )
        self._config = config
        self._url = url
        self._ssl_context = _client_ssl_context(config, secure=parts.scheme == "wss")
        self._link: _Link | None = None
        self._actr_id: ActrId | None = None  # of the current run(), for statistics()
        self._registrations = 0
        self._failures = 0
        # The issuer key every credential must be signed by: Config.trust_anchor, else pinned
        # on first use (kept in data_dir/issuer.pub when there is one; read at run()).
        anchor = config.trust_anchor
        self._anchor = None if anchor is None else decode_public_key(anchor)
        self._pinned: bytes | None = self._anchor
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
        if self._anchor is None and self._pinned is None:
            self._pinned = read_pinned_issuer(self._config.data_dir)
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
                        await _with_websocket(
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
            trusted_issuer=self._pinned,
            trust_hint=self._trust_hint(),
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
        link = _Link(ws, protocol)
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
            for pending in link.pending.values():
                error = SignalingError("signaling connection lost before the answer came")
                pending.resolve(outcome.Error(error))
            link.pending.clear()
            if not lost:
                # Not lost: we are being cancelled. Say goodbye, shielded and bounded
                # (_with_websocket then closes the connection).
                with trio.move_on_after(UNREGISTER_GRACE, shield=True):
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send_message(encode_frame(protocol.unregister()))
        if isinstance(lost[0], (AuthError, SessionTakenOver)):
            raise lost[0]
        raise _ConnectionLost(lost[0]) from lost[0]

    async def _read_loop(
        self,
        link: _Link,
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
                        self._resolve(link, event.request_id, outcome.Value(page))
                    elif isinstance(event, CredentialRenewed):
                        self._credential = event.credential
                        self._renewals += 1
                        self._notify()
                        logger.debug("credential of %s renewed", self._actr_id)
                    elif isinstance(event, RelayDelivered):
                        self._resolve(link, event.request_id, outcome.Value(((), 0)))
                    elif isinstance(event, RequestFailed):
                        self._resolve(link, event.request_id, outcome.Error(event.error))
                    elif isinstance(event, SessionFailed):
                        raise event.error
                    else:
                        raise FrameError(f"unexpected {event!r} while registered")
        except (ConnectionClosed, SignalingError) as exc:
            lost.append(exc)
            scope.cancel(reason="signaling connection lost")

    async def _heartbeat_loop(
        self, link: _Link, interval: float, lost: list[Exception], scope: trio.CancelScope
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
        if self._pinned is not None:
            return  # ClientProtocol already refused any other issuer
        self._pinned = registered.issuer_key
        data_dir = self._config.data_dir
        if data_dir is not None:
            write_pinned_issuer(data_dir, registered.issuer_key)
        where = (
            f"pinned in {data_dir / ISSUER_PUB_FILE}"
            if data_dir is not None
            else "for this run only: no data_dir"
        )
        logger.info(
            "trusting signaling issuer key %s on first use (%s); set Config.trust_anchor = %r "
            "to pin it explicitly",
            key_id(registered.issuer_key),
            where,
            registered.issuer_key.hex(),
        )

    def _trust_hint(self) -> str:
        if self._anchor is not None:
            return " (Config.trust_anchor)"
        data_dir = self._config.data_dir
        if data_dir is not None:
            return f" (pinned on first use in {data_dir / ISSUER_PUB_FILE}; delete it to re-pin)"
        return " (pinned at this node's first registration in this run)"

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

    def _require_link(self) -> _Link:
        link = self._link
        if link is None:
            raise SignalingError(f"not connected to signaling server {self._url} (reconnecting)")
        return link

    async def _request(self, link: _Link, request_id: int, frame: Frame) -> _Answer:
        pending = _Pending()
        link.pending[request_id] = pending
        try:
            try:
                await link.ws.send_message(encode_frame(frame))
            except ConnectionClosed as exc:
                raise SignalingError(f"signaling connection lost: {exc}") from exc
            await pending.done.wait()
        finally:
            link.pending.pop(request_id, None)
        assert pending.result is not None
        return pending.result.unwrap()

    @staticmethod
    def _resolve(link: _Link, request_id: int, result: outcome.Outcome[_Answer]) -> None:
        pending = link.pending.get(request_id)
        if pending is not None:
            pending.resolve(result)

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


def _client_ssl_context(config: Config, *, secure: bool) -> ssl.SSLContext | None:
    """The TLS context for a ``wss://`` URL (verifying the server against ``signaling_ca`` or
    the system trust store, hostname included); ``None`` for ``ws://``.

    Raises:
        ConfigError: ``signaling_ca`` with a ``ws://`` URL, or a CA file that does not load.
    """
    ca = config.signaling_ca
    if not secure:
        if ca is not None:
            raise ConfigError(
                f"Config.signaling_ca is set but Config.signaling_url={config.signaling_url!r} "
                "is not wss://: the CA would never be used (write wss://HOST:PORT)"
            )
        return None
    try:
        # CERT_REQUIRED and check_hostname are create_default_context's defaults.
        return ssl.create_default_context(cafile=None if ca is None else str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"Config.signaling_ca={str(ca)!r} cannot be loaded as PEM CA certificates: {exc}"
        ) from exc


async def _open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """Connect to ``host:port``; with a context, complete the TLS handshake (the server proves
    its certificate) before anything is sent.

    Raises:
        OSError, trio.TooSlowError: cannot connect (within ``CONNECT_TIMEOUT``).
        ServerCertificateError: the server's certificate did not verify.
        SignalingError: the TLS handshake failed otherwise (e.g. a plain ws:// server).
    """
    with trio.fail_after(CONNECT_TIMEOUT):
        tcp = await trio.open_tcp_stream(host, port)
        if ssl_context is None:
            return tcp
        # https_compatible: closing never waits for the peer's close_notify.
        stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
        handshook = False
        try:
            await stream.do_handshake()
            handshook = True
        except trio.BrokenResourceError as exc:
            error = _tls_error(host, port, exc.__cause__ or exc)
            if isinstance(error, ServerCertificateError):
                # Someone may be impersonating the server: say so even if a retry succeeds.
                logger.warning("%s", error)
            raise error from exc
        finally:
            if not handshook:
                with trio.CancelScope(shield=True):
                    await stream.aclose()  # https_compatible: closes the socket at once
        return stream


def _tls_error(host: str, port: int, cause: BaseException) -> SignalingError:
    where = f"wss://{host}:{port}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return ServerCertificateError(
            f"signaling server {where}: TLS certificate verify failed "
            f"({cause.verify_message or cause}); set Config.signaling_ca to the CA certificate "
            "that signed the server's certificate, or have it signed by a CA in the system "
            "trust store"
        )
    return SignalingError(f"TLS handshake with signaling server {where} failed: {cause}")


async def _with_websocket(
    url: str,
    ssl_context: ssl.SSLContext | None,
    body: Callable[[WebSocketConnection], Awaitable[None]],
) -> None:
    """Open a WebSocket to ``url``, run ``body(ws)``, close gracefully, always close the socket.

    Two departures from ``trio_websocket.open_websocket_url``, both about closing:

    * In 0.12.2 a client whose server closed first never closes its socket (the reader sees
      EOF after the close handshake and ``aclose()`` returns early), leaking one socket per
      server-side close. Owning the TCP stream fixes that.
    * When we are cancelled, the goodbye (``Unregister`` + close handshake) needs the
      connection's reader task, so that task runs under a shielded scope of its own, which is
      cancelled right after the bounded close.

    ``body``'s exceptions propagate unwrapped (no exception group); ``Cancelled`` as usual.

    Raises:
        OSError, trio.TooSlowError: cannot connect (within ``CONNECT_TIMEOUT``).
        ServerCertificateError, SignalingError: the TLS handshake failed (``wss://``).
        HandshakeError, ConnectionClosed, trio.TooSlowError: the WebSocket handshake failed.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    stream = await _open_stream(parts.hostname, parts.port, ssl_context)
    failure: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            reader_scope = trio.CancelScope(shield=True)
            reader_nursery: trio.Nursery = await nursery.start(_reader_home, reader_scope)
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    ws = await wrap_client_stream(
                        reader_nursery,
                        stream,
                        f"{parts.hostname}:{parts.port}",
                        parts.path or "/",
                        max_message_size=MAX_FRAME_SIZE,
                    )
                try:
                    await body(ws)
                finally:
                    with trio.move_on_after(UNREGISTER_GRACE, shield=True):
                        await ws.aclose()
            except Exception as exc:
                # Raised after the nursery, so the caller sees it unwrapped.
                failure = exc
            finally:
                reader_scope.cancel(reason="signaling connection finished")
    finally:
        with trio.CancelScope(shield=True):
            # Closes the socket at once (TLS too: https_compatible sends no close_notify).
            await stream.aclose()
    if failure is not None:
        raise failure


async def _reader_home(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[trio.Nursery]
) -> None:
    """Host trio-websocket's reader task in ``scope`` (shielded; its owner cancels it)."""
    with scope:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


if TYPE_CHECKING:
    # mypy checks that the client and its session implement the transport contract.
    def _conforms(
        client: SignalingClient, session: _Session
    ) -> tuple[SignalingConnector, SignalingSession]:
        return client, session
