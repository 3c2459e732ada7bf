"""The listening socket of the WebSocket transport: bound to ``Config.listen``, the
connections it accepts, and their upgrade to a WebSocket on :data:`RESOURCE` (anything else is
answered 404). Admission and the identity proofs are ``_websocket.py``'s."""

from __future__ import annotations

import logging
import socket
from typing import Final

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_server_stream,
)

from .._logging import TRANSPORT
from ._websocket_address import format_address, parse_address

log = logging.getLogger(TRANSPORT)

#: The HTTP path of a link (anything else is answered 404).
RESOURCE: Final = "/actr/link/v1"


async def bind_listener(listen: str) -> tuple[trio.SocketListener, str]:
    """Bind ``listen`` (``HOST:PORT``, port 0: any free one): the listener and the address to
    advertise (the port bound).

    Raises:
        OSError: the address cannot be bound (in use, not this host's).
    """
    host, port = parse_address(listen, allow_any_port=True)
    found = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = found[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(sockaddr)
        sock.listen(min(socket.SOMAXCONN, 128))
        listener = trio.SocketListener(sock)
    except BaseException:
        sock.close()
        raise
    return listener, format_address(host, sock.getsockname()[1])


async def accept(listener: trio.SocketListener) -> trio.SocketStream | None:
    """The next connection ``listener`` takes; None once it was closed (``listen`` ended)."""
    while True:
        try:
            return await listener.accept()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return None
        except OSError as exc:  # out of descriptors, say: the next accept may succeed
            log.warning("accepting a WebSocket connection failed: %s", exc)
            await trio.sleep(0.1)


async def upgrade(
    nursery: trio.Nursery, stream: trio.SocketStream, *, max_message: int
) -> WebSocketConnection | None:
    """The WebSocket of an accepted ``stream`` (its reader task in ``nursery``); None if the
    upgrade failed or asked for another path than :data:`RESOURCE` (answered 404)."""
    try:
        request = await wrap_server_stream(
            nursery, stream, message_queue_size=1, max_message_size=max_message
        )
        if request.path != RESOURCE:
            await request.reject(404)
            return None
        return await request.accept()
    except (HandshakeError, ConnectionClosed, trio.BrokenResourceError) as exc:
        log.debug("a WebSocket upgrade failed: %r", exc)
        return None


def remote_address(stream: trio.SocketStream) -> str:
    """``HOST:PORT`` of the other end of ``stream`` (``?`` once it is gone)."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return format_address(str(host), int(port))
