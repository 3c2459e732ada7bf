"""The signaling server's budgets, sans-IO: caps, outbox shares, per-connection rates, the hello
timeout, relay size caps and discovery pages, with explicit times (no sockets, no clock)."""

from __future__ import annotations

import argparse

import pytest
from test_signaling_protocol import CALLER, ECHO, closed, frames_to, make_server, register

from actr_trio._ids import ActrId, ActrType
from actr_trio.errors import ConfigError, RelayTooLarge, SignalingOverloaded
from actr_trio.signaling import SignalingLimits
from actr_trio.signaling._cli import LIMIT_OPTIONS, add_arguments, limits_from_args
from actr_trio.signaling._client_protocol import (
    ClientProtocol,
    PeersFound,
    RequestFailed,
)
from actr_trio.signaling._directory import Directory
from actr_trio.signaling._limits import (
    MAX_RELAY_TARGETS,
    OUTBOX_FRAMES,
    RELAY_SHARE,
    Admission,
    ConnectionBudget,
    ConnectionCaps,
    OutboxBudget,
    Verdict,
)
from actr_trio.signaling._protocol import (
    MAX_FRAME_SIZE,
    MAX_PAGE_SIZE,
    Frame,
    encode_frame,
)
from actr_trio.signaling._server_protocol import Forward, ServerProtocol

# -- SignalingLimits and the command line -----------------------------------------------------


def test_the_cli_options_default_to_the_limits_defaults_and_say_so() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert limits_from_args(parser.parse_args([])) == SignalingLimits()
    defaults = SignalingLimits()
    for _, field, kind, _, text in LIMIT_OPTIONS:
        value = getattr(defaults, field)
        shown = f"{value:g}" if kind is float else str(value)
        assert f"(default {shown})" in text, field


def test_the_cli_options_set_the_limits() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--max-connections",
            "10",
            "--max-connections-per-address",
            "3",
            "--rate",
            "2.5",
            "--burst",
            "7",
            "--hello-timeout",
            "1.5",
            "--max-relay-size",
            "1000",
        ]
    )
    limits = limits_from_args(args)
    assert (limits.max_connections, limits.max_connections_per_address) == (10, 3)
    assert (limits.message_rate, limits.message_burst) == (2.5, 7)
    assert (limits.hello_timeout, limits.max_relay_payload) == (1.5, 1000)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_connections", 0),
        ("max_connections_per_address", -1),
        ("hello_timeout", 0.0),
        ("message_rate", -1.0),
        ("message_burst", 0),
        ("discovery_rate", 0.0),
        ("relay_burst", 0),
        ("max_relay_payload", MAX_FRAME_SIZE + 1),
        ("outbox_bytes", MAX_FRAME_SIZE),
        ("max_connections", True),
    ],
)
def test_limits_out_of_range_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SignalingLimits(**{field: value})  # type: ignore[arg-type]


# -- connection caps ----------------------------------------------------------------------------


def test_caps_per_address_and_overall() -> None:
    caps = ConnectionCaps(SignalingLimits(max_connections=5, max_connections_per_address=2))
    assert [caps.open("a") for _ in range(3)] == [Admission.OPEN] * 2 + [Admission.ADDRESS_FULL]
    assert [caps.open(x) for x in "bbc"] == [Admission.OPEN] * 3
    assert caps.open("d") is Admission.SERVER_FULL  # 5 open: nobody else, whatever address
    caps.release("a")
    assert caps.open("d") is Admission.OPEN
    assert caps.open_connections == 5


def test_caps_forget_addresses_without_connections() -> None:
    caps = ConnectionCaps(SignalingLimits())
    for i in range(1000):
        assert caps.open(f"127.1.{i // 256}.{i % 256}") is Admission.OPEN
    for i in range(1000):
        caps.release(f"127.1.{i // 256}.{i % 256}")
    assert (caps.open_connections, caps.addresses()) == (0, 0)
    with pytest.raises(ValueError, match="no open connection"):
        caps.release("127.1.0.0")


# -- outbox budget ------------------------------------------------------------------------------


def test_relays_fill_only_their_share_and_own_frames_the_rest() -> None:
    budget = OutboxBudget(outbox_bytes=400_000)
    share = 400_000 // RELAY_SHARE
    relays = 0
    while budget.admit(10_000, relay=True):
        relays += 1
    assert relays == share // 10_000  # refused beyond the share...
    assert budget.admit(10_000, relay=False)  # ...while the connection's own answers still fit
    own = 1
    while budget.admit(10_000, relay=False):
        own += 1
    assert budget.queued_bytes == (relays + own) * 10_000 <= 400_000
    # Sending a relay frees room for relays again.
    budget.sent(10_000, relay=True)
    assert budget.admit(10_000, relay=True)


def test_the_outbox_is_bounded_in_frames_too() -> None:
    budget = OutboxBudget(outbox_bytes=10 * 1024 * 1024)
    assert sum(budget.admit(1, relay=True) for _ in range(OUTBOX_FRAMES)) == (
        OUTBOX_FRAMES // RELAY_SHARE
    )
    admitted_own = sum(budget.admit(1, relay=False) for _ in range(OUTBOX_FRAMES))
    assert budget.queued_frames == OUTBOX_FRAMES == OUTBOX_FRAMES // RELAY_SHARE + admitted_own


# -- one connection's budget ------------------------------------------------------------------


def test_messages_over_the_rate_are_refused_then_the_connection_closed() -> None:
    budget = ConnectionBudget(SignalingLimits(message_rate=10, message_burst=20), now=0.0)
    verdicts = [budget.message(0.0) for _ in range(45)]
    assert verdicts == [Verdict.ALLOW] * 20 + [Verdict.REFUSE] * 20 + [Verdict.CLOSE] * 5


def test_a_client_that_keeps_to_the_rate_is_never_refused() -> None:
    budget = ConnectionBudget(SignalingLimits(message_rate=10, message_burst=20), now=0.0)
    assert {budget.message(i / 10) for i in range(1000)} == {Verdict.ALLOW}


def test_relays_are_budgeted_per_target_in_a_bounded_table() -> None:
    limits = SignalingLimits(relay_rate=1, relay_burst=2)
    budget = ConnectionBudget(limits, now=0.0)
    victim = ActrId("r", 1, ECHO)
    other = ActrId("r", 2, ECHO)
    assert [budget.relay(0.0, victim) for _ in range(3)] == [True, True, False]
    assert budget.relay(0.0, other)  # another target has its own budget
    assert budget.relay(1.0, victim)  # one more per second
    for serial in range(10, 10 + 2 * MAX_RELAY_TARGETS):
        budget.relay(2.0, ActrId("r", serial, ECHO))
    assert len(budget._targets) == MAX_RELAY_TARGETS


# -- the server machine: rates ------------------------------------------------------------------


def tight(**kw: object) -> ServerProtocol:
    return make_server(None, limits=SignalingLimits(**kw))  # type: ignore[arg-type]


def test_discover_flood_is_refused_with_overloaded_then_closed() -> None:
    server = tight(message_rate=5, message_burst=10)
    client, _ = register(server, 1)
    codes = []
    for _ in range(25):
        _, frame = client.discover(ECHO)
        codes += [f.error.code or "peers" for f in frames_to(1, server.handle(1, frame, 0.0))]
    assert codes == ["peers"] * 10 + ["overloaded"] * 11
    stats = server.statistics()
    assert (stats.rate_limited, stats.rate_closed, stats.registered) == (10, 1, 0)


def test_an_overloaded_request_fails_with_a_typed_error_and_the_session_lives() -> None:
    server = tight(message_rate=1, message_burst=2)
    client, _ = register(server, 1)
    for _ in range(2):
        server.handle(1, client.discover(ECHO)[1], 0.0)
    request_id, frame = client.discover(ECHO)
    (error,) = frames_to(1, server.handle(1, frame, 0.0))
    (event,) = client.receive(encode_frame(error))
    assert isinstance(event, RequestFailed)
    assert event.request_id == request_id
    assert isinstance(event.error, SignalingOverloaded)
    assert client.registered
    # A heartbeat over the rate is dropped silently (an Error without a request would end
    # the session) and still counts as presence.
    assert server.handle(1, client.heartbeat(), 0.25) == []
    assert server.deadline(1) == 0.25 + server.presence_timeout
    assert server.statistics().rate_limited == 2


def test_relays_to_one_target_are_budgeted_and_others_unaffected() -> None:
    server = tight(relay_rate=1, relay_burst=3)
    flooder, _ = register(server, 1)
    victim, _ = register(server, 2, actr_type=CALLER)
    caller, _ = register(server, 3, actr_type=CALLER)
    assert victim.actr_id is not None
    outcomes = []
    for _ in range(6):
        _, frame = flooder.relay(victim.actr_id, "offer", "v=0")
        (effect,) = server.handle(1, frame, 0.0)
        outcomes.append("forward" if isinstance(effect, Forward) else effect.frame.error.code)  # type: ignore[union-attr]
    assert outcomes == ["forward"] * 3 + ["overloaded"] * 3
    _, frame = caller.relay(victim.actr_id, "offer", "v=0")
    assert isinstance(server.handle(3, frame, 0.0)[0], Forward)  # another source: its own budget
    assert server.statistics().relays_limited == 3


def test_an_oversized_relay_is_refused_with_too_large_and_never_forwarded() -> None:
    server = tight(max_relay_payload=1000)
    a, _ = register(server, 1)
    b, _ = register(server, 2, actr_type=CALLER)
    assert b.actr_id is not None
    for payload, forwarded in [("x" * 1000, True), ("x" * 1001, False), ("é" * 501, False)]:
        request_id, frame = a.relay(b.actr_id, "offer", payload)
        (effect,) = server.handle(1, frame, 0.0)
        assert isinstance(effect, Forward) is forwarded
        if not forwarded:
            (event,) = a.receive(encode_frame(effect.frame))  # type: ignore[union-attr]
            assert isinstance(event, RequestFailed)
            assert isinstance(event.error, RelayTooLarge)
            assert event.request_id == request_id
    assert server.statistics().relays_too_large == 2
    assert a.registered  # refused, not disconnected


# -- the server machine: hello timeout -----------------------------------------------------------


def test_a_connection_must_register_within_the_hello_timeout() -> None:
    server = tight(hello_timeout=2.0)
    server.connect(1, 10.0)
    assert server.deadline(1) == 12.0
    effects = server.timeout(1, 12.0)
    assert [f.error.code for f in frames_to(1, effects)] == ["register_timeout"]
    assert closed(1, effects)
    assert server.deadline(1) is None
    assert server.statistics().register_timeouts == 1
    # Once registered, the presence timeout takes over.
    register(server, 2, now=20.0)
    assert server.deadline(2) == 20.0 + server.presence_timeout


def test_a_hello_does_not_extend_the_hello_timeout() -> None:
    server = tight(hello_timeout=2.0)
    server.connect(1, 0.0)
    client = ClientProtocol(realm="demo", secret=None, actr_type=ECHO, previous_id=None)
    server.receive(1, encode_frame(client.hello()), 1.5)
    assert server.deadline(1) == 2.0


# -- discovery pages ------------------------------------------------------------------------------


def test_the_largest_page_of_the_largest_ids_fits_one_frame() -> None:
    name = "n" * 64
    biggest = ActrId(name, 2**64 - 1, ActrType(name, name)).to_proto()
    peers = Frame.Peers(
        request_id=2**64 - 1, peers=[biggest] * MAX_PAGE_SIZE, next_cursor=2**64 - 1
    )
    assert len(encode_frame(Frame(peers=peers))) <= MAX_FRAME_SIZE


def pages(
    server: ServerProtocol, conn: int, client: ClientProtocol, page_size: int, now: float = 0.0
) -> list[list[int]]:
    """Follow the pages of ECHO discovery as SignalingClient does; the serials of each page."""
    out: list[list[int]] = []
    cursor = 0
    while True:
        _, frame = client.discover(ECHO, cursor)
        frame.discover.page_size = page_size
        (answer,) = frames_to(conn, server.handle(conn, frame, now))
        (event,) = client.receive(encode_frame(answer))
        assert isinstance(event, PeersFound)
        out.append([p.serial for p in event.peers])
        if not event.next_cursor:
            return out
        assert event.next_cursor > cursor
        cursor = event.next_cursor


def test_discovery_is_paginated_by_serial_with_a_cursor() -> None:
    server = make_server(None)
    for conn in range(1, 12):
        register(server, conn)
    asker, _ = register(server, 100, actr_type=CALLER)
    assert pages(server, 100, asker, page_size=4) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    assert pages(server, 100, asker, page_size=11) == [list(range(1, 12))]
    # A page size of 0 means the server's default, and no page is ever above MAX_PAGE_SIZE.
    assert pages(server, 100, asker, page_size=0) == [list(range(1, 12))]
    assert pages(server, 100, asker, page_size=2**32 - 1) == [list(range(1, 12))]


def test_pages_stay_consistent_while_nodes_come_and_go() -> None:
    server = make_server(None)
    for conn in range(1, 9):
        register(server, conn)
    asker, _ = register(server, 100, actr_type=CALLER)
    _, frame = asker.discover(ECHO)
    frame.discover.page_size = 3
    (answer,) = frames_to(100, server.handle(100, frame, 0.0))
    assert [p.serial for p in answer.peers.peers] == [1, 2, 3]
    server.disconnect(2)  # gone from a page already sent: nothing to repeat
    server.disconnect(5)  # gone from a page not yet sent: left out
    register(server, 20)  # a newcomer: a higher serial, on a later page
    _, frame = asker.discover(ECHO, answer.peers.next_cursor)
    frame.discover.page_size = 100
    (answer,) = frames_to(100, server.handle(100, frame, 0.0))
    assert [p.serial for p in answer.peers.peers] == [4, 6, 7, 8, 10]
    assert answer.peers.next_cursor == 0


def test_discovery_answers_are_budgeted_by_the_peers_they_hold() -> None:
    server = tight(discovery_rate=10, discovery_burst=12)
    for conn in range(1, 11):
        register(server, conn)
    asker, _ = register(server, 100, actr_type=CALLER)
    codes = []
    for now in (0.0, 0.0, 0.5, 1.0, 2.0):
        _, frame = asker.discover(ECHO)
        (answer,) = frames_to(100, server.handle(100, frame, now))
        codes.append(answer.error.code or len(answer.peers.peers))
    # 12 tokens: one page of 10 (2 left), another page of 10 (in debt to -8); paid back at
    # 10/s: at 0.5 s still -3, at 1.0 s +2: served (debt again); at 2.0 s +2 again.
    assert codes == [10, 10, "overloaded", 10, 10]
    assert server.statistics().discovery_limited == 1


def test_a_realm_of_thousands_is_discovered_in_pages_that_cost_what_they_hold() -> None:
    directory = Directory()
    realm_type = ActrType("acme", "worker")
    for serial in range(3000, 0, -1):  # any order in, serial order out
        directory.hold(ActrId("big", serial, realm_type), serial)
    directory.hold(ActrId("big", 5000, ECHO), 5000)
    serials = [a.serial for a, _ in directory.members("big", realm_type, 2990)]
    assert serials == list(range(2991, 3001))
    for serial in range(1, 3001, 2):
        directory.release(ActrId("big", serial, realm_type))
    assert len(directory) == 1501
    assert [a.serial for a, _ in directory.members("big", realm_type, 0)][:3] == [2, 4, 6]
    directory.release(ActrId("big", 5000, ECHO))
    assert directory.realms() == 1
    assert list(directory.members("big", ECHO, 0)) == []
    assert directory._members.keys() == {("big", realm_type)}  # an empty type is dropped
