"""The sans-IO signaling machines, driven by hand: no sockets, no event loop."""

from __future__ import annotations

import pytest

from actr_trio._ids import ActrId, ActrType
from actr_trio.errors import (
    AuthError,
    ConfigError,
    PeerUnavailable,
    SessionTakenOver,
    SignalingError,
)
from actr_trio.signaling._protocol import (
    MAX_FRAME_SIZE,
    ClientProtocol,
    Close,
    Frame,
    FrameError,
    Outgoing,
    PeersFound,
    PersistDeparture,
    PersistRegistration,
    Registered,
    RelayDelivered,
    RelayReceived,
    RequestFailed,
    Send,
    ServerEffect,
    ServerProtocol,
    SessionFailed,
    decode_frame,
    encode_frame,
    prove,
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
        effects = server.receive(conn, data, now)
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
    now: float = 0.0,
) -> tuple[ClientProtocol, list[object]]:
    client = ClientProtocol(
        realm=realm, secret=secret, actr_type=actr_type, previous_id=previous_id
    )
    return client, run_session(server, conn, client, now)


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
    client, seen = register(server, 1)
    registered = [e for e in seen if isinstance(e, Registered)]
    assert registered == [Registered(ActrId("demo", 1, ECHO), TIMEOUT)]
    assert PersistRegistration(ActrId("demo", 1, ECHO)) in seen
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
    assert Registered(ActrId("anything", 1, ECHO), TIMEOUT) in seen


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


def test_previous_id_is_given_back_and_bumps_the_counter() -> None:
    server = make_server(None)
    previous = ActrId("demo", 41, ECHO)
    client, _ = register(server, 1, previous_id=previous)
    assert client.actr_id == previous
    fresh, _ = register(server, 2)
    assert fresh.actr_id == ActrId("demo", 42, ECHO)


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
    (to_b,) = frames_to(2, effects)
    assert b.receive(encode_frame(to_b)) == [
        RelayReceived(Relay(a.actr_id, b.actr_id, "offer", "v=0"))
    ]
    (to_a,) = frames_to(1, effects)
    assert a.receive(encode_frame(to_a)) == [RelayDelivered(request_id)]


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
    old, _ = register(server, 1)
    assert old.actr_id is not None
    new, seen = register(server, 2, previous_id=old.actr_id)
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
