"""Node reports in heartbeats and realm observers, on the sans-IO server machine: what is kept,
what is refused (out-of-range figures), who may see it, and that it goes with its node."""

from __future__ import annotations

import time

import pytest

from actr_trio._heartbeat_report import HeartbeatReport, LaneSummary, clean_route
from actr_trio._ids import ActrId, ActrType
from actr_trio.signaling._client_protocol import ClientProtocol, Outgoing, Registered
from actr_trio.signaling._protocol import Frame, decode_frame, encode_frame, prove
from actr_trio.signaling._reports import NodeStatus, report_to_wire
from actr_trio.signaling._server_protocol import (
    Close,
    PersistRegistration,
    Send,
    ServerEffect,
    ServerProtocol,
)

ECHO = ActrType("acme", "echo")
REALMS = {"demo": "demo-secret-16bytes", "other": "other-secret-16bytes"}
NONCE = b"n" * 32
GOOD = HeartbeatReport(
    backlog=(1, 2, 3),
    handled=10,
    accepted=16,
    lanes=(LaneSummary("RELIABLE", 2, 5),),
    dead_letters=1,
    recent_dead_letters=("demo.Echo.Poison",),
)


def make_server() -> ServerProtocol:
    return ServerProtocol(realms=REALMS, presence_timeout=10.0, nonce_factory=lambda: NONCE)


def sends(conn: int, effects: list[ServerEffect]) -> list[Frame]:
    return [e.frame for e in effects if isinstance(e, Send) and e.conn == conn]


def register(server: ServerProtocol, conn: int, realm: str = "demo", now: float = 0.0) -> ActrId:
    """A node registers on ``conn`` (frames shuttled through the client machine)."""
    client = ClientProtocol(realm=realm, secret=REALMS[realm], actr_type=ECHO, previous_id=None)
    server.connect(conn, now)
    queue = [encode_frame(client.hello())]
    while queue:
        effects = server.receive(conn, queue.pop(0), now)
        for frame in sends(conn, effects):
            for event in client.receive(encode_frame(frame)):
                if isinstance(event, Outgoing):
                    queue.append(encode_frame(event.frame))
                elif isinstance(event, Registered):
                    return event.actr_id
        assert not any(isinstance(e, Close) for e in effects)
    raise AssertionError("not registered")  # pragma: no cover


def heartbeat(
    server: ServerProtocol, conn: int, report: Frame.NodeReport | None, now: float
) -> list[ServerEffect]:
    return server.handle(conn, Frame(heartbeat=Frame.Heartbeat(report=report)), now)


def observe(
    server: ServerProtocol, conn: int, realm: str, secret: str, cursor: int = 0
) -> list[ServerEffect]:
    """An observer: Hello, Authenticate, Inspect (pipelined, as ``actr-trio inspect`` does)."""
    server.connect(conn, 0.0)
    server.handle(conn, Frame(hello=Frame.Hello(realm=realm, version=1)), 0.0)
    proof = prove(secret, NONCE, realm)
    server.handle(conn, Frame(authenticate=Frame.Authenticate(proof=proof)), 0.0)
    return server.handle(conn, Frame(inspect=Frame.Inspect(request_id=7, cursor=cursor)), 0.0)


def test_the_latest_valid_report_is_kept_with_the_handled_rate_between_two() -> None:
    server = make_server()
    node = register(server, 1)
    [row] = server.inspect("demo", 0.5)
    assert (row.actr_id, row.report, row.heartbeat_age) == (node, None, 0.5)
    assert row.since == pytest.approx(time.time(), abs=60)
    heartbeat(server, 1, report_to_wire(GOOD), 1.0)
    later = report_to_wire(GOOD)
    later.handled = 30
    acks = sends(1, heartbeat(server, 1, later, 3.0))
    assert [f.WhichOneof("body") for f in acks] == ["heartbeat_ack"]
    [row] = server.inspect("demo", 3.25)
    assert row.report == HeartbeatReport(
        backlog=(1, 2, 3),
        handled=30,
        accepted=16,
        lanes=(LaneSummary("RELIABLE", 2, 5),),
        dead_letters=1,
        recent_dead_letters=("demo.Echo.Poison",),
    )
    assert row.handled_rate == pytest.approx(10.0)  # 20 more in 2 s
    assert row.heartbeat_age == pytest.approx(0.25)
    assert row.to_json()["backlog"] == {"HIGH": 1, "NORMAL": 2, "LOW": 3}
    # Round trip through an Inspection row, as inspect reads it.
    assert NodeStatus.from_wire(row.to_wire()) == row


def _bad(**changes: object) -> Frame.NodeReport:
    msg = report_to_wire(GOOD)
    for name, value in changes.items():
        field = getattr(msg, name)
        if isinstance(value, list):
            del field[:]
            field.extend(value)  # type: ignore[arg-type]
        else:
            setattr(msg, name, value)
    return msg


def _lanes(*lanes: tuple[str, int, int]) -> list[Frame.LaneReport]:
    return [Frame.LaneReport(lane=n, peers=p, unacked=u) for n, p, u in lanes]


@pytest.mark.parametrize(
    "report",
    [
        _bad(backlog=[1, 2]),
        _bad(backlog=[1, 2, 3, 4]),
        _bad(backlog=[2**40, 0, 0]),
        _bad(handled=2**53),
        _bad(accepted=2**64 - 1),
        _bad(dead_letters=2**53),
        _bad(lanes=_lanes(("BOGUS", 1, 1))),
        _bad(lanes=_lanes(("RELIABLE", 1, 1), ("RELIABLE", 1, 1))),
        _bad(lanes=_lanes(("RELIABLE", 2**20, 0))),
        _bad(lanes=_lanes(("RELIABLE", 1, 2**40))),
        _bad(lanes=_lanes(*[("SIGNAL", 0, 0)] * 5)),
        _bad(recent_dead_letters=["<img src=x onerror=alert(1)>"]),
        _bad(recent_dead_letters=["a" * 201]),
        _bad(recent_dead_letters=["demo.R"] * 9),
        _bad(recent_dead_letters=[""]),
    ],
    ids=[
        "two-priorities",
        "four-priorities",
        "backlog-2^40",
        "handled-2^53",
        "accepted-2^64",
        "dead-letters-2^53",
        "unknown-lane",
        "repeated-lane",
        "peers-2^20",
        "unacked-2^40",
        "five-lanes",
        "html-route",
        "long-route",
        "nine-routes",
        "empty-route",
    ],
)
def test_a_report_out_of_range_is_ignored_and_the_heartbeat_still_counts(
    report: Frame.NodeReport,
) -> None:
    server = make_server()
    register(server, 1)
    heartbeat(server, 1, report_to_wire(GOOD), 1.0)
    effects = heartbeat(server, 1, report, 8.0)
    # Answered like any heartbeat: the connection stays, its presence is renewed.
    assert [f.WhichOneof("body") for f in sends(1, effects)] == ["heartbeat_ack"]
    assert not any(isinstance(e, Close) for e in effects)
    assert server.deadline(1) == 18.0
    [row] = server.inspect("demo", 8.0)
    assert row.report == GOOD  # the last valid one
    assert row.heartbeat_age == 0.0
    assert server.statistics().reports_refused == 1


def test_an_observer_sees_its_own_realm_only_and_is_never_registered() -> None:
    server = make_server()
    demo = register(server, 1)
    register(server, 2, realm="other")
    heartbeat(server, 1, report_to_wire(GOOD), 1.0)
    [answer] = sends(9, observe(server, 9, "demo", REALMS["demo"]))
    assert answer.WhichOneof("body") == "inspection"
    assert answer.inspection.request_id == 7
    assert [NodeStatus.from_wire(n).actr_id for n in answer.inspection.nodes] == [demo]
    assert answer.inspection.next_cursor == 0
    # It is not a node: registrations and discovery know nothing of it.
    assert server.statistics().registered == 2
    assert server.discoverable("demo", ECHO, 1.0) == [demo]
    # It may ask again, and leave.
    again = server.handle(9, Frame(inspect=Frame.Inspect(request_id=8)), 1.0)
    assert sends(9, again)[0].inspection.request_id == 8
    assert any(isinstance(e, Close) for e in server.handle(9, Frame(unregister={}), 1.0))


def test_an_observer_with_a_wrong_secret_gets_nothing() -> None:
    server = make_server()
    register(server, 1)
    effects = observe(server, 9, "demo", REALMS["other"])
    assert [f.WhichOneof("body") for f in sends(9, effects)] == []  # closed at Authenticate
    assert server.deadline(9) is None


def test_an_observer_cannot_heartbeat_or_register_afterwards() -> None:
    server = make_server()
    observe(server, 9, "demo", REALMS["demo"])
    effects = server.handle(9, Frame(heartbeat=Frame.Heartbeat()), 1.0)
    [error] = sends(9, effects)
    assert error.error.code == "protocol"
    assert not any(isinstance(e, PersistRegistration) for e in effects)


def test_inspection_pages_hold_sixteen_nodes() -> None:
    server = make_server()
    ids = [register(server, conn) for conn in range(1, 21)]
    [first] = sends(99, observe(server, 99, "demo", REALMS["demo"]))
    assert len(first.inspection.nodes) == 16
    assert first.inspection.next_cursor == 16
    second = server.handle(99, Frame(inspect=Frame.Inspect(request_id=8, cursor=16)), 0.0)
    page = sends(99, second)[0].inspection
    assert page.next_cursor == 0
    seen = [ActrId.from_proto(n.actr_id) for n in [*first.inspection.nodes, *page.nodes]]
    assert seen == ids
    assert len(encode_frame(first)) < 64 * 1024


def test_a_report_goes_with_its_node() -> None:
    server = make_server()
    register(server, 1)
    heartbeat(server, 1, report_to_wire(GOOD), 1.0)
    server.disconnect(1)
    assert server.inspect("demo", 2.0) == []
    assert server.realm_names() == []


def test_route_keys_are_cleaned_before_they_are_reported() -> None:
    assert clean_route("demo.Echo.Poison") == "demo.Echo.Poison"
    assert clean_route("<b>x</b>") == "?b?x?/b?"
    assert clean_route("") == "?"
    assert len(clean_route("a" * 500)) == 200


def test_frames_decode() -> None:
    frame = Frame(heartbeat=Frame.Heartbeat(report=report_to_wire(GOOD)))
    assert decode_frame(encode_frame(frame)) == frame
