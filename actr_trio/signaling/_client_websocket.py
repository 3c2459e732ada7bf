"""The signaling client's WebSocket: TCP, then TLS for ``wss://`` (the server proves its
certificate), then the WebSocket handshake, and a close that always releases the socket.

Used by the node's client (``_client.py``) and the realm observer (``_inspect.py``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from .._config import Config
from .._logging import SIGNALING
from ..errors import ConfigError, ServerCertificateError, SignalingError
from ._protocol import MAX_FRAME_SIZE

logger = logging.getLogger(SIGNALING)

#: Seconds to connect, authenticate and register before the attempt counts as failed.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds, shielded, to say goodbye (Unregister + close handshake) when cancelled.
UNREGISTER_GRACE: Final = 1.0


def signaling_endpoint(config: Config) -> tuple[str, ssl.SSLContext | None]:
    """``config.signaling_url`` and the TLS context it needs (``None`` for ``ws://``).

    Raises:
        ConfigError: no ``signaling_url``, one that is not ``ws(s)://HOST:PORT``, or a
            ``signaling_ca`` that does not fit (see :func:`client_ssl_context`).
    """
    url = config.signaling_url
    if not url:
        raise ConfigError("signaling_url must be set to use the signaling server")
    parts = urlsplit(url)
    try:
        valid = parts.scheme in ("ws", "wss") and bool(parts.hostname) and parts.port is not None
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ConfigError(f"signaling_url={url!r} must look like ws://HOST:PORT or wss://HOST:PORT")
    return url, client_ssl_context(config, secure=parts.scheme == "wss")


def client_ssl_context(config: Config, *, secure: bool) -> ssl.SSLContext | None:
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


async def open_stream(
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


async def with_websocket(
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
    stream = await open_stream(parts.hostname, parts.port, ssl_context)
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
