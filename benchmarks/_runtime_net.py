"""actr_trio subjects across processes (W5-W7) and node start (W8); imported by
``benchmarks/runtime.py``.

A signaling server embedded here on 127.0.0.1, the worker node (``benchmarks/_runtime_node.py``)
in a child process, the measuring client node here, WebRTC with loopback-only ICE and no STUN.
Every child is terminated (then killed) in a ``finally``, each wait bounded.

W7 counts what the worker's stream callback received (delivered, not sent) and stops the clock
at the last delivered chunk (the worker stamps arrivals with ``time.monotonic()``, one clock
for every process of the machine); each burst uses a fresh stream id. Its ``dispatch_p50_us``
is in process (LocalRealm).

W8 also prices the DTLS binding (connection setup only: nothing is signed or verified per
envelope): ``binding_seal_us`` / ``binding_open_us`` are one offer's or answer's signing and
verification (credential + signature + fingerprints) on a real aiortc SDP, and
``binding_share_pct`` is the part of ``first_call_ms`` (a registered node's first call over a
new WebRTC link) they take: two seals and two opens lie on that path (offer, then answer).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

import trio

import benchmarks.workloads  # noqa: F401  (the workload ids, also when imported on its own)
from actr_trio import ActrId, ActrRef, ActrSystem, Lane, Priority
from actr_trio.errors import PeerUnavailable
from actr_trio.signaling import SignalingLimits
from actr_trio.testing import LocalRealm, network_config
from benchmarks._harness import REPO_ROOT, Measurement, latency_figures, runtime
from benchmarks._runtime_common import (
    PAYLOAD,
    SENDER,
    SENDERS,
    SINK,
    Burst,
    Sender,
    Sink,
    run_trio,
    split,
    warmup,
)
from benchmarks._runtime_node import (
    COUNT,
    ECHO,
    REALM,
    STREAM_ID,
    STREAM_IDS,
    STREAM_REPORT,
    TELL,
    WORKER,
    BenchClient,
)

TELL_PAYLOAD: Final = b"x" * 100  # W6 (as raw aiortc's 100-byte messages)
#: W6 tell_many rows: tells per batch (as the packed baselines' records per message), and
#: tasks sending batches at once.
PACKED: Final = 160
BATCH_SENDERS: Final = 4
CHUNK: Final = b"x" * 16384  # W7 (as raw aiortc's 16 KiB messages)
#: W7 in-process stream dispatch: sequential chunks timed from send to callback.
DISPATCH_SAMPLES: Final = 2_000
#: W8: process starts per repetition (each costs an interpreter, imports and a WebRTC connect).
PROCESS_STARTS: Final = 3
#: W8: seals and opens timed for the binding's cost (each ~0.1 ms).
BINDING_SAMPLES: Final = 1_000
WARMUP_CALLS: Final = 200

SETUP_BOUND: Final = 30.0  # child start + registration + first WebRTC connect
STOP_BOUND: Final = 5.0  # child's graceful exit after SIGTERM before SIGKILL
DISCOVERY_POLL: Final = 0.005
# The rows measure nodes, not the server's abuse budgets: polling discovery every 5 ms is over
# the default per-connection rate (50 frames/s) on purpose here.
BENCH_LIMITS: Final = SignalingLimits(
    message_rate=10_000, message_burst=10_000, discovery_rate=1e6, discovery_burst=1_000_000
)
CONNECT_ATTEMPTS: Final = 3
#: The network lanes a row runs on (as ``NodeStatistics.links`` names them); the ``-ws`` rows
#: give the worker a listen address, so the client links to it over the direct WebSocket lane.
WEBRTC: Final = "webrtc"
WEBSOCKET: Final = "websocket"
WS_ROW: Final = "actr_trio-ws"

T = TypeVar("T")


# Across processes: signaling here, the worker node in a child process, WebRTC on loopback


async def _stop_child(proc: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(STOP_BOUND):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(STOP_BOUND):
                await proc.wait()


@contextlib.asynccontextmanager
async def _worker_process(url: str, lane: str = WEBRTC) -> AsyncIterator[trio.Process]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    proc = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "benchmarks._runtime_node", "--signaling", url),
            *("--realm", REALM),
            *(("--listen", "127.0.0.1:0") if lane == WEBSOCKET else ()),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        await _stop_child(proc)


async def _find_worker(ref: ActrRef, proc: trio.Process) -> ActrId:
    while True:
        found = await ref.discover(WORKER)
        if found:
            return found[0]
        if proc.returncode is not None:
            raise RuntimeError(f"worker process exited with {proc.returncode} before registering")
        await trio.sleep(DISCOVERY_POLL)


async def _with_worker(
    body: Callable[[ActrRef, ActrId], Awaitable[T]], bound: float, lane: str = WEBRTC
) -> tuple[T, int]:
    """Signaling server here, worker node in a child, client node here; ``body(client, worker)``.

    The first call (the WebRTC connect) happens before ``body`` runs; a link that fails to
    connect is tried again (at most ``CONNECT_ATTEMPTS``), and the attempts are returned so the
    rows show it (``connect_attempts``).
    """
    from actr_trio.signaling import serve

    with trio.fail_after(bound):
        async with serve(host="127.0.0.1", port=0, limits=BENCH_LIMITS) as server:
            config = network_config(server.url, realm=REALM)
            async with (
                _worker_process(server.url, lane) as proc,
                ActrSystem(config).attach(BenchClient()).start() as ref,
            ):
                attempts = 0
                with trio.fail_after(SETUP_BOUND):
                    worker = await _find_worker(ref, proc)
                    while True:
                        attempts += 1
                        try:
                            await ref.call(worker, ECHO, b"connect")
                            break
                        except PeerUnavailable:
                            if attempts >= CONNECT_ATTEMPTS:
                                raise
                linked = ref.statistics().links.get(worker)
                if linked != lane:
                    raise RuntimeError(f"linked to the worker over {linked}, not {lane}")
                return await body(ref, worker), attempts


@runtime(
    "W5",
    label="client node here -> worker node in a child process, WebRTC on 127.0.0.1; sequential ref.call echo, 64 B",
    timeout_s=90,
)
def w5_calls(size: int) -> Measurement:
    return _w5(size, WEBRTC)


@runtime(
    "W5",
    WS_ROW,
    label="client node here -> worker node in a child process, direct WebSocket lane on 127.0.0.1; sequential ref.call echo, 64 B",
    timeout_s=90,
)
def w5_calls_ws(size: int) -> Measurement:
    return _w5(size, WEBSOCKET)


def _w5(size: int, lane: str) -> Measurement:
    async def body(ref: ActrRef, worker: ActrId) -> list[int]:
        samples: list[int] = []
        for i in range(WARMUP_CALLS + size):
            t0 = time.perf_counter_ns()
            reply = await ref.call(worker, ECHO, PAYLOAD)
            t1 = time.perf_counter_ns()
            if reply != PAYLOAD:
                raise RuntimeError(f"unexpected reply {reply!r:.40}")
            if i >= WARMUP_CALLS:
                samples.append(t1 - t0)
        return samples

    samples, attempts = run_trio(_with_worker, body, 80.0, lane)
    return {**latency_figures(samples), "connect_attempts": attempts}


async def _remote_tells(ref: ActrRef, worker: ActrId, n: int, batch: int = 1) -> Burst:
    """``n`` tells to the worker: one ``tell`` each from ``SENDERS`` tasks (``batch`` 1), or
    ``tell_many`` batches of ``batch`` from ``BATCH_SENDERS`` tasks; until acked, until
    handled."""
    await ref.call(worker, COUNT, b"reset")

    async def sender(k: int) -> None:
        while k > 0:
            if batch == 1:
                await ref.tell(worker, TELL, TELL_PAYLOAD)
            else:
                await ref.tell_many(worker, TELL, [TELL_PAYLOAD] * min(k, batch))
            k -= min(k, batch)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in split(n, SENDERS if batch == 1 else BATCH_SENDERS):
            if k:
                nursery.start_soon(sender, k)
    acked = time.perf_counter() - t0
    # Every tell is committed at the worker; a LOW call is scheduled after all of them.
    handled = int(await ref.call(worker, COUNT, b"", priority=Priority.LOW))
    elapsed = time.perf_counter() - t0
    if handled != n:
        raise RuntimeError(f"worker handled {handled} of {n} tells")
    return Burst(acked, elapsed)


@runtime(
    "W6",
    "actr_trio-tell_many",
    label=f"as actr_trio, but tell_many batches of {PACKED} (as the packed baselines' records per message) from 4 tasks; until all handled",
    timeout_s=120,
)
def w6_tell_many(size: int) -> Measurement:
    return _w6(size, WEBRTC, PACKED)


@runtime(
    "W6",
    "actr_trio-ws-tell_many",
    label=f"as actr_trio-ws (direct WebSocket lane), but tell_many batches of {PACKED} from 4 tasks; until all handled",
    timeout_s=120,
)
def w6_tell_many_ws(size: int) -> Measurement:
    return _w6(size, WEBSOCKET, PACKED)


@runtime(
    "W6",
    label=f"client node here -> worker node in a child process, WebRTC; {SENDERS} sender tasks, 100 B tells; until all handled",
    timeout_s=120,
)
def w6_tells(size: int) -> Measurement:
    return _w6(size, WEBRTC)


@runtime(
    "W6",
    WS_ROW,
    label=f"client node here -> worker node in a child process, direct WebSocket lane; {SENDERS} sender tasks, 100 B tells; until all handled",
    timeout_s=120,
)
def w6_tells_ws(size: int) -> Measurement:
    return _w6(size, WEBSOCKET)


def _w6(size: int, lane: str, batch: int = 1) -> Measurement:
    async def body(ref: ActrRef, worker: ActrId) -> Burst:
        await _remote_tells(ref, worker, warmup(size), batch)
        return await _remote_tells(ref, worker, size, batch)

    burst, attempts = run_trio(_with_worker, body, 110.0, lane)
    return {
        "msgs_per_s": size / burst.handled,
        "acked_per_s": size / burst.acked,
        "connect_attempts": attempts,
    }


async def _stream_report(
    ref: ActrRef, worker: ActrId, reset: bool = False
) -> tuple[int, int, bool, float]:
    chunks, nbytes, ended, last = (
        (await ref.call(worker, STREAM_REPORT, b"reset" if reset else b"")).decode().split()
    )
    return int(chunks), int(nbytes), ended == "1", float(last)


async def _stream_burst(
    ref: ActrRef, worker: ActrId, n: int, stream_id: str
) -> tuple[float, int, int]:
    """Send ``n`` 16 KiB chunks on LatencyFirst; (seconds to the last delivered chunk,
    chunks delivered, bytes delivered). Delivered = counted by the worker's callback."""
    await _stream_report(ref, worker, reset=True)
    t0 = time.monotonic()  # the worker stamps arrivals with the same (system-wide) clock
    async with ref.open_stream(worker, stream_id, lane=Lane.LATENCY_FIRST) as stream:
        for _ in range(n):
            await stream.send(CHUNK)
    # The report travels on another lane: poll until the end marker arrived, or nothing new
    # arrived for a while (LatencyFirst may drop, the end marker too).
    last_change = time.monotonic()
    seen = -1
    with trio.fail_after(30):
        while True:
            chunks, nbytes, ended, last_at = await _stream_report(ref, worker)
            if ended:
                break
            if chunks != seen:
                seen, last_change = chunks, time.monotonic()
            elif time.monotonic() - last_change > 1.0:
                break
            await trio.sleep(0.01)
    if chunks == 0:
        raise RuntimeError(f"none of {n} chunks was delivered")
    return last_at - t0, chunks, nbytes


@runtime(
    "W7",
    label="client here -> worker in a child process, WebRTC, LatencyFirst stream, 16 KiB chunks; delivered bytes / time to last delivered chunk",
    timeout_s=120,
)
def w7_stream(size: int) -> Measurement:
    return {**_w7(size, WEBRTC), "dispatch_p50_us": _stream_dispatch_p50_us()}


@runtime(
    "W7",
    WS_ROW,
    label="client here -> worker in a child process, direct WebSocket lane, LatencyFirst stream, 16 KiB chunks; delivered bytes / time to last delivered chunk",
    timeout_s=120,
)
def w7_stream_ws(size: int) -> Measurement:
    return _w7(size, WEBSOCKET)


def _w7(size: int, lane: str) -> Measurement:
    async def body(ref: ActrRef, worker: ActrId) -> tuple[float, int, int]:
        await _stream_burst(ref, worker, max(1, size // 10), STREAM_IDS[0])
        return await _stream_burst(ref, worker, size, STREAM_IDS[1])

    (elapsed, chunks, nbytes), attempts = run_trio(_with_worker, body, 110.0, lane)
    return {
        "connect_attempts": attempts,
        "MB_per_s": nbytes / elapsed / 1e6,
        "chunks_per_s": chunks / elapsed,
        "delivered_pct": 100.0 * chunks / size,
    }


def _stream_dispatch_p50_us() -> float:
    """In-process stream dispatch: LocalRealm, send one LatencyFirst chunk, wait for the callback."""

    async def main() -> list[int]:
        samples: list[int] = []
        async with (
            LocalRealm("bench") as realm,
            realm.start(sink := Sink()) as a,
            realm.start(Sender()) as b,
            b.open_stream(a.actr_id, STREAM_ID, lane=Lane.LATENCY_FIRST) as stream,
        ):
            for i in range(200 + DISPATCH_SAMPLES):
                sink.chunk_seen = trio.Event()
                t0 = time.perf_counter_ns()
                await stream.send(PAYLOAD)
                with trio.fail_after(5):
                    await sink.chunk_seen.wait()
                t1 = time.perf_counter_ns()
                if i >= 200:
                    samples.append(t1 - t0)
        return samples

    return latency_figures(run_trio(main))["p50_us"]


# --------------------------------------------------------------------------------------------
# W8: node start


async def _inproc_starts(n: int) -> list[float]:
    """Seconds from ``realm.start(...)`` to the yielded ref, ``n`` times (after a warm-up)."""
    out: list[float] = []
    async with LocalRealm("bench") as realm:
        for i in range(n + 3):
            t0 = time.perf_counter()
            async with realm.start(Sink()) as ref:
                t1 = time.perf_counter()
                assert ref.actr_id is not None
            if i >= 3:
                out.append(t1 - t0)
    return out


async def _process_first_rpc(n: int, lane: str = WEBRTC) -> tuple[list[float], list[float]]:
    """(spawn -> registered, spawn -> first RPC answered) in seconds, ``n`` fresh processes;
    the first RPC goes over ``lane`` (checked)."""
    from actr_trio.signaling import serve

    if lane == WEBRTC:
        # This side's node loads aiortc on its first WebRTC link: not the child's start.
        import actr_trio.transport._webrtc_aio  # noqa: F401

    registered: list[float] = []
    answered: list[float] = []
    async with serve(host="127.0.0.1", port=0, limits=BENCH_LIMITS) as server:
        config = network_config(server.url, realm=REALM)
        async with ActrSystem(config).attach(BenchClient()).start() as ref:
            for _ in range(n):
                t0 = time.perf_counter()
                async with _worker_process(server.url, lane) as proc:
                    with trio.fail_after(SETUP_BOUND):
                        worker = await _find_worker(ref, proc)
                        t1 = time.perf_counter()
                        reply = await ref.call(worker, ECHO, b"first")
                        t2 = time.perf_counter()
                    if reply != b"first":
                        raise RuntimeError(f"unexpected reply {reply!r:.40}")
                    linked = ref.statistics().links.get(worker)
                    if linked != lane:
                        raise RuntimeError(f"first RPC went over {linked}, not {lane}")
                # Wait until the stopped worker is gone from discovery before the next one.
                with trio.move_on_after(STOP_BOUND):
                    while True:
                        if not await ref.discover(WORKER):
                            break
                        await trio.sleep(0.02)
                registered.append(t1 - t0)
                answered.append(t2 - t0)
    return registered, answered


def _process_figures(lane: str) -> Measurement:
    registered, answered = run_trio(_process_first_rpc, PROCESS_STARTS, lane)
    return {
        "process_first_rpc_ms": statistics.median(answered) * 1e3,
        "process_registered_ms": statistics.median(registered) * 1e3,
        "first_call_ms": statistics.median(b - a for a, b in zip(registered, answered, strict=True))
        * 1e3,
    }


@runtime(
    "W8",
    label=f"LocalRealm node start (median of `size`); fresh node process -> registered -> first RPC answered over WebRTC (median of {PROCESS_STARTS})",
    timeout_s=120,
)
def w8_start(size: int) -> Measurement:
    inproc = run_trio(_inproc_starts, size)
    figures = _process_figures(WEBRTC)
    seal_us, open_us = _binding_costs(BINDING_SAMPLES)
    return {
        "inproc_start_ms": statistics.median(inproc) * 1e3,
        **figures,
        "binding_seal_us": seal_us,
        "binding_open_us": open_us,
        "binding_share_pct": 100 * 2 * (seal_us + open_us) / 1e3 / figures["first_call_ms"],
    }


@runtime(
    "W8",
    WS_ROW,
    label=f"fresh node process listening on 127.0.0.1 -> registered -> first RPC answered over the direct WebSocket lane (median of {PROCESS_STARTS}; aiortc is never imported)",
    timeout_s=120,
)
def w8_start_ws(size: int) -> Measurement:
    return _process_figures(WEBSOCKET)


def _aiortc_sdp() -> str:
    """A real offer as a node's link makes one (media slots + data channels), loopback only."""
    import asyncio

    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.rtcconfiguration import RTCBundlePolicy

    from actr_trio.transport import _ice

    async def offer() -> str:
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        try:
            for kind in ("video", "audio"):
                pc.addTransceiver(kind, direction="sendrecv")
            pc.createDataChannel("signal", negotiated=True, id=0)
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    with _ice.hooked(), _ice.host_addresses(("127.0.0.1",)):
        return asyncio.run(offer())


def _binding_costs(samples: int) -> tuple[float, float]:
    """Median µs to seal one description (sign) and to open it (verify credential, signature
    and fingerprints), with real keys and a real SDP."""
    from actr_trio._identity import IssuerKey, NodeKey
    from actr_trio.transport._binding import open_description, seal_description

    issuer, key = IssuerKey.generate(), NodeKey.generate()
    sender = ActrId(REALM, 1, SINK)
    receiver = ActrId(REALM, 2, SENDER)
    credential = issuer.issue(sender, key.public_bytes(), now=time.time(), lifetime=3600)
    sdp = _aiortc_sdp()
    seal_ns: list[int] = []
    open_ns: list[int] = []
    for _ in range(samples + samples // 10):
        t0 = time.perf_counter_ns()
        payload = seal_description(
            "offer", sdp, signer=sender, peer=receiver, credential=credential, sign=key.sign
        )
        t1 = time.perf_counter_ns()
        opened = open_description(
            payload,
            kind="offer",
            source=sender,
            local=receiver,
            issuer_key=issuer.public_bytes(),
            now=time.time(),
        )
        t2 = time.perf_counter_ns()
        if opened.sdp != sdp:
            raise RuntimeError("the opened SDP differs from the sealed one")
        seal_ns.append(t1 - t0)
        open_ns.append(t2 - t1)
    warm = samples // 10
    return statistics.median(seal_ns[warm:]) / 1e3, statistics.median(open_ns[warm:]) / 1e3
