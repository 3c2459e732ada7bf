"""The realm status page: a small read-only HTTP server (h11 on Trio) beside the signaling
server, showing what ``actr-trio inspect`` shows, refreshed live.

Who may look:

* bound to a loopback address (the default), anyone on this machine sees every realm; the
  ``Host`` header must name a loopback host too, so a web page elsewhere cannot read it
  through DNS rebinding;
* bound elsewhere (or with ``require_credentials``), the server must have realms, and each
  request must carry HTTP Basic
  credentials ``REALM:SECRET`` (the realm's secret); it then sees that realm only. Failed
  credentials slow their address down like failed node authentications. Serve it over TLS
  (the signaling server's certificate) or on a network you trust: Basic sends the secret.

Paths: ``/`` (the page), ``/status.js``, ``/status.css``, ``/api/realms`` and
``/api/nodes?realm=R`` (JSON). Every connection is bounded (open connections, request size,
idle time); nothing here changes the server's state.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Final, final
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from .._logging import SIGNALING, RateLimiter
from ..errors import ConfigError
from ._server import SignalingServer
from ._status_assets import CSS, HTML, JS
from ._throttle import AuthThrottle, source_key

logger = logging.getLogger(SIGNALING)

#: Connections served at once; more are closed on accept.
MAX_CONNECTIONS: Final = 64
#: Seconds a connection may stay idle between requests (or take to send one).
IDLE_TIMEOUT: Final = 30.0
#: Bytes of one request's head at most.
MAX_REQUEST_HEAD: Final = 8192
#: Node rows in one ``/api/nodes`` answer at most (``"truncated": true`` beyond).
MAX_ROWS: Final = 1000
_RECEIVE: Final = 4096
# Seconds and bytes a closing connection is read for (see _linger).
_LINGER: Final = 1.0
_LINGER_BYTES: Final = 65536
_SECURITY_HEADERS: Final = (
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)
_STATIC: Final[Mapping[str, tuple[bytes, bytes]]] = {
    "/": (b"text/html; charset=utf-8", HTML.encode()),
    "/status.js": (b"text/javascript; charset=utf-8", JS.encode()),
    "/status.css": (b"text/css; charset=utf-8", CSS.encode()),
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.frozen
class _Answer:
    status: int
    content_type: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(status: int, value: Any) -> _Answer:
    return _Answer(status, b"application/json", json.dumps(value).encode())


def _text(status: int, message: str) -> _Answer:
    return _Answer(status, b"text/plain; charset=utf-8", f"{message}\n".encode())


@final
class StatusPage:
    """The status page of ``server``, served at ``http://host:port/``.

    Args:
        server: the signaling server whose realms it shows (running, or about to).
        host: where to listen; a loopback address unless every realm has credentials.
        port: TCP port; 0 picks a free one (:attr:`url`).
        realms: realm name -> secret, the same as the server's: required off loopback.
        ssl_context: serve ``https://`` with this server-side context.
        require_credentials: ask for realm credentials on a loopback address too (a machine
            shared with other users); always on elsewhere.

    Raises:
        ConfigError: ``host`` is not loopback and there are no realms to ask credentials of,
            or a port out of range.
    """

    def __init__(
        self,
        server: SignalingServer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        realms: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_credentials: bool = False,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"status page port={port!r} must be in 0..65535")
        self._open = is_loopback(host) and not require_credentials
        if not self._open and not realms:
            where = "with credentials" if is_loopback(host) else f"on {host} (not loopback)"
            raise ConfigError(
                f"the status page {where} needs realms with secrets: every request must prove "
                "one (HTTP Basic REALM:SECRET); bind it to 127.0.0.1 or configure realms"
            )
        self._loopback = is_loopback(host)
        self._server = server
        self._host = host
        self._port = port
        self._realms = dict(realms or {})
        self._ssl_context = ssl_context
        self._throttle = AuthThrottle()
        self._log = RateLimiter(trio.current_time)
        self._connections = 0
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"<StatusPage {self._url or 'not listening'}>"

    @property
    def url(self) -> str:
        """``http://host:port/`` (``https://`` with TLS) once listening.

        Raises:
            RuntimeError: not listening yet.
        """
        if self._url is None:
            raise RuntimeError("the status page is not listening yet")
        return self._url

    async def run(
        self, *, task_status: trio.TaskStatus[StatusPage] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started(self)`` once listening.

        Raises:
            OSError: the address cannot be bound.
        """
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        try:
            port = listeners[0].socket.getsockname()[1]
            scheme = "http" if self._ssl_context is None else "https"
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._url = f"{scheme}://{host}:{port}/"
            served: list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]
            if self._ssl_context is None:
                served = listeners
            else:
                served = [
                    trio.SSLListener(x, self._ssl_context, https_compatible=True) for x in listeners
                ]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve, served)
                logger.info("realm status page at %s", self._url)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    # -- one connection ---------------------------------------------------------------------------

    async def _serve(self, stream: trio.abc.Stream) -> None:
        try:
            if self._connections >= MAX_CONNECTIONS:
                return
            self._connections += 1
            try:
                await self._serve_http(stream, _source(stream))
            except (trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as exc:
                logger.debug("status page connection ended: %r", exc)
            except Exception:
                # A bug in one answer never ends the page; Cancelled passes through.
                logger.exception("status page connection failed; closing it")
            finally:
                self._connections -= 1
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.abc.Stream, source: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        while True:
            with trio.fail_after(IDLE_TIMEOUT):
                request = await _next_request(conn, stream)
            if request is None:
                return
            answer = await self._answer(request, source)
            await _send(conn, stream, request, answer)
            if answer.status < 400:
                with trio.fail_after(IDLE_TIMEOUT):
                    await _skip_body(conn, stream)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                # A request with a body, or "Connection: close": no second cycle.
                await _linger(stream)
                return
            conn.start_next_cycle()

    # -- answers ----------------------------------------------------------------------------------

    async def _answer(self, request: h11.Request, source: str) -> _Answer:
        if request.method not in (b"GET", b"HEAD"):
            return _Answer(405, b"text/plain", b"read-only\n", ((b"Allow", b"GET, HEAD"),))
        headers = {name.lower(): value for name, value in request.headers}
        if self._loopback and not is_loopback(_host_name(headers.get(b"host", b""))):
            return _text(403, "this status page answers requests for a loopback host only")
        scope = await self._scope(headers.get(b"authorization"), source)
        if scope is False:
            return _Answer(
                401,
                b"text/plain",
                b"realm credentials required\n",
                ((b"WWW-Authenticate", b'Basic realm="actr-trio status", charset="UTF-8"'),),
            )
        target = urlsplit(request.target.decode("ascii", "replace"))
        static = _STATIC.get(target.path)
        if static is not None:
            return _Answer(200, static[0], static[1])
        realm_scope = None if scope is True else scope
        if target.path == "/api/realms":
            names = self._server.realm_names() if realm_scope is None else [realm_scope]
            return _json(200, {"realms": names})
        if target.path == "/api/nodes":
            realm = parse_qs(target.query).get("realm", [realm_scope or ""])[0]
            if realm_scope is not None and realm != realm_scope:
                return _text(403, "these credentials are for another realm")
            rows = self._server.inspect(realm, limit=MAX_ROWS + 1)
            return _json(
                200,
                {
                    "realm": realm,
                    "nodes": [row.to_json() for row in rows[:MAX_ROWS]],
                    "truncated": len(rows) > MAX_ROWS,
                },
            )
        return _text(404, "not found")

    async def _scope(self, authorization: bytes | None, source: str) -> str | bool:
        """What a request may see: ``True`` every realm (loopback, no credentials), a realm
        name (its credentials were proved), ``False`` nothing (ask for credentials)."""
        if authorization is None:
            return self._open
        wait = self._throttle.admit(source, trio.current_time())
        if wait is None:
            return False
        await trio.sleep(wait)  # not synchronisation: the delay is the defence against guessing
        realm, secret = _basic_credentials(authorization)
        expected = self._realms.get(realm)
        if expected is not None and hmac.compare_digest(expected.encode(), secret.encode()):
            return realm
        self._throttle.failed(source, trio.current_time())
        self._log.log(
            logger,
            logging.WARNING,
            ("status auth", source),
            "status page request from %s refused: wrong realm credentials",
            source,
        )
        return False


async def _next_request(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    """The next request's head (its body, if any, is left unread); None when the client
    closed the connection."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE)))
            continue
        if isinstance(event, h11.Request):
            return event
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")


async def _skip_body(conn: h11.Connection, stream: trio.abc.Stream) -> None:
    """Read the rest of the request (a GET has none: its end is already here), at most
    :data:`MAX_REQUEST_HEAD` bytes of body; a longer one is left unread (no next cycle)."""
    left = MAX_REQUEST_HEAD
    while conn.their_state is h11.SEND_BODY and left > 0:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE)))
        elif isinstance(event, h11.Data):
            left -= len(event.data)


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, answer: _Answer
) -> None:
    headers = [
        (b"Content-Type", answer.content_type),
        (b"Content-Length", str(len(answer.body)).encode()),
        *_SECURITY_HEADERS,
        *answer.headers,
    ]
    if answer.status >= 400:
        headers.append((b"Connection", b"close"))
    data = conn.send(h11.Response(status_code=answer.status, headers=headers)) or b""
    if request.method != b"HEAD":
        data += conn.send(h11.Data(data=answer.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read (bounded) until the client closes too: closing with its request
    body unread would send RST, which can destroy the answer before the client reads it."""
    if not isinstance(stream, trio.SocketStream):
        return
    with trio.move_on_after(_LINGER):
        await stream.send_eof()
        left = _LINGER_BYTES
        while left > 0 and (data := await stream.receive_some(_RECEIVE)):
            left -= len(data)


def _basic_credentials(authorization: bytes) -> tuple[str, str]:
    """``(realm, secret)`` of a ``Basic`` Authorization header; ``("", "")`` if malformed."""
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    realm, _, secret = decoded.partition(":")
    return realm, secret


def _host_name(host: bytes) -> str:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    text = host.decode("ascii", "replace")
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def _source(stream: trio.abc.Stream) -> str:
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):
        return "unknown"
    try:
        return source_key(str(transport.socket.getpeername()[0]))
    except OSError:
        return "unknown"
