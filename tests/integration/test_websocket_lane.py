"""The direct WebSocket lane: the identity proof, fallback between the lanes, and shutdown.

Transports run in this ``trio.run`` and register with an in-memory signaling service (which
issues real credentials); WebSocket transports listen on 127.0.0.1. The last test runs two
nodes over a real signaling server process.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from actr_trio import ActrSystem, ActrType, Context, Lane, Workload, route
from actr_trio._config import Config
from actr_trio._identity import NodeKey
from actr_trio._ids import ActrId
from actr_trio.errors import PeerNotAuthenticated, PeerUnavailable
from actr_trio.testing import network_config
from actr_trio.testing._memory_signaling import MemorySignaling
from actr_trio.transport import InboundPackets, LoopbackHub, MediaSource, SignalingSession
from actr_trio.transport import _websocket_handshake as handshake
from actr_trio.transport._dual import DualTransport
from actr_trio.transport._websocket import RESOURCE, WebSocketTransport
from actr_trio.transport._websocket_address import parse_address
from actr_trio.transport._websocket_greet import CLOSE_NOT_AUTHENTICATED

pytestmark = pytest.mark.integration

REALM = "wslane"
TYPE_A = ActrType("wslane", "a")
TYPE_B = ActrType("wslane", "b")
CONFIG = Config(realm=REALM, listen="127.0.0.1:0", ice_addresses=("127.0.0.1",))
BOUND = 60  # seconds; everything here is on loopback


@attrs.define
class ForeignKey:
    """A session that shows its own credential but signs with another node's key."""

    inner: SignalingSession
    node_key: NodeKey = attrs.field(factory=NodeKey.generate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _register(
    nursery: trio.Nursery,
    signaling: MemorySignaling,
    actr_type: ActrType,
    transport: object,
    *,
    listen: str | None = None,
) -> SignalingSession:
    """Bind the transport's listener (if any), then register advertising it (or ``listen``)."""
    bind = getattr(transport, "listen", None)
    address = await nursery.start(bind) if bind is not None and listen is None else listen
    run = partial(signaling.connector().run, listen=address)
    session: SignalingSession = await nursery.start(run, actr_type, None)
    return session


@asynccontextmanager
async def _raw_websocket(address: str) -> AsyncIterator[WebSocketConnection]:
    """A client connection this test drives by hand; its socket is closed whatever happened
    (trio-websocket leaves it open when the server closed the WebSocket first)."""
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, address, RESOURCE)
            try:
                yield ws
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def _received(transport: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        item = await transport.inbound.receive()
        if isinstance(item, InboundPackets):
            got.extend(item.packets)
    return got


# ------------------------------------------------------------------------------ the proof


@pytest.mark.parametrize("liar", ["dialler", "listener"])
async def test_a_peer_with_the_wrong_key_is_refused(liar: str) -> None:
    """A credential shown with a signature by another key: no link, whichever side lies."""
    signaling = MemorySignaling(REALM)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            a, b = WebSocketTransport(CONFIG), WebSocketTransport(CONFIG)
            session_a = await _register(nursery, signaling, TYPE_A, a)
            session_b = await _register(nursery, signaling, TYPE_B, b)
            if liar == "dialler":
                session_a = ForeignKey(session_a)  # type: ignore[assignment]
            else:
                session_b = ForeignKey(session_b)  # type: ignore[assignment]
            await nursery.start(a.run, session_a)
            await nursery.start(b.run, session_b)
            with pytest.raises(PeerNotAuthenticated, match="signature does not verify"):
                await a.send(session_b.actr_id, Lane.RELIABLE, [b"hello"])
            checker = b if liar == "dialler" else a
            assert checker.statistics().handshakes_refused == 1
            assert a.statistics().links_opened == 0
            assert b.statistics().links_opened == 0
            assert b.statistics().admission.links == 0  # nothing left counted
            nursery.cancel_scope.cancel()


async def test_a_replayed_handshake_is_refused() -> None:
    """A recorded proof (hello and proof messages of a connection that was accepted) replayed
    on a new connection meets a new nonce and is refused with a reason."""
    signaling = MemorySignaling(REALM)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            b = WebSocketTransport(CONFIG)
            session_b = await _register(nursery, signaling, TYPE_B, b)
            await nursery.start(b.run, session_b)
            # The "dialler" is this test, holding a genuine registration of its own.
            session_a = await nursery.start(signaling.connector().run, TYPE_A, None)
            assert b.address is not None
            nonce_d = handshake.new_nonce()
            hello = handshake.hello(nonce_d, dialler=session_a.actr_id, target=session_b.actr_id)

            async with _raw_websocket(b.address) as ws:
                await ws.send_message(hello)
                nonce_l, _ = handshake.check_challenge(
                    await ws.get_message(),
                    nonce_d=nonce_d,
                    local=session_a.actr_id,
                    peer=session_b.actr_id,
                    issuer_key=session_a.issuer_key,
                    now=time.time(),
                )
                recorded = handshake.proof(
                    nonce_d=nonce_d,
                    nonce_l=nonce_l,
                    local=session_a.actr_id,
                    peer=session_b.actr_id,
                    credential=session_a.credential,
                    sign=session_a.node_key.sign,
                )
                await ws.send_message(recorded)
                assert handshake.is_accept(await ws.get_message())  # genuine: accepted

            async with _raw_websocket(b.address) as ws:
                await ws.send_message(hello)  # the same hello, nonce and all
                await ws.get_message()  # a challenge with a fresh nonce
                await ws.send_message(recorded)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            reason = closed.value.reason
            assert reason is not None
            assert reason.code == CLOSE_NOT_AUTHENTICATED
            assert "replayed" in (reason.reason or "")
            assert b.statistics().handshakes_refused == 1
            assert b.statistics().links_opened == 1  # the genuine one only
            nursery.cancel_scope.cancel()


async def test_a_connection_that_does_not_speak_is_closed_at_the_handshake_timeout() -> None:
    """Admission: a connection that never says hello holds its slot only until the timeout,
    and connections beyond max_negotiating_links are closed at once."""
    config = attrs.evolve(CONFIG, max_negotiating_links=2)
    signaling = MemorySignaling(REALM)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            b = WebSocketTransport(config, connect_timeout=0.5)
            session_b = await _register(nursery, signaling, TYPE_B, b)
            await nursery.start(b.run, session_b)
            assert b.address is not None
            host, port = parse_address(b.address)
            silent = [await trio.open_tcp_stream(host, port) for _ in range(3)]
            # The third is over the cap: closed before anything is read.
            assert await silent[2].receive_some() == b""
            # The first two are closed once the handshake timeout passes.
            for stream in silent[:2]:
                while await stream.receive_some():
                    pass
            for stream in silent:
                await stream.aclose()
            stats = b.statistics()
            assert stats.connections_refused == 1
            assert stats.handshake_timeouts == 2
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ fallback


def _dead_address() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def _dual_pair(
    config_a: Config, *, b_listen: str | None, webrtc: Sequence[Any] | None = None
) -> AsyncIterator[tuple[DualTransport, DualTransport, ActrId, ActrId]]:
    signaling = MemorySignaling(REALM)
    async with trio.open_nursery() as nursery:
        if webrtc is None:
            a, b = DualTransport(config_a), DualTransport(CONFIG)
        else:
            a = DualTransport(config_a, webrtc=webrtc[0])
            b = DualTransport(CONFIG, webrtc=webrtc[1])
        session_a = await _register(nursery, signaling, TYPE_A, a)
        if b_listen is None:
            session_b = await _register(nursery, signaling, TYPE_B, b)
        else:
            session_b = await _register(nursery, signaling, TYPE_B, object(), listen=b_listen)
        await nursery.start(a.run, session_a)
        await nursery.start(b.run, session_b)
        yield a, b, session_a.actr_id, session_b.actr_id
        nursery.cancel_scope.cancel()


async def test_a_dead_advertised_address_falls_back_to_webrtc() -> None:
    with trio.fail_after(BOUND):
        async with _dual_pair(CONFIG, b_listen=_dead_address()) as (a, b, _, b_id):
            await a.send(b_id, Lane.RELIABLE, [b"over webrtc"])
            assert await _received(b, 1) == [b"over webrtc"]
            stats = a.statistics()
            assert stats.fallbacks_to_webrtc == 1
            assert stats.links == {b_id: "webrtc"}
            assert stats.websocket.dials_failed == 1
            # The lane is remembered: the next send does not dial the dead address again.
            await a.send(b_id, Lane.RELIABLE, [b"again"])
            assert await _received(b, 1) == [b"again"]
            assert a.statistics().fallbacks_to_webrtc == 1
            assert a.statistics().websocket.dials_failed == 1


class Unreachable:
    """A stand-in WebRTC transport that never reaches anyone (say, both behind NATs)."""

    def __init__(self) -> None:
        self.inbound, self._inbound_send = None, None
        send, recv = trio.open_memory_channel[Any](0)
        self._send, self.inbound = send, recv

    async def run(self, session: object, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with self._send:
            task_status.started()
            await trio.sleep_forever()

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        raise PeerUnavailable(f"{peer}: ICE failed")

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        raise PeerUnavailable(f"{peer}: ICE failed")

    def forget(self, peer: ActrId) -> None:
        pass


async def test_a_failed_webrtc_link_falls_back_to_websocket() -> None:
    """websocket_lane="fallback": WebRTC first; when it fails, the advertised address."""
    config = attrs.evolve(CONFIG, websocket_lane="fallback")
    with trio.fail_after(BOUND):
        async with _dual_pair(config, b_listen=None, webrtc=(Unreachable(), Unreachable())) as (
            a,
            b,
            a_id,
            b_id,
        ):
            await a.send(b_id, Lane.SIGNAL, [b"direct"])
            assert await _received(b, 1) == [b"direct"]
            stats = a.statistics()
            assert stats.fallbacks_to_websocket == 1
            assert stats.links == {b_id: "websocket"}
            # The peer answers on the link we opened, whatever its own preference.
            await b.send(a_id, Lane.SIGNAL, [b"reply"])
            assert await _received(a, 1) == [b"reply"]
            assert b.statistics().links == {a_id: "websocket"}


async def test_never_keeps_to_webrtc_even_when_the_peer_listens() -> None:
    config = attrs.evolve(CONFIG, websocket_lane="never")
    hub = LoopbackHub()  # stands in for WebRTC: this is about the choice, not the lane
    with trio.fail_after(BOUND):
        async with _dual_pair(config, b_listen=None, webrtc=(hub.transport(), hub.transport())) as (
            a,
            b,
            _,
            b_id,
        ):
            await a.send(b_id, Lane.RELIABLE, [b"x"])
            assert await _received(b, 1) == [b"x"]
            assert a.statistics().links == {b_id: "webrtc"}
            assert a.statistics().websocket.links_opened == 0


# ------------------------------------------------------------------------------ shutdown


class Service(Workload):
    actr_type = ActrType("wslane", "service")

    @route("demo.Service.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Client(Workload):
    actr_type = ActrType("wslane", "client")


def _tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


async def test_no_task_thread_or_socket_outlives_nodes_linked_over_websocket(
    signaling_url: str,
) -> None:
    config = network_config(signaling_url, realm=REALM, listen="127.0.0.1:0")
    threads_before = set(threading.enumerate())
    tasks_before = _tasks()
    with trio.fail_after(BOUND):
        async with (
            ActrSystem(config, direct=False).attach(Service()).start() as service,
            ActrSystem(config, direct=False).attach(Client()).start() as client,
        ):
            await client.discover(Service.actr_type)  # learns the service's address
            for i in range(5):
                answer = await client.call(service.actr_id, "demo.Service.Echo", b"%d" % i)
                assert answer == b"%d" % i
            assert client.statistics().links == {service.actr_id: "websocket"}
            assert service.statistics().links == {client.actr_id: "websocket"}
            transport: Any = service._core.transport
            address = transport.websocket.address
            assert len(_tasks()) > len(tasks_before)
    assert _tasks() <= tasks_before
    leftover = [
        t
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.name.startswith("Trio thread")
    ]
    assert leftover == []
    host, port = parse_address(address)
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await trio.open_tcp_stream(host, port)  # the listener socket is closed
