"""Peers say goodbye: a node that shuts down gracefully tells its linked peers, which stop
resending to it at once, fail what it never accepted, and reach it again once it restarts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from actr_trio import ActrId, ActrType, Context, Lane, Workload, route
from actr_trio._envelope import (
    REQUEST,
    TELL,
    Envelope,
    Goodbye,
    decode_packet,
    encode_goodbye,
)
from actr_trio._proto.actr import wire_pb2
from actr_trio.errors import MalformedEnvelope, PeerUnavailable
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import Transport

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

SERVICE = ActrType("acme", "service")
CLIENT = ActrType("acme", "client")
BOUND = 10  # seconds: every test settles far sooner; a broken goodbye waits for deadlines (30 s)


class Service(Workload):
    actr_type = SERVICE

    def __init__(self, *, block: bool = False) -> None:
        self.block = block
        self.entered = trio.Event()

    @route("demo.Service.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("demo.Service.Hold")
    async def hold(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        if self.block:
            await trio.sleep_forever()
        return b"answered " + request


class Client(Workload):
    actr_type = CLIENT


class SilentRequests(TransportWrapper):
    """Once ``silent`` is set, requests and tells this node sends are lost (acks still go):
    the peer never acknowledges them, so they wait in the outgate and are resent."""

    silent = False

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        if self.silent:
            packets = [p for p in packets if not _is_request(p)]
            if not packets:
                await trio.lowlevel.checkpoint()
                return
        await self.inner.send(peer, lane, packets)


def _is_request(packet: bytes) -> bool:
    body = decode_packet(packet, max_payload=1 << 20).body
    return isinstance(body, Envelope) and body.kind in (REQUEST, TELL)


async def test_unaccepted_calls_and_tells_fail_fast_and_resending_stops() -> None:
    wrappers: list[SilentRequests] = []

    def wrap(inner: Transport) -> Transport:
        wrappers.append(SilentRequests(inner))
        return wrappers[-1]

    async with LocalRealm() as realm, realm.start(Client(), wrap_transport=wrap) as client:
        outcomes: dict[str, BaseException] = {}
        async with realm.start(Service()) as service:
            peer = service.actr_id
            assert await client.call(peer, "demo.Service.Echo", b"hi") == b"hi"
            wrappers[0].silent = True

            async def attempt(name: str, kind: str) -> None:
                try:
                    if kind == "call":
                        await client.call(peer, "demo.Service.Echo", b"lost", timeout=30)
                    else:
                        await client.tell(peer, "demo.Service.Echo", b"lost")
                except PeerUnavailable as exc:
                    outcomes[name] = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attempt, "call", "call")
                nursery.start_soon(attempt, "tell", "tell")
                await trio.testing.wait_all_tasks_blocked()
                assert client.statistics().outbound.unacked == 2  # being resent
                with trio.fail_after(BOUND):
                    await service.shutdown()
                    # Without a goodbye both would be resent until their 30 s deadline.
        assert sorted(outcomes) == ["call", "tell"]
        assert all("shut down" in str(exc) for exc in outcomes.values())
        # Nothing is left to resend to the peer that left.
        assert client.statistics().outbound.unacked == 0
        # A call to it now fails at once too (it is not registered any more).
        wrappers[0].silent = False
        with trio.fail_after(BOUND), pytest.raises(PeerUnavailable):
            await client.call(peer, "demo.Service.Echo", b"", timeout=30)


async def test_accepted_call_fails_fast_when_the_peer_kept_nothing() -> None:
    service_workload = Service(block=True)
    async with LocalRealm() as realm, realm.start(Client()) as client:
        async with realm.start(service_workload, shutdown_grace=0.1) as service:
            result: list[BaseException] = []

            async def call() -> None:
                with pytest.raises(PeerUnavailable) as info:
                    await client.call(service.actr_id, "demo.Service.Hold", b"x", timeout=30)
                result.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await service_workload.entered.wait()
                await trio.testing.wait_all_tasks_blocked()  # the client has its ack
                with trio.fail_after(BOUND):
                    await service.shutdown()
        # In-memory mailbox, drain cut short: the request is gone with the node, so the call
        # that it had accepted fails at once instead of waiting for its deadline.
        assert "without answering" in str(result[0])


async def test_accepted_call_waits_for_a_durable_peer_and_restart_reaches_it() -> None:
    async with LocalRealm() as realm, realm.start(Client()) as client:
        data_dir = realm.temporary_data_dir()
        first = Service(block=True)
        answer: list[bytes] = []
        answered = trio.Event()
        async with trio.open_nursery() as nursery:
            async with realm.start(first, data_dir=data_dir, shutdown_grace=0.1) as service:
                peer = service.actr_id

                async def call() -> None:
                    answer.append(await client.call(peer, "demo.Service.Hold", b"x", timeout=30))
                    answered.set()

                nursery.start_soon(call)
                await first.entered.wait()
                await trio.testing.wait_all_tasks_blocked()
            # The durable peer said goodbye keeping the request: the call still waits. A new
            # call is not delivered: it fails at once.
            assert answer == []
            with trio.fail_after(BOUND), pytest.raises(PeerUnavailable):
                await client.call(peer, "demo.Service.Echo", b"", timeout=30)
            # Restarted on its data dir: it replays the request and answers the waiting call,
            # and is reachable again.
            async with realm.start(Service(), data_dir=data_dir) as again:
                assert again.actr_id == peer
                with trio.fail_after(BOUND):
                    assert await client.call(peer, "demo.Service.Echo", b"back") == b"back"
                    await answered.wait()
        assert answer == [b"answered x"]


async def test_a_goodbye_only_concerns_the_peer_it_came_from() -> None:
    wrappers: list[SilentRequests] = []

    def wrap(inner: Transport) -> Transport:
        wrappers.append(SilentRequests(inner))
        return wrappers[-1]

    async with (
        LocalRealm() as realm,
        realm.start(Service()) as service,
        realm.start(Client(), wrap_transport=wrap) as client,
        realm.start(Client()) as stranger,
    ):
        assert await client.call(service.actr_id, "demo.Service.Echo", b"1") == b"1"
        wrappers[0].silent = True
        async with trio.open_nursery() as nursery:
            answer: list[bytes] = []

            async def call() -> None:
                answer.append(await client.call(service.actr_id, "demo.Service.Echo", b"2"))

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().outbound.unacked == 1
            # A goodbye names nobody: sent by the stranger, it can only be about the stranger,
            # so the call to the service is still being resent, and then answered.
            await stranger._core.transport.send(
                client.actr_id, Lane.SIGNAL, [encode_goodbye(Goodbye(answers_pending=False))]
            )
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().outbound.unacked == 1
            wrappers[0].silent = False
        assert answer == [b"2"]


def test_goodbye_round_trip_and_a_sequenced_goodbye_is_malformed() -> None:
    for pending in (False, True):
        body = decode_packet(encode_goodbye(Goodbye(pending)), max_payload=1024).body
        assert body == Goodbye(answers_pending=pending)
    bad = wire_pb2.Packet(epoch=3, seq=7)
    bad.goodbye.answers_pending = True
    with pytest.raises(MalformedEnvelope, match="unsequenced"):
        decode_packet(bad.SerializeToString(), max_payload=1024)
