"""Raw aiortc data channel between two processes on 127.0.0.1 (W5, W6, W7).

This process is the offerer (plain ``asyncio.run``, no trio-asyncio); the answerer is
``benchmarks.baselines._aiortc_peer`` in a child process, signalled over its stdin/stdout. One
ordered, reliable data channel. Host candidates are restricted to 127.0.0.1 by
``_loopback_ice.restrict_ice_to_loopback`` and no STUN server is configured.

Sender-side backpressure: pause while ``bufferedAmount`` exceeds 1 MiB and resume on
``bufferedamountlow`` (threshold 256 KiB); aiortc's ``send()`` has none of its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from benchmarks._harness import Measurement, latency_figures, subject
from benchmarks.baselines._loopback_ice import assert_loopback_sdp, restrict_ice_to_loopback
from benchmarks.baselines._proc import python_child, read_line

T = TypeVar("T")

PING = b"x" * 64
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
SETUP_TIMEOUT = 20.0
WARMUP_PINGS = 100


async def _with_channel(
    proc: subprocess.Popen[bytes],
    body: Callable[[Any, asyncio.Queue[bytes | str]], Awaitable[T]],
) -> tuple[T, float]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    assert proc.stdin is not None
    assert proc.stdout is not None
    restrict_ice_to_loopback()
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channel = pc.createDataChannel("bench", ordered=True)
        inbox: asyncio.Queue[bytes | str] = asyncio.Queue()
        opened = asyncio.Event()
        channel.on("message", inbox.put_nowait)
        channel.on("open", opened.set)
        ready = await loop.run_in_executor(None, read_line, proc.stdout, SETUP_TIMEOUT)
        if ready != "ready":
            raise RuntimeError(f"peer said {ready!r}")
        t0 = time.perf_counter()
        await pc.setLocalDescription(await pc.createOffer())
        assert_loopback_sdp(pc.localDescription.sdp)
        offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        proc.stdin.write((json.dumps(offer) + "\n").encode())
        proc.stdin.flush()
        answer = json.loads(await loop.run_in_executor(None, read_line, proc.stdout, SETUP_TIMEOUT))
        assert_loopback_sdp(answer["sdp"])
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(opened.wait(), SETUP_TIMEOUT)
        connect_ms = (time.perf_counter() - t0) * 1e3
        result = await body(channel, inbox)
        channel.close()
        return result, connect_ms
    finally:
        await pc.close()


def _run(
    body: Callable[[Any, asyncio.Queue[bytes | str]], Awaitable[T]], timeout: float
) -> tuple[T, float]:
    with python_child("benchmarks.baselines._aiortc_peer") as proc:

        async def main() -> tuple[T, float]:
            return await asyncio.wait_for(_with_channel(proc, body), timeout)

        return asyncio.run(main())


@subject(
    "W5",
    "raw-aiortc",
    label="aiortc data channel ping-pong, two processes, asyncio, 64 B",
    timeout_s=90,
)
def w5_raw_aiortc(size: int) -> Measurement:
    async def body(channel: Any, inbox: asyncio.Queue[bytes | str]) -> list[int]:
        channel.send("echo")
        samples: list[int] = []
        for i in range(WARMUP_PINGS + size):
            t0 = time.perf_counter_ns()
            channel.send(PING)
            reply = await inbox.get()
            t1 = time.perf_counter_ns()
            if reply != PING:
                raise RuntimeError(f"unexpected reply {reply!r:.40}")
            if i >= WARMUP_PINGS:
                samples.append(t1 - t0)
        return samples

    samples, connect_ms = _run(body, timeout=60)
    return {**latency_figures(samples), "connect_ms": connect_ms}


async def _blast(channel: Any, inbox: asyncio.Queue[bytes | str], n: int, payload: bytes) -> float:
    """Send n messages with backpressure; seconds until the peer confirmed all of them."""
    channel.bufferedAmountLowThreshold = LOW_WATER
    drained = asyncio.Event()
    channel.on("bufferedamountlow", drained.set)
    channel.send(f"sink:{n}")
    t0 = time.perf_counter()
    for _ in range(n):
        channel.send(payload)
        if channel.bufferedAmount > HIGH_WATER:
            drained.clear()
            await drained.wait()
    reply = await inbox.get()
    elapsed = time.perf_counter() - t0
    expected = f"done:{n}:{n * len(payload)}"
    if reply != expected:
        raise RuntimeError(f"peer answered {reply!r:.60}, expected {expected!r}")
    return elapsed


def _throughput(n: int, payload: bytes, timeout: float) -> Measurement:
    async def body(channel: Any, inbox: asyncio.Queue[bytes | str]) -> float:
        await _blast(channel, inbox, max(1, n // 10), payload)  # warm-up: cwnd opened
        return await _blast(channel, inbox, n, payload)

    elapsed, connect_ms = _run(body, timeout=timeout)
    return {
        "msgs_per_s": n / elapsed,
        "MB_per_s": n * len(payload) / elapsed / 1e6,
        "connect_ms": connect_ms,
    }


@subject(
    "W6",
    "raw-aiortc",
    label="aiortc ordered reliable data channel, two processes, 100 B messages",
    timeout_s=120,
)
def w6_raw_aiortc(size: int) -> Measurement:
    return _throughput(size, b"x" * 100, timeout=100)


@subject(
    "W7",
    "raw-aiortc",
    label="aiortc ordered reliable data channel, two processes, 16 KiB messages",
    timeout_s=120,
)
def w7_raw_aiortc(size: int) -> Measurement:
    return _throughput(size, b"x" * 16384, timeout=100)
