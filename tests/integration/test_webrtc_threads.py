"""No thread outlives a node that had WebRTC links: the transport's asyncio loop thread and
aiortc's codec threads ("video-decoder", "audio-decoder", one per receiving media slot) all end
when the node stops. Two nodes in this process, over a real signaling server and real WebRTC
on loopback (``direct=False``: calls take the wire, not the in-process route)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio

from actr_trio import ActrSystem, ActrType, Context, Workload, route
from actr_trio.testing import network_config
from actr_trio.transport._webrtc_aio import THREAD_NAME, AsyncioThread

BOUND = 60  # seconds; links open in well under a second on loopback
CODEC_THREADS = {"video-decoder", "audio-decoder"}


class Service(Workload):
    actr_type = ActrType("acme", "service")

    @route("demo.Service.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Client(Workload):
    actr_type = ActrType("acme", "client")


def _started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    # Trio keeps idle to_thread workers ("Trio thread N", daemon) cached for reuse: Trio's, not
    # the node's (the transport starts none).
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("Trio thread")
    ]


async def test_no_thread_outlives_a_node_with_webrtc_links(
    signaling_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop thread takes a while to wind down (as aiortc's closing tasks may): only a node
    # that waits for it, instead of leaving it to finish on its own, passes the last check.
    shutdown = AsyncioThread._shutdown

    def slow_shutdown(self: AsyncioThread, loop: Any) -> None:
        time.sleep(0.3)
        shutdown(self, loop)

    monkeypatch.setattr(AsyncioThread, "_shutdown", slow_shutdown)
    config = network_config(signaling_url, realm="threads")
    before = set(threading.enumerate())
    with trio.fail_after(BOUND):
        async with (
            ActrSystem(config, direct=False).attach(Service()).start() as service,
            ActrSystem(config, direct=False).attach(Client()).start() as client,
        ):
            for i in range(5):
                answer = await client.call(service.actr_id, "demo.Service.Echo", b"%d" % i)
                assert answer == b"%d" % i
            running = [t.name for t in _started_since(before)]
            # One loop thread per node, and each side of the link decodes its media slots.
            assert running.count(THREAD_NAME) == 2, running
            assert set(running) >= CODEC_THREADS, running
            assert not [t for t in _started_since(before) if t.daemon], running
    # The nodes joined their threads on the way out: nothing left to wait for.
    assert _started_since(before) == []
