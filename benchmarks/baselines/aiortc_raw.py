"""Raw aiortc data channel between two processes on 127.0.0.1 (W5, W6, W7).

This process is the offerer (plain ``asyncio.run``, no trio-asyncio); the answerer is
``benchmarks.baselines._aiortc_peer`` in a child process, signalled over its stdin/stdout. One
ordered, reliable data channel. Host candidates are restricted to 127.0.0.1 by
``_loopback_ice.restrict_ice_to_loopback`` and no STUN server is configured.

Sender-side backpressure: pause while ``bufferedAmount`` exceeds 1 MiB and resume on
``bufferedamountlow`` (threshold 256 KiB); aiortc's ``send()`` has none of its own.

W6 has two rows: ``raw-aiortc`` sends one 100-byte record per message (as the runtime's tells
are sent one by one by their callers), ``raw-aiortc-packed`` packs 160 records into each
message (what a hand-written sender would do; the runtime coalesces envelopes into packets
too). W7's ``raw-aiortc`` uses the runtime's stream lane semantics (LatencyFirst: unordered,
``maxRetransmits=4``) and its clock (sender start -> the receiver's last delivered byte, on
the system-wide monotonic clock), counting delivered bytes; ``raw-aiortc-ordered`` is the
ordered reliable channel timed until the receiver confirms (the old row, kept for reference).
W8's ``raw-aiortc-child`` is a fresh aiortc process that imports, exchanges SDP, connects and
answers one echo (its signaling is its stdin/stdout: cheaper than a WebSocket server).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from benchmarks._harness import Measurement, latency_figures, subject
from benchmarks.baselines._loopback_ice import assert_loopback_sdp, restrict_ice_to_loopback
from benchmarks.baselines._proc import python_child, read_line

T = TypeVar("T")

PING = b"x" * 64
CHUNK = b"x" * 16384
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
SETUP_TIMEOUT = 20.0
WARMUP_PINGS = 100
PACKED = 160  # 100-byte records per message: 16,000 B, under the SCTP message size we use
LOSSY_REPORT_IDLE = 0.3  # seconds without a new delivery that end a LatencyFirst burst


@dataclass
class Channels:
    """What a baseline body gets: the ordered reliable control channel, its inbox, and (when
    asked for) the LatencyFirst-like data channel (unordered, maxRetransmits=4)."""

    control: Any
    inbox: asyncio.Queue[bytes | str]
    lossy: Any = None


async def _with_channel(
    proc: subprocess.Popen[bytes],
    body: Callable[[Channels], Awaitable[T]],
    lossy: bool = False,
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
        data = pc.createDataChannel("lossy", ordered=False, maxRetransmits=4) if lossy else None
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
        result = await body(Channels(channel, inbox, data))
        channel.close()
        return result, connect_ms
    finally:
        await pc.close()


def _run(
    body: Callable[[Channels], Awaitable[T]], timeout: float, lossy: bool = False
) -> tuple[T, float]:
    with python_child("benchmarks.baselines._aiortc_peer") as proc:

        async def main() -> tuple[T, float]:
            return await asyncio.wait_for(_with_channel(proc, body, lossy), timeout)

        return asyncio.run(main())


@subject(
    "W5",
    "raw-aiortc",
    label="aiortc data channel ping-pong, two processes, asyncio, 64 B",
    timeout_s=90,
)
def w5_raw_aiortc(size: int) -> Measurement:
    async def body(ch: Channels) -> list[int]:
        channel, inbox = ch.control, ch.inbox
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


def _throughput(n: int, payload: bytes, timeout: float, records: int = 1) -> Measurement:
    """``n`` messages of ``payload`` (each carrying ``records`` records), until confirmed."""

    async def body(ch: Channels) -> float:
        await _blast(ch.control, ch.inbox, max(1, n // 10), payload)  # warm-up: cwnd opened
        return await _blast(ch.control, ch.inbox, n, payload)

    elapsed, connect_ms = _run(body, timeout=timeout)
    return {
        "msgs_per_s": n * records / elapsed,
        "MB_per_s": n * len(payload) / elapsed / 1e6,
        "connect_ms": connect_ms,
    }


async def _lossy_burst(ch: Channels, n: int, payload: bytes) -> tuple[float, int, int]:
    """``n`` messages on the lossy channel; (sender start -> receiver's last delivered byte,
    messages delivered, bytes delivered)."""
    ch.control.send("tally")
    ch.control.send("report")  # ordered after "tally": the peer counts from zero when it answers
    await ch.inbox.get()
    lossy = ch.lossy
    lossy.bufferedAmountLowThreshold = LOW_WATER
    drained = asyncio.Event()
    lossy.on("bufferedamountlow", drained.set)
    t0 = time.monotonic()
    for _ in range(n):
        lossy.send(payload)
        if lossy.bufferedAmount > HIGH_WATER:
            drained.clear()
            await drained.wait()
    seen, since = -1, time.monotonic()
    while True:  # until all arrived, or nothing new for a while (LatencyFirst may drop)
        ch.control.send("report")
        _, count, nbytes, last = str(await ch.inbox.get()).split(":")
        if int(count) == n:
            break
        if int(count) != seen:
            seen, since = int(count), time.monotonic()
        elif time.monotonic() - since > LOSSY_REPORT_IDLE:
            break
        await asyncio.sleep(0.01)
    if int(count) == 0:
        raise RuntimeError(f"none of {n} messages was delivered")
    return float(last) - t0, int(count), int(nbytes)


@subject(
    "W6",
    "raw-aiortc",
    label="aiortc ordered reliable data channel, two processes, 100 B messages, one per send",
    timeout_s=120,
)
def w6_raw_aiortc(size: int) -> Measurement:
    return _throughput(size, b"x" * 100, timeout=100)


@subject(
    "W6",
    "raw-aiortc-packed",
    label=f"aiortc ordered reliable data channel, two processes, 100 B records packed {PACKED} per message",
    timeout_s=120,
)
def w6_raw_aiortc_packed(size: int) -> Measurement:
    messages = max(1, size // PACKED)
    return _throughput(messages, b"x" * 100 * PACKED, timeout=100, records=PACKED)


@subject(
    "W7",
    "raw-aiortc",
    label="aiortc data channel as the runtime's LatencyFirst lane (unordered, maxRetransmits=4), two processes, 16 KiB; delivered bytes / sender start -> last delivered byte",
    timeout_s=120,
)
def w7_raw_aiortc(size: int) -> Measurement:
    async def body(ch: Channels) -> tuple[float, int, int]:
        await _lossy_burst(ch, max(1, size // 10), CHUNK)  # warm-up: cwnd opened
        return await _lossy_burst(ch, size, CHUNK)

    (elapsed, count, nbytes), connect_ms = _run(body, timeout=100, lossy=True)
    return {
        "MB_per_s": nbytes / elapsed / 1e6,
        "delivered_pct": 100.0 * count / size,
        "connect_ms": connect_ms,
    }


@subject(
    "W7",
    "raw-aiortc-ordered",
    label="aiortc ordered reliable data channel, two processes, 16 KiB messages, until the receiver confirms",
    timeout_s=120,
)
def w7_raw_aiortc_ordered(size: int) -> Measurement:
    return _throughput(size, CHUNK, timeout=100)


#: W8: fresh processes per repetition (as the runtime row's ``PROCESS_STARTS``).
PROCESS_STARTS = 3


def _first_echo_ms() -> float:
    """Spawn -> imports -> SDP exchange -> connected -> one echo answered, in ms."""
    t0 = time.perf_counter()
    with python_child("benchmarks.baselines._aiortc_peer") as proc:

        async def body(ch: Channels) -> None:
            ch.control.send("echo")
            ch.control.send(PING)
            if await ch.inbox.get() != PING:
                raise RuntimeError("unexpected echo")

        async def main() -> None:
            await asyncio.wait_for(_with_channel(proc, body), SETUP_TIMEOUT)

        asyncio.run(main())
        return (time.perf_counter() - t0) * 1e3


@subject(
    "W8",
    "raw-aiortc-child",
    label=f"fresh aiortc child process: imports, SDP over its stdin/stdout, connect, one echo (median of {PROCESS_STARTS})",
    timeout_s=120,
)
def w8_raw_aiortc_child(size: int) -> Measurement:
    import aiortc  # noqa: F401  (this side's imports are not the child's start)

    return {
        "process_first_rpc_ms": statistics.median(_first_echo_ms() for _ in range(PROCESS_STARTS))
    }
