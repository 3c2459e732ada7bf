"""Sans-IO signaling sessions: the server's directory of sessions and the client's session.

Both machines are plain synchronous code fed decoded frames (or raw bytes) and the current time;
they return what to send and what happened. The Trio shells in ``_server.py`` and ``_client.py``
only read, write, wait and persist. Invariants the server machine keeps:

* Rule 1: a connection is answered only after it proved its realm's secret (or the server has
  no realms); the secret never crosses the wire (``proof = HMAC-SHA256(secret, nonce || realm)``).
* Rule 2: a node only ever sees or reaches nodes of its own realm: discovery filters by realm
  and a relay to another realm is refused exactly like a relay to an unknown node.
* Rule 3: one ``ActrId`` is held by at most one connection; registering with a held id takes the
  id over and closes the previous holder.
* Rule 4: bad input (undecodable frame, over :data:`MAX_FRAME_SIZE`, out of order, an integer
  out of range) gets one ``Error`` frame and the connection is closed; nothing else is affected.
* Rule 5: every registration proves possession of a node key (an Ed25519 signature over the
  challenge nonce, the realm and the public key). The server assigns every serial; an
  ``ActrId`` is bound for good to the key that first registered it, and ``previous_id`` is only
  a request to get back an id bound to the same key: an id bound to another key, never
  assigned, or out of range is refused (``identity``) and whoever holds it is left alone.
* Rule 6: a registered node holds a credential (claims signed by the issuer key), renewed on
  the first heartbeat after two thirds of its lifetime.
* Rule 7: every connection has budgets (``_limits.py``): it must register within the hello
  timeout; its frames, the discovery answers it gets and its relays to each target are
  rate-limited; relay payloads are capped. A request over a budget is refused with a typed
  error (``overloaded``, ``too_large``), never queued; a connection far over its message rate
  is closed. Discovery answers come in pages that always fit :data:`MAX_FRAME_SIZE`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from google.protobuf.message import DecodeError

from .._acl import MAX_VISIBILITY_PATTERNS, Visibility, check_visibility_pattern
from .._proto.actr import signaling_pb2
from ..errors import (
    AuthError,
    ConfigError,
    IdentityTaken,
    RelayTooLarge,
    SessionTakenOver,
    SignalingError,
    SignalingOverloaded,
)

Frame = signaling_pb2.SignalingFrame

#: Largest frame either side accepts, checked before parsing (protobuf itself has no limit).
MAX_FRAME_SIZE: Final = 64 * 1024
#: Version sent in ``Hello``; the server refuses others.
PROTOCOL_VERSION: Final = 1
#: Discovery filters one Register may carry (a node has at most two ACLs: Config's, workload's).
MAX_VISIBILITY_FILTERS: Final = 4
#: Length of the server's challenge nonce in bytes.
NONCE_SIZE: Final = 32
#: Serials are 1..MAX_SERIAL: they must fit SQLite's signed 64-bit INTEGER (and the next one
#: too, which the store records).
MAX_SERIAL: Final = 2**63 - 1
#: Default seconds a credential is valid.
CREDENTIAL_LIFETIME: Final = 3600.0
#: A credential is renewed once this fraction of its lifetime has passed.
RENEW_AT: Final = 2 / 3
#: Most peers in one discovery page. The largest ActrId (three 64-character names, a 10-byte
#: serial) encodes in 214 bytes with its field header, so 256 of them always fit one frame.
MAX_PAGE_SIZE: Final = 256
#: Default cap on a relay's payload (UTF-8 bytes). A sealed aiortc offer is a few KiB.
MAX_RELAY_PAYLOAD: Final = 32 * 1024

# Error codes carried by Error frames.
AUTH: Final = "auth"
KEY: Final = "key"  # the node key proof (Register.public_key/signature) is missing or wrong
IDENTITY: Final = "identity"  # previous_id is not this key's to have back
BAD_FRAME: Final = "bad_frame"
PROTOCOL: Final = "protocol"
BAD_REQUEST: Final = "bad_request"
PEER_UNAVAILABLE: Final = "peer_unavailable"
TAKEOVER: Final = "takeover"
PRESENCE_TIMEOUT: Final = "presence_timeout"
REGISTER_TIMEOUT: Final = "register_timeout"  # not registered within the hello timeout
OVERLOADED: Final = "overloaded"  # over a budget (rate, discovery, relays); retry later
TOO_LARGE: Final = "too_large"  # a relay payload over the server's cap

_RELAY_KINDS: Final[Mapping[str, Frame.RelayKind]] = {
    "offer": Frame.OFFER,
    "answer": Frame.ANSWER,
    "ice": Frame.ICE,
    "refuse": Frame.REFUSE,
}
_RELAY_NAMES: Final[Mapping[int, str]] = {v: k for k, v in _RELAY_KINDS.items()}


class FrameError(SignalingError):
    """The other side sent a frame that does not decode, is too large, or is not allowed now."""


def decode_frame(data: bytes | str) -> Frame:
    """Decode one WebSocket message into a frame, checking its size before parsing.

    Raises:
        FrameError: a text message, over :data:`MAX_FRAME_SIZE`, undecodable, or empty.
    """
    if not isinstance(data, bytes):
        raise FrameError("text message: signaling frames are binary protobuf")
    if len(data) > MAX_FRAME_SIZE:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    frame = Frame()
    try:
        frame.ParseFromString(data)
    # Invalid UTF-8 raises DecodeError with upb but UnicodeDecodeError in pure Python.
    except (DecodeError, UnicodeDecodeError) as exc:
        raise FrameError(f"undecodable frame: {exc}") from exc
    if frame.WhichOneof("body") is None:
        raise FrameError("frame has no body")
    return frame


def encode_frame(frame: Frame) -> bytes:
    """Serialize a frame for the wire."""
    return frame.SerializeToString()


def prove(secret: str, nonce: bytes, realm: str) -> bytes:
    """The client's answer to a challenge: ``HMAC-SHA256(secret, nonce || realm)``."""
    return hmac.new(secret.encode(), nonce + realm.encode(), hashlib.sha256).digest()


def _visibility_from_wire(register: Frame.Register) -> tuple[Visibility, ...]:
    """The discovery filters a Register carries, checked (sizes first).

    Raises:
        ConfigError: too many filters or patterns, or a malformed pattern.
    """
    filters = register.visible_to
    if len(filters) > MAX_VISIBILITY_FILTERS:
        raise ConfigError(f"{len(filters)} discovery filters (at most {MAX_VISIBILITY_FILTERS})")
    out = []
    for f in filters:
        if len(f.allow) > MAX_VISIBILITY_PATTERNS or len(f.deny) > MAX_VISIBILITY_PATTERNS:
            raise ConfigError(f"a discovery filter has over {MAX_VISIBILITY_PATTERNS} patterns")
        for pattern in (*f.allow, *f.deny):
            check_visibility_pattern(pattern)
        out.append(Visibility(tuple(f.allow), tuple(f.deny)))
    return tuple(out)


def error_frame(code: str, message: str, request_id: int = 0) -> Frame:
    """Build an ``Error`` frame."""
    return Frame(error=Frame.Error(code=code, message=message, request_id=request_id))


def error_from_code(code: str, message: str) -> SignalingError:
    """Map an Error frame received from the server to the exception the client raises."""
    if code in (AUTH, KEY):
        return AuthError(message)
    if code == IDENTITY:
        return IdentityTaken(message)
    if code == TAKEOVER:
        return SessionTakenOver(message)
    if code == OVERLOADED:
        return SignalingOverloaded(f"signaling server: {message}")
    if code == TOO_LARGE:
        return RelayTooLarge(f"signaling server: {message}")
    return SignalingError(f"signaling server refused: {message} ({code})")


class Phase(enum.Enum):
    """Where a session stands (both sides walk the same phases)."""

    HELLO = "awaiting hello"
    AUTH = "awaiting authenticate"
    REGISTER = "awaiting register"
    BINDING = "awaiting the database"
    REGISTERED = "registered"
    OBSERVING = "observing"  # authenticated, inspecting the realm instead of registering
    CLOSED = "closed"
