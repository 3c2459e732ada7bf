"""The signaling server: trio-websocket around the sans-IO :class:`ServerProtocol`.

One task per connection reads frames and applies the machine's effects; one writer task per
connection is the only one that writes to its WebSocket, fed by a bounded outbox, so a relay
from another connection never waits on a slow receiver (a receiver whose outbox overflows is
disconnected). A failure in one connection is logged and closes that connection only.
Connections from an address whose authentications failed wait their turn first
(:class:`~._throttle.AuthThrottle`); with an ``ssl_context`` the server speaks ``wss://``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple, Unpack, final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from .._config import secret_problem
from .._identity import IssuerKey
from .._logging import SIGNALING, RateLimiter
from ..errors import ConfigError
from ._protocol import (
    AUTH,
    CREDENTIAL_LIFETIME,
    IDENTITY,
    KEY,
    MAX_FRAME_SIZE,
    OVERLOADED,
    encode_frame,
    error_frame,
)
from ._server_protocol import (
    Close,
    LookupBinding,
    PersistDeparture,
    PersistRegistration,
    Send,
    ServerEffect,
    ServerProtocol,
)
from ._store import SignalingStore
from ._throttle import AuthThrottle, source_key

logger = logging.getLogger(SIGNALING)

#: Suffix of the issuer key file beside the database: ``--db X`` keeps it in ``X.issuer_key``.
ISSUER_KEY_SUFFIX: Final = ".issuer_key"
_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

# Frames queued for one connection: its own answers plus relays from other nodes. A node that
# lets this many pile up is not reading; it is disconnected rather than buffered without bound.
_OUTBOX_SIZE: Final = 256
# trio-websocket's own limit (it closes with 1009 above it). Larger than MAX_FRAME_SIZE so that
# moderately oversized frames reach the protocol and get an explanatory Error frame.
_WS_MAX_MESSAGE: Final = 4 * MAX_FRAME_SIZE
# Seconds a closing connection may take to flush its last frames (e.g. the Error frame).
_CLOSE_GRACE: Final = 1.0
# Seconds a client has to complete the WebSocket handshake, and to complete the close handshake.
_WS_TIMEOUT: Final = 5.0


@final
@attrs.frozen
class SignalingServerStatistics:
    """Snapshot of a running server.

    Attributes:
        connections: open WebSocket connections, in any phase.
        registered: connections holding an ``ActrId``.
        realms: realms with at least one registered connection.
        accepted: connections accepted since start.
        rejected_frames: frames refused as undecodable, oversized or out of order.
        auth_failures: connections refused because their realm proof failed.
        auth_throttled: connections made to wait because their address failed before.
        auth_turned_away: connections refused at once because their address failed so often
            that their turn was more than the longest delay away.
    """

    connections: int
    registered: int
    realms: int
    accepted: int
    rejected_frames: int
    auth_failures: int
    auth_throttled: int
    auth_turned_away: int


@attrs.define(eq=False)
class _Peer:
    """One accepted WebSocket and its outbox (``None`` in the outbox means: close now)."""

    id: int
    ws: WebSocketConnection
    source: str  # the throttle's key for the remote address
    outbox_send: trio.MemorySendChannel[bytes | None]
    outbox_receive: trio.MemoryReceiveChannel[bytes | None]
    cancel_scope: trio.CancelScope
    closing: bool = False


@final
class SignalingServer:
    """The signaling server, embeddable in a nursery.

    Args:
        host: address to listen on (``"127.0.0.1"``; nothing here needs more).
        port: TCP port; 0 picks a free one (read it back from :attr:`url`).
        realms: realm name -> secret (at least 16 bytes); only nodes proving their realm's
            secret are admitted. ``None`` admits any realm, the development default, and logs
            a warning.
        db_path: SQLite file for realms and registrations; ``None`` keeps them in memory.
        presence_timeout: seconds of silence after which a node disappears from discovery
            and its connection is closed.
        issuer_key_path: the issuer key file (Ed25519, PEM, created with mode 0600 if missing)
            that signs credentials. Default: ``db_path`` + ``.issuer_key`` beside the database;
            without a ``db_path``, a fresh key for this run only (logged).
        credential_lifetime: seconds each credential is valid (nodes get a fresh one after
            two thirds of it); at least twice ``presence_timeout``.
        ssl_context: serve ``wss://`` with this server-side context (e.g.
            ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
            ``load_cert_chain(cert, key)``); ``None`` serves plain, unencrypted ``ws://``.

    Raises:
        ConfigError: an invalid argument (bad realm name, secret shorter than 16 bytes,
            non-positive timeout).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        realms: Mapping[str, str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        presence_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        issuer_key_path: str | os.PathLike[str] | None = None,
        credential_lifetime: float = CREDENTIAL_LIFETIME,
    ) -> None:
        if not presence_timeout > 0:
            raise ConfigError(f"presence_timeout={presence_timeout!r} must be > 0")
        if not credential_lifetime >= 2 * presence_timeout:
            raise ConfigError(
                f"credential_lifetime={credential_lifetime!r} must be at least twice "
                f"presence_timeout={presence_timeout!r}"
            )
        if not 0 <= port <= 65535:
            raise ConfigError(f"port={port!r} must be in 0..65535")
        if realms is not None:
            from .._ids import check_name

            for name, secret in realms.items():
                check_name("realm", name)
                problem = secret_problem(secret)
                if problem is not None:
                    raise ConfigError(f"realm {name!r}: its secret {problem}")
        self._host = host
        self._port = port
        self._realms = None if realms is None else dict(realms)
        self._db_path = db_path
        self._presence_timeout = float(presence_timeout)
        self._issuer_key_path = issuer_key_file(db_path, issuer_key_path)
        self._credential_lifetime = float(credential_lifetime)
        self._issuer: IssuerKey | None = None
        self._identity_refusals = RateLimiter(trio.current_time)
        self._ssl_context = ssl_context
        self._throttle = AuthThrottle()
        self._refusals = RateLimiter(trio.current_time)
        self._url: str | None = None
        self._protocol: ServerProtocol | None = None
        self._store: SignalingStore | None = None
        self._store_limiter = trio.CapacityLimiter(1)
        self._peers: dict[int, _Peer] = {}
        self._ids = itertools.count(1)
        self._accepted = 0
        self._rejected_frames = 0

    def __repr__(self) -> str:
        return f"<SignalingServer {self._url or 'not listening'}>"

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with an ``ssl_context``) once listening.

        Raises:
            RuntimeError: the server is not listening yet.
        """
        if self._url is None:
            raise RuntimeError("the signaling server is not listening yet")
        return self._url

    @property
    def issuer_public_key(self) -> bytes:
        """The raw 32-byte public key that signs this server's credentials, once running
        (nodes pin it: ``Config.trust_anchor``).

        Raises:
            RuntimeError: the server has not started yet.
        """
        if self._issuer is None:
            raise RuntimeError("the signaling server has not started yet")
        return self._issuer.public_bytes()

    def statistics(self) -> SignalingServerStatistics:
        """A snapshot of connections and registrations."""
        core = self._protocol.statistics() if self._protocol is not None else None
        throttle = self._throttle.statistics()
        return SignalingServerStatistics(
            connections=len(self._peers),
            registered=core.registered if core else 0,
            realms=core.realms if core else 0,
            accepted=self._accepted,
            rejected_frames=self._rejected_frames,
            auth_failures=throttle.failures,
            auth_throttled=throttle.delayed,
            auth_turned_away=throttle.turned_away,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[SignalingServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the database, listen, and serve until cancelled.

        ``task_status.started(self)`` once listening (:attr:`url` is then valid).

        Raises:
            OSError: the address cannot be bound.
            sqlite3.Error: the database cannot be opened.

        Cancellation:
            Cancelling stops listening and closes every connection (connected nodes see the
            connection drop and reconnect elsewhere or later); the database is closed last.
        """
        if self._protocol is not None:
            raise RuntimeError("SignalingServer.run() may only be called once")
        store = await trio.to_thread.run_sync(SignalingStore, self._db_path)
        try:
            serials = await trio.to_thread.run_sync(store.next_serials)
            self._issuer = await trio.to_thread.run_sync(
                IssuerKey.load_or_create, self._issuer_key_path
            )
            self._store = store
            self._protocol = ServerProtocol(
                realms=self._realms,
                presence_timeout=self._presence_timeout,
                next_serials=serials,
                issuer=self._issuer,
                credential_lifetime=self._credential_lifetime,
            )
            _log_issuer(self._issuer, self._issuer_key_path)
            if self._realms is None:
                logger.warning(
                    "signaling server has no realms configured: admitting ANY realm without "
                    "authentication (development default; pass realms to require secrets)"
                )
            # Bind before opening the nursery: an OSError (address in use) comes out of run()
            # as itself, not wrapped in an exception group.
            listeners = await trio.open_tcp_listeners(self._port, host=self._host)
            try:
                ws_server = WebSocketServer(
                    self._handle,
                    self._secure(listeners),
                    max_message_size=_WS_MAX_MESSAGE,
                    connect_timeout=_WS_TIMEOUT,
                    disconnect_timeout=_WS_TIMEOUT,
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(ws_server.run)
                    scheme = "ws" if self._ssl_context is None else "wss"
                    self._url = f"{scheme}://{self._host}:{ws_server.port}"
                    logger.info("signaling server listening on %s", self._url)
                    task_status.started(self)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
        finally:
            self._store = None
            store.close()

    def _secure(
        self, listeners: list[trio.SocketListener]
    ) -> list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]:
        if self._ssl_context is None:
            return listeners
        # The TLS handshake runs in each connection's own task (trio-websocket's reader), so
        # a client that fails it (wrong CA, plain ws://) only ends that connection.
        return [
            trio.SSLListener(listener, self._ssl_context, https_compatible=True)
            for listener in listeners
        ]

    # -- one connection -------------------------------------------------------------------------

    async def _handle(self, request: WebSocketRequest) -> None:
        # Never let one connection's failure crash the server: bugs are logged, cancellation
        # passes through (Exception does not catch trio.Cancelled).
        try:
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("WebSocket handshake from %s failed: %r", request.remote, exc)
            return
        peer_id = next(self._ids)
        self._accepted += 1
        source = _source(ws)
        if not await self._wait_turn(ws, peer_id, source):
            return
        protocol = self._protocol
        assert protocol is not None
        send, receive = trio.open_memory_channel[bytes | None](_OUTBOX_SIZE)
        try:
            async with trio.open_nursery() as nursery:
                peer = _Peer(peer_id, ws, source, send, receive, nursery.cancel_scope)
                self._peers[peer_id] = peer
                protocol.connect(peer_id, trio.current_time())
                logger.debug("connection %d from %s", peer_id, ws.remote)
                nursery.start_soon(self._write_loop, peer)
                await self._read_loop(peer, protocol)
                # Let the writer flush the last frames (an Error frame), but not forever.
                nursery.cancel_scope.deadline = trio.current_time() + _CLOSE_GRACE
        except Exception:
            logger.exception("signaling connection %d failed; closing it", peer_id)
        finally:
            self._peers.pop(peer_id, None)
            effects = protocol.disconnect(peer_id)
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                try:
                    await self._apply(effects)
                except Exception:
                    logger.exception("recording the departure of connection %d failed", peer_id)
            logger.debug("connection %d closed", peer_id)

    async def _wait_turn(self, ws: WebSocketConnection, peer_id: int, source: str) -> bool:
        """Hold a connection from an address with recent auth failures until its turn (the
        node's Hello waits unread meanwhile); False if it was turned away instead."""
        wait = self._throttle.admit(source, trio.current_time())
        if wait is None:
            self._refusals.log(
                logger,
                logging.WARNING,
                ("turned away", source),
                "signaling connection %d from %s turned away: too many failed authentications",
                peer_id,
                source,
            )
            frame = error_frame(
                OVERLOADED, "too many failed authentications from this address; retry later"
            )
            with trio.move_on_after(_CLOSE_GRACE), contextlib.suppress(ConnectionClosed):
                await ws.send_message(encode_frame(frame))
            return False
        if wait > 0:
            logger.debug("signaling connection %d from %s waits %.2fs", peer_id, source, wait)
            # Not synchronisation: the delay *is* the defence against guessing.
            await trio.sleep(wait)
        return True

    async def _read_loop(self, peer: _Peer, protocol: ServerProtocol) -> None:
        """Read frames until the connection is lost (cancel the writer) or is closing."""
        while not peer.closing:
            with trio.move_on_after(self._presence_timeout) as idle:
                try:
                    data = await peer.ws.get_message()
                except ConnectionClosed:
                    peer.cancel_scope.cancel(reason="connection closed by the client")
                    return
            if idle.cancelled_caught:
                effects = protocol.timeout(peer.id, trio.current_time())
            else:
                effects = protocol.receive(peer.id, data, trio.current_time())
            await self._apply(effects)

    async def _write_loop(self, peer: _Peer) -> None:
        """The only writer of ``peer.ws``: send the outbox in order; ``None`` means stop."""
        try:
            async for data in peer.outbox_receive:
                if data is None:
                    break
                await peer.ws.send_message(data)
        except ConnectionClosed:
            pass
        # Ends the connection's nursery: the reader stops and trio-websocket closes the socket.
        peer.cancel_scope.cancel(reason="connection finished")

    # -- effects ----------------------------------------------------------------------------------

    async def _apply(self, effects: list[ServerEffect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                if effect.frame.WhichOneof("body") == "error":
                    error = effect.frame.error
                    if error.code == "bad_frame":
                        self._rejected_frames += 1
                    logger.info(
                        "signaling connection %d: error %s: %s",
                        effect.conn,
                        error.code,
                        error.message,
                    )
                self._enqueue(effect.conn, encode_frame(effect.frame))
            elif isinstance(effect, Close):
                if effect.reason.startswith(f"{AUTH}:"):
                    self._auth_failed(effect.conn, effect.reason)
                elif effect.reason.startswith((f"{IDENTITY}:", f"{KEY}:")):
                    # A node claiming an id that is not its own: worth an operator's look.
                    # Rate-limited per reason (which names the id): a claimant may repeat it.
                    self._identity_refusals.log(
                        logger,
                        logging.WARNING,
                        effect.reason,
                        "signaling connection %d refused: %s",
                        effect.conn,
                        effect.reason,
                    )
                peer = self._peers.get(effect.conn)
                if peer is not None:
                    peer.closing = True
                    self._enqueue(effect.conn, None)
            elif isinstance(effect, PersistRegistration):
                logger.info("registered %s", effect.actr_id)
                await self._persist(
                    SignalingStore.record_registration, effect.actr_id, effect.public_key
                )
            elif isinstance(effect, LookupBinding):
                bound = await self._persist(SignalingStore.binding, effect.actr_id)
                protocol = self._protocol
                assert protocol is not None
                await self._apply(
                    protocol.binding_found(effect.conn, effect.actr_id, bound, trio.current_time())
                )
            else:
                assert isinstance(effect, PersistDeparture)
                logger.info("departed %s", effect.actr_id)
                await self._persist(SignalingStore.record_departure, effect.actr_id)

    def _auth_failed(self, peer_id: int, reason: str) -> None:
        peer = self._peers.get(peer_id)
        source = peer.source if peer is not None else "unknown"
        delay = self._throttle.failed(source, trio.current_time())
        # Only the log says why a node was refused (the node is told less). One line per
        # address per interval: a guesser must not be able to flood the log either.
        self._refusals.log(
            logger,
            logging.WARNING,
            ("refused", source),
            "signaling connection %d from %s refused: %s (that address now waits %.1fs "
            "between connections)",
            peer_id,
            source,
            reason,
            delay,
        )

    def _enqueue(self, peer_id: int, data: bytes | None) -> None:
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        try:
            peer.outbox_send.send_nowait(data)
        except trio.WouldBlock:
            logger.warning("signaling connection %d is not reading; disconnecting it", peer_id)
            peer.closing = True
            peer.cancel_scope.cancel(reason="outbox overflow")

    async def _persist(
        self, method: Callable[[SignalingStore, Unpack[_Args]], _T], *args: *_Args
    ) -> _T:
        store = self._store
        assert store is not None
        # abandon_on_cancel=False: a cancelled caller never leaves a commit in an unknown state.
        return await trio.to_thread.run_sync(
            method, store, *args, limiter=self._store_limiter, abandon_on_cancel=False
        )


@asynccontextmanager
async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    realms: Mapping[str, str] | None = None,
    db_path: str | os.PathLike[str] | None = None,
    presence_timeout: float = 15.0,
    ssl_context: ssl.SSLContext | None = None,
    issuer_key_path: str | os.PathLike[str] | None = None,
    credential_lifetime: float = CREDENTIAL_LIFETIME,
) -> AsyncIterator[SignalingServer]:
    """Run a :class:`SignalingServer` for the duration of an ``async with`` block.

    ``async with serve(port=0) as server: ...`` yields the listening server (``server.url``).
    Arguments are those of :class:`SignalingServer`.

    Cancellation:
        Leaving the block (normally, by exception or by cancellation) stops the server and
        closes every connection.

    The server runs in a nursery this context manager owns, so an exception raised inside
    the block comes out wrapped in an ``ExceptionGroup`` (Trio's strict exception groups).
    """
    server = SignalingServer(
        host=host,
        port=port,
        realms=realms,
        db_path=db_path,
        presence_timeout=presence_timeout,
        ssl_context=ssl_context,
        issuer_key_path=issuer_key_path,
        credential_lifetime=credential_lifetime,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel(reason="signaling server block exited")


def _source(ws: WebSocketConnection) -> str:
    """The throttle's key for the connection's remote address."""
    remote = ws.remote
    if isinstance(remote, str):  # not a socket (never on TCP listeners); one shared key
        return remote
    return source_key(str(remote.address))


def issuer_key_file(
    db_path: str | os.PathLike[str] | None, issuer_key_path: str | os.PathLike[str] | None
) -> Path | None:
    """Where the issuer key lives: as given, else beside the database (``DB.issuer_key``),
    else nowhere (an ephemeral key)."""
    if issuer_key_path is not None:
        return Path(issuer_key_path)
    if db_path is None:
        return None
    return Path(f"{os.fspath(db_path)}{ISSUER_KEY_SUFFIX}")


def _log_issuer(issuer: IssuerKey, path: Path | None) -> None:
    where = (
        f"from {path}"
        if path is not None
        else "EPHEMERAL (no database): nodes that pinned it refuse the next run's key"
    )
    # Printed in full so an operator can copy it into the nodes' Config.trust_anchor.
    logger.info(
        "signaling issuer key %s (%s): trust_anchor = %s",
        issuer.key_id,
        where,
        issuer.public_bytes().hex(),
    )
