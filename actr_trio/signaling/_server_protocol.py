"""Sans-IO signaling, server side: the directory of sessions of one signaling server.

Plain synchronous code fed decoded frames and the current time; it returns effects (frames to
send, connections to close, registrations to persist). The Trio shell in ``_server.py`` only
reads, writes, waits and persists. The rules it keeps are listed in ``_protocol.py``. Its
parts: the effects (``_server_effects.py``), each connection's state (``_server_state.py``) and
discovery and relays (``_server_routing.py``); hello, authentication, registration, heartbeats
and the observers' pages are here.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import final

from .._identity import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    IssuerKey,
    registration_message,
    verify_signature,
)
from .._ids import ActrId, ActrType, check_name
from ..errors import (
    ConfigError,
)
from ..transport._websocket_address import parse_address
from ._directory import Directory
from ._limits import ConnectionBudget, SignalingLimits, Verdict
from ._protocol import (
    AUTH,
    BAD_FRAME,
    BAD_REQUEST,
    CREDENTIAL_LIFETIME,
    IDENTITY,
    KEY,
    MAX_PAGE_SIZE,
    MAX_SERIAL,
    NONCE_SIZE,
    OVERLOADED,
    PRESENCE_TIMEOUT,
    PROTOCOL,
    PROTOCOL_VERSION,
    REGISTER_TIMEOUT,
    RENEW_AT,
    TAKEOVER,
    Frame,
    FrameError,
    Phase,
    _visibility_from_wire,
    decode_frame,
    error_frame,
    prove,
)
from ._reports import INSPECT_PAGE, NodeStatus, Reported, ReportRefused, report_from_wire
from ._server_effects import (
    Close,
    Forward,
    LookupBinding,
    PersistDeparture,
    PersistRegistration,
    Send,
    ServerEffect,
)
from ._server_routing import Routing
from ._server_state import ADMITTED, ConnectionState, ServerProtocolStatistics

# The effects are imported from here by the shell and the tests.
__all__ = [
    "Close",
    "Forward",
    "LookupBinding",
    "PersistDeparture",
    "PersistRegistration",
    "Send",
    "ServerEffect",
    "ServerProtocol",
    "ServerProtocolStatistics",
]


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
        limits: the per-connection budgets (hello timeout, rates, relay size cap).
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
        limits: SignalingLimits | None = None,
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
        self._limits = SignalingLimits() if limits is None else limits
        self._connections: dict[int, ConnectionState] = {}
        # ActrId -> connection holding it (Rule 3), indexed by realm and type for discovery.
        self._directory = Directory()
        self._routing = Routing(self._connections, self._directory, self._limits, presence_timeout)
        self._register_timeouts = 0
        self._rate_limited = 0
        self._rate_closed = 0
        self._reports_refused = 0

    @property
    def presence_timeout(self) -> float:
        """Seconds of silence after which a node disappears from discovery."""
        return self._presence_timeout

    @property
    def issuer_public_key(self) -> bytes:
        """The raw public key that signs this server's credentials (nodes pin it)."""
        return self._issuer.public_bytes()

    @property
    def limits(self) -> SignalingLimits:
        """The per-connection budgets."""
        return self._limits

    def connect(self, conn: int, now: float) -> None:
        """A WebSocket connection ``conn`` was accepted; it must send ``Hello`` first, and be
        registered within ``limits.hello_timeout`` seconds."""
        if conn in self._connections:
            raise ValueError(f"connection {conn} is already known")
        budget = ConnectionBudget(self._limits, now)
        self._connections[conn] = ConnectionState(
            Phase.HELLO, last_seen=now, connected_at=now, budget=budget
        )

    def deadline(self, conn: int) -> float | None:
        """When (``now``'s clock) the shell must call :meth:`timeout` for ``conn`` unless a
        frame comes first: the end of its hello timeout until it is registered, then
        ``presence_timeout`` after its last frame. ``None`` for a connection that is gone."""
        state = self._connections.get(conn)
        if state is None or state.phase is Phase.CLOSED:
            return None
        presence = state.last_seen + self._presence_timeout
        if state.phase in ADMITTED:
            return presence
        return min(presence, state.connected_at + self._limits.hello_timeout)

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
        if state is None or state.phase is Phase.CLOSED:
            return []
        state.last_seen = now
        # Before registration a connection gets three frames in order (anything else closes
        # it) within the hello timeout: only registered connections need a rate.
        if state.phase in ADMITTED:
            verdict = state.budget.message(now)
            if verdict is not Verdict.ALLOW:
                return self._over_rate(conn, frame, verdict)
        body = frame.WhichOneof("body")
        if state.phase is Phase.HELLO and body == "hello":
            return self._on_hello(conn, state, frame.hello)
        if state.phase is Phase.AUTH and body == "authenticate":
            return self._on_authenticate(conn, state, frame.authenticate)
        if state.phase is Phase.REGISTER and body == "register":
            return self._on_register(conn, state, frame.register, now)
        if state.phase in (Phase.REGISTER, Phase.OBSERVING) and body == "inspect":
            return self._on_inspect(conn, state, frame.inspect, now)
        if state.phase is Phase.OBSERVING and body == "unregister":
            return [Close(conn, "observer left")]
        if state.phase is Phase.REGISTERED:
            if body == "heartbeat":
                self._on_heartbeat(state, frame.heartbeat, now)
                return [Send(conn, Frame(heartbeat_ack=self._heartbeat_ack(state, now)))]
            if body == "discover":
                return self._routing.discover(conn, state, frame.discover, now)
            if body == "relay":
                return self._routing.relay(conn, state, frame.relay, now)
            if body == "unregister":
                return [*self._leave(conn, state), Close(conn, "unregistered")]
        return self._fail(conn, PROTOCOL, f"unexpected {body} while {state.phase.value}")

    def timeout(self, conn: int, now: float) -> list[ServerEffect]:
        """``conn``'s :meth:`deadline` passed: it was not registered within the hello timeout,
        or it sent nothing for ``presence_timeout`` seconds. Drop it."""
        state = self._connections.get(conn)
        if state is None or state.phase is Phase.CLOSED:
            return []
        if state.phase not in ADMITTED:
            hello_timeout = self._limits.hello_timeout
            if now - state.connected_at >= hello_timeout:
                self._register_timeouts += 1
                return self._fail(
                    conn, REGISTER_TIMEOUT, f"not registered within {hello_timeout} seconds"
                )
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
        return self._routing.discoverable(realm, actr_type, now, asker=asker)

    def page(
        self,
        realm: str,
        actr_type: ActrType,
        now: float,
        *,
        asker: ActrType | None = None,
        cursor: int = 0,
        page_size: int = MAX_PAGE_SIZE,
    ) -> tuple[list[ActrId], int]:
        """One page of :meth:`discoverable`: at most ``page_size`` (capped at
        ``MAX_PAGE_SIZE``) of those with a serial above ``cursor``, and the cursor of the next
        page (0 when this is the last)."""
        return self._routing.page(
            realm, actr_type, now, asker=asker, cursor=cursor, page_size=page_size
        )

    def statistics(self) -> ServerProtocolStatistics:
        """A snapshot of connection and registration counts."""
        return ServerProtocolStatistics(
            connections=len(self._connections),
            registered=len(self._directory),
            realms=self._directory.realms(),
            register_timeouts=self._register_timeouts,
            rate_limited=self._rate_limited,
            rate_closed=self._rate_closed,
            discovery_limited=self._routing.discovery_limited,
            relays_limited=self._routing.relays_limited,
            relays_too_large=self._routing.relays_too_large,
            relays_forwarded=self._routing.relays_forwarded,
            registered_by_type=tuple(
                (realm, actr_type, n) for (realm, actr_type), n in self._directory.counts().items()
            ),
            reports_refused=self._reports_refused,
        )

    def inspect(
        self, realm: str, now: float, *, start: int = 0, stop: int | None = None
    ) -> list[NodeStatus]:
        """The registered, present nodes of ``realm`` with their latest reports, by type and
        serial, from position ``start`` up to ``stop`` (for the status page: all; an observer
        gets them in pages). Rows are built only for the positions asked for."""
        present = (
            (actr_id, reported)
            for actr_id, conn in self._directory.realm_members(realm)
            if self._routing.present(conn, now)
            and (reported := self._connections[conn].reported) is not None
        )
        return [reported.status(actr_id, now) for actr_id, reported in islice(present, start, stop)]

    def realm_names(self) -> list[str]:
        """Realms with at least one registered node, sorted."""
        return self._directory.realm_names()

    # -- handlers -----------------------------------------------------------------------------

    def _on_hello(
        self, conn: int, state: ConnectionState, hello: Frame.Hello
    ) -> list[ServerEffect]:
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
        state.phase = Phase.AUTH
        challenge = Frame.Challenge(nonce=state.nonce, auth_required=self._realms is not None)
        return [Send(conn, Frame(challenge=challenge))]

    def _on_authenticate(
        self, conn: int, state: ConnectionState, auth: Frame.Authenticate
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
        state.phase = Phase.REGISTER
        return []

    def _on_register(
        self, conn: int, state: ConnectionState, register: Frame.Register, now: float
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
        if register.listen:
            # Handed to every node that discovers this one, which may dial it: checked here.
            try:
                parse_address(register.listen)
            except ValueError as exc:
                return self._fail(conn, BAD_REQUEST, f"Register.listen {exc}")
        state.listen = register.listen
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
        holder = self._directory.holder(previous)
        if holder is not None:
            holder_key = self._connections[holder].public_key
            return self._claim(conn, state, previous, holder_key, now)
        # Not held now: whether (and to which key) it was ever assigned is in the database.
        state.phase = Phase.BINDING
        return [LookupBinding(conn, previous)]

    def binding_found(
        self, conn: int, actr_id: ActrId, public_key: bytes | None, now: float
    ) -> list[ServerEffect]:
        """The answer to :class:`LookupBinding`: ``actr_id``'s bound key, ``b""`` if it was
        registered before node keys existed, ``None`` if it was never assigned (as that id)."""
        state = self._connections.get(conn)
        if state is None or state.phase is not Phase.BINDING:
            return []  # the connection went away meanwhile
        if public_key is None:
            return self._refuse_identity(conn, f"{actr_id} was never assigned")
        if not public_key:
            return self._refuse_identity(
                conn, f"{actr_id} was registered before node keys and cannot be proved"
            )
        # Someone may have registered it while the database answered: then its holder's key
        # is the bound one too (both came from the same binding).
        holder = self._directory.holder(actr_id)
        bound = self._connections[holder].public_key if holder is not None else public_key
        return self._claim(conn, state, actr_id, bound, now)

    def _on_heartbeat(self, state: ConnectionState, heartbeat: Frame.Heartbeat, now: float) -> None:
        """Keep the heartbeat's report if every figure is in range; a bad one is ignored
        (counted), the heartbeat still counts: a node can only misreport itself."""
        assert state.reported is not None
        report = None
        if heartbeat.HasField("report"):
            try:
                report = report_from_wire(heartbeat.report)
            except ReportRefused:
                self._reports_refused += 1
        state.reported.heartbeat(now, report)

    def _on_inspect(
        self, conn: int, state: ConnectionState, inspect: Frame.Inspect, now: float
    ) -> list[ServerEffect]:
        """An observer of the realm it proved (Authenticate came first): one page of nodes."""
        state.phase = Phase.OBSERVING
        start = inspect.cursor
        # One more than a page: whether another page follows.
        rows = self.inspect(state.realm, now, start=start, stop=start + INSPECT_PAGE + 1)
        following = start + INSPECT_PAGE if len(rows) > INSPECT_PAGE else 0
        inspection = Frame.Inspection(
            request_id=inspect.request_id,
            nodes=[row.to_wire() for row in rows[:INSPECT_PAGE]],
            next_cursor=following,
        )
        return [Send(conn, Frame(inspection=inspection))]

    # -- registration -------------------------------------------------------------------------

    def _assign(self, conn: int, state: ConnectionState, now: float) -> list[ServerEffect]:
        """Register ``conn`` under the realm's next serial, bound to its key."""
        assert state.actr_type is not None
        serial = self._next_serial.get(state.realm, 1)
        if serial >= MAX_SERIAL:  # the store records serial + 1, which must fit too
            return self._fail(conn, OVERLOADED, f"realm {state.realm!r} has no serials left")
        self._next_serial[state.realm] = serial + 1
        return self._complete(conn, state, ActrId(state.realm, serial, state.actr_type), now)

    def _claim(
        self, conn: int, state: ConnectionState, actr_id: ActrId, bound: bytes, now: float
    ) -> list[ServerEffect]:
        """Give ``actr_id`` back to ``conn`` if its proved key is the ``bound`` one."""
        if not hmac.compare_digest(bound, state.public_key):
            return self._refuse_identity(conn, f"{actr_id} is bound to another node key")
        effects: list[ServerEffect] = []
        holder = self._directory.holder(actr_id)
        if holder is not None and holder != conn:
            # Same key: the node restarted or reconnected; the holder is its stale session.
            effects.extend(self._take_over(holder, actr_id))
        return effects + self._complete(conn, state, actr_id, now)

    def _complete(
        self, conn: int, state: ConnectionState, actr_id: ActrId, now: float
    ) -> list[ServerEffect]:
        self._directory.hold(actr_id, conn)
        state.actr_id = actr_id
        state.phase = Phase.REGISTERED
        state.reported = Reported(since=self._wall_clock(), heartbeat_at=now)
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

    def _issue(self, state: ConnectionState, now: float) -> bytes:
        assert state.actr_id is not None
        state.renew_at = now + self._credential_lifetime * RENEW_AT
        return self._issuer.issue(
            state.actr_id,
            state.public_key,
            now=self._wall_clock(),
            lifetime=self._credential_lifetime,
        )

    def _heartbeat_ack(self, state: ConnectionState, now: float) -> Frame.HeartbeatAck:
        if now < state.renew_at:
            return Frame.HeartbeatAck()
        return Frame.HeartbeatAck(credential=self._issue(state, now))

    # -- helpers ------------------------------------------------------------------------------

    def _take_over(self, holder: int, actr_id: ActrId) -> list[ServerEffect]:
        old = self._connections.get(holder)
        if old is not None:
            old.phase = Phase.CLOSED
            old.actr_id = None
        self._directory.release(actr_id)
        message = f"{actr_id} registered again from another connection"
        return [Send(holder, error_frame(TAKEOVER, message)), Close(holder, "taken over")]

    def _leave(self, conn: int, state: ConnectionState) -> list[ServerEffect]:
        state.phase = Phase.CLOSED
        state.reported = None
        actr_id, state.actr_id = state.actr_id, None
        if actr_id is not None and self._directory.holder(actr_id) == conn:
            self._directory.release(actr_id)
            return [PersistDeparture(actr_id)]
        return []

    def _over_rate(self, conn: int, frame: Frame, verdict: Verdict) -> list[ServerEffect]:
        """A frame over ``conn``'s message rate: refused (answering its request, if it is one)
        or, far over it, the connection closed."""
        limits = self._limits
        rate = f"{limits.message_rate:g} frames/s, burst {limits.message_burst}"
        if verdict is Verdict.CLOSE:
            self._rate_closed += 1
            return self._fail(conn, OVERLOADED, f"far over the message rate ({rate}); closing")
        self._rate_limited += 1
        request_id = _request_id(frame)
        if not request_id:
            return []  # a heartbeat: dropped (it still showed the node is there)
        message = f"over the message rate ({rate}); retry later"
        return [Send(conn, error_frame(OVERLOADED, message, request_id))]

    def _fail(
        self, conn: int, code: str, message: str, *, reason: str | None = None
    ) -> list[ServerEffect]:
        """Send ``message`` and close; ``reason`` (default ``code``) is for the server's log."""
        state = self._connections.get(conn)
        if state is None or state.phase is Phase.CLOSED:
            return []
        effects = self._leave(conn, state)
        return [*effects, Send(conn, error_frame(code, message)), Close(conn, reason or code)]


def _request_id(frame: Frame) -> int:
    """The request id a frame carries (0 for frames that are not requests)."""
    body = frame.WhichOneof("body")
    if body == "discover":
        return frame.discover.request_id
    if body == "relay":
        return frame.relay.request_id
    if body == "inspect":
        return frame.inspect.request_id
    return 0


def _auth_failure(realm: str, *, known: bool, proof: bytes) -> str:
    """Why a proof was refused, for the server's log only (never sent to the client)."""
    if not known:
        return f"auth: unknown realm {realm!r} (not in this server's realms)"
    if not proof:
        return f"auth: no proof for realm {realm!r} (the node has no realm_secret)"
    return f"auth: wrong secret for realm {realm!r}"
