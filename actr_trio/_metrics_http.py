"""A tiny HTTP server under Trio that answers ``GET /metrics`` (h11; docs/observability.md).

One request per connection, answered and closed. Whoever connects is treated as hostile: a
request (line and headers) over :data:`MAX_REQUEST` bytes gets 431, a malformed one 400, a
path other than ``/metrics`` 404, a method other than GET or HEAD 405, and each connection has
:data:`CONNECTION_TIMEOUT` seconds for all of it. At most :data:`MAX_CONNECTIONS` are served
at once; more are closed on accept. The page is rendered on the Trio thread, so it reads the
node's counters without a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import h11
import trio

__all__ = ["CONTENT_TYPE", "serve_metrics"]

#: Bytes a request's line and headers may take.
MAX_REQUEST: Final = 8192
#: Seconds one connection may take from accept to the end of the answer.
CONNECTION_TIMEOUT: Final = 10.0
#: Bytes read and dropped after the answer, while waiting for the client to close.
MAX_DRAIN: Final = 64 * 1024
#: Connections served at once; more are closed unanswered.
MAX_CONNECTIONS: Final = 16
PATH: Final = b"/metrics"

#: Prometheus' text exposition format, version 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Render = Callable[[], bytes]

_REASONS: Final = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}


class _Server:
    def __init__(self, render: Render, log: logging.Logger) -> None:
        self._render = render
        self._log = log
        self._active = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        if self._active >= MAX_CONNECTIONS:
            await stream.aclose()
            return
        self._active += 1
        try:
            async with stream:
                with trio.move_on_after(CONNECTION_TIMEOUT):
                    await self._serve(stream)
                    await _linger(stream)
        except trio.BrokenResourceError:
            pass  # the client went away: nothing to answer
        finally:
            self._active -= 1

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            request = await _read_request(stream, conn)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            await stream.send_all(_bare(status))
            return
        if request is None:
            return
        body, headers = b"", [(b"content-type", b"text/plain; charset=utf-8")]
        if request.method not in (b"GET", b"HEAD"):
            status, body = 405, b"only GET /metrics\n"
            headers.append((b"allow", b"GET, HEAD"))
        elif request.target.split(b"?", 1)[0] != PATH:
            status, body = 404, b"not found: try /metrics\n"
        else:
            status, body = 200, self._render()
            headers = [(b"content-type", CONTENT_TYPE.encode())]
        headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_REASONS[status]))
        if request.method != b"HEAD":
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    """The request's line and headers (its body, if any, is never read); None if the client
    closed first."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(MAX_REQUEST))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed (or PAUSED, which a first request never is)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read what the client still sends (bounded) until it closes: closing
    with unread input would reset the connection, and the client could lose the answer."""
    await stream.send_eof()
    left = MAX_DRAIN
    while left > 0:
        data = await stream.receive_some(min(left, MAX_REQUEST))
        if not data:
            return
        left -= len(data)


def _bare(status: int) -> bytes:
    # Written without h11: after a protocol error its state machine may refuse to answer.
    reason = "Request Header Fields Too Large" if status == 431 else "Bad Request"
    return f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()


async def serve_metrics(
    host: str,
    port: int,
    render: Render,
    *,
    log: logging.Logger,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render()`` at ``http://host:port/metrics`` until cancelled.

    ``task_status.started((host, port))`` with the address bound (``port=0`` picks one).

    Raises:
        OSError: the address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        bound = listeners[0].socket.getsockname()
        address = (str(bound[0]), int(bound[1]))
        server = _Server(render, log)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, server.handle, listeners)
            log.info("metrics at http://%s/metrics", _url_host(*address))
            task_status.started(address)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
