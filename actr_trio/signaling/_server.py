"""The signaling server: trio-websocket around the sans-IO :class:`ServerProtocol`.

Each accepted TCP connection is counted against the server's caps before anything else
(:class:`~._limits.ConnectionCaps`: over one, it is closed at once). After its WebSocket
handshake, the connection's session (``_server_sessions.py``) reads frames and applies the
machine's effects; one writer task per connection is the only one that writes to its
WebSocket, fed by an outbox bounded in frames and bytes (:class:`~._limits.OutboxBudget`), so
a relay from another connection never waits on a slow receiver: relays beyond the receiver's
share are refused to their sender, and only a connection that does not read its own answers is
disconnected. A failure in one connection is logged and closes that connection only.
Connections from an address whose authentications failed wait their turn first
(:class:`~._throttle.AuthThrottle`); with an ``ssl_context`` the server speaks ``wss://``.
Refusals of malformed or abusive input are logged at WARNING, one line per kind every 10 s (the
next says how many were suppressed), and counted in :meth:`SignalingServer.statistics`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, final

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    wrap_server_stream,
)

from .._config import secret_problem
from .._identity import IssuerKey
from .._ids import ActrType
from .._logging import SIGNALING, RateLimiter
from ..errors import ConfigError
from ._limits import Admission, ConnectionCaps, SignalingLimits
from ._protocol import CREDENTIAL_LIFETIME, MAX_FRAME_SIZE
from ._reports import NodeStatus
from ._server_protocol import ServerProtocol
from ._server_sessions import CLOSE_GRACE, ServerSessions
from ._store import SignalingStore
from ._throttle import AuthThrottle, source_key

logger = logging.getLogger(SIGNALING)

#: Suffix of the issuer key file beside the database: ``--db X`` keeps it in ``X.issuer_key``.
ISSUER_KEY_SUFFIX: Final = ".issuer_key"

# trio-websocket's own limit (it closes with 1009 above it). Larger than MAX_FRAME_SIZE so that
# moderately oversized frames reach the protocol and get an explanatory Error frame.
_WS_MAX_MESSAGE: Final = 4 * MAX_FRAME_SIZE
# Refused connections being answered at once; beyond it they are closed without an answer
# (a refusal takes at most ~1 s, and none of it counts against the caps).
_REFUSING_MAX: Final = 256
# Bytes of a refused client's request read per receive while waiting for it to close.
_REFUSAL_READ: Final = 4096
# The answer to a connection over a cap (before its handshake was even read).
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
# Seconds a client has to complete the close handshake (and at most to complete the opening
# one, which the hello timeout may shorten).
_WS_TIMEOUT: Final = 5.0


@final
@attrs.frozen
class SignalingServerStatistics:
    """Snapshot of a running server.

    Attributes:
        connections: open connections, in any phase (from TCP accept to close).
        registered: connections holding an ``ActrId``.
        realms: realms with at least one registered connection.
        accepted: connections accepted since start (within the caps).
        rejected_frames: frames refused as undecodable or oversized.
        auth_failures: connections refused because their realm proof failed.
        auth_throttled: connections made to wait because their address failed before.
        auth_turned_away: connections refused at once because their address failed so often
            that their turn was more than the longest delay away.
        refused_server_full: connections closed on accept: ``max_connections`` were open.
        refused_address_full: connections closed on accept: their address had
            ``max_connections_per_address`` open.
        refused_unanswered: of the refused connections above, those closed without an
            HTTP 503 answer because as many refusals as the server answers at once were
            already in progress (a flood).
        register_timeouts: connections closed for not completing the WebSocket handshake and
            registration within ``hello_timeout``.
        rate_limited: frames refused over their connection's message rate.
        rate_closed: connections closed for going on far over their message rate.
        discovery_limited: discovery requests refused over their connection's budget.
        relays_limited: relays refused over the budget of their (source, target) pair.
        relays_too_large: relays refused because their payload was over ``max_relay_payload``.
        relays_busy: relays refused because their target's queue of relays was full (it
            does not read them as fast as they come).
        slow_readers: connections disconnected because their own answers overflowed their
            outbox (they do not read).
        relays_forwarded: relays queued for their target's connection.
        registered_by_type: ``(realm, type, registered connections)`` of every (realm, type)
            with at least one.
        reports_refused: heartbeat reports ignored because a figure was out of range.
    """

    connections: int
    registered: int
    realms: int
    accepted: int
    rejected_frames: int
    auth_failures: int
    auth_throttled: int
    auth_turned_away: int
    refused_server_full: int = 0
    refused_address_full: int = 0
    refused_unanswered: int = 0
    register_timeouts: int = 0
    rate_limited: int = 0
    rate_closed: int = 0
    discovery_limited: int = 0
    relays_limited: int = 0
    relays_too_large: int = 0
    relays_busy: int = 0
    slow_readers: int = 0
    relays_forwarded: int = 0
    registered_by_type: tuple[tuple[str, ActrType, int], ...] = ()
    reports_refused: int = 0


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
        limits: the budgets of connections, addresses and the server
            (:class:`SignalingLimits`; ``None``: the defaults).

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
        limits: SignalingLimits | None = None,
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
        self._ssl_context = ssl_context
        self._throttle = AuthThrottle()
        # Malformed and abusive input: one line per kind per interval, whoever sends it (an
        # attacker with many addresses must not flood the log either).
        self._abuse_log = RateLimiter(trio.current_time)
        self._limits = SignalingLimits() if limits is None else limits
        self._caps = ConnectionCaps(self._limits)
        self._sessions = ServerSessions(self._limits, self._throttle, self._abuse_log)
        self._url: str | None = None
        self._refused: dict[Admission, int] = dict.fromkeys(Admission, 0)
        self._refused_unanswered = 0
        self._handshake_timeouts = 0
        self._refusing = 0  # refused connections being answered now

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

    @property
    def limits(self) -> SignalingLimits:
        """The budgets this server enforces."""
        return self._limits

    def statistics(self) -> SignalingServerStatistics:
        """A snapshot of connections, registrations and refusals."""
        sessions = self._sessions
        core = sessions.protocol.statistics() if sessions.protocol is not None else None
        throttle = self._throttle.statistics()
        return SignalingServerStatistics(
            connections=self._caps.open_connections,
            registered=core.registered if core else 0,
            realms=core.realms if core else 0,
            accepted=sessions.accepted,
            rejected_frames=sessions.rejected_frames,
            auth_failures=throttle.failures,
            auth_throttled=throttle.delayed,
            auth_turned_away=throttle.turned_away,
            refused_server_full=self._refused[Admission.SERVER_FULL],
            refused_address_full=self._refused[Admission.ADDRESS_FULL],
            refused_unanswered=self._refused_unanswered,
            register_timeouts=self._handshake_timeouts + (core.register_timeouts if core else 0),
            rate_limited=core.rate_limited if core else 0,
            rate_closed=core.rate_closed if core else 0,
            discovery_limited=core.discovery_limited if core else 0,
            relays_limited=core.relays_limited if core else 0,
            relays_too_large=core.relays_too_large if core else 0,
            relays_busy=sessions.relays_busy,
            slow_readers=sessions.slow_readers,
            relays_forwarded=core.relays_forwarded if core else 0,
            registered_by_type=core.registered_by_type if core else (),
            reports_refused=core.reports_refused if core else 0,
        )

    def inspect(self, realm: str, *, limit: int | None = None) -> list[NodeStatus]:
        """The registered nodes of ``realm`` with what they last reported, by type and serial
        (what ``actr-trio inspect`` and the status page show); the first ``limit`` of them."""
        protocol = self._sessions.protocol
        if protocol is None:
            return []
        return protocol.inspect(realm, trio.current_time(), stop=limit)

    def realm_names(self) -> list[str]:
        """Realms with at least one registered node, sorted."""
        protocol = self._sessions.protocol
        return [] if protocol is None else protocol.realm_names()

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
        if self._sessions.protocol is not None:
            raise RuntimeError("SignalingServer.run() may only be called once")
        store = await trio.to_thread.run_sync(SignalingStore, self._db_path)
        try:
            serials = await trio.to_thread.run_sync(store.next_serials)
            self._issuer = await trio.to_thread.run_sync(
                IssuerKey.load_or_create, self._issuer_key_path
            )
            self._sessions.store = store
            self._sessions.protocol = ServerProtocol(
                realms=self._realms,
                presence_timeout=self._presence_timeout,
                next_serials=serials,
                issuer=self._issuer,
                credential_lifetime=self._credential_lifetime,
                limits=self._limits,
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
                port = listeners[0].socket.getsockname()[1]
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        trio.serve_listeners, self._serve_stream, self._secure(listeners)
                    )
                    scheme = "ws" if self._ssl_context is None else "wss"
                    self._url = f"{scheme}://{self._host}:{port}"
                    logger.info("signaling server listening on %s", self._url)
                    task_status.started(self)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
        finally:
            self._sessions.store = None
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

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        """One accepted TCP (or TLS) connection: within the caps, served; else closed at once.
        The socket is always closed when this returns."""
        source = _stream_source(stream)
        try:
            admission = self._caps.open(source)
            if admission is not Admission.OPEN:
                self._refused[admission] += 1
                self._abuse_log.log(
                    logger,
                    logging.WARNING,
                    ("cap", admission),
                    "signaling connection from %s closed on accept: %s (%d) reached",
                    source,
                    admission.value,
                    self._cap_value(admission),
                )
                if self._refusing >= _REFUSING_MAX:
                    self._refused_unanswered += 1
                    return
                self._refusing += 1
                try:
                    await _refuse(stream)
                finally:
                    self._refusing -= 1
                return
            try:
                await self._serve_admitted(stream, source)
            except Exception:
                # One connection's failure (a bug, or trio-websocket's reader on odd input)
                # never ends the server; Cancelled is not an Exception and passes through.
                logger.exception("signaling connection from %s failed; closing it", source)
            finally:
                self._caps.release(source)
        finally:
            await trio.aclose_forcefully(stream)

    def _cap_value(self, admission: Admission) -> int:
        if admission is Admission.SERVER_FULL:
            return self._limits.max_connections
        return self._limits.max_connections_per_address

    async def _serve_admitted(self, stream: trio.abc.Stream, source: str) -> None:
        """The WebSocket handshake (within the hello timeout), then the session."""
        timeout = min(_WS_TIMEOUT, self._limits.hello_timeout)
        async with trio.open_nursery() as nursery:
            request: WebSocketRequest | None = None
            with trio.move_on_after(timeout) as handshake:
                try:
                    # max_message_size: above it trio-websocket closes with 1009 itself.
                    request = await wrap_server_stream(
                        nursery, stream, max_message_size=_WS_MAX_MESSAGE
                    )
                except (ConnectionClosed, trio.BrokenResourceError) as exc:
                    logger.debug("WebSocket handshake from %s failed: %r", source, exc)
            if handshake.cancelled_caught:
                self._handshake_timed_out(source, timeout)
            elif request is not None:
                await self._handle(request, source)
            # Stops trio-websocket's reader task.
            nursery.cancel_scope.cancel(reason="signaling connection finished")

    def _handshake_timed_out(self, source: str, timeout: float) -> None:
        self._handshake_timeouts += 1
        self._abuse_log.log(
            logger,
            logging.WARNING,
            ("handshake", source),
            "signaling connection from %s closed: no WebSocket handshake within %.1fs",
            source,
            timeout,
        )

    async def _handle(self, request: WebSocketRequest, source: str) -> None:
        # Never let one connection's failure crash the server: bugs are logged, cancellation
        # passes through (Exception does not catch trio.Cancelled).
        try:
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("WebSocket handshake from %s failed: %r", source, exc)
            return
        try:
            await self._sessions.session(ws, source)
        finally:
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                await ws.aclose()


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
    limits: SignalingLimits | None = None,
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
        limits=limits,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel(reason="signaling server block exited")


async def _refuse(stream: trio.abc.Stream) -> None:
    """Answer a connection over a cap with HTTP 503, so its client fails at once (a WebSocket
    client whose server closes before answering its handshake may wait for its own timeout).
    Plain TCP only: over TLS this would cost a handshake."""
    if not isinstance(stream, trio.SocketStream):
        return
    with contextlib.suppress(trio.BrokenResourceError), trio.move_on_after(CLOSE_GRACE):
        # A fresh socket's buffer always takes these bytes at once.
        await stream.send_all(_REFUSAL)
        await stream.send_eof()
        # Read until the client closes too: a socket closed with unread data sends RST,
        # which may destroy the answer unread (a client slow to send its request, on a
        # loaded host, would see a reset instead of the 503).
        while await stream.receive_some(_REFUSAL_READ):
            pass


def _stream_source(stream: trio.abc.Stream) -> str:
    """The throttle's and the caps' key for the remote address of an accepted stream."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):  # never on TCP listeners; one shared key
        return "unknown"
    try:
        address = transport.socket.getpeername()[0]
    except OSError:  # the peer is already gone
        return "unknown"
    return source_key(str(address))


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
