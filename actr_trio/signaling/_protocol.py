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
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

import attrs
from google.protobuf.message import DecodeError

from .._acl import MAX_VISIBILITY_PATTERNS, Visibility, check_visibility_pattern
from .._identity import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    IssuerKey,
    NodeKey,
    key_id,
    registration_message,
    verify_credential,
    verify_signature,
)
from .._ids import ActrId, ActrType, check_name
from .._proto.actr import signaling_pb2
from ..errors import (
    AuthError,
    ConfigError,
    CredentialError,
    IdentityTaken,
    IssuerKeyMismatch,
    PeerUnavailable,
    SessionTakenOver,
    SignalingError,
)
from ..transport._abc import Relay

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
OVERLOADED: Final = "overloaded"

_RELAY_KINDS: Final[Mapping[str, Frame.RelayKind]] = {
    "offer": Frame.OFFER,
    "answer": Frame.ANSWER,
    "ice": Frame.ICE,
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
    return SignalingError(f"signaling server refused: {message} ({code})")


# --------------------------------------------------------------------------------------------
# Server side


@attrs.frozen
class Send:
    """Send ``frame`` on connection ``conn`` (after whatever is already queued for it)."""

    conn: int
    frame: Frame


@attrs.frozen
class Close:
    """Close connection ``conn`` once the frames queued before this effect were sent."""

    conn: int
    reason: str


@attrs.frozen
class PersistRegistration:
    """Record that ``actr_id`` registered with ``public_key`` (bound to it for good), and that
    its realm's serials are taken up to it."""

    actr_id: ActrId
    public_key: bytes


@attrs.frozen
class LookupBinding:
    """Find the public key ``actr_id`` is bound to in the database, then call
    :meth:`ServerProtocol.binding_found` for ``conn`` with it."""

    conn: int
    actr_id: ActrId


@attrs.frozen
class PersistDeparture:
    """Record that ``actr_id`` left (unregistered, disconnected or timed out)."""

    actr_id: ActrId


ServerEffect = Send | Close | PersistRegistration | PersistDeparture | LookupBinding


class _Phase(enum.Enum):
    HELLO = "awaiting hello"
    AUTH = "awaiting authenticate"
    REGISTER = "awaiting register"
    BINDING = "awaiting the database"
    REGISTERED = "registered"
    CLOSED = "closed"


@attrs.define(eq=False)
class _Connection:
    phase: _Phase
    last_seen: float
    realm: str = ""
    nonce: bytes = b""
    actr_id: ActrId | None = None
    visibility: tuple[Visibility, ...] = ()  # who may discover it (its ACLs); () is everyone
    public_key: bytes = b""  # the node key, once its possession was proved
    actr_type: ActrType | None = None  # asked for in Register
    renew_at: float = 0.0  # when (``now``'s clock) the credential is due for renewal


@final
@attrs.frozen
class ServerProtocolStatistics:
    """Snapshot of the server machine.

    Attributes:
        connections: open connections, in any phase.
        registered: connections holding an ``ActrId``.
        realms: realms with at least one registered connection.
    """

    connections: int
    registered: int
    realms: int


def _random_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


@final
class ServerProtocol:
    """Every connection's session state and the realm directory, without any I/O.

    The shell calls :meth:`connect` when a WebSocket is accepted, :meth:`receive` for each
    message, :meth:`timeout` when a connection was silent for ``presence_timeout`` seconds and
    :meth:`disconnect` when it is gone, then carries out the returned effects in order.

    Args:
        realms: realm name -> secret. ``None`` admits any realm without a proof.
        presence_timeout: seconds of silence after which a node is no longer discoverable.
        next_serials: realm -> next serial to assign, as persisted (serials start at 1).
        nonce_factory: source of challenge nonces (tests pass a fixed one).
        issuer: the key that signs credentials (``None``: a fresh one for this run).
        credential_lifetime: seconds a credential is valid; at least twice
            ``presence_timeout``, so that a heartbeat always comes between renewal and expiry.
        wall_clock: Unix time for credentials (``now`` arguments are a monotonic clock).
    """

    def __init__(
        self,
        *,
        realms: Mapping[str, str] | None,
        presence_timeout: float,
        next_serials: Mapping[str, int] | None = None,
        nonce_factory: Callable[[], bytes] = _random_nonce,
        issuer: IssuerKey | None = None,
        credential_lifetime: float = CREDENTIAL_LIFETIME,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not presence_timeout > 0:
            raise ConfigError(f"presence_timeout={presence_timeout!r} must be > 0")
        if not credential_lifetime >= 2 * presence_timeout:
            raise ConfigError(
                f"credential_lifetime={credential_lifetime!r} must be at least twice "
                f"presence_timeout={presence_timeout!r} (nodes renew on a heartbeat)"
            )
        self._realms = None if realms is None else dict(realms)
        self._presence_timeout = presence_timeout
        self._next_serial: dict[str, int] = dict(next_serials or {})
        self._nonce_factory = nonce_factory
        self._issuer = IssuerKey.generate() if issuer is None else issuer
        self._credential_lifetime = credential_lifetime
        self._wall_clock = wall_clock
        self._connections: dict[int, _Connection] = {}
        # ActrId -> connection holding it (Rule 3).
        self._holders: dict[ActrId, int] = {}

    @property
    def presence_timeout(self) -> float:
        """Seconds of silence after which a node disappears from discovery."""
        return self._presence_timeout

    @property
    def issuer_public_key(self) -> bytes:
        """The raw public key that signs this server's credentials (nodes pin it)."""
        return self._issuer.public_bytes()

    def connect(self, conn: int, now: float) -> None:
        """A WebSocket connection ``conn`` was accepted; it must send ``Hello`` first."""
        if conn in self._connections:
            raise ValueError(f"connection {conn} is already known")
        self._connections[conn] = _Connection(_Phase.HELLO, last_seen=now)

    def receive(self, conn: int, data: bytes | str, now: float) -> list[ServerEffect]:
        """Handle one raw WebSocket message from ``conn`` (decoding it first)."""
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            return self._fail(conn, BAD_FRAME, str(exc))
        return self.handle(conn, frame, now)

    def handle(self, conn: int, frame: Frame, now: float) -> list[ServerEffect]:
        """Handle one decoded frame from ``conn``."""
        state = self._connections.get(conn)
        if state is None or state.phase is _Phase.CLOSED:
            return []
        state.last_seen = now
        body = frame.WhichOneof("body")
        if state.phase is _Phase.HELLO and body == "hello":
            return self._on_hello(conn, state, frame.hello)
        if state.phase is _Phase.AUTH and body == "authenticate":
            return self._on_authenticate(conn, state, frame.authenticate)
        if state.phase is _Phase.REGISTER and body == "register":
            return self._on_register(conn, state, frame.register, now)
        if state.phase is _Phase.REGISTERED:
            if body == "heartbeat":
                return [Send(conn, Frame(heartbeat_ack=self._heartbeat_ack(state, now)))]
            if body == "discover":
                return self._on_discover(conn, state, frame.discover, now)
            if body == "relay":
                return self._on_relay(conn, state, frame.relay, now)
            if body == "unregister":
                return [*self._leave(conn, state), Close(conn, "unregistered")]
        return self._fail(conn, PROTOCOL, f"unexpected {body} while {state.phase.value}")

    def timeout(self, conn: int, now: float) -> list[ServerEffect]:
        """``conn`` sent nothing for ``presence_timeout`` seconds: drop it."""
        state = self._connections.get(conn)
        if state is None or state.phase is _Phase.CLOSED:
            return []
        return self._fail(conn, PRESENCE_TIMEOUT, f"no frame for {self._presence_timeout} seconds")

    def disconnect(self, conn: int) -> list[ServerEffect]:
        """``conn`` is gone (closed by either side); forget it."""
        state = self._connections.pop(conn, None)
        if state is None:
            return []
        return self._leave(conn, state)

    def discoverable(
        self, realm: str, actr_type: ActrType, now: float, *, asker: ActrType | None = None
    ) -> list[ActrId]:
        """Registered, present nodes of ``actr_type`` in ``realm``, by serial; with ``asker``,
        only those whose ACLs let a node of that type see them."""
        return sorted(
            actr_id
            for actr_id, conn in self._holders.items()
            if actr_id.realm == realm
            and actr_id.type == actr_type
            and self._present(conn, now)
            and (asker is None or self._visible(conn, asker))
        )

    def _visible(self, conn: int, asker: ActrType) -> bool:
        return all(v.admits(asker) for v in self._connections[conn].visibility)

    def statistics(self) -> ServerProtocolStatistics:
        """A snapshot of connection and registration counts."""
        return ServerProtocolStatistics(
            connections=len(self._connections),
            registered=len(self._holders),
            realms=len({actr_id.realm for actr_id in self._holders}),
        )

    # -- handlers -----------------------------------------------------------------------------

    def _on_hello(self, conn: int, state: _Connection, hello: Frame.Hello) -> list[ServerEffect]:
        if hello.version != PROTOCOL_VERSION:
            return self._fail(
                conn,
                PROTOCOL,
                f"protocol version {hello.version} (server speaks {PROTOCOL_VERSION})",
            )
        try:
            check_name("realm", hello.realm)
        except ConfigError as exc:
            return self._fail(conn, BAD_REQUEST, str(exc))
        state.realm = hello.realm
        state.nonce = self._nonce_factory()
        state.phase = _Phase.AUTH
        challenge = Frame.Challenge(nonce=state.nonce, auth_required=self._realms is not None)
        return [Send(conn, Frame(challenge=challenge))]

    def _on_authenticate(
        self, conn: int, state: _Connection, auth: Frame.Authenticate
    ) -> list[ServerEffect]:
        if self._realms is not None:
            secret = self._realms.get(state.realm)
            expected = prove(secret if secret is not None else "", state.nonce, state.realm)
            if secret is None or not hmac.compare_digest(expected, auth.proof):
                # The client is told only "refused"; which of unknown realm, wrong secret or no
                # proof at all goes to the server's log (the Close reason). Why not tell the
                # client: "unknown realm" can only happen on a server configured with realms,
                # i.e. one guarding something, and there it would let anyone enumerate realm
                # names before guessing secrets; Rule 2 hides other realms for the same reason.
                # A node with no secret at all learns that on its own (Challenge.auth_required).
                return self._fail(
                    conn,
                    AUTH,
                    f"authentication failed for realm {state.realm!r}",
                    reason=_auth_failure(state.realm, known=secret is not None, proof=auth.proof),
                )
        state.phase = _Phase.REGISTER
        return []

    def _on_register(
        self, conn: int, state: _Connection, register: Frame.Register, now: float
    ) -> list[ServerEffect]:
        if len(register.public_key) != PUBLIC_KEY_SIZE or len(register.signature) != SIGNATURE_SIZE:
            return self._fail(conn, KEY, "Register must carry a node key and its signature")
        message = registration_message(state.nonce, state.realm, register.public_key)
        if not verify_signature(register.public_key, message, register.signature):
            return self._fail(
                conn, KEY, "the node key signature does not verify", reason=f"{KEY}: bad signature"
            )
        try:
            actr_type = ActrType.from_proto(register.actr_type)
            state.visibility = _visibility_from_wire(register)
        except ConfigError as exc:
            return self._fail(conn, BAD_REQUEST, str(exc))
        state.public_key = bytes(register.public_key)
        state.actr_type = actr_type
        if not register.HasField("previous_id"):
            return self._assign(conn, state, now)
        # Range first: a serial from the wire never reaches arithmetic or SQLite unchecked.
        serial = register.previous_id.serial
        if not 1 <= serial <= MAX_SERIAL:
            return self._refuse_identity(conn, f"serial {serial} is out of range (1..2^63-1)")
        try:
            previous = ActrId.from_proto(register.previous_id)
        except ConfigError as exc:
            return self._fail(conn, BAD_REQUEST, str(exc))
        if previous.realm != state.realm or previous.type != actr_type:
            return self._assign(conn, state, now)  # another realm's or type's id: a new one
        if serial >= self._next_serial.get(state.realm, 1):
            return self._refuse_identity(conn, f"{previous} was never assigned")
        holder = self._holders.get(previous)
        if holder is not None:
            holder_key = self._connections[holder].public_key
            return self._claim(conn, state, previous, holder_key, now)
        # Not held now: whether (and to which key) it was ever assigned is in the database.
        state.phase = _Phase.BINDING
        return [LookupBinding(conn, previous)]

    def binding_found(
        self, conn: int, actr_id: ActrId, public_key: bytes | None, now: float
    ) -> list[ServerEffect]:
        """The answer to :class:`LookupBinding`: ``actr_id``'s bound key, ``b""`` if it was
        registered before node keys existed, ``None`` if it was never assigned (as that id)."""
        state = self._connections.get(conn)
        if state is None or state.phase is not _Phase.BINDING:
            return []  # the connection went away meanwhile
        if public_key is None:
            return self._refuse_identity(conn, f"{actr_id} was never assigned")
        if not public_key:
            return self._refuse_identity(
                conn, f"{actr_id} was registered before node keys and cannot be proved"
            )
        # Someone may have registered it while the database answered: then its holder's key
        # is the bound one too (both came from the same binding).
        holder = self._holders.get(actr_id)
        bound = self._connections[holder].public_key if holder is not None else public_key
        return self._claim(conn, state, actr_id, bound, now)

    def _on_discover(
        self, conn: int, state: _Connection, discover: Frame.Discover, now: float
    ) -> list[ServerEffect]:
        try:
            actr_type = ActrType.from_proto(discover.actr_type)
        except ConfigError as exc:
            return [Send(conn, error_frame(BAD_REQUEST, str(exc), discover.request_id))]
        assert state.actr_id is not None
        found = self.discoverable(state.realm, actr_type, now, asker=state.actr_id.type)
        peers = Frame.Peers(request_id=discover.request_id, peers=[p.to_proto() for p in found])
        return [Send(conn, Frame(peers=peers))]

    def _on_relay(
        self, conn: int, state: _Connection, relay: Frame.RelayMessage, now: float
    ) -> list[ServerEffect]:
        assert state.actr_id is not None
        request_id = relay.request_id
        if relay.kind not in _RELAY_NAMES:
            return [Send(conn, error_frame(BAD_REQUEST, f"relay kind {relay.kind}", request_id))]
        try:
            target = ActrId.from_proto(relay.target)
        except ConfigError as exc:
            return [Send(conn, error_frame(BAD_REQUEST, str(exc), request_id))]
        holder = self._holders.get(target)
        # Rule 2: another realm's node is "unavailable", exactly like an unknown one.
        if target.realm != state.realm or holder is None or not self._present(holder, now):
            return [
                Send(conn, error_frame(PEER_UNAVAILABLE, f"{target} is not registered", request_id))
            ]
        forwarded = Frame.RelayMessage(
            source=state.actr_id.to_proto(),
            target=relay.target,
            kind=relay.kind,
            payload=relay.payload,
        )
        return [
            Send(holder, Frame(relay=forwarded)),
            Send(conn, Frame(relayed=Frame.Relayed(request_id=request_id))),
        ]

    # -- registration -------------------------------------------------------------------------

    def _assign(self, conn: int, state: _Connection, now: float) -> list[ServerEffect]:
        """Register ``conn`` under the realm's next serial, bound to its key."""
        assert state.actr_type is not None
        serial = self._next_serial.get(state.realm, 1)
        if serial >= MAX_SERIAL:  # the store records serial + 1, which must fit too
            return self._fail(conn, OVERLOADED, f"realm {state.realm!r} has no serials left")
        self._next_serial[state.realm] = serial + 1
        return self._complete(conn, state, ActrId(state.realm, serial, state.actr_type), now)

    def _claim(
        self, conn: int, state: _Connection, actr_id: ActrId, bound: bytes, now: float
    ) -> list[ServerEffect]:
        """Give ``actr_id`` back to ``conn`` if its proved key is the ``bound`` one."""
        if not hmac.compare_digest(bound, state.public_key):
            return self._refuse_identity(conn, f"{actr_id} is bound to another node key")
        effects: list[ServerEffect] = []
        holder = self._holders.get(actr_id)
        if holder is not None and holder != conn:
            # Same key: the node restarted or reconnected; the holder is its stale session.
            effects.extend(self._take_over(holder, actr_id))
        return effects + self._complete(conn, state, actr_id, now)

    def _complete(
        self, conn: int, state: _Connection, actr_id: ActrId, now: float
    ) -> list[ServerEffect]:
        self._holders[actr_id] = conn
        state.actr_id = actr_id
        state.phase = _Phase.REGISTERED
        registered = Frame.Registered(
            actr_id=actr_id.to_proto(),
            presence_timeout=self._presence_timeout,
            credential=self._issue(state, now),
            issuer_key=self._issuer.public_bytes(),
        )
        return [
            PersistRegistration(actr_id, state.public_key),
            Send(conn, Frame(registered=registered)),
        ]

    def _refuse_identity(self, conn: int, why: str) -> list[ServerEffect]:
        # The holder (if any) is left alone: a failed claim must not disconnect the real node.
        return self._fail(
            conn,
            IDENTITY,
            f"{why}: remove identity.json from the data_dir to register under a new ActrId",
            reason=f"{IDENTITY}: {why}",
        )

    def _issue(self, state: _Connection, now: float) -> bytes:
        assert state.actr_id is not None
        state.renew_at = now + self._credential_lifetime * RENEW_AT
        return self._issuer.issue(
            state.actr_id,
            state.public_key,
            now=self._wall_clock(),
            lifetime=self._credential_lifetime,
        )

    def _heartbeat_ack(self, state: _Connection, now: float) -> Frame.HeartbeatAck:
        if now < state.renew_at:
            return Frame.HeartbeatAck()
        return Frame.HeartbeatAck(credential=self._issue(state, now))

    # -- helpers ------------------------------------------------------------------------------

    def _present(self, conn: int, now: float) -> bool:
        state = self._connections.get(conn)
        return (
            state is not None
            and state.phase is _Phase.REGISTERED
            and now - state.last_seen <= self._presence_timeout
        )

    def _take_over(self, holder: int, actr_id: ActrId) -> list[ServerEffect]:
        old = self._connections.get(holder)
        if old is not None:
            old.phase = _Phase.CLOSED
            old.actr_id = None
        del self._holders[actr_id]
        message = f"{actr_id} registered again from another connection"
        return [Send(holder, error_frame(TAKEOVER, message)), Close(holder, "taken over")]

    def _leave(self, conn: int, state: _Connection) -> list[ServerEffect]:
        state.phase = _Phase.CLOSED
        actr_id, state.actr_id = state.actr_id, None
        if actr_id is not None and self._holders.get(actr_id) == conn:
            del self._holders[actr_id]
            return [PersistDeparture(actr_id)]
        return []

    def _fail(
        self, conn: int, code: str, message: str, *, reason: str | None = None
    ) -> list[ServerEffect]:
        """Send ``message`` and close; ``reason`` (default ``code``) is for the server's log."""
        state = self._connections.get(conn)
        if state is None or state.phase is _Phase.CLOSED:
            return []
        effects = self._leave(conn, state)
        return [*effects, Send(conn, error_frame(code, message)), Close(conn, reason or code)]


def _auth_failure(realm: str, *, known: bool, proof: bytes) -> str:
    """Why a proof was refused, for the server's log only (never sent to the client)."""
    if not known:
        return f"auth: unknown realm {realm!r} (not in this server's realms)"
    if not proof:
        return f"auth: no proof for realm {realm!r} (the node has no realm_secret)"
    return f"auth: wrong secret for realm {realm!r}"


# --------------------------------------------------------------------------------------------
# Client side


@attrs.frozen
class Outgoing:
    """Send this frame to the server."""

    frame: Frame


@attrs.frozen
class Registered:
    """The server registered this node as ``actr_id``, with a verified ``credential`` signed by
    ``issuer_key`` (the trusted issuer if one was given, else the server's, to pin)."""

    actr_id: ActrId
    presence_timeout: float
    credential: bytes = b""
    issuer_key: bytes = b""


@attrs.frozen
class CredentialRenewed:
    """The server renewed this node's credential (verified like the first one)."""

    credential: bytes


@attrs.frozen
class PeersFound:
    """Answer to the ``Discover`` sent with ``request_id``."""

    request_id: int
    peers: tuple[ActrId, ...]


@attrs.frozen
class RelayDelivered:
    """The relay sent with ``request_id`` reached its target's connection."""

    request_id: int


@attrs.frozen
class RelayReceived:
    """Another node of this realm relayed something to this node."""

    relay: Relay


@attrs.frozen
class RequestFailed:
    """The request ``request_id`` was refused; ``error`` is what its caller raises."""

    request_id: int
    error: SignalingError | PeerUnavailable


@attrs.frozen
class SessionFailed:
    """The session ended with an error: the server refused it (and closes the connection next),
    or the client saw it cannot succeed (no secret for a realm that requires one)."""

    code: str
    error: SignalingError


ClientEvent = (
    Outgoing
    | Registered
    | CredentialRenewed
    | PeersFound
    | RelayDelivered
    | RelayReceived
    | RequestFailed
    | SessionFailed
)


@final
class ClientProtocol:
    """One connection's session as the client sees it, without any I/O.

    Usage: send :meth:`hello`; feed every message to :meth:`receive` and act on the events
    (send :class:`Outgoing` frames); once :class:`Registered` arrived, build requests with
    :meth:`discover`, :meth:`relay`, :meth:`heartbeat` and :meth:`unregister`.

    Args:
        realm: the realm to join.
        secret: the realm secret (``None``: prove nothing; only an open server admits that).
        actr_type: what this node hosts.
        previous_id: identity to register under again, if the node had one.
        node_key: the key whose possession registration proves (``None``: a fresh one).
        trusted_issuer: the issuer public key the server must present (``None``: accept the
            server's, to be pinned by the caller: trust on first use).
        trust_hint: where ``trusted_issuer`` came from and how to change it, for the
            ``IssuerKeyMismatch`` message.
        wall_clock: Unix time, to check credential expiry.
        visibility: who may discover this node (its ACLs' :class:`Visibility`); empty: all.
    """

    def __init__(
        self,
        *,
        realm: str,
        secret: str | None,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey | None = None,
        trusted_issuer: bytes | None = None,
        trust_hint: str = "",
        wall_clock: Callable[[], float] = time.time,
        visibility: Sequence[Visibility] = (),
    ) -> None:
        self._realm = realm
        self._secret = secret
        self._actr_type = actr_type
        self._previous_id = previous_id
        self._visibility = tuple(visibility)
        self._node_key = NodeKey.generate() if node_key is None else node_key
        self._trusted_issuer = trusted_issuer
        self._trust_hint = trust_hint
        self._wall_clock = wall_clock
        self._issuer_key = b""  # the verified issuer, once registered
        self._phase = _Phase.HELLO
        self._actr_id: ActrId | None = None
        self._next_request = 1

    @property
    def actr_id(self) -> ActrId | None:
        """The registered identity, or ``None`` before registration."""
        return self._actr_id

    @property
    def registered(self) -> bool:
        """Whether the server registered this session and it has not ended."""
        return self._phase is _Phase.REGISTERED

    def hello(self) -> Frame:
        """The first frame to send."""
        if self._phase is not _Phase.HELLO:
            raise RuntimeError("hello() was already sent")
        self._phase = _Phase.AUTH
        return Frame(hello=Frame.Hello(realm=self._realm, version=PROTOCOL_VERSION))

    def receive(self, data: bytes | str) -> list[ClientEvent]:
        """Handle one raw message from the server.

        Raises:
            FrameError: the server sent something undecodable or out of order.
        """
        frame = decode_frame(data)
        body = frame.WhichOneof("body")
        if body == "error":
            return self._on_error(frame.error)
        if self._phase is _Phase.AUTH and body == "challenge":
            return self._on_challenge(frame.challenge)
        if self._phase is _Phase.REGISTER and body == "registered":
            return self._on_registered(frame.registered)
        if self._phase is _Phase.REGISTERED:
            if body == "heartbeat_ack":
                if not frame.heartbeat_ack.credential:
                    return []
                return self._on_renewed(frame.heartbeat_ack.credential)
            if body == "peers":
                try:
                    peers = tuple(ActrId.from_proto(p) for p in frame.peers.peers)
                except ConfigError as exc:
                    raise FrameError(f"invalid peer id: {exc}") from exc
                return [PeersFound(frame.peers.request_id, peers)]
            if body == "relayed":
                return [RelayDelivered(frame.relayed.request_id)]
            if body == "relay":
                return [RelayReceived(self._relay_from_wire(frame.relay))]
        raise FrameError(f"unexpected {body} from server while {self._phase.value}")

    def discover(self, actr_type: ActrType) -> tuple[int, Frame]:
        """A ``Discover`` request and its request id."""
        request_id = self._request_id()
        discover = Frame.Discover(request_id=request_id, actr_type=actr_type.to_proto())
        return request_id, Frame(discover=discover)

    def relay(self, target: ActrId, kind: str, payload: str) -> tuple[int, Frame]:
        """A relay request and its request id.

        Raises:
            ConfigError: ``kind`` is not ``"offer"``, ``"answer"`` or ``"ice"``.
        """
        wire_kind = _RELAY_KINDS.get(kind)
        if wire_kind is None:
            raise ConfigError(f"kind={kind!r} must be 'offer', 'answer' or 'ice'")
        assert self._actr_id is not None
        request_id = self._request_id()
        relay = Frame.RelayMessage(
            request_id=request_id,
            source=self._actr_id.to_proto(),
            target=target.to_proto(),
            kind=wire_kind,
            payload=payload,
        )
        return request_id, Frame(relay=relay)

    def heartbeat(self) -> Frame:
        """A ``Heartbeat`` frame (keeps this node discoverable)."""
        return Frame(heartbeat=Frame.Heartbeat())

    def unregister(self) -> Frame:
        """An ``Unregister`` frame; the session ends."""
        self._phase = _Phase.CLOSED
        return Frame(unregister=Frame.Unregister())

    # -- handlers -----------------------------------------------------------------------------

    def _request_id(self) -> int:
        if self._phase is not _Phase.REGISTERED:
            raise RuntimeError(f"no requests while {self._phase.value}")
        request_id, self._next_request = self._next_request, self._next_request + 1
        return request_id

    def _on_challenge(self, challenge: Frame.Challenge) -> list[ClientEvent]:
        if challenge.auth_required and self._secret is None:
            # Known here, before anything is sent: say so rather than have the proof refused.
            self._phase = _Phase.CLOSED
            return [SessionFailed(AUTH, AuthError(self._secret_unset()))]
        proof = b"" if self._secret is None else prove(self._secret, challenge.nonce, self._realm)
        public_key = self._node_key.public_bytes()
        signature = self._node_key.sign(
            registration_message(challenge.nonce, self._realm, public_key)
        )
        register = Frame.Register(
            actr_type=self._actr_type.to_proto(), public_key=public_key, signature=signature
        )
        if self._previous_id is not None:
            register.previous_id.CopyFrom(self._previous_id.to_proto())
        for v in self._visibility:
            register.visible_to.add(allow=v.allow, deny=v.deny)
        self._phase = _Phase.REGISTER
        # Register is pipelined after Authenticate: a refused proof closes the session anyway.
        return [
            Outgoing(Frame(authenticate=Frame.Authenticate(proof=proof))),
            Outgoing(Frame(register=register)),
        ]

    def _on_registered(self, registered: Frame.Registered) -> list[ClientEvent]:
        try:
            actr_id = ActrId.from_proto(registered.actr_id)
        except ConfigError as exc:
            raise FrameError(f"invalid registered id: {exc}") from exc
        if actr_id.realm != self._realm or actr_id.type != self._actr_type:
            raise FrameError(f"registered as {actr_id}, asked for {self._actr_type}@{self._realm}")
        previous = self._previous_id
        if (
            previous is not None
            and previous.realm == self._realm
            and previous.type == self._actr_type
            and previous != actr_id
        ):
            raise FrameError(f"registered as {actr_id} instead of {previous}")
        if not registered.presence_timeout > 0:
            raise FrameError(f"presence_timeout={registered.presence_timeout!r} must be > 0")
        issuer = bytes(registered.issuer_key)
        trusted = self._trusted_issuer
        if trusted is not None and not hmac.compare_digest(trusted, issuer):
            self._phase = _Phase.CLOSED
            return [SessionFailed("issuer", IssuerKeyMismatch(self._mismatch(trusted, issuer)))]
        try:
            self._check_credential(registered.credential, issuer, actr_id)
        except CredentialError as exc:
            self._phase = _Phase.CLOSED
            return [SessionFailed("credential", exc)]
        self._actr_id = actr_id
        self._issuer_key = issuer
        self._phase = _Phase.REGISTERED
        return [
            Registered(actr_id, registered.presence_timeout, bytes(registered.credential), issuer)
        ]

    def _on_renewed(self, credential: bytes) -> list[ClientEvent]:
        assert self._actr_id is not None
        try:
            self._check_credential(credential, self._issuer_key, self._actr_id)
        except CredentialError as exc:
            self._phase = _Phase.CLOSED
            return [SessionFailed("credential", exc)]
        return [CredentialRenewed(bytes(credential))]

    def _check_credential(self, credential: bytes, issuer: bytes, actr_id: ActrId) -> None:
        """Raises CredentialError unless ``credential`` is ``issuer``'s, valid now, and for
        exactly this node: ``actr_id`` and our own key."""
        if len(issuer) != PUBLIC_KEY_SIZE:
            raise CredentialError("the signaling server sent no issuer key")
        claims = verify_credential(credential, issuer, now=self._wall_clock())
        if claims.actr_id != actr_id or claims.public_key != self._node_key.public_bytes():
            raise CredentialError(
                f"the signaling server issued a credential for {claims.actr_id} (key "
                f"{key_id(claims.public_key)}), not for this node ({actr_id}, key "
                f"{self._node_key.key_id})"
            )

    def _mismatch(self, trusted: bytes, presented: bytes) -> str:
        return (
            f"the signaling server's issuer key {key_id(presented)} is not the trusted issuer "
            f"key {key_id(trusted)}{self._trust_hint}. If the server's key was replaced on "
            f"purpose, trust the new one (Config.trust_anchor = {presented.hex()!r}); "
            "otherwise this is not the signaling server you trust"
        )

    def _on_error(self, error: Frame.Error) -> list[ClientEvent]:
        if error.request_id and self._phase is _Phase.REGISTERED:
            exc: SignalingError | PeerUnavailable
            if error.code == PEER_UNAVAILABLE:
                exc = PeerUnavailable(error.message)
            else:
                exc = error_from_code(error.code, error.message)
            return [RequestFailed(error.request_id, exc)]
        self._phase = _Phase.CLOSED
        if error.code == AUTH:
            return [SessionFailed(AUTH, AuthError(self._refused()))]
        return [SessionFailed(error.code, error_from_code(error.code, error.message))]

    def _secret_unset(self) -> str:
        return (
            f"realm {self._realm!r} requires a secret: set Config.realm_secret "
            "(or ACTR_REALM_SECRET)"
        )

    def _refused(self) -> str:
        if self._secret is None:
            return self._secret_unset()
        # The server does not say which (see ServerProtocol._on_authenticate); its log does.
        return (
            f"realm {self._realm!r}: the signaling server rejected this node's secret "
            "(Config.realm_secret / ACTR_REALM_SECRET is wrong, or the server has no realm of "
            "that name; the server's log says which)"
        )

    def _relay_from_wire(self, relay: Frame.RelayMessage) -> Relay:
        kind = _RELAY_NAMES.get(relay.kind)
        if kind is None:
            raise FrameError(f"relay of unknown kind {relay.kind}")
        try:
            source = ActrId.from_proto(relay.source)
            target = ActrId.from_proto(relay.target)
        except ConfigError as exc:
            raise FrameError(f"invalid relay ids: {exc}") from exc
        if target != self._actr_id or source.realm != self._realm:
            raise FrameError(f"relay from {source} to {target} is not for this node")
        return Relay(source=source, target=target, kind=kind, payload=relay.payload)
