"""An observer of a realm: what ``actr-trio inspect`` asks the signaling server.

It proves the realm secret exactly like a node (Hello, Challenge, Authenticate) but sends
``Inspect`` instead of ``Register``: it is never registered, never discoverable, holds no
identity, and sees only the realm it proved. The server answers one page of
:class:`~._reports.NodeStatus` rows per ``Inspect``; :func:`inspect_realm` follows the pages.
"""

from __future__ import annotations

import ssl
from typing import Final

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from ..errors import AuthError, SignalingError
from ._client_websocket import with_websocket as _with_websocket
from ._protocol import (
    PROTOCOL_VERSION,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    error_from_code,
    prove,
)
from ._reports import NodeStatus, ReportRefused

#: Rows :func:`inspect_realm` reads at most (pages of 16): a bound on what a server can send.
MAX_INSPECTED: Final = 10_000
#: Seconds the whole inspection may take.
INSPECT_TIMEOUT: Final = 15.0


async def inspect_realm(
    url: str,
    realm: str,
    secret: str | None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limit: int = MAX_INSPECTED,
) -> list[NodeStatus]:
    """The registered nodes of ``realm`` at the signaling server ``url``, by type and serial,
    with what they last reported.

    Raises:
        AuthError: the server refused the realm secret (or needs one and ``secret`` is None).
        SignalingError: the server could not be reached, closed the connection, or sent
            something invalid; ``SignalingOverloaded`` over its budgets.
        trio.TooSlowError: no complete answer within :data:`INSPECT_TIMEOUT`.
    """
    rows: list[NodeStatus] = []

    async def session(ws: WebSocketConnection) -> None:
        await ws.send_message(
            encode_frame(Frame(hello=Frame.Hello(realm=realm, version=PROTOCOL_VERSION)))
        )
        challenge = _expect(await ws.get_message(), "challenge").challenge
        if challenge.auth_required and secret is None:
            raise AuthError(
                f"realm {realm!r}: the signaling server requires the realm secret "
                "(set ACTR_REALM_SECRET)"
            )
        proof = b"" if secret is None else prove(secret, challenge.nonce, realm)
        await ws.send_message(encode_frame(Frame(authenticate=Frame.Authenticate(proof=proof))))
        cursor = 0
        for request_id in range(1, limit + 2):
            inspect = Frame.Inspect(request_id=request_id, cursor=cursor)
            await ws.send_message(encode_frame(Frame(inspect=inspect)))
            answer = _expect(await ws.get_message(), "inspection").inspection
            if answer.request_id != request_id:
                raise FrameError(f"inspection answers request {answer.request_id}")
            try:
                rows.extend(NodeStatus.from_wire(node) for node in answer.nodes)
            except ReportRefused as exc:
                raise FrameError(f"the signaling server sent an invalid node row: {exc}") from exc
            if not answer.next_cursor or len(rows) >= limit:
                break
            if answer.next_cursor <= cursor:
                raise FrameError(f"inspection cursor {answer.next_cursor} after {cursor}")
            cursor = answer.next_cursor
        await ws.send_message(encode_frame(Frame(unregister=Frame.Unregister())))

    try:
        with trio.fail_after(INSPECT_TIMEOUT):
            await _with_websocket(url, ssl_context, session)
    except (HandshakeError, ConnectionClosed, OSError) as exc:
        raise SignalingError(f"cannot inspect {url}: {exc!r}") from exc
    return rows[:limit]


def _expect(data: bytes | str, body: str) -> Frame:
    """The frame ``data`` if its body is ``body``; the server's Error raised as its error."""
    frame = decode_frame(data)
    kind = frame.WhichOneof("body")
    if kind == "error":
        error = error_from_code(frame.error.code, frame.error.message)
        if isinstance(error, AuthError):
            raise AuthError(
                f"realm: the signaling server refused the realm secret ({frame.error.message})"
            )
        raise error
    if kind != body:
        raise FrameError(f"expected {body} from the signaling server, got {kind}")
    return frame
