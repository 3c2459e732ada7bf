"""Authenticity (docs/security.md): the caller is the authenticated peer of the link, never the
envelope's own ``caller`` field; a response is accepted only from the peer the request went to;
request ids are random 128-bit values. In one process the "link" is the loopback transport,
whose peer is the sending node: the same rules hold there."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from actr_trio import ActrId, ActrType, Config, Context, Lane, Priority, Workload, route
from actr_trio._envelope import (
    REQUEST,
    RESPONSE,
    TELL,
    Envelope,
    decode_packet,
    encode_envelope,
    encode_sequenced,
)
from actr_trio._link import new_epoch
from actr_trio._mailbox import Accept, open_mailbox
from actr_trio._mailbox_sqlite import SqliteMailbox
from actr_trio.errors import PermissionDenied, Retryable
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import Transport

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

BOUND = 20  # seconds; everything settles far sooner


class Service(Workload):
    actr_type = ActrType("acme", "service")

    def __init__(self) -> None:
        self.callers: list[ActrId | None] = []
        self.called = trio.Event()
        self.entered = trio.Event()
        self.release = trio.Event()

    @route("demo.Service.Who")
    async def who(self, request: bytes, ctx: Context) -> bytes:
        self.callers.append(ctx.caller_id)
        self.called.set()
        return str(ctx.caller_id).encode()

    @route("demo.Service.Slow")
    async def slow(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        await self.release.wait()
        return b"real answer"


class Client(Workload):
    actr_type = ActrType("acme", "client")


class Mallory(Workload):
    actr_type = ActrType("evil", "mallory")


class Spy(TransportWrapper):
    """Records the request ids this node sends (what an eavesdropper or a peer could learn)."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.request_ids: list[str] = []

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        for raw in packets:
            body = decode_packet(raw, max_payload=1 << 20).body
            if isinstance(body, Envelope) and body.kind == REQUEST:
                self.request_ids.append(body.request_id)
        await self.inner.send(peer, lane, packets)


class Raw(TransportWrapper):
    """A node's transport the test also sends hand-made packets through (its link peer is
    still that node: the transport, not the packet, says who sent it)."""


class ClaimsToBe(TransportWrapper):
    """Rewrites the ``caller`` field of every envelope this node sends to ``victim``."""

    victim: ActrId | None = None

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        out = []
        for raw in packets:
            pkt = decode_packet(raw, max_payload=1 << 20)
            if isinstance(pkt.body, Envelope) and self.victim is not None:
                pkt.body.caller = self.victim
                raw = encode_sequenced(pkt.epoch, pkt.seq, encode_envelope(pkt.body))
            out.append(raw)
        await self.inner.send(peer, lane, out)


def _forged_response(request_id: str, *, caller: ActrId, target: ActrId) -> bytes:
    env = Envelope(
        kind=RESPONSE,
        route_key="demo.Service.Slow",
        payload=b"forged answer",
        request_id=request_id,
        traceparent="",
        caller=caller,
        target=target,
        priority=Priority.NORMAL,
        lane=Lane.RELIABLE,
        deadline_ms=0,
    )
    return encode_sequenced(new_epoch(), 1, encode_envelope(env))


async def test_a_forged_response_from_a_third_node_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Service()
    spies: list[Spy] = []
    raws: list[Raw] = []

    def spy(inner: Transport) -> Transport:
        spies.append(Spy(inner))
        return spies[-1]

    def raw(inner: Transport) -> Transport:
        raws.append(Raw(inner))
        return raws[-1]

    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio"):
        async with (
            LocalRealm() as realm,
            realm.start(service) as b,
            realm.start(Client(), wrap_transport=spy) as a,
            realm.start(Mallory(), wrap_transport=raw) as c,
            trio.open_nursery() as nursery,
        ):
            answers: list[bytes] = []

            async def call() -> None:
                answers.append(await a.call(b.actr_id, "demo.Service.Slow", b""))

            nursery.start_soon(call)
            await service.entered.wait()
            (request_id,) = spies[0].request_ids  # observed (or guessed): the worst case
            # Mallory answers first, once as itself and once claiming to be the service.
            forged = _forged_response(request_id, caller=c.actr_id, target=a.actr_id)
            await raws[0].send(a.actr_id, Lane.RELIABLE, [forged])
            spoofed = _forged_response(request_id, caller=b.actr_id, target=a.actr_id)
            await raws[0].send(a.actr_id, Lane.SIGNAL, [spoofed])
            # In-memory mailboxes and loopback: no threads, so "all blocked" means A's gate
            # has dealt with both packets.
            await trio.testing.wait_all_tasks_blocked()
            assert not answers, "the call took a forged answer"
            service.release.set()
        assert answers == [b"real answer"]
    stats = a.statistics()
    assert stats.outbound.forged_responses == 1  # the one that named its real sender
    assert stats.inbound.denied == 1  # the one naming the service: refused at the gate
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dropped a response from" in w and "forged" in w for w in warnings)
    assert any("names" in w and "as its caller" in w for w in warnings)


async def test_request_ids_are_random_128_bit() -> None:
    spies: list[Spy] = []

    def spy(inner: Transport) -> Transport:
        spies.append(Spy(inner))
        return spies[-1]

    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(Service()) as b,
            realm.start(Client(), wrap_transport=spy) as a,
        ):
            for _ in range(20):
                await a.call(b.actr_id, "demo.Service.Who", b"")
    ids = spies[0].request_ids
    assert len(set(ids)) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


async def test_a_spoofed_caller_field_is_refused_and_the_node_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Service()
    liars: list[ClaimsToBe] = []

    def liar(inner: Transport) -> Transport:
        liars.append(ClaimsToBe(inner))
        return liars[-1]

    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio"):
        async with (
            LocalRealm() as realm,
            realm.start(service) as b,
            realm.start(Client()) as honest,
            realm.start(Mallory(), wrap_transport=liar) as c,
        ):
            liars[0].victim = honest.actr_id
            with pytest.raises(PermissionDenied) as info:
                await c.call(b.actr_id, "demo.Service.Who", b"")
            assert info.value.code == "caller_mismatch"
            with pytest.raises(PermissionDenied):
                await c.tell(b.actr_id, "demo.Service.Who", b"")
            # Honest callers are unaffected, and the liar's calls as itself still work.
            assert (
                await honest.call(b.actr_id, "demo.Service.Who", b"")
                == str(honest.actr_id).encode()
            )
            liars[0].victim = None
            assert await c.call(b.actr_id, "demo.Service.Who", b"") == str(c.actr_id).encode()
            assert b.statistics().inbound.denied == 2
    assert service.callers == [honest.actr_id, c.actr_id]
    assert any(
        r.levelno == logging.WARNING and "as its caller" in r.getMessage() for r in caplog.records
    )


def _envelope(kind: int, caller: ActrId, request_id: str) -> bytes:
    return encode_envelope(
        Envelope(
            kind=kind,
            route_key="demo.Service.Who",
            payload=b"",
            request_id=request_id,
            traceparent="",
            caller=caller,
            target=None,
            priority=Priority.NORMAL,
            lane=Lane.RELIABLE,
            deadline_ms=0,
        )
    )


async def test_replay_shows_the_stored_link_peer_not_the_envelope_field(tmp_path: Path) -> None:
    # A row as the gate stores it: the caller column is the link peer. Its envelope bytes name
    # someone else (as a row accepted before callers were checked could): replay must show the
    # column, i.e. who really sent it.
    sender = ActrId("local", 41, ActrType("acme", "client"))
    claimed = ActrId("local", 42, ActrType("acme", "admin"))
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    mailbox = open_mailbox(Config(data_dir=data_dir))
    assert isinstance(mailbox, SqliteMailbox)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(mailbox.run)
            await mailbox.accept(
                [Accept(str(sender), "r1", Priority.NORMAL, _envelope(TELL, claimed, "r1"))]
            )
            nursery.cancel_scope.cancel()
        service = Service()
        async with LocalRealm() as realm, realm.start(service, data_dir=data_dir) as ref:
            await service.called.wait()
            assert ref.statistics().mailbox.replayed == 1
    assert service.callers == [sender]


class Flaky(Workload):
    """Fails until ``healed``: its envelopes end up dead letters, then are redriven."""

    actr_type = ActrType("acme", "flaky")

    def __init__(self) -> None:
        self.healed = False
        self.callers: list[ActrId | None] = []
        self.handled = trio.Event()

    @route("demo.Flaky.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        if not self.healed:
            raise Retryable("not yet")
        self.callers.append(ctx.caller_id)
        self.handled.set()
        return b""


async def test_dead_letters_and_redrives_show_the_true_caller(tmp_path: Path) -> None:
    flaky = Flaky()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(flaky, data_dir=tmp_path / "flaky", max_attempts=2) as f,
            realm.start(Client()) as sender,
        ):
            await sender.tell(f.actr_id, "demo.Flaky.Put", b"x")
            while not await f.dead_letters():
                await trio.testing.wait_all_tasks_blocked()  # the retries run meanwhile
            (letter,) = await f.dead_letters()
            assert letter.envelope.caller == str(sender.actr_id)
            flaky.healed = True
            assert await f.redrive() == 1
            await flaky.handled.wait()
    assert flaky.callers == [sender.actr_id]
