"""Authenticity and ACLs end to end: a real signaling server, node processes and nodes in this
process, on 127.0.0.1 over both network lanes, real WebRTC and direct WebSocket links
(docs/security.md, "Authenticated callers and ACLs").

* A forged response from a third node (with the request id it observed) is dropped; the call
  gets the real answer.
* A spoofed ``caller`` field is refused live (PermissionDenied, WARNING at the receiver); after
  the receiver is SIGKILLed and restarted, the envelopes it replays show their true caller.
* An ACL denial: PermissionDenied to the caller, WARNING at the receiver, which keeps serving
  the callers it allows; discovery hides it from the types its ACL refuses.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from netprocs import Processes, lane_argv, lane_options, netnode_argv

from actr_trio import ActrId, ActrSystem, ActrType, Context, Lane, Priority, Workload, route
from actr_trio._envelope import (
    REQUEST,
    RESPONSE,
    Envelope,
    decode_packet,
    encode_envelope,
    encode_sequenced,
)
from actr_trio.errors import PermissionDenied
from actr_trio.testing import TransportWrapper, find, network_config
from actr_trio.transport import Transport
from actr_trio.transport._dual import DualTransport

NODE = ActrType("itest", "node")
BOUND = 120  # seconds: process start, registration and WebRTC setup on a loaded machine


class Client(Workload):
    actr_type = ActrType("itest", "client")

    @route("itest.Here.Ping")
    async def ping(self, request: bytes, ctx: Context) -> bytes:
        return request


class Mallory(Workload):
    actr_type = ActrType("itest", "mallory")


class Intruder(Workload):
    actr_type = ActrType("itest", "intruder")


class Forwarding(TransportWrapper):
    """A wrapper that also forwards what the node looks up on its transport when present
    (``listen``: the WebSocket listener; ``links``: the lane per peer, in ``statistics()``)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Spy(Forwarding):
    """Records the request ids its node sends (what any peer on the path might learn)."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.request_ids: list[str] = []
        self.sent_request = trio.Event()

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        for raw in packets:
            body = decode_packet(raw, max_payload=1 << 20).body
            if isinstance(body, Envelope) and body.kind == REQUEST:
                self.request_ids.append(body.request_id)
                self.sent_request.set()
        await self.inner.send(peer, lane, packets)


class ClaimsToBe(Forwarding):
    """Rewrites the ``caller`` field of every envelope its node sends to ``victim``."""

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


def _system(
    url: str, lane: str, wrap: type[TransportWrapper] | None = None
) -> tuple[ActrSystem, Transport]:
    config = network_config(url, realm="itest", **lane_options(lane))
    # The node's own transport (WebRTC, and WebSocket to peers that listen): wrappable here.
    transport: Transport = DualTransport(config)
    if wrap is not None:
        transport = wrap(transport)
    # direct=False: these nodes share a process, and what is tested is their network link.
    return ActrSystem(config, transport=transport, direct=False), transport


def _response(request_id: str, *, caller: ActrId, target: ActrId) -> bytes:
    return encode_envelope(
        Envelope(
            kind=RESPONSE,
            route_key="itest.Node.Hold",
            payload=b"forged answer",
            request_id=request_id,
            traceparent="",
            caller=caller,
            target=target,
            priority=Priority.NORMAL,
            lane=Lane.RELIABLE,
            deadline_ms=0,
        )
    )


async def test_a_forged_response_from_a_third_node_is_dropped(
    processes: Processes, signaling_url: str, caplog: pytest.LogCaptureFixture, lane: str
) -> None:
    await processes.start(*netnode_argv("service", signaling_url, *lane_argv(lane)))
    a_system, a_transport = _system(signaling_url, lane, Spy)
    c_system, _ = _system(signaling_url, lane)
    assert isinstance(a_transport, Spy)
    answers: list[bytes] = []
    answered = trio.Event()
    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio"):
        async with (
            a_system.attach(Client()).start() as a,
            c_system.attach(Mallory()).start() as c,
            trio.open_nursery() as nursery,
        ):
            service = await find(a, NODE)
            mallory = c.actr_id
            # Mallory looks A up as any node would (a listening peer's address comes with it).
            assert await find(c, Client.actr_type) == a.actr_id

            async def call() -> None:
                answers.append(await a.call(service, "itest.Node.Hold", b"", timeout=60))
                answered.set()

            nursery.start_soon(call)
            await a_transport.sent_request.wait()
            (request_id,) = a_transport.request_ids  # observed: the worst case
            # Mallory answers over its own link to A: once as itself, once naming the
            # service as the caller. Then an ordinary call on the same lane: once it is
            # answered, A has dealt with both forgeries (a lane is ordered).
            outgate = c._core.outgate
            outgate.respond(
                a.actr_id,
                Lane.RELIABLE,
                _response(request_id, caller=c.actr_id, target=a.actr_id),
                0,
            )
            outgate.respond(
                a.actr_id, Lane.RELIABLE, _response(request_id, caller=service, target=a.actr_id), 0
            )
            assert await c.call(a.actr_id, "itest.Here.Ping", b"after") == b"after"
            assert c.statistics().links[a.actr_id] == lane
            assert not answers, "the call took a forged answer"
            assert a.statistics().outbound.forged_responses == 1
            assert a.statistics().inbound.denied == 1
            # The real answer still arrives.
            async with a.open_stream(service, "itest-release", lane=Lane.RELIABLE) as release:
                await release.send(b"go")
            await answered.wait()
            assert a.statistics().links[service] == lane
    assert answers == [b""]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"dropped a response from {mallory}" in w for w in warnings)
    assert any(f"names {service} as its caller" in w for w in warnings)


async def test_a_spoofed_caller_is_refused_live_and_replay_shows_true_callers(
    processes: Processes, signaling_url: str, tmp_path: Path, lane: str
) -> None:
    warnings = tmp_path / "receiver-warnings.log"
    argv = netnode_argv(
        "receiver",
        signaling_url,
        "--data-dir",
        str(tmp_path / "receiver"),
        "--warnings",
        str(warnings),
        "--grace",
        "1",
        *lane_argv(lane),
    )
    first = await processes.start(*argv)
    a_system, _ = _system(signaling_url, lane)
    m_system, m_transport = _system(signaling_url, lane, ClaimsToBe)
    assert isinstance(m_transport, ClaimsToBe)
    with trio.fail_after(BOUND):
        async with (
            a_system.attach(Client()).start() as a,
            m_system.attach(Mallory()).start() as m,
        ):
            receiver = await find(a, NODE)
            assert await find(m, NODE) == receiver  # so M has its address too, if it listens
            honest = a.actr_id
            # The receiver's scheduler is held: what follows is accepted, not yet handled.
            await a.tell(receiver, "itest.Node.Hold", b"")
            for i in range(3):
                await a.tell(receiver, "itest.Node.Caller", b"a%d" % i)
            m_transport.victim = a.actr_id
            for i in range(2):
                with pytest.raises(PermissionDenied) as info:
                    await m.tell(receiver, "itest.Node.Caller", b"m%d" % i)
                assert info.value.code == "caller_mismatch"
            assert a.statistics().links[receiver] == lane
            assert m.statistics().links[receiver] == lane

            first.send_signal(signal.SIGKILL)
            await first.wait()
            await processes.start(*argv)  # same data dir: same ActrId, same mailbox
            # Reliable chunks are resent until the restarted receiver has them.
            async with a.open_stream(
                receiver, "itest-release", lane=Lane.RELIABLE, timeout=60
            ) as release:
                await release.send(b"go")
            seen = await a.call(receiver, "itest.Node.Callers", b"", timeout=60)
    # Handled after the restart, i.e. replayed from the mailbox: each shows its true caller.
    assert seen.decode().split(",") == [f"{honest}=a{i}" for i in range(3)]
    assert f"names {honest} as its caller" in warnings.read_text()


async def test_an_acl_denial_over_the_network(
    processes: Processes, signaling_url: str, tmp_path: Path, lane: str
) -> None:
    warnings = tmp_path / "guarded-warnings.log"
    await processes.start(
        *netnode_argv(
            "guarded",
            signaling_url,
            "--allow",
            "itest:client",
            "--allow",
            "itest:intr*",
            "--deny",
            "itest:intruder",
            "--warnings",
            str(warnings),
            *lane_argv(lane),
        )
    )
    systems = [_system(signaling_url, lane)[0] for _ in range(3)]
    with trio.fail_after(BOUND):
        async with (
            systems[0].attach(Client()).start() as client,
            systems[1].attach(Intruder()).start() as intruder,
            systems[2].attach(Mallory()).start() as stranger,
        ):
            guarded = await find(client, NODE)
            ids = {"intruder": intruder.actr_id, "stranger": stranger.actr_id}
            # Discovery hides it from the types its ACL refuses (the server filters)...
            assert await intruder.discover(NODE) == []
            assert await stranger.discover(NODE) == []
            # ...and the node itself refuses them even when they know its id.
            for who in (intruder, stranger):
                with pytest.raises(PermissionDenied) as info:
                    await who.call(guarded, "itest.Node.Echo", b"x")
                assert info.value.code == "acl"
            with pytest.raises(PermissionDenied):
                await stranger.tell(guarded, "itest.Node.Job", b"x")
            # It keeps serving the callers it allows.
            for i in range(3):
                assert await client.call(guarded, "itest.Node.Echo", b"%d" % i) == b"%d" % i
            assert await client.call(guarded, "itest.Node.Report", b"") == b"||0"
            assert client.statistics().links[guarded] == lane
    text = warnings.read_text()
    assert (
        f"ACL refused itest.Node.Echo (NORMAL) from {ids['intruder']}: "
        "denied by the deny rule for 'itest:intruder'"
    ) in text
    assert f"ACL refused itest.Node.Echo (NORMAL) from {ids['stranger']}: no allow rule" in text
