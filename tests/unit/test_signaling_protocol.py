"""The sans-IO signaling machines, driven by hand: no sockets, no event loop."""

from __future__ import annotations

import time
import weakref

import pytest

from actr_trio._identity import IssuerKey, NodeKey, registration_message, verify_credential
from actr_trio._ids import ActrId, ActrType
from actr_trio.errors import (
    AuthError,
    ConfigError,
    CredentialError,
    IdentityTaken,
    IssuerKeyMismatch,
    PeerUnavailable,
    SessionTakenOver,
    SignalingError,
)
from actr_trio.signaling._client_protocol import (
    MAX_EARLY_RELAYS,
    ClientProtocol,
    CredentialRenewed,
    Outgoing,
    PeersFound,
    Registered,
    RelayDelivered,
    RelayReceived,
    RequestFailed,
    SessionFailed,
)
from actr_trio.signaling._protocol import (
    MAX_FRAME_SIZE,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    prove,
)
from actr_trio.signaling._server_protocol import (
    Close,
    Forward,
    LookupBinding,
    PersistDeparture,
    PersistRegistration,
    Send,
    ServerEffect,
    ServerProtocol,
)
from actr_trio.transport._abc import Relay

ECHO = ActrType("acme", "echo")
CALLER = ActrType("acme", "caller")
NONCE = b"n" * 32
TIMEOUT = 10.0


def make_server(realms: dict[str, str] | None = None, **kwargs: object) -> ServerProtocol:
    return ServerProtocol(
        realms=realms,
        presence_timeout=TIMEOUT,
        nonce_factory=lambda: NONCE,
        **kwargs,  # type: ignore[arg-type]
    )


def frames_to(conn: int, effects: list[ServerEffect]) -> list[Frame]:
    return [e.frame for e in effects if isinstance(e, Send) and e.conn == conn]


def closed(conn: int, effects: list[ServerEffect]) -> bool:
    return any(isinstance(e, Close) and e.conn == conn for e in effects)


# What the server's database would hold: ActrId -> the key bound to it (per server machine;
# weak, so that a new machine never sees a collected one's bindings).
STORES: weakref.WeakKeyDictionary[ServerProtocol, dict[ActrId, bytes]] = weakref.WeakKeyDictionary()


def persisted(server: ServerProtocol) -> dict[ActrId, bytes]:
    return STORES.setdefault(server, {})


def apply_store(
    server: ServerProtocol, effects: list[ServerEffect], now: float
) -> list[ServerEffect]:
    """Carry out the database effects as the shell does; return every effect, in order."""
    out: list[ServerEffect] = []
    store = persisted(server)
    for effect in effects:
        out.append(effect)
        if isinstance(effect, PersistRegistration):
            store.setdefault(effect.actr_id, effect.public_key)
        elif isinstance(effect, LookupBinding):
            found = server.binding_found(
                effect.conn, effect.actr_id, store.get(effect.actr_id), now
            )
            out.extend(apply_store(server, found, now))
    return out


def run_session(
    server: ServerProtocol,
    conn: int,
    client: ClientProtocol,
    now: float = 0.0,
) -> list[object]:
    """Shuttle frames between a client machine and the server until both are quiet.

    Returns the client's non-Outgoing events, and every server effect, in order.
    """
    server.connect(conn, now)
    seen: list[object] = []
    to_server = [encode_frame(client.hello())]
    while to_server:
        data = to_server.pop(0)
        effects = apply_store(server, server.receive(conn, data, now), now)
        seen.extend(effects)
        for frame in frames_to(conn, effects):
            for event in client.receive(encode_frame(frame)):
                if isinstance(event, Outgoing):
                    to_server.append(encode_frame(event.frame))
                else:
                    seen.append(event)
    return seen


def register(
    server: ServerProtocol,
    conn: int,
    *,
    realm: str = "demo",
    secret: str | None = "s3cret",
    actr_type: ActrType = ECHO,
    previous_id: ActrId | None = None,
    node_key: NodeKey | None = None,
    trusted_issuer: bytes | None = None,
    now: float = 0.0,
) -> tuple[ClientProtocol, list[object]]:
    client = ClientProtocol(
        realm=realm,
        secret=secret,
        actr_type=actr_type,
        previous_id=previous_id,
        node_key=node_key,
        trusted_issuer=trusted_issuer,
    )
    return client, run_session(server, conn, client, now)


def registered_ids(seen: list[object]) -> list[ActrId]:
    return [e.actr_id for e in seen if isinstance(e, Registered)]


# -- codec ----------------------------------------------------------------------------------------


def test_frames_round_trip() -> None:
    frame = Frame(hello=Frame.Hello(realm="demo", version=1))
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("text", "text message"),
        (b"\xff\xff\xff", "undecodable"),
        (b"", "no body"),
        (b"\x00" * (MAX_FRAME_SIZE + 1), "exceeds"),
    ],
)
def test_bad_frames_raise_frame_error(data: bytes | str, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        decode_frame(data)


def test_size_is_checked_before_parsing() -> None:
    # A valid frame that is too large is refused on size alone.
    big = Frame(relay=Frame.RelayMessage(payload="x" * MAX_FRAME_SIZE))
    with pytest.raises(FrameError, match="exceeds"):
        decode_frame(encode_frame(big))


def test_frame_error_is_a_signaling_error() -> None:
    assert issubclass(FrameError, SignalingError)


# -- auth -----------------------------------------------------------------------------------------


def test_auth_ok_then_registered() -> None:
    server = make_server({"demo": "s3cret"})
    key = NodeKey.generate()
    client, seen = register(server, 1, node_key=key)
    (registered,) = [e for e in seen if isinstance(e, Registered)]
    assert registered.actr_id == ActrId("demo", 1, ECHO)
    assert registered.presence_timeout == TIMEOUT
    assert registered.issuer_key == server.issuer_public_key
    claims = verify_credential(registered.credential, server.issuer_public_key, now=time.time())
    assert (claims.actr_id, claims.public_key) == (registered.actr_id, key.public_bytes())
    assert PersistRegistration(ActrId("demo", 1, ECHO), key.public_bytes()) in seen
    assert client.registered
    assert client.actr_id == ActrId("demo", 1, ECHO)


def test_the_secret_never_crosses_the_wire() -> None:
    server = make_server({"demo": "s3cret"})
    client = ClientProtocol(realm="demo", secret="s3cret", actr_type=ECHO, previous_id=None)
    server.connect(1, 0.0)
    challenge = frames_to(1, server.receive(1, encode_frame(client.hello()), 0.0))
    assert challenge[0].challenge.auth_required
    sent = [
        encode_frame(e.frame)
        for e in client.receive(encode_frame(challenge[0]))
        if isinstance(e, Outgoing)
    ]
    assert all(b"s3cret" not in data for data in sent)
    assert decode_frame(sent[0]).authenticate.proof == prove("s3cret", NONCE, "demo")


@pytest.mark.parametrize(
    ("realm", "secret", "logged"),
    [
        ("demo", "wrong", "auth: wrong secret for realm 'demo'"),
        ("unknown", "s3cret", "auth: unknown realm 'unknown' (not in this server's realms)"),
    ],
    ids=["wrong-secret", "unknown-realm"],
)
def test_auth_refused(realm: str, secret: str | None, logged: str) -> None:
    server = make_server({"demo": "s3cret"})
    client, seen = register(server, 1, realm=realm, secret=secret)
    failed = [e for e in seen if isinstance(e, SessionFailed)]
    assert len(failed) == 1
    assert failed[0].code == "auth"
    assert isinstance(failed[0].error, AuthError)
    # The node is told its secret was refused and where to look; the server's log says which.
    assert str(failed[0].error) == (
        f"realm {realm!r}: the signaling server rejected this node's secret "
        "(Config.realm_secret / ACTR_REALM_SECRET is wrong, or the server has no realm of that "
        "name; the server's log says which)"
    )
    assert [e.reason for e in seen if isinstance(e, Close) and e.conn == 1] == [logged]
    # The server registered nothing and ignores whatever the connection sends afterwards.
    assert not any(isinstance(e, (Registered, PersistRegistration)) for e in seen)
    assert server.statistics().registered == 0
    assert not client.registered


def test_a_node_without_a_secret_is_told_to_set_one_before_it_sends_a_proof() -> None:
    server = make_server({"demo": "s3cret"})
    client = ClientProtocol(realm="demo", secret=None, actr_type=ECHO, previous_id=None)
    server.connect(1, 0.0)
    (challenge,) = frames_to(1, server.receive(1, encode_frame(client.hello()), 0.0))
    events = client.receive(encode_frame(challenge))
    assert not any(isinstance(e, Outgoing) for e in events)
    (failed,) = events
    assert isinstance(failed, SessionFailed)
    assert isinstance(failed.error, AuthError)
    assert str(failed.error) == (
        "realm 'demo' requires a secret: set Config.realm_secret (or ACTR_REALM_SECRET)"
    )
    assert not client.registered


def test_an_empty_proof_is_logged_as_such() -> None:
    # What a client that does not check Challenge.auth_required sends: no proof at all.
    server = make_server({"demo": "s3cret"})
    server.connect(1, 0.0)
    server.receive(1, encode_frame(Frame(hello=Frame.Hello(realm="demo", version=1))), 0.0)
    effects = server.receive(1, encode_frame(Frame(authenticate=Frame.Authenticate())), 0.0)
    assert [e.reason for e in effects if isinstance(e, Close)] == [
        "auth: no proof for realm 'demo' (the node has no realm_secret)"
    ]


def test_unknown_realm_and_wrong_secret_look_alike() -> None:
    messages = []
    for realm in ("demo", "other"):
        server = make_server({"demo": "s3cret"})
        _, seen = register(server, 1, realm=realm, secret="wrong")
        messages.append(next(e for e in seen if isinstance(e, SessionFailed)).error.args[0])
    assert [m.replace("'other'", "'demo'") for m in messages] == [messages[0]] * 2


def test_open_server_admits_any_realm() -> None:
    server = make_server(None)
    _, seen = register(server, 1, realm="anything", secret=None)
    assert registered_ids(seen) == [ActrId("anything", 1, ECHO)]


def test_invalid_realm_name_is_refused() -> None:
    server = make_server(None)
    _, seen = register(server, 1, realm="bad realm!", secret=None)
    failed = [e for e in seen if isinstance(e, SessionFailed)]
    assert failed[0].code == "bad_request"


# -- register -------------------------------------------------------------------------------------


def test_serials_are_unique_per_realm_and_start_from_persisted_counters() -> None:
    server = make_server(None, next_serials={"a": 7})
    ids = []
    for conn, realm in enumerate(["a", "a", "b"], start=1):
        client, _ = register(server, conn, realm=realm)
        ids.append(client.actr_id)
    assert ids == [ActrId("a", 7, ECHO), ActrId("a", 8, ECHO), ActrId("b", 1, ECHO)]


def test_previous_id_is_given_back_to_the_key_it_is_bound_to() -> None:
    server = make_server(None)
    key = NodeKey.generate()
    first, _ = register(server, 1, node_key=key)
    assert first.actr_id is not None
    server.disconnect(1)
    again, seen = register(server, 2, previous_id=first.actr_id, node_key=key)
    assert again.actr_id == first.actr_id
    # Not held any more: the binding came from the database.
    assert LookupBinding(2, first.actr_id) in seen
    fresh, _ = register(server, 3)
    assert fresh.actr_id == ActrId("demo", 2, ECHO)


def test_previous_id_of_another_realm_or_type_gets_a_fresh_id() -> None:
    server = make_server(None)
    a, _ = register(server, 1, previous_id=ActrId("elsewhere", 5, ECHO))
    b, _ = register(server, 2, previous_id=ActrId("demo", 9, CALLER))
    assert a.actr_id == ActrId("demo", 1, ECHO)
    assert b.actr_id == ActrId("demo", 2, ECHO)


def test_requests_before_registration_are_protocol_errors() -> None:
    server = make_server(None)
    server.connect(1, 0.0)
    effects = server.handle(1, Frame(heartbeat=Frame.Heartbeat()), 0.0)
    assert frames_to(1, effects)[0].error.code == "protocol"
    assert closed(1, effects)


# -- discover -------------------------------------------------------------------------------------


def discover(
    server: ServerProtocol, conn: int, client: ClientProtocol, actr_type: ActrType, now: float = 0.0
) -> list[ActrId]:
    request_id, frame = client.discover(actr_type)
    events = [
        ev
        for f in frames_to(conn, server.handle(conn, frame, now))
        for ev in client.receive(encode_frame(f))
    ]
    assert len(events) == 1
    assert isinstance(events[0], PeersFound)
    assert events[0].request_id == request_id
    return list(events[0].peers)


def test_discover_is_scoped_to_the_realm_and_type() -> None:
    server = make_server({"a": "sa", "b": "sb"})
    a1, _ = register(server, 1, realm="a", secret="sa")
    a2, _ = register(server, 2, realm="a", secret="sa", actr_type=CALLER)
    b1, _ = register(server, 3, realm="b", secret="sb")
    assert discover(server, 2, a2, ECHO) == [a1.actr_id]
    assert discover(server, 3, b1, ECHO) == [b1.actr_id]
    assert discover(server, 3, b1, CALLER) == []


def test_silent_nodes_disappear_from_discovery() -> None:
    server = make_server(None)
    quiet, _ = register(server, 1, now=0.0)
    chatty, _ = register(server, 2, actr_type=CALLER, now=0.0)
    assert discover(server, 2, chatty, ECHO, now=TIMEOUT) == [quiet.actr_id]
    assert discover(server, 2, chatty, ECHO, now=TIMEOUT + 0.1) == []
    # A heartbeat brings it back.
    acks = frames_to(1, server.handle(1, quiet.heartbeat(), TIMEOUT + 0.2))
    assert acks[0].WhichOneof("body") == "heartbeat_ack"
    assert discover(server, 2, chatty, ECHO, now=TIMEOUT + 0.3) == [quiet.actr_id]


def test_timeout_closes_and_forgets() -> None:
    server = make_server(None)
    client, _ = register(server, 1)
    effects = server.timeout(1, TIMEOUT + 1)
    assert frames_to(1, effects)[0].error.code == "presence_timeout"
    assert closed(1, effects)
    assert PersistDeparture(client.actr_id) in effects  # type: ignore[arg-type]
    assert server.statistics().registered == 0


def test_unregister_forgets_and_closes() -> None:
    server = make_server(None)
    client, _ = register(server, 1)
    effects = server.handle(1, client.unregister(), 1.0)
    assert effects == [PersistDeparture(client.actr_id), Close(1, "unregistered")]  # type: ignore[arg-type]
    assert server.disconnect(1) == []


# -- relay ----------------------------------------------------------------------------------------


def test_relay_between_peers_of_a_realm() -> None:
    server = make_server(None)
    a, _ = register(server, 1)
    b, _ = register(server, 2, actr_type=CALLER)
    assert a.actr_id is not None
    assert b.actr_id is not None
    request_id, frame = a.relay(b.actr_id, "offer", "v=0")
    frame.relay.source.serial = 999  # the server never trusts the claimed source
    effects = server.handle(1, frame, 0.0)
    # The shell queues the relay for b within its outbox's relay share, then answers a.
    (forward,) = effects
    assert isinstance(forward, Forward)
    assert (forward.conn, forward.origin, forward.request_id) == (2, 1, request_id)
    assert b.receive(encode_frame(forward.frame)) == [
        RelayReceived(Relay(a.actr_id, b.actr_id, "offer", "v=0"))
    ]
    relayed = Frame(relayed=Frame.Relayed(request_id=forward.request_id))
    assert a.receive(encode_frame(relayed)) == [RelayDelivered(request_id)]


def test_relay_to_unknown_or_other_realm_is_peer_unavailable() -> None:
    server = make_server({"a": "sa", "b": "sb"})
    a, _ = register(server, 1, realm="a", secret="sa")
    b, _ = register(server, 2, realm="b", secret="sb")
    assert b.actr_id is not None
    for target in (b.actr_id, ActrId("a", 99, ECHO)):
        request_id, frame = a.relay(target, "ice", "candidate")
        effects = server.handle(1, frame, 0.0)
        assert frames_to(2, effects) == []  # nothing ever reaches the other realm
        (answer,) = a.receive(encode_frame(frames_to(1, effects)[0]))
        assert isinstance(answer, RequestFailed)
        assert answer.request_id == request_id
        assert isinstance(answer.error, PeerUnavailable)
        # Another realm's node and a nonexistent one get the same answer.
        assert "is not registered" in str(answer.error)
    assert not closed(1, effects)


def test_relay_kind_is_validated_by_the_client() -> None:
    server = make_server(None)
    a, _ = register(server, 1)
    assert a.actr_id is not None
    with pytest.raises(ConfigError, match="kind"):
        a.relay(a.actr_id, "sdp", "x")


# -- bad frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\xff\xfe garbage", "text", b"\x00" * (MAX_FRAME_SIZE + 1)])
def test_bad_frame_gets_error_then_close_and_others_are_unaffected(data: bytes | str) -> None:
    server = make_server(None)
    a, _ = register(server, 1)
    b, _ = register(server, 2, actr_type=CALLER)
    effects = server.receive(1, data, 0.0)
    assert [f.error.code for f in frames_to(1, effects)] == ["bad_frame"]
    assert effects[-1] == Close(1, "bad_frame")
    assert PersistDeparture(a.actr_id) in effects  # type: ignore[arg-type]
    # The bad connection is ignored from now on; the other keeps working.
    assert server.handle(1, a.heartbeat(), 0.0) == []
    assert discover(server, 2, b, CALLER) == [b.actr_id]


def test_client_rejects_bad_server_frames() -> None:
    client = ClientProtocol(realm="demo", secret=None, actr_type=ECHO, previous_id=None)
    client.hello()
    with pytest.raises(FrameError):
        client.receive(b"\xff\xff")
    with pytest.raises(FrameError, match="unexpected peers"):
        client.receive(encode_frame(Frame(peers=Frame.Peers(request_id=1))))


# -- takeover -------------------------------------------------------------------------------------


def test_takeover_closes_the_stale_session() -> None:
    server = make_server(None)
    key = NodeKey.generate()
    old, _ = register(server, 1, node_key=key)
    assert old.actr_id is not None
    new, seen = register(server, 2, previous_id=old.actr_id, node_key=key)
    assert new.actr_id == old.actr_id
    effects = [e for e in seen if isinstance(e, (Send, Close))]
    (to_old,) = frames_to(1, effects)  # type: ignore[arg-type]
    assert to_old.error.code == "takeover"
    assert closed(1, effects)  # type: ignore[arg-type]
    (event,) = old.receive(encode_frame(to_old))
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, SessionTakenOver)
    # The stale connection's later departure does not remove the new holder.
    assert server.disconnect(1) == []
    caller, _ = register(server, 3, actr_type=CALLER)
    assert discover(server, 3, caller, ECHO) == [new.actr_id]
    assert server.statistics().registered == 2


def test_client_refuses_a_different_id_than_asked() -> None:
    previous = ActrId("demo", 5, ECHO)
    client = ClientProtocol(realm="demo", secret=None, actr_type=ECHO, previous_id=previous)
    client.hello()
    client.receive(encode_frame(Frame(challenge=Frame.Challenge(nonce=NONCE))))
    other = Frame.Registered(actr_id=ActrId("demo", 6, ECHO).to_proto(), presence_timeout=1.0)
    with pytest.raises(FrameError, match="instead of"):
        client.receive(encode_frame(Frame(registered=other)))


# -- identity: node keys, bound ids, server-assigned serials (issue 12) --------------------------


def refused(seen: list[object]) -> SessionFailed:
    (failed,) = [e for e in seen if isinstance(e, SessionFailed)]
    return failed


def test_takeover_of_a_held_id_without_its_key_is_refused_and_the_holder_kept() -> None:
    server = make_server({"demo": "s3cret"})
    honest, _ = register(server, 1)
    assert honest.actr_id is not None
    # The attacker knows the realm secret and the id (from discovery), not the node key.
    _, seen = register(server, 2, previous_id=honest.actr_id)
    failed = refused(seen)
    assert failed.code == "identity"
    assert isinstance(failed.error, IdentityTaken)
    assert isinstance(failed.error, AuthError)
    assert "bound to another node key" in str(failed.error)
    assert [e.reason for e in seen if isinstance(e, Close)] == [
        f"identity: {honest.actr_id} is bound to another node key"
    ]
    # Nothing was sent to the honest holder, which stays registered and discoverable.
    assert all(e.conn == 2 for e in seen if isinstance(e, (Send, Close)))
    assert not any(isinstance(e, PersistDeparture) for e in seen)
    assert honest.registered
    caller, _ = register(server, 3, actr_type=CALLER)
    assert discover(server, 3, caller, ECHO) == [honest.actr_id]


def test_claiming_a_departed_id_without_its_key_is_refused() -> None:
    server = make_server(None)
    key = NodeKey.generate()
    honest, _ = register(server, 1, node_key=key)
    assert honest.actr_id is not None
    server.disconnect(1)
    _, seen = register(server, 2, previous_id=honest.actr_id)
    assert isinstance(refused(seen).error, IdentityTaken)
    # The honest node, back with its key, gets it.
    back, _ = register(server, 3, previous_id=honest.actr_id, node_key=key)
    assert back.actr_id == honest.actr_id


@pytest.mark.parametrize(
    ("serial", "why"),
    [
        (2**63 - 1, "was never assigned"),
        (2**64 - 1, "out of range"),
        (2**63, "out of range"),
        (0, "out of range"),
        (41, "was never assigned"),
    ],
    ids=["2^63-1", "2^64-1", "2^63", "zero", "never-assigned"],
)
def test_serials_the_server_did_not_assign_are_refused_and_the_realm_keeps_going(
    serial: int, why: str
) -> None:
    server = make_server(None)
    first, _ = register(server, 1)
    forged = Frame.Register(actr_type=ECHO.to_proto())
    forged.previous_id.realm = "demo"
    forged.previous_id.serial = serial
    forged.previous_id.type.CopyFrom(ECHO.to_proto())
    key = NodeKey.generate()
    server.connect(2, 0.0)
    server.receive(2, encode_frame(Frame(hello=Frame.Hello(realm="demo", version=1))), 0.0)
    server.receive(2, encode_frame(Frame(authenticate=Frame.Authenticate())), 0.0)
    forged.public_key = key.public_bytes()
    forged.signature = key.sign(registration_message(NONCE, "demo", key.public_bytes()))
    effects = apply_store(server, server.handle(2, Frame(register=forged), 0.0), 0.0)
    (error,) = frames_to(2, effects)
    assert error.error.code == "identity"
    assert why in error.error.message
    assert closed(2, effects)
    assert not any(isinstance(e, PersistRegistration) for e in effects)
    # Later registrations in the realm get the next serial, as if nothing happened.
    later, _ = register(server, 3)
    assert later.actr_id == ActrId("demo", 2, ECHO)
    assert first.actr_id == ActrId("demo", 1, ECHO)


def test_an_id_registered_before_node_keys_cannot_be_claimed() -> None:
    server = make_server(None, next_serials={"demo": 5})
    old = ActrId("demo", 3, ECHO)
    persisted(server)[old] = b""  # a row from a database older than node keys
    _, seen = register(server, 1, previous_id=old)
    failed = refused(seen)
    assert isinstance(failed.error, IdentityTaken)
    assert "before node keys" in str(failed.error)
    assert "remove identity.json" in str(failed.error)


def hand_register(
    server: ServerProtocol, conn: int, register_frame: Frame.Register
) -> list[ServerEffect]:
    server.connect(conn, 0.0)
    server.receive(conn, encode_frame(Frame(hello=Frame.Hello(realm="demo", version=1))), 0.0)
    server.receive(conn, encode_frame(Frame(authenticate=Frame.Authenticate())), 0.0)
    return apply_store(server, server.handle(conn, Frame(register=register_frame), 0.0), 0.0)


def test_registration_without_a_valid_key_proof_is_refused() -> None:
    server = make_server(None)
    key = NodeKey.generate()
    pub = key.public_bytes()
    cases = {
        "no key": Frame.Register(actr_type=ECHO.to_proto()),
        "other nonce": Frame.Register(
            actr_type=ECHO.to_proto(),
            public_key=pub,
            signature=key.sign(registration_message(b"x" * 32, "demo", pub)),
        ),
        "other key's signature": Frame.Register(
            actr_type=ECHO.to_proto(),
            public_key=NodeKey.generate().public_bytes(),
            signature=key.sign(registration_message(NONCE, "demo", pub)),
        ),
    }
    for conn, (name, frame) in enumerate(cases.items(), start=1):
        effects = hand_register(server, conn, frame)
        (error,) = frames_to(conn, effects)
        assert error.error.code == "key", name
        assert closed(conn, effects), name
    assert server.statistics().registered == 0


def test_a_refused_key_proof_is_an_auth_error_at_the_client() -> None:
    client = ClientProtocol(realm="demo", secret=None, actr_type=ECHO, previous_id=None)
    client.hello()
    client.receive(encode_frame(Frame(challenge=Frame.Challenge(nonce=NONCE))))
    (event,) = client.receive(encode_frame(Frame(error=Frame.Error(code="key", message="no"))))
    assert isinstance(event, SessionFailed)
    assert type(event.error) is AuthError


def test_the_realm_running_out_of_serials_is_refused_without_overflow() -> None:
    server = make_server(None, next_serials={"demo": 2**63 - 1})
    _, seen = register(server, 1)
    assert refused(seen).code == "overloaded"
    assert not any(isinstance(e, PersistRegistration) for e in seen)


# -- credentials ----------------------------------------------------------------------------------


def test_credential_is_renewed_on_the_first_heartbeat_after_two_thirds_of_its_life() -> None:
    lifetime = 3 * TIMEOUT
    server = make_server(None, credential_lifetime=lifetime)
    key = NodeKey.generate()
    client, seen = register(server, 1, node_key=key, now=0.0)
    (first,) = [e for e in seen if isinstance(e, Registered)]

    def beat(now: float) -> list[object]:
        (ack,) = frames_to(1, server.handle(1, client.heartbeat(), now))
        return list(client.receive(encode_frame(ack)))

    assert beat(lifetime * 2 / 3 - 0.1) == []
    (renewed,) = beat(lifetime * 2 / 3)
    assert isinstance(renewed, CredentialRenewed)
    claims = verify_credential(renewed.credential, first.issuer_key, now=time.time())
    assert (claims.actr_id, claims.public_key) == (first.actr_id, key.public_bytes())
    assert beat(lifetime * 2 / 3 + 1) == []  # the next renewal is two thirds later again


def test_credential_lifetime_must_outlast_a_heartbeat() -> None:
    with pytest.raises(ConfigError, match="credential_lifetime"):
        make_server(None, credential_lifetime=TIMEOUT)


def test_a_trusted_issuer_is_required_and_a_changed_one_refused_loudly() -> None:
    server = make_server(None)
    trusted = IssuerKey.generate()
    _, seen = register(server, 1, trusted_issuer=trusted.public_bytes())
    failed = refused(seen)
    assert isinstance(failed.error, IssuerKeyMismatch)
    message = str(failed.error)
    assert trusted.key_id in message
    assert server.issuer_public_key.hex() in message  # what to set, if the change is wanted
    # With the right one it registers.
    client, _ = register(server, 2, trusted_issuer=server.issuer_public_key)
    assert client.registered


def registered_frame(
    issuer: IssuerKey, actr_id: ActrId, *, credential_for: tuple[ActrId, bytes]
) -> bytes:
    """A Registered frame for ``actr_id`` carrying ``issuer``'s credential for ``credential_for``."""
    credential = issuer.issue(*credential_for, now=time.time(), lifetime=60)
    registered = Frame.Registered(
        actr_id=actr_id.to_proto(),
        presence_timeout=1.0,
        credential=credential,
        issuer_key=issuer.public_bytes(),
    )
    return encode_frame(Frame(registered=registered))


def registering_client(key: NodeKey) -> ClientProtocol:
    client = ClientProtocol(
        realm="demo", secret=None, actr_type=ECHO, previous_id=None, node_key=key
    )
    client.hello()
    client.receive(encode_frame(Frame(challenge=Frame.Challenge(nonce=NONCE))))
    return client


@pytest.mark.parametrize("wrong", ["key", "id"])
def test_client_refuses_a_credential_for_another_key_or_id(wrong: str) -> None:
    issuer, key = IssuerKey.generate(), NodeKey.generate()
    me = ActrId("demo", 1, ECHO)
    claimed = (
        (me, NodeKey.generate().public_bytes())
        if wrong == "key"
        else (ActrId("demo", 2, ECHO), key.public_bytes())
    )
    client = registering_client(key)
    (event,) = client.receive(registered_frame(issuer, me, credential_for=claimed))
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, CredentialError)
    assert not client.registered


def test_client_refuses_a_credential_signed_by_another_issuer_than_announced() -> None:
    issuer, other, key = IssuerKey.generate(), IssuerKey.generate(), NodeKey.generate()
    me = ActrId("demo", 1, ECHO)
    registered = Frame.Registered(
        actr_id=me.to_proto(),
        presence_timeout=1.0,
        credential=other.issue(me, key.public_bytes(), now=time.time(), lifetime=60),
        issuer_key=issuer.public_bytes(),
    )
    (event,) = registering_client(key).receive(encode_frame(Frame(registered=registered)))
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, CredentialError)


def test_client_refuses_a_renewal_for_someone_else() -> None:
    issuer, key = IssuerKey.generate(), NodeKey.generate()
    me = ActrId("demo", 1, ECHO)
    client = registering_client(key)
    (event,) = client.receive(registered_frame(issuer, me, credential_for=(me, key.public_bytes())))
    assert isinstance(event, Registered)
    stolen = issuer.issue(me, NodeKey.generate().public_bytes(), now=time.time(), lifetime=60)
    ack = Frame(heartbeat_ack=Frame.HeartbeatAck(credential=stolen))
    (event,) = client.receive(encode_frame(ack))
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, CredentialError)


def test_client_refuses_an_expired_credential() -> None:
    issuer, key = IssuerKey.generate(), NodeKey.generate()
    me = ActrId("demo", 1, ECHO)
    later = time.time() + 61  # the server's credential lives 60 s
    client = ClientProtocol(
        realm="demo",
        secret=None,
        actr_type=ECHO,
        previous_id=None,
        node_key=key,
        wall_clock=lambda: later,
    )
    client.hello()
    client.receive(encode_frame(Frame(challenge=Frame.Challenge(nonce=NONCE))))
    (event,) = client.receive(registered_frame(issuer, me, credential_for=(me, key.public_bytes())))
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, CredentialError)
    assert "expired" in str(event.error)


def test_a_relay_that_overtakes_registered_is_delivered_right_after_it() -> None:
    # The server holds a new node's id (reachable) while it persists the registration, and only
    # then sends Registered: another node's offer can reach the newcomer first.
    server = make_server(None)
    a, _ = register(server, 1)
    newcomer = ClientProtocol(realm="demo", secret="s3cret", actr_type=CALLER, previous_id=None)
    server.connect(2, 0.0)
    to_server = [encode_frame(newcomer.hello())]
    held: list[Frame] = []
    while to_server:
        effects = apply_store(server, server.receive(2, to_server.pop(0), 0.0), 0.0)
        for frame in frames_to(2, effects):
            if frame.WhichOneof("body") == "registered":
                held.append(frame)  # still on its way
                continue
            to_server += [
                encode_frame(e.frame)
                for e in newcomer.receive(encode_frame(frame))
                if isinstance(e, Outgoing)
            ]
    (registered,) = held
    new_id = ActrId.from_proto(registered.registered.actr_id)
    assert a.actr_id is not None
    _, offer = a.relay(new_id, "offer", "v=0")
    (forward,) = server.handle(1, offer, 0.0)
    assert isinstance(forward, Forward)
    assert newcomer.receive(encode_frame(forward.frame)) == []  # kept, not an error
    events = newcomer.receive(encode_frame(registered))
    assert [type(e) for e in events] == [Registered, RelayReceived]
    assert events[1] == RelayReceived(Relay(a.actr_id, new_id, "offer", "v=0"))


def test_relays_before_registered_are_bounded() -> None:
    server = make_server(None)
    a, _ = register(server, 1)
    b, _ = register(server, 2, actr_type=CALLER)
    assert a.actr_id is not None
    assert b.actr_id is not None
    newcomer = ClientProtocol(realm="demo", secret="s3cret", actr_type=CALLER, previous_id=None)
    newcomer.hello()
    newcomer.receive(encode_frame(Frame(challenge=Frame.Challenge(nonce=b"n" * 32))))
    _, offer = a.relay(b.actr_id, "offer", "v=0")
    (forward,) = server.handle(1, offer, 0.0)
    assert isinstance(forward, Forward)
    for _ in range(MAX_EARLY_RELAYS):
        assert newcomer.receive(encode_frame(forward.frame)) == []
    with pytest.raises(FrameError, match="relays before registration"):
        newcomer.receive(encode_frame(forward.frame))
