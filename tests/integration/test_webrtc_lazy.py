"""aiortc and the WebRTC loop thread start only when a WebRTC link first needs them.

A node that links only over the direct WebSocket lane never imports aiortc and starts no loop
thread (checked in a fresh interpreter, where nothing else imported aiortc). A transport starts
one loop however many links need it at once, and an offer received while that loop is starting
waits for it (three transports in this process, over real WebRTC on loopback).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actr_trio import ActrId, ActrType
from actr_trio._config import Config
from actr_trio._lanes import Lane
from actr_trio.testing._memory_signaling import MemorySignaling
from actr_trio.transport import InboundPackets
from actr_trio.transport._webrtc import WebRTCTransport
from actr_trio.transport._webrtc_aio import THREAD_NAME
from actr_trio.transport._webrtc_ports import Ports

pytestmark = pytest.mark.integration

BOUND = 60  # seconds; a link opens in well under a second on loopback
CONFIG = Config(realm="lazy", ice_addresses=("127.0.0.1",))

# Two nodes in a fresh interpreter; the callee listens when asked to, so the caller links to it
# over the WebSocket lane. Prints the lane, the aiortc-side modules loaded, the loop threads seen.
NODES = """
import json, sys, threading
import trio
from actr_trio import ActrSystem, ActrType, Context, Workload, route
from actr_trio.signaling import serve
from actr_trio.testing import network_config

class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

class Caller(Workload):
    actr_type = ActrType("acme", "caller")

async def main() -> None:
    listen = {"listen": "127.0.0.1:0"} if sys.argv[1] == "listen" else {}
    with trio.fail_after(50):
        async with serve(host="127.0.0.1", port=0) as server:
            callee = network_config(server.url, realm="lazy", **listen)
            caller = network_config(server.url, realm="lazy")
            async with (
                ActrSystem(callee, direct=False).attach(Echo()).start() as echo,
                ActrSystem(caller, direct=False).attach(Caller()).start() as ref,
            ):
                # Discovery reports the callee's advertised address (if it listens).
                assert await ref.discover(Echo.actr_type) == [echo.actr_id]
                assert await ref.call(echo.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
                lane = ref.statistics().links[echo.actr_id]
                threads = [t.name for t in threading.enumerate()]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiortc", "aioice", "av"))
    print(json.dumps({"lane": lane, "loaded": loaded[:5], "threads": threads}))

trio.run(main)
"""


def _two_nodes(mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", NODES, mode], capture_output=True, text=True, timeout=BOUND
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_node_linking_over_websocket_never_imports_aiortc() -> None:
    result = _two_nodes("listen")
    assert result["lane"] == "websocket"
    assert result["loaded"] == []
    assert THREAD_NAME not in result["threads"]


def test_a_webrtc_link_imports_aiortc_and_starts_the_loop() -> None:
    # The same check sees aiortc and the loop thread when the link is WebRTC.
    result = _two_nodes("webrtc")
    assert result["lane"] == "webrtc"
    assert result["loaded"] != []
    assert result["threads"].count(THREAD_NAME) == 2


@asynccontextmanager
async def _three() -> AsyncIterator[tuple[list[WebRTCTransport], list[ActrId]]]:
    signaling = MemorySignaling("lazy")
    async with trio.open_nursery() as nursery:
        sessions = [
            await nursery.start(signaling.connector().run, ActrType("t", name), None)
            for name in ("a", "b", "c")
        ]
        transports = [WebRTCTransport(CONFIG) for _ in sessions]
        for transport, session in zip(transports, sessions, strict=True):
            await nursery.start(transport.run, session)
        yield transports, [s.actr_id for s in sessions]
        nursery.cancel_scope.cancel(reason="test done")


async def _received(transport: WebRTCTransport, packet: bytes) -> None:
    async for item in transport.inbound:
        if isinstance(item, InboundPackets) and packet in item.packets:
            return


def _loop_threads() -> int:
    return sum(t.name == THREAD_NAME for t in threading.enumerate())


async def test_one_loop_per_transport_and_an_offer_waits_for_it_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # b's loop start is held until the gate opens; every start is recorded.
    gate = trio.Event()
    entered: list[Ports] = []
    start = Ports._start

    async def held_start(self: Ports) -> None:
        entered.append(self)
        if self is held:
            await gate.wait()
        await start(self)

    monkeypatch.setattr(Ports, "_start", held_start)
    before = _loop_threads()
    with trio.fail_after(BOUND):
        async with _three() as ((a, b, c), (_, b_id, c_id)), trio.open_nursery() as nursery:
            held = b._ports
            assert a._ports.thread is b._ports.thread is c._ports.thread is None
            assert _loop_threads() == before  # running transports, no loop yet
            # b's first link (to c) starts b's loop: held.
            nursery.start_soon(b.send, c_id, Lane.RELIABLE, [b"b to c"])
            await trio.testing.wait_all_tasks_blocked()
            assert entered == [b._ports]
            # a links to b: b receives a's offer while its loop is starting.
            answering = trio.Event()
            answer_link = b._relays._new_link

            def new_link(peer: ActrId, offer: str) -> None:
                answer_link(peer, offer)
                answering.set()

            b._relays._new_link = new_link
            nursery.start_soon(a.send, b_id, Lane.RELIABLE, [b"a to b"])
            await answering.wait()  # b admitted the offer and started its answering link
            await trio.testing.wait_all_tasks_blocked()
            # b's answering link waits for the start in progress instead of starting another.
            assert entered == [b._ports, a._ports]
            assert b._ports.thread is None
            gate.set()
            await _received(b, b"a to b")
            await _received(c, b"b to c")
            assert entered == [b._ports, a._ports, c._ports]
            assert _loop_threads() == before + 3
    assert _loop_threads() == before
