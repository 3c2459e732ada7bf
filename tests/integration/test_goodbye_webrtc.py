"""Peers say goodbye over real WebRTC: the goodbye crosses the data channel, the peer that
stays forgets the link at once, and a node that starts afterwards is reached over a new link."""

from __future__ import annotations

import pytest
import trio

from actr_trio import ActrId, ActrSystem, ActrType, Context, Workload, route
from actr_trio._envelope import Goodbye
from actr_trio.errors import PeerUnavailable
from actr_trio.testing import network_config
from actr_trio.transport._webrtc import WebRTCTransport

BOUND = 30  # seconds; WebRTC links open in well under a second on loopback


class Service(Workload):
    actr_type = ActrType("acme", "service")

    @route("demo.Service.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Client(Workload):
    actr_type = ActrType("acme", "client")


async def test_goodbye_crosses_webrtc_and_the_link_is_forgotten(signaling_url: str) -> None:
    config = network_config(signaling_url, realm="goodbye")
    async with ActrSystem(config, direct=False).attach(Service()).start() as service:
        core = service._core
        # The node's default transport is a DualTransport; no node listens: WebRTC carries it.
        transport = getattr(core.transport, "webrtc", core.transport)
        assert isinstance(transport, WebRTCTransport)
        heard: list[tuple[ActrId, Goodbye]] = []
        goodbye_heard = trio.Event()
        on_goodbye = core.outgate.on_goodbye

        def record(peer: ActrId, goodbye: Goodbye) -> None:
            heard.append((peer, goodbye))
            on_goodbye(peer, goodbye)
            goodbye_heard.set()

        core.outgate.on_goodbye = record  # type: ignore[method-assign]
        with trio.fail_after(BOUND):
            async with ActrSystem(config, direct=False).attach(Client()).start() as client:
                gone = client.actr_id
                assert await client.call(service.actr_id, "demo.Service.Echo", b"hi") == b"hi"
            await goodbye_heard.wait()
        assert heard == [(gone, Goodbye(answers_pending=False))]
        assert gone not in core.outgate.peers()
        assert core.outgate.unacked_to(gone) == 0
        assert transport.statistics().links_forgotten == 1
        with trio.fail_after(BOUND), pytest.raises(PeerUnavailable):
            await service.call(gone, "demo.Service.Echo", b"", timeout=BOUND)
        # A node that starts now gets a new link.
        with trio.fail_after(BOUND):
            async with ActrSystem(config, direct=False).attach(Client()).start() as client:
                assert await client.call(service.actr_id, "demo.Service.Echo", b"2") == b"2"
