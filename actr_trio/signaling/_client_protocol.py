"""Sans-IO signaling, client side: one node's session with the signaling server.

Plain synchronous code fed raw frames; it returns events (registered, peers found, relays,
failures) and the frames to send. The Trio shell in ``_client.py`` only reads, writes and waits.
"""

from __future__ import annotations

import hmac
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, final

import attrs

from .._acl import Visibility
from .._identity import (
    PUBLIC_KEY_SIZE,
    NodeKey,
    key_id,
    registration_message,
    verify_credential,
)
from .._ids import ActrId, ActrType
from ..errors import (
    AuthError,
    ConfigError,
    CredentialError,
    IssuerKeyMismatch,
    PeerUnavailable,
    SignalingError,
)
from ..transport._abc import Relay
from ..transport._websocket_address import parse_address
from ._protocol import (
    _RELAY_KINDS,
    _RELAY_NAMES,
    AUTH,
    MAX_PAGE_SIZE,
    PEER_UNAVAILABLE,
    PROTOCOL_VERSION,
    Frame,
    FrameError,
    Phase,
    decode_frame,
    error_from_code,
    prove,
)

# Relays a server may deliver between making us reachable and telling us our id.
MAX_EARLY_RELAYS: Final = 16


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
    """Answer to the ``Discover`` sent with ``request_id``: one page of peers, and the cursor
    to ask the next page with (0: this was the last)."""

    request_id: int
    peers: tuple[ActrId, ...]
    next_cursor: int = 0
    # The advertised listen addresses of peers of this page ("HOST:PORT", checked).
    addresses: tuple[tuple[ActrId, str], ...] = ()


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
        listen: the address this node takes direct WebSocket links on (``HOST:PORT``), to
            advertise in ``Register``; ``None``: no listener.
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
        listen: str | None = None,
    ) -> None:
        self._listen = listen or ""
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
        self._phase = Phase.HELLO
        self._actr_id: ActrId | None = None
        # Relays that overtook our Registered frame (see receive), read once registered.
        self._early_relays: list[Frame.RelayMessage] = []
        self._next_request = 1

    @property
    def actr_id(self) -> ActrId | None:
        """The registered identity, or ``None`` before registration."""
        return self._actr_id

    @property
    def registered(self) -> bool:
        """Whether the server registered this session and it has not ended."""
        return self._phase is Phase.REGISTERED

    def hello(self) -> Frame:
        """The first frame to send."""
        if self._phase is not Phase.HELLO:
            raise RuntimeError("hello() was already sent")
        self._phase = Phase.AUTH
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
        if self._phase is Phase.AUTH and body == "challenge":
            return self._on_challenge(frame.challenge)
        if self._phase is Phase.REGISTER and body == "registered":
            return self._on_registered(frame.registered)
        if self._phase is Phase.REGISTER and body == "relay":
            # The server makes us reachable, then persists the registration, then sends
            # Registered: another node's offer can reach us first. Kept (bounded) and delivered
            # right after Registered, once we know our id to check it against.
            if len(self._early_relays) >= MAX_EARLY_RELAYS:
                raise FrameError(f"over {MAX_EARLY_RELAYS} relays before registration")
            self._early_relays.append(frame.relay)
            return []
        if self._phase is Phase.REGISTERED:
            if body == "heartbeat_ack":
                if not frame.heartbeat_ack.credential:
                    return []
                return self._on_renewed(frame.heartbeat_ack.credential)
            if body == "peers":
                try:
                    peers = tuple(ActrId.from_proto(p) for p in frame.peers.peers)
                except ConfigError as exc:
                    raise FrameError(f"invalid peer id: {exc}") from exc
                addresses = _addresses_from_wire(frame.peers.addresses, peers)
                return [
                    PeersFound(frame.peers.request_id, peers, frame.peers.next_cursor, addresses)
                ]
            if body == "relayed":
                return [RelayDelivered(frame.relayed.request_id)]
            if body == "relay":
                return [RelayReceived(self._relay_from_wire(frame.relay))]
        raise FrameError(f"unexpected {body} from server while {self._phase.value}")

    def discover(self, actr_type: ActrType, cursor: int = 0) -> tuple[int, Frame]:
        """A ``Discover`` request for the page after ``cursor`` (0: the first), as large as
        the server allows, and its request id."""
        request_id = self._request_id()
        discover = Frame.Discover(
            request_id=request_id,
            actr_type=actr_type.to_proto(),
            cursor=cursor,
            page_size=MAX_PAGE_SIZE,
        )
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

    def heartbeat(self, report: Frame.NodeReport | None = None) -> Frame:
        """A ``Heartbeat`` frame (keeps this node discoverable), with the node's ``report``."""
        return Frame(heartbeat=Frame.Heartbeat(report=report))

    def unregister(self) -> Frame:
        """An ``Unregister`` frame; the session ends."""
        self._phase = Phase.CLOSED
        return Frame(unregister=Frame.Unregister())

    # -- handlers -----------------------------------------------------------------------------

    def _request_id(self) -> int:
        if self._phase is not Phase.REGISTERED:
            raise RuntimeError(f"no requests while {self._phase.value}")
        request_id, self._next_request = self._next_request, self._next_request + 1
        return request_id

    def _on_challenge(self, challenge: Frame.Challenge) -> list[ClientEvent]:
        if challenge.auth_required and self._secret is None:
            # Known here, before anything is sent: say so rather than have the proof refused.
            self._phase = Phase.CLOSED
            return [SessionFailed(AUTH, AuthError(self._secret_unset()))]
        proof = b"" if self._secret is None else prove(self._secret, challenge.nonce, self._realm)
        public_key = self._node_key.public_bytes()
        signature = self._node_key.sign(
            registration_message(challenge.nonce, self._realm, public_key)
        )
        register = Frame.Register(
            actr_type=self._actr_type.to_proto(),
            public_key=public_key,
            signature=signature,
            listen=self._listen,
        )
        if self._previous_id is not None:
            register.previous_id.CopyFrom(self._previous_id.to_proto())
        for v in self._visibility:
            register.visible_to.add(allow=v.allow, deny=v.deny)
        self._phase = Phase.REGISTER
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
            self._phase = Phase.CLOSED
            return [SessionFailed("issuer", IssuerKeyMismatch(self._mismatch(trusted, issuer)))]
        try:
            self._check_credential(registered.credential, issuer, actr_id)
        except CredentialError as exc:
            self._phase = Phase.CLOSED
            return [SessionFailed("credential", exc)]
        self._actr_id = actr_id
        self._issuer_key = issuer
        self._phase = Phase.REGISTERED
        early = [RelayReceived(self._relay_from_wire(relay)) for relay in self._early_relays]
        self._early_relays.clear()
        return [
            Registered(actr_id, registered.presence_timeout, bytes(registered.credential), issuer),
            *early,
        ]

    def _on_renewed(self, credential: bytes) -> list[ClientEvent]:
        assert self._actr_id is not None
        try:
            self._check_credential(credential, self._issuer_key, self._actr_id)
        except CredentialError as exc:
            self._phase = Phase.CLOSED
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
        if error.request_id and self._phase is Phase.REGISTERED:
            exc: SignalingError | PeerUnavailable
            if error.code == PEER_UNAVAILABLE:
                exc = PeerUnavailable(error.message)
            else:
                exc = error_from_code(error.code, error.message)
            return [RequestFailed(error.request_id, exc)]
        self._phase = Phase.CLOSED
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


def _addresses_from_wire(
    entries: Iterable[Frame.PeerAddress], peers: tuple[ActrId, ...]
) -> tuple[tuple[ActrId, str], ...]:
    """The listen addresses of ``peers`` a ``Peers`` frame carries, each checked.

    A node dials these: an entry for an id not on the page, with an invalid id or a malformed
    address is dropped (that peer is then reached over WebRTC), never dialled.
    """
    on_page = set(peers)
    found: list[tuple[ActrId, str]] = []
    for entry in itertools.islice(entries, len(peers)):
        try:
            actr_id = ActrId.from_proto(entry.actr_id)
            parse_address(entry.listen)
        except (ConfigError, ValueError):
            continue
        if actr_id in on_page:
            found.append((actr_id, entry.listen))
    return tuple(found)
