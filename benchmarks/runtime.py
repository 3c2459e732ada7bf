"""actr_trio subjects for the benchmarks (issue 5): W1..W8 through the public API.

In process (W1-W4, W7's dispatch figure, W8's first figure): nodes on one ``LocalRealm``
(in-memory signaling, loopback transport, the real mailbox/scheduler/gates). Across processes
(W5-W7, W8's second figure): a signaling server embedded here on 127.0.0.1, the worker node
(``benchmarks/_runtime_node.py``) in a child process, the measuring client node here, WebRTC
with loopback-only ICE and no STUN. Every child is terminated (then killed) in a ``finally``,
each wait bounded.

``tell`` returns once the receiver's mailbox committed the envelope (an ack crosses back), so
one sender has one tell in flight: the throughput rows (W1, W3, W4, W6) run ``SENDERS``
concurrent sender tasks on one sender node, and stop the clock once the receiver *handled*
every tell (``msgs_per_s``); ``acked_per_s`` is the rate until every tell was acknowledged,
i.e. committed to the receiver's mailbox.

W8 also prices the DTLS binding (connection setup only: nothing is signed or verified per
envelope): ``binding_seal_us`` / ``binding_open_us`` are one offer's or answer's signing and
verification (credential + signature + fingerprints) on a real aiortc SDP, and
``binding_share_pct`` is the part of ``first_call_ms`` (a registered node's first call over a
new WebRTC link) they take: two seals and two opens lie on that path (offer, then answer).

W7 counts what the worker's stream callback received (delivered, not sent) and stops the clock
at the last delivered chunk (the worker stamps arrivals with ``time.monotonic()``, one clock
for every process of the machine); each burst uses a fresh stream id.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

import trio

import benchmarks.workloads  # noqa: F401  (the workload ids, also when imported on its own)
from actr_trio import (
    ActrId,
    ActrRef,
    ActrSystem,
    ActrType,
    Context,
    Lane,
    Priority,
    StreamChunk,
    Workload,
    route,
)
from actr_trio.errors import PeerUnavailable
from actr_trio.testing import LocalRealm, network_config
from benchmarks._harness import REPO_ROOT, Measurement, latency_figures, runtime
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

T = TypeVar("T")

PAYLOAD: Final = b"x" * 64  # W1-W5 (as the in-process and SQLite baselines)
TELL_PAYLOAD: Final = b"x" * 100  # W6 (as raw aiortc's 100-byte messages)
CHUNK: Final = b"x" * 16384  # W7 (as raw aiortc's 16 KiB messages)
#: Concurrent sender tasks for the throughput rows (W1, W3, W6): ``tell`` awaits the commit ack.
SENDERS: Final = 256
#: W4: one sender task per receiver node.
FANOUT_RECEIVERS: Final = 100
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
CONNECT_ATTEMPTS: Final = 3


def _warmup(size: int) -> int:
    return max(1, min(size // 10, 2_000))


def _run(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run``; a failure inside nurseries is reported by its first leaf exception (the
    harness shows ``Type: message``, and an ExceptionGroup's message says nothing)."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise RuntimeError(f"{type(leaf).__name__}: {leaf}") from group


def _split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative counts."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --------------------------------------------------------------------------------------------
# In-process workloads

SINK: Final = ActrType("actr-bench", "sink")
SENDER: Final = ActrType("actr-bench", "sender")


class Sink(Workload):
    """Counts tells, echoes calls, and sets ``done`` once ``expect`` tells were handled."""

    actr_type = SINK

    def __init__(self) -> None:
        self.handled = 0
        self.expect = -1
        self.done = trio.Event()
        self.chunk_seen = trio.Event()

    def arm(self, expect: int) -> None:
        self.handled = 0
        self.expect = expect
        self.done = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register(STREAM_ID, self.on_chunk)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        self.chunk_seen.set()

    @route("bench.Sink.Tell")
    async def tell(self, request: bytes, ctx: Context) -> bytes:
        self.handled += 1
        if self.handled == self.expect:
            self.done.set()
        return b""

    @route("bench.Sink.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Sender(Workload):
    actr_type = SENDER


class Burst(NamedTuple):
    """Seconds from the first tell until all were acknowledged (committed by the receiver's
    mailbox) and until all were handled."""

    acked: float
    handled: float


async def _tell_burst(ref: ActrRef, targets: list[tuple[ActrId, Sink]], per_target: int) -> Burst:
    """Send ``per_target`` tells to every target; with one target ``SENDERS`` tasks share
    them, with several there is one task per target."""
    for _, sink in targets:
        sink.arm(per_target)
    if len(targets) == 1:
        plan = [(targets[0][0], n) for n in _split(per_target, SENDERS) if n]
    else:
        plan = [(target, per_target) for target, _ in targets]

    async def sender(target: ActrId, n: int) -> None:
        for _ in range(n):
            await ref.tell(target, "bench.Sink.Tell", PAYLOAD)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for target, n in plan:
            nursery.start_soon(sender, target, n)
    acked = time.perf_counter() - t0
    for _, sink in targets:
        await sink.done.wait()
    return Burst(acked, time.perf_counter() - t0)


async def _one_to_one(size: int, **sink_options: object) -> Measurement:
    async with (
        LocalRealm("bench") as realm,
        realm.start(sink := Sink(), **sink_options) as a,
        realm.start(Sender()) as b,
    ):
        await _tell_burst(b, [(a.actr_id, sink)], _warmup(size))
        burst = await _tell_burst(b, [(a.actr_id, sink)], size)
    return {"msgs_per_s": size / burst.handled, "acked_per_s": size / burst.acked}


@runtime(
    "W1",
    quick_size=20_000,
    full_size=60_000,
    label=f"LocalRealm, in-memory mailbox; {SENDERS} sender tasks on one node -> one node, 64 B; clock stops when all handled",
)
def w1_tells(size: int) -> Measurement:
    return _run(_one_to_one, size)


@runtime("W2", label="LocalRealm, in-memory mailbox; sequential ref.call echo, 64 B")
def w2_calls(size: int) -> Measurement:
    async def main() -> list[int]:
        samples: list[int] = []
        async with (
            LocalRealm("bench") as realm,
            realm.start(Sink()) as a,
            realm.start(Sender()) as b,
        ):
            target = a.actr_id
            warm = _warmup(size)
            for i in range(warm + size):
                t0 = time.perf_counter_ns()
                reply = await b.call(target, "bench.Sink.Echo", PAYLOAD)
                t1 = time.perf_counter_ns()
                if reply != PAYLOAD:
                    raise RuntimeError(f"unexpected reply {reply!r:.40}")
                if i >= warm:
                    samples.append(t1 - t0)
        return samples

    return latency_figures(_run(main))


def _durable(size: int, synchronous: str) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="actr-bench-mailbox-") as tmp:
        return _run(
            lambda: _one_to_one(size, data_dir=Path(tmp) / "sink", mailbox_synchronous=synchronous)
        )


@runtime(
    "W3",
    "actr_trio-normal",
    quick_size=10_240,
    full_size=25_600,
    label=f"LocalRealm, receiver's SQLite mailbox (WAL, NORMAL) in /tmp; {SENDERS} sender tasks; ack after commit",
    compare_to=("sqlite-normal-batch256", "sqlite-normal-commit"),
)
def w3_normal(size: int) -> Measurement:
    return _durable(size, "NORMAL")


@runtime(
    "W3",
    "actr_trio-full",
    quick_size=5_120,
    full_size=12_800,
    label=f"LocalRealm, receiver's SQLite mailbox (WAL, FULL) in /tmp; {SENDERS} sender tasks; ack after commit",
    compare_to=("sqlite-full-batch256", "sqlite-full-commit"),
)
def w3_full(size: int) -> Measurement:
    return _durable(size, "FULL")


@runtime(
    "W4",
    quick_size=100,
    full_size=400,
    label=f"LocalRealm: 1 sender node ({FANOUT_RECEIVERS} tasks, one per receiver) -> {FANOUT_RECEIVERS} nodes; total msgs/s",
)
def w4_fanout(size: int) -> Measurement:
    async def main() -> tuple[float, float]:
        async with LocalRealm("bench") as realm, contextlib.AsyncExitStack() as stack:
            t_start = time.perf_counter()
            targets = []
            for _ in range(FANOUT_RECEIVERS):
                sink = Sink()
                ref = await stack.enter_async_context(realm.start(sink))
                targets.append((ref.actr_id, sink))
            start_s = time.perf_counter() - t_start
            sender = await stack.enter_async_context(realm.start(Sender()))
            await _tell_burst(sender, targets, max(1, size // 10))
            return (await _tell_burst(sender, targets, size)).handled, start_s

    elapsed, start_s = _run(main)
    return {
        "msgs_per_s": size * FANOUT_RECEIVERS / elapsed,
        "start_100_nodes_ms": start_s * 1e3,
    }


# --------------------------------------------------------------------------------------------
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
async def _worker_process(url: str) -> AsyncIterator[trio.Process]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "benchmarks._runtime_node", "--signaling", url, "--realm", REALM],
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
    body: Callable[[ActrRef, ActrId], Awaitable[T]], bound: float
) -> tuple[T, int]:
    """Signaling server here, worker node in a child, client node here; ``body(client, worker)``.

    The first call (the WebRTC connect) happens before ``body`` runs; a link that fails to
    connect is tried again (at most ``CONNECT_ATTEMPTS``), and the attempts are returned so the
    rows show it (``connect_attempts``).
    """
    from actr_trio.signaling import serve

    with trio.fail_after(bound):
        async with serve(host="127.0.0.1", port=0) as server:
            config = network_config(server.url, realm=REALM)
            async with (
                _worker_process(server.url) as proc,
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
                return await body(ref, worker), attempts


@runtime(
    "W5",
    label="client node here -> worker node in a child process, WebRTC on 127.0.0.1; sequential ref.call echo, 64 B",
    timeout_s=90,
)
def w5_calls(size: int) -> Measurement:
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

    samples, attempts = _run(_with_worker, body, 80.0)
    return {**latency_figures(samples), "connect_attempts": attempts}


async def _remote_tells(ref: ActrRef, worker: ActrId, n: int) -> Burst:
    """``n`` tells to the worker from ``SENDERS`` tasks: until acked, until handled."""
    await ref.call(worker, COUNT, b"reset")

    async def sender(k: int) -> None:
        for _ in range(k):
            await ref.tell(worker, TELL, TELL_PAYLOAD)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in _split(n, SENDERS):
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
    label=f"client node here -> worker node in a child process, WebRTC; {SENDERS} sender tasks, 100 B tells; until all handled",
    timeout_s=120,
)
def w6_tells(size: int) -> Measurement:
    async def body(ref: ActrRef, worker: ActrId) -> Burst:
        await _remote_tells(ref, worker, _warmup(size))
        return await _remote_tells(ref, worker, size)

    burst, attempts = _run(_with_worker, body, 110.0)
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
    async def body(ref: ActrRef, worker: ActrId) -> tuple[float, int, int]:
        await _stream_burst(ref, worker, max(1, size // 10), STREAM_IDS[0])
        return await _stream_burst(ref, worker, size, STREAM_IDS[1])

    (elapsed, chunks, nbytes), attempts = _run(_with_worker, body, 110.0)
    return {
        "connect_attempts": attempts,
        "MB_per_s": nbytes / elapsed / 1e6,
        "chunks_per_s": chunks / elapsed,
        "delivered_pct": 100.0 * chunks / size,
        "dispatch_p50_us": _stream_dispatch_p50_us(),
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

    return latency_figures(_run(main))["p50_us"]


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


async def _process_first_rpc(n: int) -> tuple[list[float], list[float]]:
    """(spawn -> registered, spawn -> first RPC answered) in seconds, ``n`` fresh processes."""
    from actr_trio.signaling import serve

    registered: list[float] = []
    answered: list[float] = []
    async with serve(host="127.0.0.1", port=0) as server:
        config = network_config(server.url, realm=REALM)
        async with ActrSystem(config).attach(BenchClient()).start() as ref:
            for _ in range(n):
                t0 = time.perf_counter()
                async with _worker_process(server.url) as proc:
                    with trio.fail_after(SETUP_BOUND):
                        worker = await _find_worker(ref, proc)
                        t1 = time.perf_counter()
                        reply = await ref.call(worker, ECHO, b"first")
                        t2 = time.perf_counter()
                    if reply != b"first":
                        raise RuntimeError(f"unexpected reply {reply!r:.40}")
                # Wait until the stopped worker is gone from discovery before the next one.
                with trio.move_on_after(STOP_BOUND):
                    while True:
                        if not await ref.discover(WORKER):
                            break
                        await trio.sleep(0.02)
                registered.append(t1 - t0)
                answered.append(t2 - t0)
    return registered, answered


@runtime(
    "W8",
    label=f"LocalRealm node start (median of `size`); fresh node process -> registered -> first RPC answered over WebRTC (median of {PROCESS_STARTS})",
    timeout_s=120,
)
def w8_start(size: int) -> Measurement:
    inproc = _run(_inproc_starts, size)
    registered, answered = _run(_process_first_rpc, PROCESS_STARTS)
    first_call_ms = (
        statistics.median(b - a for a, b in zip(registered, answered, strict=True)) * 1e3
    )
    seal_us, open_us = _binding_costs(BINDING_SAMPLES)
    return {
        "inproc_start_ms": statistics.median(inproc) * 1e3,
        "process_first_rpc_ms": statistics.median(answered) * 1e3,
        "process_registered_ms": statistics.median(registered) * 1e3,
        "first_call_ms": first_call_ms,
        "binding_seal_us": seal_us,
        "binding_open_us": open_us,
        "binding_share_pct": 100 * 2 * (seal_us + open_us) / 1e3 / first_call_ms,
    }


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
