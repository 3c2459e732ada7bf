"""Acknowledgements on the wire path: a call is two packets (the response acknowledges its
request), acks ride on reverse traffic, a standalone ack waits for the ack delay unless its
sender waits for it, tells share acks, a lost response is still recovered, and an ack never
covers what the receiver's mailbox has not committed.

Packets are counted on the loopback transport (``wrap_transport`` forces the wire path)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import pytest
import trio
import trio.testing

from actr_trio import ActrId, ActrType, Context, Lane, Workload, route
from actr_trio._envelope import (
    RESPONSE,
    AckInfo,
    Envelope,
    MalformedEnvelope,
    WireError,
    decode_packet,
    encode_ack,
    encode_piggyback,
    encode_sequenced,
)
from actr_trio._link import ACK_DELAY, ACK_EVERY, PendingAck
from actr_trio._mailbox_memory import MemoryMailbox
from actr_trio.errors import RouteNotFound
from actr_trio.testing import LocalRealm
from actr_trio.testing._faults import TransportWrapper
from actr_trio.transport import Transport

ECHO = "demo.Echo.Echo"
MAX = 1 << 20


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.hold = trio.Event()
        self.hold.set()
        self.entered = trio.Event()

    @route(ECHO)
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        self.handled.append(request)
        self.entered.set()
        await self.hold.wait()
        return request


class Client(Workload):
    actr_type = ActrType("acme", "client")


@attrs.define
class Sent:
    """One packet a node handed its transport."""

    sender: str
    send: int  # which transport send (one frame over WebRTC)
    seq: int
    body: object
    piggyback: AckInfo | None


@attrs.define
class Wire:
    """Every packet both nodes sent, decoded; ``drop`` decides which never arrive."""

    packets: list[Sent] = attrs.Factory(list)
    sends: int = 0
    drop: Callable[[Sent], bool] = lambda sent: False

    def wrap(self, name: str) -> Callable[[Transport], Transport]:
        return lambda inner: Recorder(inner, self, name)

    def standalone_acks(self, sender: str | None = None) -> list[Sent]:
        return [
            p
            for p in self.packets
            if isinstance(p.body, AckInfo) and sender in (None, p.sender) and not p.body.reset
        ]

    def envelopes(self) -> list[Sent]:
        return [p for p in self.packets if isinstance(p.body, Envelope)]


class Recorder(TransportWrapper):
    def __init__(self, inner: Transport, wire: Wire, name: str) -> None:
        super().__init__(inner)
        self.wire = wire
        self.name = name

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        wire = self.wire
        wire.sends += 1
        kept = []
        for raw in packets:
            pkt = decode_packet(raw, max_payload=MAX)
            sent = Sent(self.name, wire.sends, pkt.seq, pkt.body, pkt.piggyback)
            wire.packets.append(sent)
            if not wire.drop(sent):
                kept.append(raw)
        if kept:
            await self.inner.send(peer, lane, kept)
        else:
            await trio.lowlevel.checkpoint()


def run(main: Callable[[], object]) -> None:
    # Loopback and in-memory mailboxes: virtual time is safe; ack delays and retransmission
    # timeouts pass only when every task waits.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


# -- the sans-IO part ------------------------------------------------------------------------


def test_pending_ack_is_due_after_the_delay_or_at_once() -> None:
    ack = PendingAck()
    assert not ack.owed
    ack.owe(7, 1, (), 10.0, urgent=False)
    assert ack.owed
    assert ack.due == 10.0 + ACK_DELAY
    ack.owe(7, 2, (), 10.001, urgent=False)
    assert ack.due == 10.0 + ACK_DELAY  # the first debt sets the deadline
    assert ack.take() == (7, 2, [])
    assert not ack.owed
    ack.owe(7, 3, (), 11.0, urgent=True)
    assert ack.due == 11.0
    ack.take()
    refusal = WireError(8, "full", "mailbox full")
    ack.owe(7, 4, [(4, refusal)], 12.0, urgent=False)
    assert ack.due == 12.0  # a refusal is told at once
    assert ack.take() == (7, 4, [(4, refusal)])
    ack.owe(7, 4 + ACK_EVERY, (), 13.0, urgent=False)
    assert ack.due == 13.0  # covers ACK_EVERY packets: the sender's window must not fill
    ack.take()
    ack.owe(9, 1, (), 14.0, urgent=False)  # a new epoch: the old debt is moot
    assert ack.take() == (9, 1, [])


def test_an_owed_ack_keeps_every_refusal_it_covers() -> None:
    """The cumulative ack covers refused packets too: a refusal left out of it would reach
    the sender as an acceptance (a stress run saw refused stream chunks reported as
    delivered when an owed ack kept only the last 1,024 refusals of a flood)."""
    ack = PendingAck()
    refusal = WireError(5, "route_not_found", "no callback")
    for start in range(1, 3001, 300):  # ten batches of 300 refused packets, taken at once
        ack.owe(7, start + 299, [(s, refusal) for s in range(start, start + 300)], 1.0, urgent=True)
    epoch, cumulative, refused = ack.take()
    assert (epoch, cumulative) == (7, 3000)
    assert [seq for seq, _ in refused] == list(range(1, 3001))


def test_a_receive_link_remembers_refusals_for_a_whole_sender_window() -> None:
    """A sender resends what it has not seen acknowledged, at most its window behind its
    newest packet; each resent refused packet must be answered with its refusal again."""
    from actr_trio._link import REFUSALS_KEPT, ReceiveLink
    from actr_trio._peerlane import WINDOW

    assert REFUSALS_KEPT >= WINDOW
    link = ReceiveLink()
    refusal = WireError(5, "route_not_found", "no callback")
    for seq in range(1, WINDOW + 1):
        assert link.classify(1, seq) == "accept"
        link.refuse(seq, refusal)
    assert link.classify(1, 1) == "duplicate"
    assert [seq for seq, _ in link.refusals(range(1, WINDOW + 1))] == list(range(1, WINDOW + 1))


def test_piggyback_rides_on_any_packet() -> None:
    body = b"\x08\x02"  # an RpcEnvelope: kind TELL
    refusal = WireError(8, "full", "mailbox full")
    raw = encode_sequenced(5, 3, body) + encode_piggyback(11, 42, [(40, refusal)])
    pkt = decode_packet(raw, max_payload=MAX)
    assert (pkt.epoch, pkt.seq) == (5, 3)
    assert pkt.piggyback == AckInfo(11, 42, False, {40: refusal})
    assert decode_packet(encode_sequenced(5, 3, body), max_payload=MAX).piggyback is None


def test_a_piggybacked_reset_is_malformed() -> None:
    # A reset answers a packet of an epoch the receiver does not know: never a passenger.
    raw = encode_ack(1, 0) + b"\x7a\x02\x18\x01"  # field 15 (piggyback) = Ack{reset: true}
    with pytest.raises(MalformedEnvelope):
        decode_packet(raw, max_payload=MAX)


# -- through real nodes ----------------------------------------------------------------------


def test_a_call_is_two_packets_in_steady_state() -> None:
    calls = 50
    wire = Wire()
    stats: list[tuple[int, int]] = []

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(Echo(), wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            await client.call(server.actr_id, ECHO, b"warm up")
            first, sends = len(wire.packets), wire.sends
            for n in range(calls):
                assert await client.call(server.actr_id, ECHO, b"%d" % n) == b"%d" % n
            window = wire.packets[first:]
            # Exactly a request and a response per call, each a send of its own; each carries
            # the ack of what came the other way (the request: the previous response).
            assert wire.sends - sends == 2 * calls
            assert [type(p.body) for p in window] == [Envelope] * (2 * calls)
            assert all(p.piggyback is not None for p in window)
            # Left alone, the last response's ack goes out on its own after the ack delay.
            await trio.sleep(ACK_DELAY * 0.9)
            assert client.statistics().outbound.acks_sent == 0
            await trio.sleep(ACK_DELAY * 0.2)
            assert client.statistics().outbound.acks_sent == 1
            await trio.sleep(1)  # nothing else is owed: no more acks
            out_c, out_s = client.statistics().outbound, server.statistics().outbound
            assert out_c.unacked == out_s.unacked == 0
            stats.append((out_c.acks_sent, out_s.acks_sent))

    run(main)
    assert len(wire.standalone_acks()) == sum(stats[0]) <= 3
    assert stats[0][0] == 1  # the client's: after the last response


def test_sequential_tells_never_wait_for_the_ack_delay() -> None:
    """A tell completes on its ack, so its ack goes at once (the sender waits for it)."""
    wire = Wire()

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(Echo(), wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            await client.tell(server.actr_id, ECHO, b"warm up")
            start = trio.current_time()
            for n in range(20):
                await client.tell(server.actr_id, ECHO, b"%d" % n)
            assert trio.current_time() - start < ACK_DELAY  # no timer ran: nobody waited

    run(main)


@pytest.mark.parametrize("senders", [1, 20])
def test_a_stream_of_tells_shares_acks(senders: int) -> None:
    """Tells sent while earlier ones wait for their ack share one: far fewer acks than tells."""
    tells = 200
    wire = Wire()
    server_node = Echo()

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(server_node, wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            if senders == 1:
                await client.tell_many(server.actr_id, ECHO, [b"%d" % n for n in range(tells)])
                return

            async def sender() -> None:
                for n in range(tells // senders):
                    await client.tell(server.actr_id, ECHO, b"%d" % n)

            async with trio.open_nursery() as nursery:
                for _ in range(senders):
                    nursery.start_soon(sender)

    run(main)
    told = [p for p in wire.envelopes() if p.sender == "client"]
    assert len(told) == tells
    acks = wire.standalone_acks("server")
    if senders == 1:
        assert len(acks) == 1  # one batch, one ack
    else:
        assert len(acks) * 5 <= tells, f"{len(acks)} acks for {tells} tells"
    assert max(a.body.cumulative for a in acks if isinstance(a.body, AckInfo)) == tells


def test_a_lost_response_is_resent_and_the_call_answered_once() -> None:
    """The response (with the ack of its request) is lost: the client resends its request
    (its ack never came), the server acks the duplicate at once and resends its response."""
    wire = Wire()
    lost: list[Sent] = []

    def drop(sent: Sent) -> bool:
        if isinstance(sent.body, Envelope) and sent.body.kind == RESPONSE and not lost:
            lost.append(sent)
            return True
        return False

    wire.drop = drop
    echo = Echo()
    answer: list[bytes] = []

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(echo, wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            answer.append(await client.call(server.actr_id, ECHO, b"once", timeout=30))
            await trio.sleep(1)
            assert client.statistics().outbound.unacked == 0
            assert server.statistics().outbound.unacked == 0
            assert server.statistics().outbound.retransmitted >= 1
            assert server.statistics().inbound.duplicates + len(echo.handled) >= 1

    run(main)
    assert lost
    assert lost[0].piggyback is not None  # the lost response carried the ack
    assert answer == [b"once"]
    assert echo.handled == [b"once"]  # handled exactly once
    requests = [p for p in wire.envelopes() if p.sender == "client"]
    assert len(requests) >= 2  # the request was resent: its ack died with the response
    assert wire.standalone_acks("server")  # and the duplicate was acked on its own


def test_a_lost_standalone_ack_gets_the_response_resent_and_acked() -> None:
    """The client's delayed ack of a response is lost: the server resends the response, and
    the client acks the duplicate at once."""
    wire = Wire()
    lost: list[Sent] = []

    def drop(sent: Sent) -> bool:
        if sent.sender == "client" and isinstance(sent.body, AckInfo) and not lost:
            lost.append(sent)
            return True
        return False

    wire.drop = drop

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(Echo(), wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            assert await client.call(server.actr_id, ECHO, b"x") == b"x"
            await trio.sleep(5)  # a few retransmission timeouts (virtual time)
            assert server.statistics().outbound.unacked == 0
            assert server.statistics().outbound.retransmitted >= 1

    run(main)
    assert lost
    assert len(wire.standalone_acks("client")) >= 2


def test_an_ack_never_covers_what_the_mailbox_has_not_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the commit of a tell is held, the server's response to an earlier call leaves
    with a piggybacked ack: it covers the call, never the uncommitted tell."""
    wire = Wire()
    echo = Echo()
    echo.hold = trio.Event()
    committing = trio.Event()
    commit = trio.Event()
    original = MemoryMailbox.accept

    async def held_accept(self: MemoryMailbox, accepts: list[object]) -> object:
        if any(b"held" in getattr(a, "data", b"") for a in accepts):
            committing.set()
            await commit.wait()
        return await original(self, accepts)  # type: ignore[arg-type]

    monkeypatch.setattr(MemoryMailbox, "accept", held_accept)

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(echo, wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
            trio.open_nursery() as nursery,
        ):
            answered = trio.Event()

            async def call() -> None:
                assert await client.call(server.actr_id, ECHO, b"call") == b"call"
                answered.set()

            nursery.start_soon(call)
            await echo.entered.wait()
            nursery.start_soon(client.tell, server.actr_id, ECHO, b"held")
            await committing.wait()
            echo.hold.set()
            await answered.wait()
            await trio.sleep(1)  # any delayed ack would have left by now
            held = next(
                p
                for p in wire.envelopes()
                if isinstance(p.body, Envelope) and p.body.payload == b"held"
            )
            acked = [
                ack.cumulative
                for p in wire.packets
                if p.sender == "server"
                for ack in (p.piggyback, p.body)
                if isinstance(ack, AckInfo) and not ack.reset
            ]
            assert acked
            assert max(acked) < held.seq  # the response acked only the call, not the tell
            commit.set()

    run(main)


def test_a_refusal_travels_in_an_ack_of_its_own_at_once() -> None:
    """A refusal is told at once, in a standalone ack (never as a passenger: many refusals with
    their messages could push a packet over the receiver's limit)."""
    wire = Wire()

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(Echo(), wrap_transport=wire.wrap("server")) as server,
            realm.start(Client(), wrap_transport=wire.wrap("client")) as client,
        ):
            start = trio.current_time()
            with pytest.raises(RouteNotFound):
                await client.call(server.actr_id, "demo.Echo.Nope", b"")
            assert trio.current_time() - start < ACK_DELAY  # told at once

    run(main)
    refusals = [
        p for p in wire.standalone_acks("server") if isinstance(p.body, AckInfo) and p.body.refused
    ]
    assert len(refusals) == 1
    assert all(not p.piggyback.refused for p in wire.packets if p.piggyback is not None)
