"""The handshake of a direct WebSocket link, run on a connection (both roles).

Part of the WebSocket transport (``_websocket.py`` has the overview): the messages and checks
are sans-IO in ``_websocket_handshake``; here they are sent and read on a trio-websocket
connection, and a listener's refusal (a close code and reason) is turned into the dialler's
error. Close codes (4000-4999: private use):
"""

from __future__ import annotations

import time
from typing import Final

from trio_websocket import ConnectionClosed, WebSocketConnection

from .._ids import ActrId
from ..errors import PeerNotAuthenticated
from . import _websocket_handshake as handshake
from ._abc import SignalingSession
from ._admission import decode_refusal
from ._websocket_link import Link

__all__ = [
    "CLOSE_GLARE",
    "CLOSE_NOT_AUTHENTICATED",
    "CLOSE_REFUSED",
    "CLOSE_TIMEOUT",
    "CLOSE_WRONG_NODE",
    "WrongNode",
    "closed_during_handshake",
    "greet_as_dialler",
    "greet_as_listener",
]

#: A proof did not verify (the reason says which check failed).
CLOSE_NOT_AUTHENTICATED: Final = 4001
#: Admission refused the link; the reason is ``"CODE message"`` (``encode_refusal``).
CLOSE_REFUSED: Final = 4003
#: The dialler asked for another node (a stale advertised address).
CLOSE_WRONG_NODE: Final = 4004
#: The handshake did not finish within the connect timeout.
CLOSE_TIMEOUT: Final = 4008
#: Both dialled at once and the other connection is kept (the lower ``ActrId`` dials).
CLOSE_GLARE: Final = 4009


class WrongNode(Exception):
    """The dialler's hello names another node than this one."""


async def greet_as_dialler(
    ws: WebSocketConnection, session: SignalingSession, *, peer: ActrId
) -> None:
    """Prove who we are to ``peer`` and check that it is ``peer``; return once accepted.

    Raises:
        PeerNotAuthenticated: the peer's proof failed, or it answered out of protocol.
        ConnectionClosed: the listener refused (see :func:`closed_during_handshake`).
    """
    local = session.actr_id
    nonce_d = handshake.new_nonce()
    await ws.send_message(handshake.hello(nonce_d, dialler=local, target=peer))
    nonce_l, _ = handshake.check_challenge(
        await ws.get_message(),
        nonce_d=nonce_d,
        local=local,
        peer=peer,
        issuer_key=session.issuer_key,
        now=time.time(),
    )
    await ws.send_message(
        handshake.proof(
            nonce_d=nonce_d,
            nonce_l=nonce_l,
            local=local,
            peer=peer,
            credential=session.credential,
            sign=session.node_key.sign,
        )
    )
    if not handshake.is_accept(await ws.get_message()):
        raise PeerNotAuthenticated("handshake: the peer did not accept our proof")


async def greet_as_listener(
    ws: WebSocketConnection, session: SignalingSession
) -> tuple[handshake.Hello, int]:
    """Check the dialler's proof (after proving ourselves); its hello and the hello's size.

    The caller admits the dialler, then sends ``handshake.accept()``.

    Raises:
        PeerNotAuthenticated: the dialler's hello or proof failed a check.
        WrongNode: the dialler wants another node.
        ConnectionClosed: the dialler went away.
    """
    local = session.actr_id
    first = await ws.get_message()
    hello = handshake.read_hello(first)
    if hello.target != local:
        raise WrongNode(f"this is {local}, not {hello.target}")
    nonce_l = handshake.new_nonce()
    await ws.send_message(
        handshake.challenge(
            hello, nonce_l, local=local, credential=session.credential, sign=session.node_key.sign
        )
    )
    handshake.check_proof(
        await ws.get_message(),
        hello=hello,
        nonce_l=nonce_l,
        local=local,
        issuer_key=session.issuer_key,
        now=time.time(),
    )
    return hello, len(first)


def closed_during_handshake(link: Link, exc: ConnectionClosed) -> None:
    """Break ``link`` with the error its senders should get for the listener's close."""
    code = exc.reason.code if exc.reason is not None else 1006
    text = (exc.reason.reason if exc.reason is not None else None) or "no reason given"
    if code == CLOSE_GLARE:
        link.glare = True
        link.superseded = True
        link.break_(f"glare: {text}")
    elif code == CLOSE_REFUSED:
        link.refused_by_peer(decode_refusal(text))
    elif code == CLOSE_NOT_AUTHENTICATED:
        link.break_(f"the peer refused our handshake: {text}", PeerNotAuthenticated)
    else:
        link.break_(f"connection closed during the handshake ({code}: {text})")
