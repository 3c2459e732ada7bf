"""The identity handshake of a direct WebSocket link: each side proves its node key.

Sans-IO (no Trio, no sockets): ``_websocket.py`` sends the messages built here as the first
binary WebSocket messages of a connection and feeds what it receives to the checks. Four
messages, dialler D and listener L::

    D -> L  HELLO      nonce_d, D's ActrId, the ActrId D means to reach
    L -> D  CHALLENGE  nonce_l, L's credential, L's signature over transcript("listener")
    D -> L  PROOF      D's credential, D's signature over transcript("dialler")
    L -> D  ACCEPT

where ``transcript(role) = DOMAIN || field(role) || field(nonce_d) || field(nonce_l) ||
field(signer) || field(peer)`` and ``field(x) = len(x):u32 || x``. Each nonce is 32 fresh random
bytes of the side that checks the other's signature over it, so a signature proves possession
of the key *now*, on *this* connection: a recorded handshake replayed on another connection
meets another nonce and fails. The role and both ids are signed too, so a signature is not
valid in the other direction or for another pair of nodes. A credential (issued by signaling,
checked against the pinned issuer key, current, in our realm) ties the key to the ``ActrId``,
exactly as the DTLS binding does on WebRTC (``_binding``).

Invariants: :func:`check_challenge` and :func:`check_proof` return only if every check passed,
else raise ``PeerNotAuthenticated`` saying which; no message longer than
:data:`MAX_HANDSHAKE_MESSAGE` is decoded.

Scope: the proof binds the identities to the connection's handshake; the bytes after it are not
signed (plain ``ws://``, no TLS). An attacker able to splice an established TCP connection on the
path could inject into it; WebRTC (DTLS) has no such gap. Direct links are for peers on the same
host or a trusted LAN (docs/security.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Final, Literal, final

import attrs

from .._identity import CredentialClaims, verify_credential, verify_signature
from .._ids import ActrId
from ..errors import ConfigError, CredentialError, PeerNotAuthenticated

__all__ = [
    "DOMAIN",
    "MAX_HANDSHAKE_MESSAGE",
    "NONCE_SIZE",
    "Hello",
    "accept",
    "challenge",
    "check_challenge",
    "check_proof",
    "hello",
    "is_accept",
    "new_nonce",
    "proof",
    "read_hello",
    "transcript",
]

Role = Literal["dialler", "listener"]

#: Prefix of every handshake signature: a node key's signature for anything else never verifies.
DOMAIN: Final = b"actr-ws-link-v1\0"
#: Every handshake message starts with this (a wrong protocol is refused before anything else).
MAGIC: Final = b"AWS1"
#: Largest handshake message read (a credential is ~200 bytes).
MAX_HANDSHAKE_MESSAGE: Final = 4096
NONCE_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
_MAX_FIELD: Final = 2048

_HELLO: Final = b"H"
_CHALLENGE: Final = b"C"
_PROOF: Final = b"P"
_ACCEPT: Final = b"K"


@final
@attrs.frozen
class Hello:
    """What a dialler said it is and whom it wants (both unverified until its proof)."""

    nonce: bytes
    dialler: ActrId
    target: ActrId


def new_nonce() -> bytes:
    """A fresh random nonce (one per connection and side)."""
    return secrets.token_bytes(NONCE_SIZE)


def transcript(
    role: Role, *, nonce_d: bytes, nonce_l: bytes, signer: ActrId, peer: ActrId
) -> bytes:
    """The bytes ``signer`` signs in ``role`` on a connection with these nonces to ``peer``."""
    fields = (role.encode(), nonce_d, nonce_l, str(signer).encode(), str(peer).encode())
    return DOMAIN + b"".join(_field(f) for f in fields)


# ---------------------------------------------------------------------- building messages


def hello(nonce: bytes, *, dialler: ActrId, target: ActrId) -> bytes:
    return MAGIC + _HELLO + nonce + _field(str(dialler).encode()) + _field(str(target).encode())


def challenge(
    hello: Hello,
    nonce: bytes,
    *,
    local: ActrId,
    credential: bytes,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The listener's answer to ``hello``: its nonce, credential and signature."""
    signed = transcript(
        "listener", nonce_d=hello.nonce, nonce_l=nonce, signer=local, peer=hello.dialler
    )
    return MAGIC + _CHALLENGE + nonce + _field(credential) + sign(signed)


def proof(
    *,
    nonce_d: bytes,
    nonce_l: bytes,
    local: ActrId,
    peer: ActrId,
    credential: bytes,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The dialler's proof, over the listener's nonce (read from its challenge)."""
    signed = transcript("dialler", nonce_d=nonce_d, nonce_l=nonce_l, signer=local, peer=peer)
    return MAGIC + _PROOF + _field(credential) + sign(signed)


def accept() -> bytes:
    return MAGIC + _ACCEPT


def is_accept(message: bytes | str) -> bool:
    return message == MAGIC + _ACCEPT


# ---------------------------------------------------------------------- checking messages


def read_hello(message: bytes | str) -> Hello:
    """The dialler's hello (the ids are parsed, not yet believed).

    Raises:
        PeerNotAuthenticated: not a hello, or malformed.
    """
    reader = _Reader(message, _HELLO)
    nonce = reader.take(NONCE_SIZE)
    dialler = _actr_id(reader.field(), "dialler")
    target = _actr_id(reader.field(), "target")
    reader.end()
    return Hello(nonce, dialler, target)


def check_challenge(
    message: bytes | str,
    *,
    nonce_d: bytes,
    local: ActrId,
    peer: ActrId,
    issuer_key: bytes,
    now: float,
) -> tuple[bytes, CredentialClaims]:
    """The listener's nonce and claims, once its challenge proved it is ``peer``.

    Raises:
        PeerNotAuthenticated: saying which check failed.
    """
    reader = _Reader(message, _CHALLENGE)
    nonce_l = reader.take(NONCE_SIZE)
    credential = reader.field()
    signature = reader.take(SIGNATURE_SIZE)
    reader.end()
    claims = _claims(credential, issuer_key, local=local, peer=peer, now=now)
    signed = transcript("listener", nonce_d=nonce_d, nonce_l=nonce_l, signer=peer, peer=local)
    if not verify_signature(claims.public_key, signed, signature):
        raise PeerNotAuthenticated(
            f"{peer}'s handshake signature does not verify for this connection (not its key,"
            " or not our nonce)"
        )
    return nonce_l, claims


def check_proof(
    message: bytes | str,
    *,
    hello: Hello,
    nonce_l: bytes,
    local: ActrId,
    issuer_key: bytes,
    now: float,
) -> CredentialClaims:
    """The dialler's claims, once its proof showed it holds the key of ``hello.dialler``.

    Raises:
        PeerNotAuthenticated: saying which check failed (a replayed proof fails here: it was
            made over another connection's nonce).
    """
    reader = _Reader(message, _PROOF)
    credential = reader.field()
    signature = reader.take(SIGNATURE_SIZE)
    reader.end()
    peer = hello.dialler
    claims = _claims(credential, issuer_key, local=local, peer=peer, now=now)
    signed = transcript("dialler", nonce_d=hello.nonce, nonce_l=nonce_l, signer=peer, peer=local)
    if not verify_signature(claims.public_key, signed, signature):
        raise PeerNotAuthenticated(
            f"{peer}'s handshake signature does not verify for this connection (not its key,"
            " or a proof replayed from another connection)"
        )
    return claims


def _claims(
    credential: bytes, issuer_key: bytes, *, local: ActrId, peer: ActrId, now: float
) -> CredentialClaims:
    try:
        claims = verify_credential(credential, issuer_key, now=now)
    except CredentialError as exc:
        raise PeerNotAuthenticated(f"credential refused: {exc}") from exc
    if claims.realm != local.realm or claims.actr_id.realm != local.realm:
        raise PeerNotAuthenticated(
            f"credential is for realm {claims.realm!r}, not ours ({local.realm!r})"
        )
    if claims.actr_id != peer:
        raise PeerNotAuthenticated(f"credential is for {claims.actr_id}, not for {peer}")
    return claims


def _actr_id(raw: bytes, what: str) -> ActrId:
    try:
        return ActrId.parse(raw.decode())
    except (UnicodeError, ConfigError, ValueError) as exc:
        raise PeerNotAuthenticated(f"handshake: invalid {what} id ({exc})") from None


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class _Reader:
    """Reads one handshake message of ``kind``; every read is bounded by what is left."""

    def __init__(self, message: bytes | str, kind: bytes) -> None:
        if not isinstance(message, bytes):
            raise PeerNotAuthenticated("handshake: a text message where a binary one belongs")
        if len(message) > MAX_HANDSHAKE_MESSAGE:
            raise PeerNotAuthenticated(f"handshake message of {len(message)} bytes")
        if message[: len(MAGIC)] != MAGIC:
            raise PeerNotAuthenticated("handshake: not an actr WebSocket link")
        if message[len(MAGIC) : len(MAGIC) + 1] != kind:
            raise PeerNotAuthenticated(f"handshake: expected message {kind!r}")
        self._data = message
        self._pos = len(MAGIC) + 1

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise PeerNotAuthenticated("handshake: truncated message")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def field(self) -> bytes:
        size = int.from_bytes(self.take(4), "big")
        if size > _MAX_FIELD:
            raise PeerNotAuthenticated(f"handshake: field of {size} bytes")
        return self.take(size)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise PeerNotAuthenticated("handshake: trailing bytes")
